"""A tiny LDLM for tests and smoke runs: every module one or two layers wide
enough to learn a fixed batch on CPU in seconds.

  python -m ldlm_jax.train --config configs/tiny.py --workdir /tmp/tiny

Hardware: any CPU; about a minute including compilation (2-core machine).
It uses the installed MiniLM encoder and the embedded Brown corpus, like
configs/demo.py, at a size meant for tests, not for quality.
"""

from ldlm_jax.config import base_config


def get_config():
  c = base_config()
  c.encoder.name = 'minilm-l6'
  c.encoder.layer = -3
  c.encoder.norm_num_chunks = 64
  c.data.source = 'brown'
  c.data.seq_len = 16
  c.model.latent_dim = 16
  for name in ('latent_encoder', 'latent_decoder', 'token_decoder'):
    c.model[name].num_layers = 1
    c.model[name].num_heads = 2
    c.model[name].width = 32
  c.model.denoiser.num_layers = 2
  c.model.denoiser.width = 32
  c.model.denoiser.num_heads = 2
  c.encoder_warmup.steps = 20
  c.timesteps.num_bins = 10
  c.timesteps.update_every = 10
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 10
  c.optim.ema_decay = 0.9
  c.train.num_steps = 40
  c.train.batch_size = 8
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.train.sample_every = 0
  c.train.eval_every = 20
  c.train.eval_batches = 2
  c.train.num_log_samples = 2
  c.sample.num_steps = 10
  c.sample.batch_size = 4
  return c

"""A tiny LDLM on the strict-order toy language: the check that the denoiser learns word order.

  python -m ldlm_jax.data.toy --out runs/toy_corpus
  python -m ldlm_jax.train --config configs/toy_order.py --workdir runs/toy \
      --config.data.path=runs/toy_corpus
  python -m ldlm_jax.sample --workdir runs/toy --num_samples 64 --out runs/toy/s.jsonl

The language (ldlm_jax/data/toy.py) walks one fixed cycle of six word
classes; a model that learned only word frequencies puts about 1/6 of its
adjacent pairs in order, one that learned the order close to all of them.
tests/test_word_order.py trains this config and requires at least 0.95 legal
adjacent pairs in 64 samples while the same samples shuffled stay below 0.5.

Real frozen encoder (all-MiniLM-L6-v2, third-to-last layer, as the demo),
the paper's recipe (MSE reconstruction, stop-gradient CE decoder, warmup,
adaptive timesteps, sigma_dec 0.5, self-conditioning), at a size that
trains in a few minutes on 2 CPU cores (BUILD_NOTES.md, "Word order").
"""

from ldlm_jax.config import base_config


def get_config():
  c = base_config()
  c.encoder.name = 'minilm-l6'
  c.encoder.layer = -3
  c.encoder.norm_num_chunks = 128
  c.data.source = 'files'
  c.data.path = ''              # the directory `python -m ldlm_jax.data.toy --out DIR` wrote
  c.data.reference_split = 'reference'
  c.data.seq_len = 16
  c.model.latent_dim = 32
  for name in ('latent_encoder', 'latent_decoder'):
    c.model[name].type = 'self_attention'
    c.model[name].num_layers = 1
    c.model[name].num_heads = 2
    c.model[name].width = 64
  c.model.token_decoder.num_layers = 1
  c.model.token_decoder.num_heads = 2
  c.model.token_decoder.width = 64
  c.model.denoiser.num_layers = 3
  c.model.denoiser.width = 128
  c.model.denoiser.num_heads = 4
  c.encoder_warmup.steps = 300
  c.timesteps.num_bins = 20
  c.timesteps.update_every = 20
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 50
  c.optim.ema_decay = 0.99
  c.train.num_steps = 600
  c.train.batch_size = 32
  c.train.log_every = 50
  c.train.checkpoint_every = 600
  c.train.eval_every = 300
  c.train.eval_batches = 2
  c.train.sample_every = 0
  c.train.num_log_samples = 0
  c.sample.num_steps = 50
  c.sample.batch_size = 64
  return c

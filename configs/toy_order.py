"""A tiny LDLM on the strict-order toy language: the check that the denoiser learns word order.

  python -m ldlm_jax.data.toy --out runs/toy_corpus
  python -m ldlm_jax.train --config configs/toy_order.py --workdir runs/toy \
      --config.data.path=runs/toy_corpus --config.encoder.path=runs/toy_corpus/encoder
  python -m ldlm_jax.sample --workdir runs/toy --num_samples 64 --out runs/toy/s.jsonl

Two encoders (`--config configs/toy_order.py[:ENCODER]`):
  'toy'     (default) the language's own frozen encoder that `ldlm_jax.data.toy`
            writes next to the corpus (CORPUS/encoder: a word-level tokenizer of
            26 tokens and a random 2-layer BERT of width 64, last layer); the
            CI check, cheap enough for the test suite;
  'minilm'  the real all-MiniLM-L6-v2 at its third-to-last layer, as the demo
            (30522 WordPiece tokens; no --config.encoder.path). The ablations
            of BUILD_NOTES.md, "Word order", were measured with this one.

The language (ldlm_jax/data/toy.py) walks one fixed cycle of six word
classes; a model that learned only word frequencies puts about 1/6 of its
adjacent pairs in order, one that learned the order close to all of them.
tests/test_word_order.py trains this config and requires at least 0.95 legal
adjacent pairs in 64 samples while the same samples shuffled stay below 0.5.

The paper's recipe (MSE reconstruction, stop-gradient CE decoder, warmup,
adaptive timesteps, sigma_dec 0.5, self-conditioning), at a size that
trains in a few minutes on 2 CPU cores (BUILD_NOTES.md, "Word order").
"""

from ldlm_jax.config import base_config


ENCODERS = ('toy', 'minilm')


def get_config(encoder: str = 'toy'):
  if encoder not in ENCODERS:
    raise ValueError(f'configs/toy_order.py has no encoder {encoder!r}; choose one of {ENCODERS}')
  c = base_config()
  if encoder == 'toy':
    c.encoder.name = 'local'
    c.encoder.path = ''           # CORPUS/encoder, written by `python -m ldlm_jax.data.toy --out CORPUS`
    c.encoder.layer = -1
  else:
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

r"""Post-trains a small token decoder on frozen latents (paper B.2).

  python -m ldlm_jax.post_train_decoder --workdir runs/demo --num_layers 2 \
      --steps 2000 [--batch_size 32] [--learning_rate 3e-4]

After joint training, the latent encoder and denoiser are fixed. A fresh
k-layer bidirectional transformer with a vocab head learns to map *latents*
straight to tokens with cross-entropy only, on noisy latents z + sigma_dec eps
(the run's own sigma_dec), replacing the 6-layer latent decoder + 3-layer
token decoder at sampling time. The latents come from the run's EMA latent
encoder (the EMA weights are the ones sampling uses). It is written to
WORKDIR/token_decoder_k{k}/ and used with
`python -m ldlm_jax.sample ... --token_decoder WORKDIR/token_decoder_k{k}`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import optax
from absl import flags

from ldlm_jax import cli
from ldlm_jax.errors import ConfigError
from ldlm_jax.training.post_decoder import make_module, save_decoder

# The data pipeline (grain), the encoder and the run restorer (orbax) are imported in the
# functions that use them, after the flags are checked (ruff.toml exempts the entry points from PLC0415).

def post_train(workdir: str, num_layers: int, steps: int, batch_size: int, learning_rate: float,
               num_heads: int = 0, width: int = 0, seed: int = 0, log_every: int = 100,
               checkpoint_step: int | None = None, out: str = '') -> dict:
  # Imported here so `--help` is fast.
  from ldlm_jax.data import pipeline as data_lib
  from ldlm_jax.encoders.registry import load_frozen_encoder
  from ldlm_jax.training import restore

  run = restore.load_run(workdir, checkpoint_step)
  config, model = run.config, run.model
  d = model.dims
  if d.latent_len != d.seq_len:
    raise ConfigError('A post-trained token decoder maps each latent to one token, so it needs '
                      f'model.latent_len == data.seq_len (run has {d.latent_len} vs {d.seq_len}).')
  if num_layers < 1:
    raise ConfigError('--num_layers must be >= 1.')
  encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype).on_device()
  # A model bound to the real encoder, for the frozen features.
  from ldlm_jax.models.ldlm import LDLM
  model = LDLM(config, encoder)
  mean, std = restore.norm_stats(run.meta)
  frozen = model.frozen_inputs(encoder.params, mean, std)
  spec = {'num_layers': int(num_layers), 'width': int(width) or int(config.model.latent_dim),
          'num_heads': int(num_heads) or int(config.model.token_decoder.num_heads), 'mlp_ratio': 4,
          'latent_dim': d.latent_dim, 'latent_len': d.latent_len, 'vocab_size': d.vocab_size,
          'noise_std': float(config.loss.decoder_noise_std), 'checkpoint_step': run.step,
          'steps': int(steps), 'batch_size': int(batch_size), 'learning_rate': float(learning_rate)}
  if spec['width'] % spec['num_heads']:
    raise ConfigError(f'decoder width {spec["width"]} is not divisible by {spec["num_heads"]} heads; '
                      'pass --num_heads or --width.')
  module = make_module(spec, model)
  params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, d.latent_len, d.latent_dim)))['params']
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(optax.linear_schedule(0.0, learning_rate, max(1, min(500, steps // 10))),
                                      b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01))
  opt_state = optimizer.init(params)
  ema_params = run.state.ema_params

  @jax.jit
  def step_fn(params, opt_state, tokens, rng):
    z = model.encode(ema_params, model.features(frozen, ema_params, tokens))
    z = z + spec['noise_std'] * jax.random.normal(rng, z.shape)
    def loss_fn(p):
      logits = module.apply({'params': p}, jax.lax.stop_gradient(z))
      ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens))
      return ce, jnp.mean((jnp.argmax(logits, -1) == tokens).astype(jnp.float32))
    (ce, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, ce, acc

  it = data_lib.make_train_iterator(config, run.tokenizer, batch_size=batch_size)
  rng = jax.random.PRNGKey(seed + 1)
  t0, ce_sum, acc_sum, n = time.time(), 0.0, 0.0, 0
  history = []
  for i in range(1, steps + 1):
    params, opt_state, ce, acc = step_fn(params, opt_state, next(it)['tokens'], jax.random.fold_in(rng, i))
    ce_sum, acc_sum, n = ce_sum + ce, acc_sum + acc, n + 1
    if i % log_every == 0 or i == steps:
      record = {'step': i, 'ce_loss': float(ce_sum / n), 'token_accuracy': float(acc_sum / n)}
      history.append(record)
      print(f'post-train decoder step {i}/{steps} | ce {record["ce_loss"]:.4f} | '
            f'acc {record["token_accuracy"]:.4f} | {time.time() - t0:.0f}s', flush=True)
      ce_sum, acc_sum, n = 0.0, 0.0, 0
  spec['final'] = history[-1]
  path = out or os.path.join(run.workdir, f'token_decoder_k{num_layers}')
  save_decoder(path, params, spec)
  print(f'wrote {path}', flush=True)
  return spec


_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run.')
_NUM_LAYERS = flags.DEFINE_integer('num_layers', 2, 'Transformer layers of the new decoder (paper: 1-6).')
_STEPS = flags.DEFINE_integer('steps', 2000, 'Training steps (paper: 200k at batch 512).')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size.')
_LR = flags.DEFINE_float('learning_rate', 3e-4, 'Peak learning rate (linear warmup, then constant).')
_HEADS = flags.DEFINE_integer('num_heads', 0, '0 = the run\'s token_decoder.num_heads.')
_WIDTH = flags.DEFINE_integer('width', 0, '0 = the run\'s latent_dim.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')
_STEP = flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint to use (default: latest).')
_OUT = flags.DEFINE_string('out', '', 'Output directory (default: WORKDIR/token_decoder_k{k}).')
_LOG_EVERY = flags.DEFINE_integer('log_every', 100, 'Steps between progress lines.')


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise ConfigError('--workdir is required.')
  # Every number and the output folder checked before the run is restored.
  cli.check_positive(num_layers=_NUM_LAYERS.value, steps=_STEPS.value, batch_size=_BATCH.value,
                     log_every=_LOG_EVERY.value)
  for name, value in (('num_heads', _HEADS.value), ('width', _WIDTH.value),
                      ('checkpoint_step', _STEP.value)):
    if value is not None and value < 0:
      raise ConfigError(f'--{name} must be >= 0 (got {value}).')
  if not _LR.value > 0:
    raise ConfigError(f'--learning_rate must be > 0 (got {_LR.value}).')
  if _OUT.value:
    cli.check_output_dir(_OUT.value, '--out')
  post_train(_WORKDIR.value, _NUM_LAYERS.value, _STEPS.value, _BATCH.value, _LR.value,
             _HEADS.value, _WIDTH.value, _SEED.value, log_every=_LOG_EVERY.value,
             checkpoint_step=_STEP.value, out=_OUT.value)


if __name__ == '__main__':
  cli.run_absl(main)

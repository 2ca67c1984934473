"""Share of a train step spent in the frozen encoder's forward pass (jit(features) vs the jitted train step).

  python -m scripts.analysis.encoder_share [--config configs/demo.py] [--batch_size 16] [--seq_len 32]

The two are timed alternately (so both see the same machine load); prints the medians and the
share.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(model, config, frozen, tokens_BL, repeats: int = 10, inner: int = 10) -> dict:
  """Milliseconds per call of jit(model.features) and of the compiled train step (median over `repeats`
  timings of `inner` calls each), and their ratio (`share`)."""
  import jax
  import jax.numpy as jnp

  from ldlm_jax.training import sharding as sharding_lib
  from ldlm_jax.training import state as state_lib
  from ldlm_jax.training import step as step_lib
  mesh = sharding_lib.make_mesh(config)
  state, _ = state_lib.create_sharded_train_state(model, config, mesh, jax.random.PRNGKey(0))
  step_fn = step_lib.compile_train_step(model, config, mesh, jax.eval_shape(lambda: state), frozen)
  tokens = jax.device_put(jnp.asarray(tokens_BL, jnp.int32), sharding_lib.batch_sharding(mesh))
  features = jax.jit(lambda p, t: model.features(frozen, p, t))
  params = state.params
  jax.block_until_ready(features(params, tokens))
  metrics = jax.device_put(step_lib.empty_train_metrics(model.extra_metrics), sharding_lib.replicated(mesh))
  state, metrics = step_fn(state, frozen, tokens, metrics)
  jax.block_until_ready(state)
  t_features, t_step = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      out = features(params, tokens)
    jax.block_until_ready(out)
    t_features.append((time.perf_counter() - t0) / inner)
    t0 = time.perf_counter()
    for _ in range(inner):
      state, metrics = step_fn(state, frozen, tokens, metrics)
    jax.block_until_ready(state)
    t_step.append((time.perf_counter() - t0) / inner)
  encoder, step = float(np.median(t_features)), float(np.median(t_step))
  return {'encoder_ms': 1e3 * encoder, 'step_ms': 1e3 * step, 'share': encoder / step}


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo.py', help='config file (relative to the repository)')
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--seq_len', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--inner', type=int, default=10)
  args = parser.parse_args(argv)
  from ldlm_jax import config as config_lib
  from ldlm_jax.encoders.registry import load_frozen_encoder
  from ldlm_jax.models.ldlm import LDLM
  c = config_lib.load_file(os.path.join(REPO, args.config)).get_config()
  config_lib.validate(c)
  encoder = load_frozen_encoder(c.encoder.name, c.encoder.path, c.encoder.dtype).on_device()
  model = LDLM(c, encoder)
  hidden = encoder.hidden_size if hasattr(encoder, 'hidden_size') else 384
  frozen = model.frozen_inputs(encoder.params, np.zeros(hidden, np.float32), np.ones(hidden, np.float32))
  tokens = np.random.RandomState(0).randint(1000, 20000, (args.batch_size, args.seq_len))
  out = measure(model, c, frozen, tokens, args.repeats, args.inner)
  print(f'encoder forward {out["encoder_ms"]:.1f} ms, train step {out["step_ms"]:.1f} ms, share {out["share"]:.1%} '
        f'(median of {args.repeats} x {args.inner})')
  return out


if __name__ == '__main__':
  main()

"""Forward+backward time of the DiT's condition paths ('', cross_attention, in_context) at the demo DiT's size.

  python -m scripts.analysis.condition_path_time [--repeats 5] [--inner 10]

The three jitted value-and-grad functions are timed round-robin (the same load for each);
prints the median milliseconds per call and the parameter count of each path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

CONDITIONS = ('', 'cross_attention', 'in_context')


def measure(batch: int = 16, length: int = 32, latent_dim: int = 64, hidden: int = 384, width: int = 192,
            num_layers: int = 4, num_heads: int = 4, repeats: int = 5, inner: int = 10,
            conditions: Sequence[str] = CONDITIONS) -> dict:
  """{condition: (median ms per forward+backward, parameter count)}; the condition is `hidden`-wide
  features of `length` tokens, the first 10 of them unmasked."""
  import jax
  import jax.numpy as jnp

  from ldlm_jax.models.dit import DiT
  fns = {}
  for cond in conditions:
    model = DiT(latent_dim=latent_dim, width=width, num_layers=num_layers, num_heads=num_heads, condition=cond)
    z = jnp.ones((batch, length, latent_dim))
    t = jnp.full((batch,), 0.5)
    c = ({'features': jnp.ones((batch, length, hidden)), 'mask': jnp.arange(length)[None].repeat(batch, 0) < 10}
         if cond else None)
    args = (z, t, z) + ((c,) if cond else ())
    params = model.init(jax.random.PRNGKey(0), *args)['params']
    loss = lambda p, m=model, a=args: jnp.mean(m.apply({'params': p}, *a) ** 2)
    fn = jax.jit(jax.value_and_grad(loss))
    fn(params)[0].block_until_ready()
    fns[cond] = (fn, params)
  seconds = {cond: [] for cond in fns}
  for _ in range(repeats):
    for cond, (fn, params) in fns.items():
      t0 = time.perf_counter()
      for _ in range(inner):
        out = fn(params)
      jax.block_until_ready(out)
      seconds[cond].append((time.perf_counter() - t0) / inner)
  return {cond: (round(1000 * float(np.median(s)), 1), sum(x.size for x in jax.tree.leaves(fns[cond][1])))
          for cond, s in seconds.items()}


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--inner', type=int, default=10)
  args = parser.parse_args(argv)
  out = measure(repeats=args.repeats, inner=args.inner)
  for cond, (ms, num_params) in out.items():
    print(repr(cond), 'median ms/fwd+bwd', ms, 'params', num_params)
  return out


if __name__ == '__main__':
  main()

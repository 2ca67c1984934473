"""Training-time samplers, chosen by `config.timesteps.sampler` (docs/architecture.md, "Adding a part").

Each sampler is f(state, rng, batch_size, timesteps_config) -> (t_B, bins_B):
t in [0, 1) per example, and the bin of the adaptive sampler's state it falls
in (every sampler reports bins, so the per-bin loss EMA, its plot and the
'adaptive' sampling grid work whichever sampler trained the run).

  'adaptive'      paper 5.3 (timesteps.py): k ~ p, t ~ U(k/K, (k+1)/K)
  'uniform'       t ~ U(0, 1) (the paper's ablation)
  'logit_normal'  t = sigmoid(m + s n), n ~ N(0, 1) (Esser et al. 2024, SD3,
                  the time distribution TextLDM trains its flow with);
                  m = timesteps.logit_normal_mean, s = timesteps.logit_normal_std

Adding a sampler: its function (here or in a new file) and one line in SAMPLERS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.diffusion import timesteps as timesteps_lib

_T_MAX = 1.0 - 1e-6   # the same upper clip as timesteps_lib.sample


def adaptive(state, rng, batch_size: int, tc):
  del tc
  return timesteps_lib.sample(state, rng, batch_size, adaptive=True)


def uniform(state, rng, batch_size: int, tc):
  del tc
  return timesteps_lib.sample(state, rng, batch_size, adaptive=False)


def logit_normal(state, rng, batch_size: int, tc):
  num_bins = state.probs.shape[0]
  n = jax.random.normal(rng, (batch_size,), jnp.float32)
  t = jax.nn.sigmoid(float(tc.get('logit_normal_mean', 0.0)) + float(tc.get('logit_normal_std', 1.0)) * n)
  t = jnp.clip(t, 0.0, _T_MAX)
  bins = jnp.clip(jnp.floor(t * num_bins).astype(jnp.int32), 0, num_bins - 1)
  return t, bins


SAMPLERS = {
    'adaptive': adaptive,
    'uniform': uniform,
    'logit_normal': logit_normal,
}


def draw(tc, state, rng, batch_size: int):
  """(t_B, bins_B) from the sampler `tc.sampler` (tc = config.timesteps)."""
  if tc.sampler not in SAMPLERS:
    raise ValueError(f'unknown timestep sampler {tc.sampler!r}; use one of {tuple(SAMPLERS)}')
  return SAMPLERS[tc.sampler](state, rng, batch_size, tc)

"""Rectified flow with velocity prediction (TextLDM; Liu et al. 2022, as in SD3).

  z_t = (1 - t) z0 + t eps          (t = 0 data, t = 1 noise)
  v   = dz_t/dt = eps - z0          the network predicts v, L = mean((v_hat - v)^2)
  x0  = z_t - t v_hat               the x0 estimate every sampler and self-conditioning use

The reverse ODE dz/dt = v(z_t, t) is integrated from t = 1 to t = 0 by the
'euler' and 'heun' solvers (diffusion/ode.py), which recover the velocity
from the x0 estimate as v = (z_t - x0_hat) / t.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
  name = 'rectified_flow'
  kind = 'flow'

  @classmethod
  def from_config(cls, config) -> 'RectifiedFlow':
    del config
    return cls()

  @staticmethod
  def _bcast(t_B):
    return jnp.asarray(t_B, jnp.float32)[:, None, None]

  def alpha(self, t):
    return 1.0 - jnp.asarray(t, jnp.float32)

  def sigma(self, t):
    return jnp.asarray(t, jnp.float32)

  def corrupt(self, z0_BND, t_B, noise_BND):
    t = self._bcast(t_B)
    return (1.0 - t) * z0_BND + t * noise_BND

  def target(self, z0_BND, noise_BND, t_B):
    del t_B
    return noise_BND - z0_BND

  def to_x0(self, z_t_BND, t_B, net_out_BND):
    return z_t_BND - self._bcast(t_B) * net_out_BND

  def per_example_loss(self, net_out_BND, target_BND):
    return jnp.mean(jnp.square(net_out_BND - target_BND), axis=(1, 2))

  def sampling_t_end(self, t_min: float) -> float:
    """The ODE runs to the data end t = 0; sample.t_min is the VP processes' stopping time."""
    del t_min
    return 0.0

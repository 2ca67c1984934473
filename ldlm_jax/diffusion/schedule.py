"""The tangent noise schedule of COSMOS (docs/method.md Section 5.1) and the forward process.

  a_t = 1 / sqrt(1 + d^2 tan^2(pi t / 2)),   s_t = sqrt(1 - a_t^2)
  beta(t) = -d/dt log a_t^2
          = pi d^2 tan(pi t/2) (1 + tan^2(pi t/2)) / (1 + d^2 tan^2(pi t/2))

beta is evaluated with t clipped to <= beta_t_max (0.95), because it grows
without bound as t -> 1 and the Euler-Maruyama solver starts at t = 1.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TangentSchedule:
  d: float = 5.0
  beta_t_max: float = 0.95

  def _x(self, t):
    """d^2 tan^2(pi t / 2), the quantity everything else is a function of."""
    tan = jnp.tan(0.5 * jnp.pi * jnp.asarray(t, jnp.float32))
    return (self.d * tan) ** 2

  def alpha(self, t):
    return jnp.sqrt(1.0 / (1.0 + self._x(t)))

  def sigma(self, t):
    # sqrt(x / (1 + x)) rather than sqrt(1 - a^2): exact near t = 0.
    x = self._x(t)
    return jnp.sqrt(x / (1.0 + x))

  def beta(self, t):
    t = jnp.minimum(jnp.asarray(t, jnp.float32), self.beta_t_max)
    tan = jnp.tan(0.5 * jnp.pi * t)
    d2 = self.d ** 2
    return jnp.pi * d2 * tan * (1.0 + tan ** 2) / (1.0 + d2 * tan ** 2)

  def add_noise(self, z0_BND, t_B, eps_BND):
    """z_t = a_t z0 + s_t eps, with t broadcast over the trailing axes."""
    a = self.alpha(t_B)[:, None, None]
    s = self.sigma(t_B)[:, None, None]
    return a * z0_BND + s * eps_BND


def schedule_from_config(config) -> TangentSchedule:
  return TangentSchedule(d=float(config.diffusion.schedule_d),
                         beta_t_max=float(config.diffusion.beta_t_max))

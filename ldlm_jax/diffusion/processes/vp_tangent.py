"""The paper's process (docs/method.md Section 5.1): the tangent VP schedule with x0 prediction.

  z_t = a_t z0 + s_t eps,   the network predicts x0,   L = mean((x0_hat - z0)^2)

The arithmetic is the one LDLM ran before processes were a seam, so runs and
checkpoints of the default configs give bitwise the same losses and samples.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ldlm_jax.diffusion.schedule import TangentSchedule, schedule_from_config


@dataclasses.dataclass(frozen=True)
class VPTangent:
  schedule: TangentSchedule
  name = 'vp_tangent'
  kind = 'vp'

  @classmethod
  def from_config(cls, config) -> 'VPTangent':
    return cls(schedule_from_config(config))

  # What the VP solvers (Euler-Maruyama, DDIM) read.
  def alpha(self, t):
    return self.schedule.alpha(t)

  def sigma(self, t):
    return self.schedule.sigma(t)

  def beta(self, t):
    return self.schedule.beta(t)

  def corrupt(self, z0_BND, t_B, noise_BND):
    return self.schedule.add_noise(z0_BND, t_B, noise_BND)

  def target(self, z0_BND, noise_BND, t_B):
    del noise_BND, t_B
    return z0_BND

  def to_x0(self, z_t_BND, t_B, net_out_BND):
    del z_t_BND, t_B
    return net_out_BND

  def per_example_loss(self, net_out_BND, target_BND):
    return jnp.mean(jnp.square(net_out_BND - target_BND), axis=(1, 2))

  def sampling_t_end(self, t_min: float) -> float:
    """The reverse SDE stops at sample.t_min (docs/method.md Section 6.2)."""
    return t_min

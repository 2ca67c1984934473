"""ODE steps for flow processes (z_t = (1 - t) z0 + t eps): Euler and Heun.

The denoiser returns x0_hat (every process converts its network output to
x0), and the flow's velocity is recovered from it:

  v(z_t, t) = (z_t - x0_hat) / t            (from z_t = x0 + t v)

  Euler:  z_next = z_t + (t_next - t) v(z_t, t)
  Heun:   z_e    = Euler step;
          z_next = z_t + (t_next - t) (v(z_t, t) + v(z_e, t_next)) / 2

Heun's second evaluation runs in the same scan body. When t_next = 0 the
velocity at t_next is undefined (division by t), so that step is a plain
Euler step, which lands exactly on x0_hat: z_t - t (z_t - x0_hat) / t
(EDM's Algorithm 1 does the same at its last step). The second evaluation's
self-condition is the first evaluation's x0_hat, and the estimate carried to
the next step (and returned by final='x0') is the newest one, at t_next.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _velocity(z, x0_hat, t):
  return (z - x0_hat) / t


def euler_step(denoise_fn, process, z, x0_sc, t, t_next, key):
  """One Euler step of the flow ODE; returns (z_next, z_next, x0_hat)."""
  del process, key
  x0_hat = denoise_fn(z, jnp.full((z.shape[0],), t, jnp.float32), x0_sc).astype(jnp.float32)
  z_next = z + (t_next - t) * _velocity(z, x0_hat, t)
  return z_next, z_next, x0_hat


def heun_step(denoise_fn, process, z, x0_sc, t, t_next, key):
  """One Heun (trapezoidal predictor-corrector) step; plain Euler into t_next = 0."""
  del process, key
  batch = z.shape[0]
  x0_hat = denoise_fn(z, jnp.full((batch,), t, jnp.float32), x0_sc).astype(jnp.float32)
  v = _velocity(z, x0_hat, t)
  z_euler = z + (t_next - t) * v

  def corrected():
    x0_next = denoise_fn(z_euler, jnp.full((batch,), t_next, jnp.float32), x0_hat).astype(jnp.float32)
    v_next = _velocity(z_euler, x0_next, t_next)
    return z + (t_next - t) * 0.5 * (v + v_next), x0_next

  z_next, x0_carry = jax.lax.cond(t_next > 0.0, corrected, lambda: (z_euler, x0_hat))
  return z_next, z_next, x0_carry

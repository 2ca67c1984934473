"""Reverse-time solvers in latent space (SPEC 6), each one compiled `lax.scan`.

Euler-Maruyama on the reverse VP SDE, from t to t_next (dt < 0):

  x0_hat = f(z_t, t, x0_sc)
  score  = -(z_t - a_t x0_hat) / s_t^2
  drift  = -0.5 beta(t) z_t - beta(t) score
  z_mean = z_t + drift dt
  z      = z_mean + sqrt(beta(t)) sqrt(-dt) noise

and the last z_mean is returned (with final='x0', the last x0_hat). Self-conditioning carries the previous
x0_hat (zeros at the first step). 'ddim' is the deterministic DDIM step
z_next = a_next x0_hat + s_next eps_hat, with eps_hat = (z_t - a_t x0_hat) / s_t,
returning the final x0_hat-consistent z.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.diffusion.schedule import TangentSchedule

# f(z_t (B,N,D), t (B,), x0_sc (B,N,D)) -> x0_hat (B,N,D)
DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

SOLVERS = ('euler_maruyama', 'ddim')
# What the sampler returns: 'z' = the last latent of the chain (z_mean for
# Euler-Maruyama, z for DDIM); 'x0' = the denoiser's last clean estimate x0_hat.
FINALS = ('z', 'x0')
TIME_GRIDS = ('uniform', 'adaptive')


def time_grid(num_steps: int, t_min: float, kind: str = 'uniform', probs_K=None):
  """S + 1 times from 1 down to t_min.

  'uniform': linspace(1, t_min, S + 1). 'adaptive': t_i = F^-1(u_i) with u_i
  evenly spaced between F(1) = 1 and F(t_min) under the learned timestep
  CDF, so steps concentrate where the diffusion loss changes fastest.
  """
  if kind == 'uniform':
    return jnp.linspace(1.0, t_min, num_steps + 1, dtype=jnp.float32)
  if kind == 'adaptive':
    if probs_K is None:
      raise ValueError('the adaptive time grid needs the learned bin probabilities')
    u = jnp.linspace(1.0, timesteps_lib.cdf(probs_K, t_min), num_steps + 1)
    grid = timesteps_lib.inverse_cdf(probs_K, u)
    return grid.at[0].set(1.0).at[-1].set(t_min)
  raise ValueError(f'unknown time grid {kind!r}; use one of {TIME_GRIDS}')


def em_step(denoise_fn: DenoiseFn, schedule: TangentSchedule, z, x0_sc, t, t_next, noise):
  """One Euler-Maruyama step; returns (z_next, z_mean, x0_hat)."""
  batch = z.shape[0]
  x0_hat = denoise_fn(z, jnp.full((batch,), t, jnp.float32), x0_sc).astype(jnp.float32)
  a, s = schedule.alpha(t), schedule.sigma(t)
  score = -(z - a * x0_hat) / (s * s)
  beta = schedule.beta(t)
  dt = t_next - t
  drift = -0.5 * beta * z - beta * score
  z_mean = z + drift * dt
  z_next = z_mean + jnp.sqrt(beta) * jnp.sqrt(-dt) * noise
  return z_next, z_mean, x0_hat


def ddim_step(denoise_fn: DenoiseFn, schedule: TangentSchedule, z, x0_sc, t, t_next):
  batch = z.shape[0]
  x0_hat = denoise_fn(z, jnp.full((batch,), t, jnp.float32), x0_sc).astype(jnp.float32)
  a, s = schedule.alpha(t), schedule.sigma(t)
  eps_hat = (z - a * x0_hat) / s
  z_next = schedule.alpha(t_next) * x0_hat + schedule.sigma(t_next) * eps_hat
  return z_next, x0_hat


def sample(denoise_fn: DenoiseFn, schedule: TangentSchedule, rng, shape, grid,
           solver: str = 'euler_maruyama', self_condition: bool = True, final: str = 'z'):
  """Runs the reverse process from z_1 ~ N(0, I) over `grid` as one lax.scan.

  Returns the final latent (B, N, D): with final='z' the last z_mean for
  Euler-Maruyama, the last z for DDIM; with final='x0' the x0_hat of the last
  denoiser call (at t = grid[-2]).
  """
  if solver not in SOLVERS:
    raise ValueError(f'unknown solver {solver!r}; use one of {SOLVERS}')
  if final not in FINALS:
    raise ValueError(f'unknown final {final!r}; use one of {FINALS}')
  rng_init, rng_steps = jax.random.split(rng)
  z1 = jax.random.normal(rng_init, shape, jnp.float32)
  num_steps = grid.shape[0] - 1
  step_keys = jax.random.split(rng_steps, num_steps)
  zeros = jnp.zeros(shape, jnp.float32)

  def body(carry, xs):
    z, x0_sc, _ = carry
    t, t_next, key = xs
    sc = x0_sc if self_condition else zeros
    if solver == 'euler_maruyama':
      noise = jax.random.normal(key, shape, jnp.float32)
      z_next, z_mean, x0_hat = em_step(denoise_fn, schedule, z, sc, t, t_next, noise)
      return (z_next, x0_hat, z_mean), None
    z_next, x0_hat = ddim_step(denoise_fn, schedule, z, sc, t, t_next)
    return (z_next, x0_hat, z_next), None

  (_, x0_last, z_out), _ = jax.lax.scan(body, (z1, zeros, z1), (grid[:-1], grid[1:], step_keys))
  return x0_last if final == 'x0' else z_out

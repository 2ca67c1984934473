"""Reverse-time solvers in latent space (docs/method.md Section 6), each one compiled `lax.scan`.

Euler-Maruyama on the reverse VP SDE, from t to t_next (dt < 0):

  x0_hat = f(z_t, t, x0_sc)
  score  = -(z_t - a_t x0_hat) / s_t^2
  drift  = -0.5 beta(t) z_t - beta(t) score
  z_mean = z_t + drift dt
  z      = z_mean + sqrt(beta(t)) sqrt(-dt) noise

and the last z_mean is returned (with final='x0', the last x0_hat). Self-conditioning carries the previous
x0_hat (zeros at the first step). 'ddim' is the deterministic DDIM step
z_next = a_next x0_hat + s_next eps_hat, with eps_hat = (z_t - a_t x0_hat) / s_t,
returning the final x0_hat-consistent z. 'euler' and 'heun' integrate the
flow ODE of a 'flow' process (diffusion/ode.py).

Solvers come from the SOLVERS registry: each is a step function
step(denoise_fn, process, z, x0_sc, t, t_next, key) -> (z_next, z_out, x0_hat)
(z_out: what final='z' returns after the last step) and the process kind it
integrates. Adding a solver: its step function and one line in SOLVERS.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ldlm_jax.diffusion import ode, processes, timesteps as timesteps_lib
from ldlm_jax.diffusion.schedule import TangentSchedule

# f(z_t (B,N,D), t (B,), x0_sc (B,N,D)) -> x0_hat (B,N,D)
DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# What the sampler returns: 'z' = the last latent of the chain (z_mean for
# Euler-Maruyama, z for the others); 'x0' = the denoiser's last clean estimate x0_hat.
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


def _em(denoise_fn, process, z, x0_sc, t, t_next, key):
  noise = jax.random.normal(key, z.shape, jnp.float32)
  return em_step(denoise_fn, process, z, x0_sc, t, t_next, noise)


def _ddim(denoise_fn, process, z, x0_sc, t, t_next, key):
  del key
  z_next, x0_hat = ddim_step(denoise_fn, process, z, x0_sc, t, t_next)
  return z_next, z_next, x0_hat


@dataclasses.dataclass(frozen=True)
class Solver:
  step: Callable     # (denoise_fn, process, z, x0_sc, t, t_next, key) -> (z_next, z_out, x0_hat)
  kind: str          # the process kind it integrates (processes.KINDS)


SOLVERS = {
    'euler_maruyama': Solver(_em, 'vp'),   # the paper's (docs/method.md 6.3)
    'ddim': Solver(_ddim, 'vp'),           # Song et al. 2021, deterministic
    'euler': Solver(ode.euler_step, 'flow'),
    'heun': Solver(ode.heun_step, 'flow'),
}


def mismatch(solver: str, process) -> str | None:
  """One sentence when `solver` cannot integrate `process` (a name or a process object), else None."""
  name = process if isinstance(process, str) else process.name
  kind = processes.PROCESSES[name].kind
  if solver not in SOLVERS:
    return f'sample.solver={solver!r} is not one of {tuple(SOLVERS)}.'
  if SOLVERS[solver].kind != kind:
    fits = tuple(k for k, v in SOLVERS.items() if v.kind == kind)
    return (f'sample.solver={solver!r} integrates a {SOLVERS[solver].kind} process but '
            f'diffusion.process={name!r} is a {kind} process; set --config.sample.solver '
            f'(or --solver) to one of {fits}.')
  return None


def sample(denoise_fn: DenoiseFn, process, rng, shape, grid,
           solver: str = 'euler_maruyama', self_condition: bool = True, final: str = 'z'):
  """Runs the reverse process from z_1 ~ N(0, I) over `grid` as one lax.scan.

  `process` is a diffusion process (diffusion/processes; a TangentSchedule
  also works for the VP solvers). Returns the final latent (B, N, D): with final='z' the last
  z_mean for Euler-Maruyama, the last z for the others; with final='x0' the
  x0_hat of the last denoiser call (at t = grid[-2]; Heun's corrector at grid[-1]
  when that is > 0).
  """
  if solver not in SOLVERS:
    raise ValueError(f'unknown solver {solver!r}; use one of {tuple(SOLVERS)}')
  if final not in FINALS:
    raise ValueError(f'unknown final {final!r}; use one of {FINALS}')
  rng_init, rng_steps = jax.random.split(rng)
  z1 = jax.random.normal(rng_init, shape, jnp.float32)
  num_steps = grid.shape[0] - 1
  step_keys = jax.random.split(rng_steps, num_steps)
  zeros = jnp.zeros(shape, jnp.float32)
  step = SOLVERS[solver].step
  # A run trained without self-conditioning never saw a non-zero x0 slot (Heun's
  # second call included).
  denoise = denoise_fn if self_condition else (lambda z, t, sc: denoise_fn(z, t, zeros))

  def body(carry, xs):
    z, x0_sc, _ = carry
    t, t_next, key = xs
    z_next, z_out, x0_hat = step(denoise, process, z, x0_sc, t, t_next, key)
    return (z_next, x0_hat, z_out), None

  (_, x0_last, z_out), _ = jax.lax.scan(body, (z1, zeros, z1), (grid[:-1], grid[1:], step_keys))
  return x0_last if final == 'x0' else z_out

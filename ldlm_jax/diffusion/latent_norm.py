"""Per-element standardization of the diffused latents, with running statistics.

The diffusion model sees z0 = (z - mu) / sd, per latent position and
dimension, and a sample is mapped back by z = mu + sd * z0 before decoding.
The statistics are a pytree kept with the parameters (params['latent_stats']):

  {'mean': (N, D), 'var': (N, D), 'count': ()}

updated from every training batch under stop-gradient: the pooled mean and
variance of all batches seen while count < 1 / (1 - decay) (exact dataset
statistics for a frozen encoder), an exponential moving average after that
(tracking a jointly trained encoder). The parameter EMA and checkpoints carry
them like any parameter; the train step overwrites them with the updated
value, so the optimizer never changes them.

Also here: the content diagnostics of a latent batch (how much of the
latents' energy varies across examples, and the time at which that content's
signal-to-noise ratio falls to 1 under a process's schedule).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.diffusion.warmup import scale_gradient

KEY = 'latent_stats'
GRADIENT_MODES = ('invariant', 'raw', 'standardized', 'none')


def init_stats(latent_len: int, latent_dim: int) -> dict:
  return {'mean': jnp.zeros((latent_len, latent_dim), jnp.float32),
          'var': jnp.ones((latent_len, latent_dim), jnp.float32),
          'count': jnp.zeros((), jnp.float32)}


def batch_moments(z_BND):
  z = z_BND.astype(jnp.float32)
  mean = jnp.mean(z, axis=0)
  return mean, jnp.mean(jnp.square(z - mean), axis=0)


def update(stats: dict, z_BND, decay: float) -> dict:
  """The statistics after one more batch (no gradient flows through them)."""
  stats = jax.lax.stop_gradient(stats)
  m, v = batch_moments(jax.lax.stop_gradient(z_BND))
  n = stats['count']
  keep = jnp.minimum(jnp.float32(decay), n / (n + 1.0))
  mean = keep * stats['mean'] + (1.0 - keep) * m
  # Pooled variance about the new mean (exact for the cumulative average).
  var = (keep * (stats['var'] + jnp.square(stats['mean'] - mean))
         + (1.0 - keep) * (v + jnp.square(m - mean)))
  return {'mean': mean, 'var': var, 'count': n + 1.0}


def scale(stats: dict, min_var: float):
  return jnp.sqrt(jnp.maximum(stats['var'], min_var))


def standardize(stats: dict, z_BND, min_var: float):
  return (z_BND - stats['mean']) / scale(stats, min_var)


def unstandardize(stats: dict, z0_BND, min_var: float):
  return stats['mean'] + scale(stats, min_var) * z0_BND


def standardize_for_loss(stats: dict, z_BND, mode: str, min_var: float, lam):
  """The standardized latents the diffusion loss reads, with the encoder's gradient per `mode`.

  The forward value is always standardize(stats, z) (what sampling inverts).
  'invariant': the gradient is that of standardizing with the batch's own
    mean and variance (as batch normalization), so the loss cannot be lowered
    by shrinking or shifting the content: the encoder is only rewarded for
    latents whose content is predictable from the other positions.
  'raw' / 'standardized' / 'none': statistics under stop-gradient, the
    gradient scaled by `encoder_gradient_scale`.
  `lam` (the warmup lambda) multiplies the encoder's gradient in every mode.
  """
  fixed = standardize(stats, z_BND, min_var)
  if mode != 'invariant':
    return scale_gradient(fixed, lam * encoder_gradient_scale(stats, mode, min_var))
  m, v = batch_moments(z_BND)
  live = (z_BND - m) / jnp.sqrt(v + min_var)
  # forward: `fixed`; backward: lam * d(live).
  return jax.lax.stop_gradient(fixed) + lam * (live - jax.lax.stop_gradient(live))


def encoder_gradient_scale(stats: dict, mode: str, min_var: float):
  """Factor on the diffusion gradient reaching the encoder through `standardize`.

  'raw': sd^2 per element, so the encoder receives the gradient of the loss in
  its own units (d/dz of sd^2 * ||x0_hat - z0||^2), the scale it had without
  standardization; 'standardized': 1; 'none': 0.
  """
  if mode == 'raw':
    return jnp.maximum(stats['var'], min_var)
  if mode == 'standardized':
    return jnp.ones_like(stats['var'])
  if mode == 'none':
    return jnp.zeros_like(stats['var'])
  raise ValueError(f'unknown latent_norm.encoder_gradient {mode!r}; use one of {GRADIENT_MODES}')


def content_fraction(z_BND):
  """Share of the latents' mean square that varies across the batch (1 = no constant part)."""
  z = z_BND.astype(jnp.float32)
  _, var = batch_moments(z)
  return jnp.mean(var) / jnp.maximum(jnp.mean(jnp.square(z)), 1e-12)


def content_snr_one_time(process, content_var, num: int = 512):
  """The first t on a grid of `num` points where a_t^2 * content_var / s_t^2 falls below 1.

  content_var: the mean per-element variance across examples of what is
  diffused. Below this t a latent's own noisy value mostly determines it; above
  it the denoiser must rely on the other positions."""
  t = (jnp.arange(num, dtype=jnp.float32) + 0.5) / num
  a = jnp.broadcast_to(process.alpha(t), t.shape)
  s = jnp.broadcast_to(process.sigma(t), t.shape)
  snr = jnp.square(a) * content_var / jnp.maximum(jnp.square(s), 1e-12)
  below = snr < 1.0
  return jnp.where(jnp.any(below), t[jnp.argmax(below)], 1.0)

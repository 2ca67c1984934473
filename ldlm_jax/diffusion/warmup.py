"""Diffusion-to-encoder warmup (paper 5.2 and A.2).

The diffusion branch sees z_diff = lam z + (1 - lam) stop_gradient(z): the
forward value is z, and the latent encoder's gradient from L_diff is scaled
by lam. It is computed as sg(z) + lam (z - sg(z)), which is the same
function but bit-exact in the forward pass (z - sg(z) is exactly 0). lam follows a normalized sigmoid over the first W steps:

  u = step / W,  g(u) = sigmoid(b (u - a)),
  lam = (g(u) - g(0)) / (g(1) - g(0))  for step < W,  1 afterwards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def encoder_warmup_lambda(step, warmup_steps: int, center: float = 0.5,
                          sharpness: float = 10.0):
  """lam(step) in [0, 1]; W = 0 disables the warmup (lam = 1 from step 0)."""
  step = jnp.asarray(step, jnp.float32)
  if warmup_steps <= 0:
    return jnp.ones_like(step)
  g = lambda u: jax.nn.sigmoid(sharpness * (u - center))
  u = jnp.clip(step / warmup_steps, 0.0, 1.0)
  lam = (g(u) - g(0.0)) / (g(1.0) - g(0.0))
  return jnp.where(step >= warmup_steps, 1.0, jnp.clip(lam, 0.0, 1.0))


def scale_gradient(x, lam):
  """Identity in the forward pass; multiplies the gradient reaching x by lam."""
  frozen = jax.lax.stop_gradient(x)
  return frozen + lam * (x - frozen)

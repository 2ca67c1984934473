"""Adaptive timestep sampling (paper 5.3, after Dieleman et al. 2022).

[0, 1] is split into K equal bins. The train state keeps an exponential
moving average Lbar_k of the diffusion loss of the examples that fell in bin
k. Every M steps the bin probabilities are set to

  p_k  proportional to  max(Lbar_k - Lbar_{k-1}, eps),   Lbar_{-1} = 0,

i.e. a density proportional to dL/dt, so the loss grows linearly in the
warped time F(t). An example draws k ~ p, then t ~ U(k/K, (k+1)/K). No loss
reweighting is applied. 'uniform' sampling keeps the same state (so the
diagnostic per-bin loss is still tracked) but draws t ~ U(0, 1).

Until every bin has been seen once, the probabilities stay uniform: an
unseen bin has no loss estimate to difference against.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TimestepSamplerState:
  bin_loss_ema: jax.Array  # (K,) float32, Lbar_k
  bin_seen: jax.Array      # (K,) bool, bin k has an estimate
  probs: jax.Array         # (K,) float32, sums to 1


def init_state(num_bins: int) -> TimestepSamplerState:
  return TimestepSamplerState(
      bin_loss_ema=jnp.zeros((num_bins,), jnp.float32),
      bin_seen=jnp.zeros((num_bins,), bool),
      probs=jnp.full((num_bins,), 1.0 / num_bins, jnp.float32))


def sample(state: TimestepSamplerState, rng, batch_size: int, adaptive: bool):
  """Returns (t_B float32 in [0, 1), bins_B int32)."""
  num_bins = state.probs.shape[0]
  rng_bin, rng_u = jax.random.split(rng)
  u = jax.random.uniform(rng_u, (batch_size,), jnp.float32)
  if adaptive:
    bins = jax.random.categorical(rng_bin, jnp.log(state.probs), shape=(batch_size,))
    t = (bins.astype(jnp.float32) + u) / num_bins
  else:
    t = u
    bins = jnp.floor(t * num_bins).astype(jnp.int32)
  bins = jnp.clip(bins, 0, num_bins - 1).astype(jnp.int32)
  return jnp.clip(t, 0.0, 1.0 - 1e-6), bins


def update_loss_ema(state: TimestepSamplerState, bins_B, losses_B,
                    decay: float) -> TimestepSamplerState:
  """Moves each bin's EMA towards the mean loss of this batch's examples in it."""
  num_bins = state.probs.shape[0]
  losses_B = jax.lax.stop_gradient(losses_B).astype(jnp.float32)
  total = jax.ops.segment_sum(losses_B, bins_B, num_segments=num_bins)
  count = jax.ops.segment_sum(jnp.ones_like(losses_B), bins_B, num_segments=num_bins)
  batch_mean = total / jnp.maximum(count, 1.0)
  hit = count > 0
  moved = jnp.where(state.bin_seen,
                    decay * state.bin_loss_ema + (1.0 - decay) * batch_mean,
                    batch_mean)
  return state.replace(bin_loss_ema=jnp.where(hit, moved, state.bin_loss_ema),
                       bin_seen=state.bin_seen | hit)


def probs_from_losses(bin_loss_K, min_increment: float):
  """p_k proportional to max(Lbar_k - Lbar_{k-1}, eps) with Lbar_{-1} = 0."""
  increments = jnp.diff(bin_loss_K, prepend=0.0)
  weights = jnp.maximum(increments, min_increment)
  return weights / jnp.sum(weights)


def update_probs(state: TimestepSamplerState, min_increment: float) -> TimestepSamplerState:
  new = probs_from_losses(state.bin_loss_ema, min_increment)
  ready = jnp.all(state.bin_seen)
  return state.replace(probs=jnp.where(ready, new, state.probs))


def train_update(state: TimestepSamplerState, step, bins_B, losses_B, *,
                 decay: float, update_every: int, min_increment: float):
  """The per-step update inside the jitted train step (step = the step just taken)."""
  state = update_loss_ema(state, bins_B, losses_B, decay)
  refreshed = update_probs(state, min_increment)
  do_update = (step + 1) % update_every == 0
  return state.replace(probs=jnp.where(do_update, refreshed.probs, state.probs))


def cdf_edges(probs_K):
  """F at the K + 1 bin edges 0, 1/K, ..., 1 (piecewise linear in between)."""
  return jnp.concatenate([jnp.zeros((1,), probs_K.dtype), jnp.cumsum(probs_K)])


def cdf(probs_K, t):
  """The learned CDF F(t), piecewise linear over the bins."""
  num_bins = probs_K.shape[0]
  edges = cdf_edges(probs_K)
  pos = jnp.clip(jnp.asarray(t, jnp.float32) * num_bins, 0.0, num_bins)
  k = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, num_bins - 1)
  return edges[k] + (pos - k) * probs_K[k]


def inverse_cdf(probs_K, u):
  """t = F^-1(u) for u in [0, 1] (used for the adaptive sampling time grid)."""
  num_bins = probs_K.shape[0]
  edges = cdf_edges(probs_K)
  u = jnp.clip(jnp.asarray(u, jnp.float32), 0.0, edges[-1])
  k = jnp.clip(jnp.searchsorted(edges, u, side='right') - 1, 0, num_bins - 1)
  frac = (u - edges[k]) / jnp.maximum(probs_K[k], 1e-12)
  return (k + jnp.clip(frac, 0.0, 1.0)) / num_bins

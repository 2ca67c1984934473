"""The train state and the optimizer (docs/method.md Section 7).

`TrainState` holds only what training changes: step, trainable params,
optimizer state, EMA params, the adaptive timestep sampler's state and the
base RNG key. The frozen token encoder lives outside it (see
`ldlm_jax.models.ldlm.FrozenInputs`).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.training import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array                                   # int32 scalar: steps taken
  params: Any
  opt_state: Any
  ema_params: Any
  timesteps: timesteps_lib.TimestepSamplerState
  rng: jax.Array                                    # base key; step keys = fold_in(rng, step)


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_steps`, then constant (App. C).

  With `optim.decay_steps` > 0, the last `decay_steps` of `train.num_steps`
  decay the rate linearly to 0 (warmup-stable-decay; ours, for short runs).
  """
  oc = config.optim
  lr = float(oc.learning_rate)
  warmup = int(oc.warmup_steps)
  decay = int(oc.get('decay_steps', 0))
  pieces, boundaries = [], []
  if warmup > 0:
    pieces.append(optax.linear_schedule(0.0, lr, warmup))
    boundaries.append(warmup)
  pieces.append(optax.constant_schedule(lr))
  if decay > 0:
    decay_start = max(int(config.train.num_steps) - decay, warmup)
    pieces.append(optax.linear_schedule(lr, 0.0, max(int(config.train.num_steps) - decay_start, 1)))
    boundaries.append(decay_start)
  if len(pieces) == 1:
    return pieces[0]
  return optax.join_schedules(pieces, boundaries=boundaries)


def ema_decay_at(config, step):
  """The parameter-EMA decay for the update made at `step` (steps taken before it).

  With `optim.ema_warmup` (torch_ema's `num_updates`, as COSMOS trains):
  min(ema_decay, (1 + n) / (10 + n)), n = step + 1 the updates made so far,
  so a short run's EMA does not keep most of its random initialisation.
  Without it, the constant decay as a Python float (the program is unchanged).
  """
  decay = float(config.optim.ema_decay)
  if not config.optim.get('ema_warmup', False):
    return decay
  n = jnp.asarray(step, jnp.float32) + 1.0
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decoupled weight decay on all params,
  as torch.optim.AdamW in the TEncDM/COSMOS code the defaults come from)."""
  oc = config.optim
  return optax.chain(
      optax.clip_by_global_norm(float(oc.grad_clip_norm)),
      optax.adamw(learning_rate_schedule(config), b1=float(oc.b1), b2=float(oc.b2),
                  eps=float(oc.eps), weight_decay=float(oc.weight_decay)))


def create_train_state(model, config, rng) -> TrainState:
  """Initializes params (and their EMA copy), optimizer and sampler state."""
  init_rng, state_rng = jax.random.split(rng)
  params = model.init(init_rng)
  optimizer = make_optimizer(config)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer.init(params),
      ema_params=jax.tree.map(jnp.copy, params),
      timesteps=timesteps_lib.init_state(int(config.timesteps.num_bins)),
      rng=state_rng)


def create_sharded_train_state(model, config, mesh, rng):
  """Creates the state directly in its shardings (no full host copy under fsdp).

  Returns (state, state_shardings).
  """
  init = lambda r: create_train_state(model, config, r)
  shapes = jax.eval_shape(init, rng)
  shardings = sharding_lib.state_shardings(mesh, shapes)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings

"""The jitted train and eval steps over a device mesh (no pmap).

One call = one optimizer step: the loss and its gradient, AdamW, the
parameter EMA, the adaptive timestep sampler's update and the merge of this
step's metrics into an on-device accumulator (clu.metrics), so the host only
fetches metrics every `train.log_every` steps. The state and the metric
accumulator are donated; the frozen encoder inputs are not.

A step whose loss or gradient is not finite leaves params, optimizer state
and EMA unchanged and is counted in the `nonfinite` metric; the loop stops
the run when it sees it, so the last checkpoint stays good.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics

from ldlm_jax.diffusion import latent_norm
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib
from ldlm_jax.training.state import TrainState, learning_rate_schedule, make_optimizer

LOSS_METRICS = ('loss', 'diffusion_loss', 'reconstruction_loss', 'ce_loss',
                'token_accuracy', 'encoder_lambda', 'latent_norm')
TRAIN_METRICS = LOSS_METRICS + ('learning_rate', 'grad_norm', 'nonfinite')


@functools.lru_cache(maxsize=None)
def _collection(names: tuple[str, ...]):
  # One class per set of names: jit and checkpoints compare the accumulator's type.
  return clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})


def train_metrics_type(extra: tuple[str, ...] = ()):
  """The training accumulator: TRAIN_METRICS plus a latent space's own terms (`model.extra_metrics`)."""
  return _collection(LOSS_METRICS + tuple(extra) + TRAIN_METRICS[len(LOSS_METRICS):])


def eval_metrics_type(extra: tuple[str, ...] = ()):
  return _collection(LOSS_METRICS + tuple(extra))


def empty_train_metrics(extra: tuple[str, ...] = ()):
  """An empty accumulator; pass `model.extra_metrics` (empty for LDLM, the VAE's KL and REPA)."""
  return train_metrics_type(tuple(extra)).empty()


def train_step(model, config, state: TrainState, frozen, batch, metrics):
  """`batch`: the batch dict of docs/architecture.md ('tokens', and 'prompt_mask' when conditioning)."""
  optimizer = make_optimizer(config)
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
  (loss, aux), grads = grad_fn(state.params, frozen, batch, rng, state.step, state.timesteps)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = optax.incremental_update(params, state.ema_params,
                                        step_size=1.0 - state_lib.ema_decay_at(config, state.step))
  if latent_norm.KEY in aux:
    # Running latent statistics are set, not optimized: the raw and the EMA
    # params both hold the value the loss used (diffusion/latent_norm.py).
    params = {**params, latent_norm.KEY: aux[latent_norm.KEY]}
    ema_params = {**ema_params, latent_norm.KEY: aux[latent_norm.KEY]}
  tc = config.timesteps
  sampler = timesteps_lib.train_update(
      state.timesteps, state.step, aux['timestep_bins'], aux['diffusion_per_example'],
      decay=float(tc.ema_decay), update_every=int(tc.update_every),
      min_increment=float(tc.min_increment))

  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      ema_params=keep(ema_params, state.ema_params),
      timesteps=keep(sampler, state.timesteps))

  scalars = {k: aux[k] for k in LOSS_METRICS + model.extra_metrics}
  scalars['learning_rate'] = learning_rate_schedule(config)(state.step)
  scalars['grad_norm'] = grad_norm
  scalars['nonfinite'] = 1.0 - finite.astype(jnp.float32)
  metrics = metrics.merge(train_metrics_type(model.extra_metrics).single_from_model_output(**scalars))
  return new_state, metrics


def eval_step(model, params, frozen, batch, rng, step, sampler_state):
  _, aux = model.loss_fn(params, frozen, batch, rng, step, sampler_state)
  names = LOSS_METRICS + model.extra_metrics
  return eval_metrics_type(model.extra_metrics).single_from_model_output(**{k: aux[k] for k in names})


def frozen_shardings(mesh, frozen):
  return jax.tree.map(lambda _: sharding_lib.replicated(mesh), frozen)


def compile_train_step(model, config, mesh, state_shapes, frozen):
  """jit(train_step) with explicit shardings; the state and metrics are donated.

  The batch sharding is a prefix of the batch dict: every entry is split over the data axes."""
  state_sh = sharding_lib.state_shardings(mesh, state_shapes)
  metrics_sh = jax.tree.map(lambda _: sharding_lib.replicated(mesh),
                            empty_train_metrics(model.extra_metrics))
  fn = functools.partial(train_step, model, config)
  return jax.jit(
      fn,
      in_shardings=(state_sh, frozen_shardings(mesh, frozen), sharding_lib.batch_sharding(mesh),
                    metrics_sh),
      out_shardings=(state_sh, metrics_sh),
      donate_argnums=(0, 3))


def compile_eval_step(model, mesh, params_shapes, frozen):
  params_sh = sharding_lib.state_shardings(mesh, params_shapes)
  rep = sharding_lib.replicated(mesh)
  return jax.jit(
      functools.partial(eval_step, model),
      in_shardings=(params_sh, frozen_shardings(mesh, frozen), sharding_lib.batch_sharding(mesh),
                    rep, rep, rep),
      out_shardings=rep)

"""`train.init_from`: start a run from components of another run (two-stage training).

The components named in `train.init_from.components` are read from that run's
checkpoint (its EMA params by default, via the inference state: no optimizer
state is read) and either

  * kept frozen (`train.init_from.frozen=True`): they go into
    `FrozenInputs.components`, outside the train state, so no optimizer slot,
    weight decay, EMA or donation can touch them; the run's own checkpoints
    store them (item 'frozen'), so resuming and sampling do not need the
    source run again; or
  * used as the initial value of trainable params (and of their EMA).
"""

from __future__ import annotations

import os

import jax

from ldlm_jax.errors import ConfigError
from ldlm_jax.training import checkpoint as ckpt_lib, restore, sharding as sharding_lib


def _shapes(tree):
  return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


def source_meta(config) -> dict:
  """The source run's checkpoint meta: its normalization statistics must be reused,
  or frozen components would read differently normalized features."""
  fc = config.train.init_from
  if not os.path.isdir(os.path.join(os.path.abspath(fc.workdir), 'checkpoints')):
    raise ConfigError(f'train.init_from.workdir={fc.workdir!r} holds no checkpoints/; '
                      'train that run first or fix the path.')
  checkpointer = ckpt_lib.Checkpointer(os.path.abspath(fc.workdir), read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise ConfigError(f'train.init_from.workdir={fc.workdir!r} holds no checkpoint; '
                        'train that run first or fix the path.')
    return checkpointer.read_meta(int(fc.step) or max(steps))
  finally:
    checkpointer.close()


def load_components(config, model, mesh) -> dict:
  """{component: params} from the source run, checked against this model's shapes."""
  fc = config.train.init_from
  names = [s for s in fc.components.split(',') if s]
  source_dir = os.path.abspath(fc.workdir)
  kind = 'ema_params' if fc.use_ema else 'params'
  source = restore.load_run(source_dir, int(fc.step) or None, mesh, params=kind)
  source_params = getattr(source.state, kind)
  expected = jax.eval_shape(model.init_components, jax.random.PRNGKey(0))
  # Frozen components the model takes from the frozen encoder (a tied head's table) are not asked for.
  missing = sorted(set(model.frozen_names) - set(names) - set(getattr(model, 'encoder_components', ())))
  if missing:
    raise ConfigError(f'this run needs the frozen components {missing} from train.init_from; '
                      'add them to --config.train.init_from.components.')
  taken = {}
  for name in names:
    if name not in source_params:
      raise ConfigError(f'the run in {source_dir} has no component {name!r} (it has '
                        f'{sorted(source_params)}); fix --config.train.init_from.components.')
    if name not in expected:
      raise ConfigError(f'this model has no component {name!r} (it has {sorted(expected)}); '
                        'fix --config.train.init_from.components.')
    if _shapes(source_params[name]) != _shapes(expected[name]):
      raise ConfigError(f'component {name!r} of the run in {source_dir} has other shapes than this '
                        'config builds; use the same model settings as that run.')
    taken[name] = source_params[name]
  return taken


def apply(config, model, state, mesh, state_shardings):
  """(state with the trainable taken components, {frozen component: params})."""
  taken = load_components(config, model, mesh)
  frozen = {k: v for k, v in taken.items() if k in model.frozen_names}
  frozen = jax.device_put(frozen, sharding_lib.replicated(mesh))
  trainable = {k: v for k, v in taken.items() if k not in model.frozen_names}
  if trainable:
    params = {**state.params, **jax.device_put(trainable, {k: state_shardings.params[k] for k in trainable})}
    ema = {**state.ema_params, **jax.device_put(trainable, {k: state_shardings.ema_params[k] for k in trainable})}
    # AdamW's moments start at zero whatever the params are, so opt_state stays valid.
    state = state.replace(params=params, ema_params=ema)
  return state, frozen

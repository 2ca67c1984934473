"""Checkpoints: one orbax CheckpointManager step holds everything a resume needs.

Items of a checkpoint step (workdir/checkpoints/<step>/):
  state    the TrainState (params, optimizer, EMA, timestep sampler, rng)
  train_metrics  the on-device metric accumulator, so a resume mid-window logs the
           same averages as a run that was never interrupted
  data     the grain iterator state (one file per process)
  meta     JSON: the model-defining config, the frozen encoder identity and
           the normalization statistics (so sampling decodes identically)
  frozen   the frozen components taken from `train.init_from` (only when
           there are any), so resuming and sampling need not find that run

Saving is asynchronous (the train loop continues while the arrays are
written); a step directory appears only once complete, so a run killed
mid-save resumes from the previous complete step.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from ldlm_jax.config import ConfigError

# The checkpoint signature is derived: every field of these sections, now and
# in future, takes part (a new field cannot escape it), ...
SIGNATURE_SECTIONS = ('encoder', 'model', 'latent_space', 'diffusion')
# ... plus these fields of sections that mostly hold run settings ...
SIGNATURE_FIELDS = ('data.seq_len', 'loss.reconstruction', 'loss.train_token_decoder',
                    'timesteps.num_bins', 'train.init_from.components', 'train.init_from.frozen')
# ... minus fields that only choose how the same model is computed or found.
COMPUTE_ONLY_FIELDS = ('encoder.path', 'encoder.dtype', 'encoder.norm_num_chunks',
                       'encoder.norm_min_var', 'model.dtype', 'model.attention_impl',
                       'diffusion.self_cond_mode')
# The hand-kept list of the first version, kept to read old checkpoints' meta.
MODEL_DEFINING_KEYS = (
    'encoder.name', 'encoder.layer', 'encoder.input', 'data.seq_len', 'model.latent_len',
    'model.latent_dim', 'model.latent_encoder', 'model.latent_decoder', 'model.token_decoder',
    'model.denoiser', 'loss.reconstruction', 'loss.train_token_decoder', 'timesteps.num_bins')


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, path + '.'))
    else:
      out[path] = value
  return out


def model_signature(config) -> dict:
  """The part of the config a checkpoint is tied to: {dotted field: plain JSON value}."""
  plain = json.loads(config.to_json_best_effort())
  out = {}
  for section in SIGNATURE_SECTIONS:
    out.update(_flatten(plain.get(section, {}), section + '.'))
  flat = _flatten(plain)
  for key in SIGNATURE_FIELDS:
    if key in flat:
      out[key] = flat[key]
  for key in COMPUTE_ONLY_FIELDS:
    out.pop(key, None)
  return out


class CheckpointMismatchError(ConfigError):
  pass


def saved_signature(meta: dict) -> dict:
  """The signature a checkpoint was written with, from its meta.

  Derived from the run's full saved config laid over today's schema (a field
  added since keeps the default the run was trained with), so checkpoints
  written before the signature was derived compare the same way. Without a
  saved config, the old per-key dict (values may be whole sections) is flattened.
  """
  if 'config' in meta:
    from ldlm_jax.config import from_saved  # pylint: disable=import-outside-toplevel
    return model_signature(from_saved(meta['config']))
  saved = meta.get('model', meta)
  return _flatten({k: v for k, v in saved.items()})


def check_signature(saved: dict, config, where: str) -> None:
  """Raises CheckpointMismatchError (one sentence) when `config` does not fit the checkpoint.

  `saved` is the checkpoint's meta (or, as before, its 'model' entry).
  """
  expected = saved_signature(saved)
  current = model_signature(config)
  for key, value in expected.items():
    if key in current and current[key] != value:
      raise CheckpointMismatchError(
          f'The checkpoint in {where} was trained with {key}={value!r} but the config says '
          f'{current[key]!r}; use the original config or a new --workdir (nothing was overwritten).')


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager with the items above."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            'train_metrics': ocp.StandardCheckpointHandler(),
            'data': grain.checkpoint.CheckpointHandler(),
            'meta': ocp.JsonCheckpointHandler(),
            'frozen': ocp.StandardCheckpointHandler(),
        })

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, metrics, data_iterator, meta: dict, frozen=None) -> None:
    items = {
        'state': ocp.args.StandardSave(state),
        'train_metrics': ocp.args.StandardSave(metrics),
        'meta': ocp.args.JsonSave(meta),
    }
    if frozen:
      items['frozen'] = ocp.args.StandardSave(frozen)
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state, abstract_metrics=None, data_iterator=None,
              abstract_frozen=None):
    """Restores into the given abstract pytrees (ShapeDtypeStructs with shardings)."""
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if abstract_frozen:
      items['frozen'] = ocp.args.StandardRestore(abstract_frozen)
    if abstract_metrics is not None:
      items['train_metrics'] = ocp.args.StandardRestore(abstract_metrics)
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointMismatchError(
          f'The checkpoint at step {step} in {self.directory} does not fit this model '
          f'({type(e).__name__}: {str(e).splitlines()[0][:200]}); use the config it was trained '
          'with or a new --workdir (nothing was overwritten).') from e
    return restored

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def ensure_abstract(tree) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree)

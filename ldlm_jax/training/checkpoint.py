"""Checkpoints: one orbax CheckpointManager step holds everything a resume needs.

Items of a checkpoint step (workdir/checkpoints/<step>/):
  state    the TrainState (params, optimizer, EMA, timestep sampler, rng)
  train_metrics  the on-device metric accumulator, so a resume mid-window logs the
           same averages as a run that was never interrupted
  data     the grain iterator state (one file per process)
  meta     JSON: the model-defining config, the frozen encoder identity and
           the normalization statistics (so sampling decodes identically)

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

# Config fields whose change makes a checkpoint unusable (shapes or meaning).
MODEL_DEFINING_KEYS = (
    'encoder.name', 'encoder.layer', 'encoder.input', 'data.seq_len', 'model.latent_len',
    'model.latent_dim', 'model.latent_encoder', 'model.latent_decoder', 'model.token_decoder',
    'model.denoiser', 'loss.reconstruction', 'loss.train_token_decoder', 'timesteps.num_bins')


def model_signature(config) -> dict:
  """The part of the config a checkpoint is tied to, as plain JSON values."""
  out = {}
  for key in MODEL_DEFINING_KEYS:
    node = config
    for part in key.split('.'):
      node = node[part]
    out[key] = node.to_dict() if hasattr(node, 'to_dict') else node
  return json.loads(json.dumps(out))


class CheckpointMismatchError(ConfigError):
  pass


def check_signature(saved: dict, config, where: str) -> None:
  current = model_signature(config)
  for key in MODEL_DEFINING_KEYS:
    if key in saved and saved[key] != current[key]:
      raise CheckpointMismatchError(
          f'The checkpoint in {where} was trained with {key}={saved[key]!r} but the config says '
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
        })

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, metrics, data_iterator, meta: dict) -> None:
    items = {
        'state': ocp.args.StandardSave(state),
        'train_metrics': ocp.args.StandardSave(metrics),
        'meta': ocp.args.JsonSave(meta),
    }
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state, abstract_metrics=None, data_iterator=None):
    """Restores into the given abstract pytrees (ShapeDtypeStructs with shardings)."""
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
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

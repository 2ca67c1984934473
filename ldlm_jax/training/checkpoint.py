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

import gc
import json
import logging
import os
import sys
import time
import traceback
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from ldlm_jax.config import from_saved
from ldlm_jax.errors import ConfigError

# The checkpoint signature is derived: every field of these sections, now and
# in future, takes part (a new field cannot escape it), ...
SIGNATURE_SECTIONS = ('encoder', 'model', 'latent_space', 'diffusion')
# ... plus these fields of sections that mostly hold run settings ...
SIGNATURE_FIELDS = ('data.seq_len', 'loss.reconstruction', 'loss.train_token_decoder',
                    'timesteps.num_bins', 'train.init_from.components', 'train.init_from.frozen',
                    # the denoiser's condition path (its params); the mask distribution is a
                    # training setting like the optimizer's and may change on resume
                    'condition.enabled', 'condition.path',
                    # whether params carry latent statistics (and what sampling decodes)
                    'latent_norm.mode',
                    # what is trained (ldlm_jax/methods; MDLM's and AR's params have the same
                    # shapes) and what a baseline's backbone reads
                    'method.name', 'method.time_conditioning')
# ... minus fields that only choose how the same model is computed or found.
COMPUTE_ONLY_FIELDS = ('encoder.path', 'encoder.dtype', 'encoder.norm_num_chunks',
                       'encoder.norm_min_var', 'model.dtype', 'model.attention_impl',
                       'model.remat', 'model.attention_query_chunk', 'diffusion.self_cond_mode')
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


class CheckpointDamagedError(ConfigError):
  """A checkpoint step whose files cannot be read (truncated, missing an item): not a config fault."""

  def __init__(self, step: int, directory: str, reason: str):
    self.step, self.reason = step, reason
    super().__init__(f'The checkpoint at step {step} in {directory} is damaged ({reason}).')


def reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else ''
  text = text.split('. See full TensorStore')[0][:160]
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def _leaf_name(path) -> str:
  return '.'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def shape_mismatch(stored_tree, abstract_tree) -> str | None:
  """The first leaf of `abstract_tree` whose stored shape differs (or is missing), else None."""
  stored = {getattr(leaf, 'name', None) or _leaf_name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(stored_tree)[0]
            if hasattr(leaf, 'shape')}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_tree)[0]:
    name = _leaf_name(path)
    if name not in stored:
      return f'it has no {name}'
    if stored[name] != tuple(leaf.shape):
      return f'{name} has shape {stored[name]}, the model needs {tuple(leaf.shape)}'
  return None


def saved_signature(meta: dict) -> dict:
  """The signature a checkpoint was written with, from its meta.

  Derived from the run's full saved config laid over today's schema (a field
  added since keeps the default the run was trained with), so checkpoints
  written before the signature was derived compare the same way. Without a
  saved config, the old per-key dict (values may be whole sections) is flattened.
  """
  if 'config' in meta:
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
        # A reader passes neither a keep count nor a save interval (orbax warns about both).
        max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
        create=not read_only, read_only=read_only,
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
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:
      # A missing item is a KeyError, a truncated file a JSON or tensorstore error.
      raise CheckpointDamagedError(step, self.directory, f'its meta item: {reason(e)}') from e
    if not isinstance(meta, dict):
      raise CheckpointDamagedError(step, self.directory, 'its meta item is not a JSON object')
    return meta

  def restore(self, step: int, abstract_state, abstract_metrics=None, data_iterator=None,
              abstract_frozen=None):
    """Restores into the given abstract pytrees (ShapeDtypeStructs with shardings)."""
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if abstract_frozen:
      items['frozen'] = ocp.args.StandardRestore(abstract_frozen)
    if abstract_metrics is not None and self._metrics_fit(step, abstract_metrics):
      items['train_metrics'] = ocp.args.StandardRestore(abstract_metrics)
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    # Shapes are compared from the stored metadata first, so that a model that does not fit
    # (the user's config) and files that cannot be read (damage) are told apart.
    try:
      stored = self.manager.metadata(step).item_metadata['state']
    except Exception as e:
      raise CheckpointDamagedError(step, self.directory, f'its state metadata: {reason(e)}') from e
    if stored is None:
      raise CheckpointDamagedError(step, self.directory, 'it has no state item')
    mismatch = shape_mismatch(stored, abstract_state)
    if mismatch:
      raise CheckpointMismatchError(
          f'The checkpoint at step {step} in {self.directory} does not fit this model '
          f'({mismatch}); use the config it was trained with or a new --workdir '
          '(nothing was overwritten).')
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
      if isinstance(e, ValueError) and 'structures do not match' in str(e):
        # The checkpoint holds parts this model lacks: a config (or code) change, not damage.
        raise CheckpointMismatchError(
            f'The checkpoint at step {step} in {self.directory} does not fit this model '
            f'(its tree of arrays differs: {reason(e)}); use the config it was trained with '
            'or a new --workdir (nothing was overwritten).') from e
      raise CheckpointDamagedError(step, self.directory, reason(e)) from e
    return restored

  def _metrics_fit(self, step: int, abstract_metrics) -> bool:
    """Whether the stored metric accumulator has the entries of `abstract_metrics`.

    A run saved before a metric was added resumes with a fresh accumulator
    (only the partial logging window is lost) instead of failing."""
    try:
      stored = self.manager.metadata(step).item_metadata['train_metrics']
    except Exception:
      return True   # unreadable: let the restore report the damage
    if stored is None:
      return True
    names = lambda tree: {_leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    try:
      return names(stored) == names(abstract_metrics)
    except Exception:
      return True

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def ensure_abstract(tree) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree)


DAMAGED_DIR = 'damaged_checkpoints'


def _is_failed_read_noise(unraisable) -> bool:
  """An error left behind by the array reads of a damaged step (reported once already)."""
  exc, obj = unraisable.exc_value, unraisable.object
  if isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc):
    return True    # tensorstore completing a read after orbax's event loop closed
  code = getattr(obj, 'cr_code', None)
  return code is not None and 'orbax' in code.co_filename   # an orbax read coroutine


def _is_closed_loop_callback(exc_type, exc, tb) -> bool:
  """A tensorstore read completing into orbax's closed event loop, printed by PyErr_Print.

  Tensorstore hands each finished read back with `loop.call_soon_threadsafe` from its own
  (non-Python) thread; when the loop is already closed the call raises, and the error goes
  to `sys.excepthook` with a traceback that lies wholly inside asyncio.
  """
  if exc_type is not RuntimeError or 'Event loop is closed' not in str(exc) or tb is None:
    return False
  frames = traceback.extract_tb(tb)
  return frames[0].name == 'call_soon_threadsafe' and all(
      os.path.basename(os.path.dirname(f.filename)) == 'asyncio' for f in frames)


class _NeverRetrieved(logging.Filter):
  def filter(self, record):
    return 'exception was never retrieved' not in record.getMessage()


_SILENCED = False


def _silence_failed_reads() -> None:
  """Drops the errors a failed restore leaves behind, without their tracebacks.

  When orbax's restore of a damaged step fails, its other array reads are still in
  flight: they complete later, on tensorstore threads, into a closed event loop, and
  Python would print each as "Exception ignored ..." (kilobytes per array, at any later
  moment, up to the interpreter's exit), or as a bare traceback of asyncio's
  `call_soon_threadsafe` through `sys.excepthook`, plus asyncio's "exception was never
  retrieved". The damage has already been reported in one sentence. Installed once, only
  after damage was found; every other error still reaches the previous hooks.
  """
  global _SILENCED
  if not _SILENCED:
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: None if _is_failed_read_noise(u) else previous(u)
    previous_excepthook = sys.excepthook
    sys.excepthook = lambda t, e, tb: (None if _is_closed_loop_callback(t, e, tb)
                                       else previous_excepthook(t, e, tb))
    logging.getLogger('asyncio').addFilter(_NeverRetrieved())
    _SILENCED = True
  gc.collect()


def restore_latest_intact(checkpointer: Checkpointer, restore_fn, log, *, steps=None,
                          set_aside: bool = False):
  """(step, restore_fn(step)) for the newest step that reads; damaged newer steps are skipped.

  One warning names each damaged step. The damaged step stays on disk for inspection: in
  place for readers (`set_aside=False`, sampling), or moved to workdir/damaged_checkpoints/
  by a resuming trainer (`set_aside=True`), so that orbax neither writes the next save of
  that step number into it nor counts it among the `keep` newest steps it prunes. Nothing
  is moved unless an intact step was found (a rerun must not silently start from scratch).
  A mismatch with the config (CheckpointMismatchError) is not damage and is raised at once.
  """
  steps = sorted(checkpointer.all_steps() if steps is None else steps, reverse=True)
  damaged = []
  for step in steps:
    try:
      result = restore_fn(step)
    except CheckpointDamagedError as e:
      _silence_failed_reads()
      if len(steps) == 1:
        raise  # one step was asked for: nothing to fall back to
      damaged.append((step, e.reason))
      continue
    for bad, reason in damaged:
      where = os.path.join(checkpointer.directory, str(bad))
      if set_aside and jax.process_index() == 0:
        target = os.path.join(os.path.dirname(checkpointer.directory), DAMAGED_DIR, str(bad))
        if os.path.exists(target):
          target = f'{target}.{int(time.time())}'
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(where, target)
        where = target
      log(f'WARNING: checkpoint step {bad} is damaged ({reason}); using step {step} instead; '
          f'the damaged step is kept in {where} for inspection.')
    if damaged and set_aside:
      checkpointer.manager.reload()
    return step, result
  raise CheckpointDamagedError(
      steps[0] if steps else -1, checkpointer.directory,
      'and so is every older step; nothing was moved: restore them from a backup, or move '
      'the checkpoints/ folder aside to train from scratch')

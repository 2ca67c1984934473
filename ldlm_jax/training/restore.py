"""Loading a trained run from its work directory, for sampling and post-training.

A run is fully described by its latest (or a chosen) checkpoint: the config,
the encoder dims, the tokenizer fingerprint and the normalization statistics
live in the checkpoint's `meta` item. Sampling therefore needs no frozen
encoder weights, only the tokenizer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from typing import Any

import jax
import ml_collections
import numpy as np

from ldlm_jax.config import ConfigError, from_saved
from ldlm_jax.encoders.registry import load_encoder_tokenizer
from ldlm_jax.encoders.tokenizers import TextTokenizer, load_tokenizer
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import checkpoint as ckpt_lib
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib


@dataclasses.dataclass
class Run:
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: LDLM
  state: Any                    # TrainState, replicated over `mesh`
  tokenizer: TextTokenizer
  meta: dict
  mesh: Any


def _tokenizer_for(config, meta: dict) -> TextTokenizer:
  errors = []
  for attempt in ('config', 'encoder_dir'):
    try:
      if attempt == 'config':
        tok = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
      else:
        tok = load_tokenizer(meta['encoder_dir'])
    except (OSError, ValueError, KeyError) as e:  # ConfigError is a ValueError.
      errors.append(str(e))
      continue
    if tok.fingerprint == meta.get('tokenizer', tok.fingerprint):
      return tok
    errors.append(f'the tokenizer from the {attempt} differs from the training one')
  raise ConfigError(
      'Cannot find the tokenizer this run was trained with (' + '; '.join(errors) +
      '); set LDLM_*_PATH or encoder.path so that the encoder directory is found.')


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


def load_run(workdir: str, step: int | None = None, mesh=None) -> Run:
  """Restores the checkpoint at `step` (latest if None) of the run in `workdir`."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ConfigError(
        f'{workdir} has no checkpoints/ directory; train first with '
        f'`python -m ldlm_jax.train --config ... --workdir {workdir}`.')
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  if not steps:
    raise ConfigError(f'{workdir}/checkpoints holds no complete checkpoint yet; train longer.')
  if step is not None and step not in steps:
    raise ConfigError(f'No checkpoint at step {step} in {workdir}; available steps: {sorted(steps)}.')
  if mesh is None:
    mesh = sharding_lib.make_mesh(ml_collections.ConfigDict({'mesh': {'data': -1, 'fsdp': 1}}))

  def restore_step(step):
    meta = checkpointer.read_meta(step)
    missing = [k for k in ('config', 'feature_dim', 'vocab_size') if k not in meta]
    if missing:
      raise ckpt_lib.CheckpointDamagedError(step, checkpointer.directory,
                                            f'its meta item has no {missing[0]!r}')
    config = from_saved(meta['config'])
    dims = types.SimpleNamespace(hidden_size=int(meta['feature_dim']), vocab_size=int(meta['vocab_size']))
    model = LDLM(config, dims)
    rng = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda r: state_lib.create_train_state(model, config, r), rng)
    state_sh = sharding_lib.state_shardings(mesh, shapes)
    restored = checkpointer.restore(step, ckpt_lib.abstract_with_shardings(shapes, state_sh))
    return meta, config, model, restored

  # The latest step unless it is damaged (then the newest intact one, with a warning).
  step, (meta, config, model, restored) = ckpt_lib.restore_latest_intact(
      checkpointer, restore_step, _warn, steps=steps if step is None else [step])
  checkpointer.close()
  return Run(workdir=workdir, step=int(step), config=config, model=model,
             state=restored['state'], tokenizer=_tokenizer_for(config, meta), meta=meta, mesh=mesh)


def norm_stats(meta: dict):
  return np.asarray(meta['norm_mean'], np.float32), np.asarray(meta['norm_std'], np.float32)

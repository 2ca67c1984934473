"""Loading a trained run from its work directory, for sampling and post-training.

A run is fully described by its latest (or a chosen) checkpoint: the config,
the encoder dims, the tokenizer fingerprint and the normalization statistics
live in the checkpoint's `meta` item. Sampling therefore needs no frozen
encoder weights, only the tokenizer.

Sampling and evaluation restore an `InferenceState` (after md4's
inference state; docs/architecture.md): the EMA (or raw) parameters, the timestep sampler and the
frozen components, never the optimizer moments, so a large run samples on a
host that could not hold its train state.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from typing import Any

import flax.struct
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ldlm_jax.config import from_saved
from ldlm_jax.encoders.registry import load_encoder_tokenizer
from ldlm_jax.encoders.tokenizers import TextTokenizer, load_tokenizer
from ldlm_jax.errors import ConfigError
from ldlm_jax.methods import build_model
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import checkpoint as ckpt_lib
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib


PARAM_KINDS = ('ema_params', 'params')


@flax.struct.dataclass
class InferenceState:
  """What sampling reads from a checkpoint. The params hold the run's frozen
  components too (`LDLM.with_frozen`); the kind not restored is None."""
  step: jax.Array
  ema_params: Any
  params: Any
  timesteps: Any


@dataclasses.dataclass
class Run:
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: LDLM
  state: InferenceState         # replicated over `mesh`
  tokenizer: TextTokenizer
  meta: dict
  mesh: Any

  def check_can_sample(self) -> None:
    if not self.model.latent_space.trains_diffusion:
      raise ConfigError(
          f'The run in {self.workdir} is an autoencoder stage without a denoiser '
          f'(latent_space.stage={self.config.latent_space.stage!r}); sample from its stage-two run.')


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


def load_run(workdir: str, step: int | None = None, mesh=None, params: str = 'ema_params') -> Run:
  """Restores the inference state at `step` (latest if None) of the run in `workdir`.

  `params`: 'ema_params' (sampling's default) or 'params' (the raw weights). A damaged
  latest step is skipped for the newest intact one, with a warning (left in place).
  """
  if params not in PARAM_KINDS:
    raise ValueError(f'params must be one of {PARAM_KINDS}')
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
    model = build_model(config, dims)   # LDLM, or a baseline (config.method.name)
    state = restore_inference_state(checkpointer, step, model, config, mesh, params)
    return meta, config, model, state

  # The latest step unless it is damaged (then the newest intact one, with a warning).
  step, (meta, config, model, state) = ckpt_lib.restore_latest_intact(
      checkpointer, restore_step, _warn, steps=steps if step is None else [step])
  checkpointer.close()
  return Run(workdir=workdir, step=int(step), config=config, model=model,
             state=state, tokenizer=_tokenizer_for(config, meta), meta=meta, mesh=mesh)


def restore_inference_state(checkpointer, step: int, model, config, mesh, params: str = 'ema_params'):
  """Partial restore of one checkpoint step: `params` kind, sampler state, frozen components."""
  rng = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(lambda r: state_lib.create_train_state(model, config, r), rng)
  state_sh = sharding_lib.state_shardings(mesh, shapes)
  wanted = {'step': shapes.step, params: getattr(shapes, params), 'timesteps': shapes.timesteps}
  wanted_sh = {'step': state_sh.step, params: getattr(state_sh, params), 'timesteps': state_sh.timesteps}
  abstract = ckpt_lib.abstract_with_shardings(wanted, wanted_sh)
  restored = _restore_partial(checkpointer, step, 'state', abstract)
  frozen = {}
  if model.frozen_names:
    all_shapes = jax.eval_shape(model.init_components, rng)
    rep = sharding_lib.replicated(mesh)
    abstract_frozen = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                                       all_shapes[k]) for k in model.frozen_names}
    frozen = _restore_partial(checkpointer, step, 'frozen', abstract_frozen)
  kinds = {k: None for k in PARAM_KINDS}
  kinds[params] = {**frozen, **restored[params]}
  return InferenceState(step=restored['step'], timesteps=restored['timesteps'], **kinds)


def _restore_partial(checkpointer, step: int, item: str, abstract):
  """Restores the leaves of `abstract` from one item of a step; a model that does not fit
  (shapes from the stored metadata) and files that cannot be read are told apart."""
  where = checkpointer.directory
  path = os.path.join(where, str(step), item)
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      stored = ckptr.metadata(path)
  except Exception as e:
    raise ckpt_lib.CheckpointDamagedError(step, where, f'its {item} metadata: {ckpt_lib.reason(e)}') from e
  stored = getattr(stored, 'item_metadata', stored) or getattr(stored, 'tree', None)
  mismatch = ckpt_lib.shape_mismatch(stored, abstract)
  if mismatch:
    raise ckpt_lib.CheckpointMismatchError(
        f'The checkpoint at step {step} in {where} does not fit the model its own config '
        f'describes ({mismatch}).')
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      return ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True))
  except Exception as e:
    raise ckpt_lib.CheckpointDamagedError(step, where, f'its {item} item: {ckpt_lib.reason(e)}') from e


def norm_stats(meta: dict):
  return np.asarray(meta['norm_mean'], np.float32), np.asarray(meta['norm_std'], np.float32)

"""A row x seed -> the configs it trains (one per stage), whether it can run here, and its hash.

Config code only: importing this module imports no jax.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ldlm_jax import config as config_lib
from ldlm_jax.experiments.records import REPO, stage_one_dir
from ldlm_jax.experiments.spec import ExperimentError, Row, Scale
from ldlm_jax.methods import method_name

ABLATIONS_FILE = 'configs/ablations.py'


def load_config_file(spec: str):
  """'configs/x.py' or 'configs/x.py:NAME' (relative to the repository) -> the ConfigDict."""
  path, _, arg = spec.partition(':')
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise ExperimentError(f'{path} is not available in this checkout; these rows need it.')
  module = config_lib.load_file(full)
  return module.get_config(arg) if arg else module.get_config()


def config_module(path: str):
  """A config file (relative to the repository) as a module; ExperimentError naming it when it is missing."""
  full = os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise ExperimentError(f'{path} is missing from this checkout; these rows are defined by it.')
  return config_lib.load_file(full)


def ablation_variants() -> dict:
  """configs/ablations.py's VARIANTS: the one place the paper's ablation overrides are written."""
  return config_module(ABLATIONS_FILE).VARIANTS


def _set(config, dotted: str, value) -> None:
  node = config
  *path, last = dotted.split('.')
  for part in path:
    node = node[part]
  node[last] = value


def spec_config(scale: Scale, spec: str, overrides: dict):
  """A row's config from a config spec ('' = the scale's base) with the scale's and the row's overrides.

  A variants file's overrides go over the scale's base config AFTER the scale's
  overrides: a variant's own choice wins over the scale's (scratch_emb's
  encoder_warmup.steps = 0 against the smoke and gpu scales' warmup lengths).
  """
  variant = {}
  if spec:
    path, _, name = spec.partition(':')
    module = config_module(path)
    found = getattr(module, 'VARIANTS', {}).get(name) if hasattr(module, 'VARIANTS') else None
    if found is not None:        # a variants file: its overrides over the scale's base config
      config, variant = load_config_file(scale.base_config), found
    else:                        # else the row's own config, trained at the scale's length
      config = load_config_file(spec)
  else:
    config = load_config_file(scale.base_config)
  for key, value in {**scale.overrides, **variant, **overrides}.items():
    _set(config, key, value)
  return config


def stage_one_steps(scale: Scale, row: Row) -> int:
  """Stage one's length: STAGE_ONE_FRACTION (its config file's) of the scale's run, at least 1."""
  module = config_module(row.stage_one.partition(':')[0])
  steps = int(spec_config(scale, row.config, row.overrides).train.num_steps)
  return max(1, int(steps * float(module.STAGE_ONE_FRACTION)))


def row_config(scale: Scale, row: Row, seed: int, run_dir: str = ''):
  """The full config of one row x seed (a two-stage row: its second stage, started from
  stage_one_dir(run_dir); without run_dir that field is left for the caller)."""
  config = spec_config(scale, row.config, row.overrides)
  if row.stage_one and run_dir:
    config.train.init_from.workdir = os.path.abspath(stage_one_dir(run_dir))
  config.train.seed = seed
  config.data.seed = seed
  return config


def run_stages(scale: Scale, row: Row, seed: int, run_dir: str) -> list[tuple[str, Any]]:
  """[(run directory, config)] to train in order; the last is the row's run (sampled, evaluated).

  Stage two trains for the scale's full length, like every other row, so every
  row's denoiser gets the same number of updates on the same batches; stage
  one adds its STAGE_ONE_FRACTION of that (an autoencoder without a denoiser).
  """
  stages = []
  if row.stage_one:
    first = spec_config(scale, row.stage_one, row.overrides)
    first.train.num_steps = stage_one_steps(scale, row)
    first.train.seed = seed
    first.data.seed = seed
    stages.append((stage_one_dir(run_dir), first))
  stages.append((run_dir, row_config(scale, row, seed, run_dir)))
  return stages


def _keys_missing_from_schema(spec: str) -> list[str]:
  """A variants file's keys for `spec` ('file.py:NAME') that base_config() does not have."""
  path, _, name = spec.partition(':')
  return config_lib.unknown_keys(getattr(config_module(path), 'VARIANTS', {}).get(name, {}))


def row_availability(row: Row) -> str:
  """'' when the row can run here, else one sentence saying what it needs."""
  if row.config:
    path = row.config.partition(':')[0]
    if not os.path.isfile(os.path.join(REPO, path)):
      return f'not available: {path} is missing from this checkout'
    missing = _keys_missing_from_schema(row.config)
    if missing:
      return (f'not available: {row.config} sets {missing}, which this checkout\'s config schema lacks; '
              'a checkout whose config has them runs this row')
  if row.needs:
    from ldlm_jax.encoders import registry
    try:
      registry.resolve_model_dir(row.needs)
    except Exception as e:  # noqa: BLE001  # # EncoderLoadError: its message is the fix
      return f'needs real {row.needs} weights: {e}'
  return ''


def config_key(config) -> str:
  """The config as canonical JSON: equal keys <=> identical configs (rows that share one run)."""
  return json.dumps(config.to_dict(), sort_keys=True, default=str)


def config_sha256(config) -> str:
  return hashlib.sha256(config_key(config).encode('utf-8')).hexdigest()


def sampler_options(config) -> dict:
  """The row's sampler keywords of `sampling.generate_samples` / `build_sampler`: its config's
  sample fields and, for an MDLM row, its ReMDM eta (a row's own, whichever run trained the weights)."""
  sc = config.sample
  return {'time_grid': sc.time_grid, 't_min': float(sc.t_min), 'solver': sc.solver,
          'final': sc.get('final', 'z'),
          'remdm_eta': float(config.method.remdm_eta) if method_name(config) == 'mdlm' else None}

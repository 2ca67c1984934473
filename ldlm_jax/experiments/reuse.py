"""`run --reuse DIR`: a finished run of another sweep stands for this sweep's run when config, seed
and evaluation protocol agree; its evaluation is copied instead of trained. Imports no jax."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Sequence

from ldlm_jax import config as config_lib
from ldlm_jax.experiments.records import DONE_FILE, PLAN_FILE, read_json, write_json
from ldlm_jax.experiments.row_configs import config_sha256

# What must agree, besides the config and the seed, for another sweep's run to stand for this one's.
PROTOCOL = ('scale', 'sample_steps', 'num_samples', 'num_references', 'scorer')


def find_reusable(reuse_dirs: Sequence[str], config, plan: dict, seed: int) -> str:
  """A finished run of another sweep (DIR/runs/*/seedS) trained from exactly `config` and evaluated
  under the same protocol (PROTOCOL of plan.json), or ''. A run written before done.json carried
  its config's hash is matched through its config.json (laid over today's schema, as the trainer
  reads it); a mirror without either is never matched."""
  want = config_sha256(config)
  for directory in reuse_dirs:
    other = read_json(os.path.join(directory, PLAN_FILE))
    if any(other.get(k) != plan[k] for k in PROTOCOL):
      continue
    for done in sorted(glob.glob(os.path.join(directory, 'runs', '*', f'seed{seed}', DONE_FILE))):
      record = read_json(done)
      if 'stage' in record:   # a first stage: not a sampled run
        continue
      run_dir = os.path.dirname(done)
      if run_config_sha256(run_dir, record) == want:
        return run_dir
  return ''


def run_config_sha256(run_dir: str, record: dict) -> str | None:
  """The hash of the config a finished run trained with: its done.json's, else from its config.json."""
  saved = os.path.join(run_dir, 'config.json')
  if 'config_sha256' not in record and os.path.isfile(saved):
    return config_sha256(config_lib.from_saved(read_json(saved)))
  return record.get('config_sha256')


def reuse_run(source: str, run_dir: str) -> None:
  """Copies a finished run's evaluation (and its samples and config, where present) into run_dir;
  done.json, written last, records where it came from. No checkpoint is copied."""
  os.makedirs(run_dir, exist_ok=True)
  if os.path.isdir(os.path.join(source, 'samples')):
    shutil.copytree(os.path.join(source, 'samples'), os.path.join(run_dir, 'samples'), dirs_exist_ok=True)
  if os.path.isfile(os.path.join(source, 'config.json')):
    shutil.copyfile(os.path.join(source, 'config.json'), os.path.join(run_dir, 'config.json'))
  record = read_json(os.path.join(source, DONE_FILE))
  record['reused_from'] = os.path.abspath(source)
  write_json(os.path.join(run_dir, DONE_FILE), record)

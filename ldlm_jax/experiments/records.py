"""The sweep directory's files, and reading and writing them (no jax, no config code).

  DIR/plan.json                            the sweep: table, scale, rows, seeds, evaluation protocol,
                                           command, machine, dates
  DIR/reference/seedS/done.json            the reference rows' evaluations, one file per seed
  DIR/runs/ROW/seedS/done.json             a finished run: evaluations per step count, the config's
                                           hash, seconds spent (written last: its presence = finished)
  DIR/runs/ROW/alias.json                  a row served by another row's run (identical configs)
  DIR/runs/ROW/stage_one/seedS/done.json   a two-stage row's finished first stage (not sampled)
  DIR/side_by_side.json                    Table 3: the rows' train step and sampling times, measured
                                           side by side in one process after the runs (side_by_side)
  DIR/TABLE.md, DIR/TABLE.json, DIR/pareto.png   the report

`report --publish P` mirrors the JSON records (no checkpoints, no samples) into P/raw/TABLE in
the same layout.
"""

from __future__ import annotations

import datetime
import json
import os
import time

from ldlm_jax import fileio

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAN_FILE = 'plan.json'
RAW_DIR = 'raw'   # `report --publish P` mirrors the sweep's evaluations into P/raw/TABLE
DONE_FILE = 'done.json'
SIDE_BY_SIDE_FILE = 'side_by_side.json'


def write_json(path: str, payload) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_text(path, json.dumps(payload, indent=2, allow_nan=False) + '\n')


def read_json(path: str):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def now() -> str:
  return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')


def log(msg: str) -> None:
  print(f'[experiments {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def row_run_dir(out_dir: str, row: str) -> str:
  """DIR/runs/RUN, RUN being the run that serves `row`: its own, or the one its alias.json names."""
  alias = os.path.join(out_dir, 'runs', row, 'alias.json')
  return os.path.join(out_dir, 'runs', read_json(alias)['run'] if os.path.isfile(alias) else row)


def stage_one_dir(run_dir: str) -> str:
  """A two-stage row's first-stage run directory, beside its seed's run: ROW/stage_one/seedS."""
  return os.path.join(os.path.dirname(run_dir), 'stage_one', os.path.basename(run_dir))

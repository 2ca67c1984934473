"""Train step and sampling time of a table's rows, measured side by side in one process.

The sweep trains and samples its runs one after another, hours apart, and a shared machine's
speed drifts between them (25% in one afternoon on the 2-core build machine). This phase
restores one seed's finished runs into one process and times them in alternating windows,
so every row sees the same background load (the paper's Table 3: train step and sampling
time per method):

- train step: each distinct trained run's compiled, donated train step (its own config, the
  benchmark's random batch and random initial state: a step's time does not depend on the
  values), `timing.time_interleaved` windows of `iters` steps after `warmup` untimed steps, twice:
  from step 0 and from near the run's last step (a method whose step changes cost during the
  run shows it: Duo's Gaussian curriculum, its first half, reads a dense relaxation of the
  vocabulary);
- sampling: each row's jitted sampler at the headline budget (compiled ahead of time, never
  inside a timed call) on the run's trained weights (MDLM's cache of unchanged steps makes its
  cost depend on them), batches of sample.batch_size, rows alternating, `repeats` rounds. In
  each round a row draws batches until it has sampled for MIN_ROUND_SECONDS (at least one
  batch), so a row whose batch takes seconds is timed over as many batches as fit where another
  row's single batch takes minutes: a cheap sampler's time varies more between batches than an
  expensive one's (LDLM's 6-12 s on the 2-core machine, against MDLM's 140 s).

Rows whose run another timed row already serves (ReMDM samples MDLM's run) share its train
step time. The result is DIR/side_by_side.json, one part ('train', 'sample') per measurement,
each with its own date and machine speed; `time DIR --part train` measures one part again and
keeps the other. A part is written when it is timed: a killed phase runs that part again.
`report` puts it in the table as "Table 3" and the "samples faster" verdicts read it.
"""

from __future__ import annotations

import os
import statistics
import time

from ldlm_jax.experiments import tables
from ldlm_jax.experiments.records import (
  DONE_FILE,
  PLAN_FILE,
  SIDE_BY_SIDE_FILE,
  log,
  now,
  read_json,
  row_run_dir,
  write_json,
)
from ldlm_jax.experiments.spec import SCALES, ExperimentError
# Sampling rounds per scale: every row samples headline-budget batches in every round (an MDLM
# batch at 128 steps takes about 2 minutes on the 2-core build machine).
REPEATS = {'smoke': 2, 'cpu': 3, 'gpu': 5}
# Sampling seconds per row per round, the least: a row whose batch is faster draws more batches
# in the round (about 6 LDLM and 9 AR batches at cpu scale; 5 extra minutes in all).
MIN_ROUND_SECONDS = {'smoke': 0.5, 'cpu': 60.0, 'gpu': 20.0}
PARTS = ('train', 'sample')


def run_dirs(out_dir: str, row: str, seed: int) -> tuple[str, str]:
  """(the row's run directory, the directory whose weights it samples) for a finished run."""
  run_dir = os.path.join(row_run_dir(out_dir, row), f'seed{seed}')
  done = os.path.join(run_dir, DONE_FILE)
  if not os.path.isfile(done):
    raise ExperimentError(f'Row {row} has no finished run for seed {seed} ({done} is missing); '
                          'finish the sweep first (run the same `experiments run` command).')
  weights = read_json(done).get('trained_by')
  if weights and not os.path.isdir(weights):   # the sweep directory moved since: the same run in it
    weights = os.path.join(out_dir, 'runs', os.path.basename(os.path.dirname(weights)), os.path.basename(weights))
  return run_dir, os.path.abspath(weights or run_dir)


def timed_rows(module, plan: dict) -> list[str]:
  """The table's SIDE_BY_SIDE rows that the sweep holds (every row when the table names none)."""
  wanted = getattr(module, 'SIDE_BY_SIDE', None) or plan['rows']
  return [r for r in wanted if r in plan['rows'] and r not in plan.get('unavailable', {})]


def _seconds(values: list[float]) -> dict:
  return {'median': round(statistics.median(values), 5), 'min': round(min(values), 5),
          'max': round(max(values), 5), 'std': round(statistics.pstdev(values), 5),
          'values': [round(v, 5) for v in values]}


def _timing_dict(t, from_step: int) -> dict:
  return {'median': round(t.median_s, 5), 'min': round(t.min_s, 5), 'max': round(t.max_s, 5),
          'from_step': from_step}


def time_side_by_side(out_dir: str, seed: int = 0, repeats: int | None = None, command: str = '',
                      part: str = 'all') -> dict:
  """Times the rows' train steps and samplers in alternating windows (`part`: 'all', 'train' or
  'sample'); writes and returns the record."""
  if part not in PARTS + ('all',):
    raise ExperimentError(f'--part must be one of all, {", ".join(PARTS)}; got {part!r}.')
  plan_path = os.path.join(out_dir, PLAN_FILE)
  if not os.path.isfile(plan_path):
    raise ExperimentError(f'{out_dir} holds no sweep ({PLAN_FILE} is missing); run `experiments run` first.')
  plan = read_json(plan_path)
  module = tables.get(plan['table'])
  scale = getattr(module, 'adjust_scale', lambda s: s)(SCALES[plan['scale']])
  repeats = REPEATS.get(scale.name, 3) if repeats is None else repeats
  if repeats < 1:
    raise ExperimentError(f'--repeats must be >= 1, got {repeats}.')
  if seed < 0 or seed >= int(plan['seeds']):
    raise ExperimentError(f'--seed must be one of the sweep\'s seeds 0..{int(plan["seeds"]) - 1}, got {seed}.')
  rows = timed_rows(module, plan)
  dirs = {r: run_dirs(out_dir, r, seed) for r in rows}   # refuses before jax loads
  from ldlm_jax.experiments.evaluator import machine_description
  from ldlm_jax.training import restore

  path = os.path.join(out_dir, SIDE_BY_SIDE_FILE)
  old = read_json(path) if os.path.isfile(path) else {}
  if old.get('seed') != seed or set(old.get('rows', {})) != set(rows):
    old = {}   # another seed or other rows: nothing of it is kept
  trained: dict[str, str] = {}   # weights directory -> the first row timed on it
  for name in rows:
    trained.setdefault(dirs[name][1], name)
  record = {'seed': seed, 'rows': {}}
  for name in rows:
    timed_as = trained[dirs[name][1]]
    record['rows'][name] = {'run': os.path.relpath(dirs[name][0], out_dir),
                            **({'train_step_of': timed_as} if timed_as != name else {})}
  restored = {weights: restore.load_run(weights) for weights in trained}   # once per trained run
  runs = {name: restored[dirs[name][1]] for name in rows}
  for which in PARTS:
    if part in ('all', which):
      speed = [_matmul_gflops()]
      rows_out, settings = (_time_train(runs, trained, seed) if which == 'train' else
                            _time_sampling(runs, scale, module, seed, repeats))
      speed.append(_matmul_gflops())
      record[which] = {**settings, 'rows': rows_out, 'machine': machine_description(),
                       'matmul_gflops_start_end': speed, 'finished': now(), 'command': command}
      write_json(path, {**old, **record})   # each part as soon as it is timed
    elif which in old:
      record[which] = old[which]
  return record


def _matmul_gflops() -> float:
  """The machine's speed now (a jitted float32 2048^3 matmul), so a reader can tell a fast hour from a
  slow one when comparing with other measurements."""
  from ldlm_jax.benchmarks import timing
  return round(timing.measure_matmul_peak() / 1e9, 1)


def _time_train(runs: dict, trained: dict, seed: int) -> tuple[dict, dict]:
  """The distinct trained runs' train steps, from step 0 and from near their last step, all in
  alternating windows."""
  import jax
  import jax.numpy as jnp

  from ldlm_jax.benchmarks import runs as bench_runs
  from ldlm_jax.benchmarks import timing
  # The benchmark's protocol with 5 windows (a step costs 0.5-1.5 s at cpu scale).
  opts = bench_runs.Options(seed=seed, repeats=5)
  span = opts.warmup + opts.iters * opts.repeats
  cases, labels = [], []
  for name in trained.values():
    t0 = time.perf_counter()
    case = bench_runs.prepare_train(runs[name].config, opts, lambda msg: None)
    state, metrics = case.carry
    last = max(0, int(runs[name].config.train.num_steps) - span)
    # A second carry on the same compiled step: copied buffers (the step donates its state),
    # the step counter moved to `last`.
    late = jax.tree.map(jnp.copy, state).replace(step=jnp.full_like(state.step, last))
    cases += [(case.advance, (state, metrics)), (case.advance, (late, jax.tree.map(jnp.copy, metrics)))]
    labels += [(name, 'first', 0), (name, 'last', last)]
    log(f'side by side: {name} train step compiled ({time.perf_counter() - t0:.0f}s)')
  log(f'side by side: timing the train steps of {", ".join(trained.values())} from step 0 and from near '
      f'their last ({opts.repeats} alternating windows of {opts.iters} steps after {opts.warmup} untimed)')
  times, _ = timing.time_interleaved(cases, warmup=opts.warmup, iters=opts.iters, repeats=opts.repeats)
  out: dict = {}
  for (name, which, from_step), t in zip(labels, times):
    out.setdefault(name, {})[which] = _timing_dict(t, from_step)
  return out, {'windows': {'warmup': opts.warmup, 'iters': opts.iters, 'repeats': opts.repeats}}


def compiled_sampler(run, scale, row, seed: int, steps: int) -> tuple:
  """`row`'s sampler at `steps` on `run`'s weights, compiled ahead of time: (compiled, params, key,
  batch size). The sampler fields are the row's, whichever run trained the weights (as the sweep
  samples)."""
  import jax

  from ldlm_jax import sampling as sample_lib
  from ldlm_jax.benchmarks import timing
  from ldlm_jax.experiments.row_configs import row_config, sampler_options
  config = row_config(scale, row, seed)
  generate, params, batch = sample_lib.build_sampler(run, steps, int(config.sample.batch_size),
                                                     **sampler_options(config))
  key = jax.random.PRNGKey(seed)
  return timing.lower_and_compile(generate, params, key).compiled, params, key, batch


def _time_sampling(runs: dict, scale, module, seed: int, repeats: int) -> tuple[dict, dict]:
  """Every row's sampler at the headline budget, compiled ahead; rows alternate, each drawing batches
  until it has sampled MIN_ROUND_SECONDS in the round."""
  import jax

  by_name = {r.name: r for r in module.rows(scale)}
  steps = int(scale.sample_steps[-1])
  cases = {}
  for name, run in runs.items():
    t0 = time.perf_counter()
    cases[name] = compiled_sampler(run, scale, by_name[name], seed, steps)
    log(f'side by side: {name} sampler at {steps} steps compiled ({time.perf_counter() - t0:.0f}s)')
  floor = MIN_ROUND_SECONDS.get(scale.name, 0.0)
  times = {n: [] for n in cases}
  batches = {n: [] for n in cases}
  for r in range(repeats):
    for name, (compiled, params, key, _) in cases.items():
      spent, i = 0.0, 0
      while i == 0 or spent < floor:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, jax.random.fold_in(jax.random.fold_in(key, r), i)))
        times[name].append(time.perf_counter() - t0)
        spent, i = spent + times[name][-1], i + 1
      batches[name].append(i)
    log(f'side by side: sampling round {r + 1}/{repeats}: ' + ', '.join(
        f'{n} {statistics.median(v[-batches[n][-1]:]):.2f}s x {batches[n][-1]}' for n, v in times.items()))
  rows = {n: {'seconds_per_batch': _seconds(times[n]), 'batch_size': cases[n][3], 'batches_per_round': batches[n]}
          for n in cases}
  return rows, {'sample_steps': steps, 'repeats': repeats, 'min_round_seconds': floor}

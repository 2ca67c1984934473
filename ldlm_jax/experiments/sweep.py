"""The sweep: every row x seed of a table trained, sampled and evaluated, resumable, then the report.

Each row x seed is one run in DIR/runs/ROW/seedS (rows whose configs are identical share one
run): trained with the trainer (`training.loop.train`, which resumes from the run's latest
checkpoint), sampled at every step count of the scale (`sampling.generate_samples`), evaluated
with one scorer for the whole table (`Evaluator`), then marked done (done.json, written last).
So a killed sweep run again skips finished runs and continues the others from their
checkpoints. With --reuse, a run finished in another sweep (same config hash, seed and
evaluation protocol) is copied instead of trained (`reuse`). A two-stage row first trains its
stage one in DIR/runs/ROW/stage_one/seedS (its own done.json, not sampled), then its stage two
from it in DIR/runs/ROW/seedS. Everything runs in this one process: one jax import, one scorer,
one compilation cache. jax loads when the sweep starts, not at import.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence

import numpy as np

from ldlm_jax.evaluation import ngram as ngram_lib
from ldlm_jax.experiments import report as report_lib
from ldlm_jax.experiments import tables
from ldlm_jax.experiments.evaluator import (
  Evaluator,
  machine_description,
  reference_texts,
)
from ldlm_jax.experiments.records import (
  DONE_FILE,
  PLAN_FILE,
  SIDE_BY_SIDE_FILE,
  log,
  now,
  read_json,
  write_json,
)
from ldlm_jax.experiments.reuse import find_reusable, reuse_run
from ldlm_jax.experiments.row_configs import (
  config_key,
  config_sha256,
  row_availability,
  row_config,
  sampler_options,
  run_stages,
  stage_one_steps,
)
from ldlm_jax.experiments.spec import (
  REFERENCE_ROWS,
  SCALES,
  ExperimentError,
  Row,
  Scale,
)


def run_groups(scale: Scale, rows: list[Row], seed: int) -> dict[str, list[str]]:
  """Run name -> the rows it serves: rows with identical configs share one run (named by the first)."""
  groups: dict[str, list[str]] = {}
  first_of: dict[str, str] = {}
  for row in rows:
    key = (config_key(row_config(scale, row, seed)) + row.stage_one + repr(row.match_clock)
           + row.samples_of)
    run = first_of.setdefault(key, row.name)
    groups.setdefault(run, []).append(row.name)
  return groups


def run_reference_rows(config, scale: Scale, seeds: int, out_dir: str, evaluator: Evaluator,
                       held_out: list[str]) -> None:
  """Unigram/bigram/trigram samples (one set per seed), their tempered versions (ngram.TEMPERED; no MAUVE)
  and the held-out text, evaluated like the runs. A seed's record missing some rows (written before
  a row was added) gets just those."""
  from ldlm_jax import sampling as sample_lib
  from ldlm_jax.encoders.registry import load_encoder_tokenizer
  ref_dir = os.path.join(out_dir, 'reference')
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  models = None
  for seed in range(seeds):
    done = os.path.join(ref_dir, f'seed{seed}', DONE_FILE)
    results = read_json(done)['results'] if os.path.isfile(done) else {}
    wanted = [n for n in REFERENCE_ROWS if n != 'held_out' or seed == 0]
    missing = [n for n in wanted if n not in results]
    if not missing:
      continue
    if models is None:
      t0 = time.time()
      models = ngram_lib.fit_models(config, tokenizer)
      log(f'n-gram models fitted to the training split in {time.time() - t0:.1f}s')
    for name in missing:
      if name == 'held_out':
        path = os.path.join(ref_dir, 'held_out.jsonl')
        records = [{'index': i, 'text': t, 'seed': None, 'generator': 'held_out'} for i, t in enumerate(held_out)]
        sample_lib.write_jsonl(path, records)
        results[name] = evaluator.evaluate(path, records)
        continue
      order_name, temperature = ngram_lib.split_row_name(name)
      path = os.path.join(ref_dir, f'seed{seed}', f'{name}.jsonl')
      tokens = models[order_name].sample(scale.num_samples, int(config.data.seq_len), seed=seed,
                                         temperature=temperature or 1.0)
      records = ngram_lib.records(tokens, tokenizer, name, seed)
      sample_lib.write_jsonl(path, records)
      results[name] = evaluator.evaluate(path, records, mauve=temperature is None)
    write_json(done, {'results': results, 'finished': now()})
    log(f'reference rows, seed {seed}: ' + ', '.join(
        f'{k} Gen. PPL {results[k]["gen_ppl"]:.1f}' for k in missing if results[k].get('gen_ppl') is not None))


def run_one(config, scale: Scale, run_dir: str, seed: int, evaluator: Evaluator,
            stage_one_seconds: float | None = None, trained_run: str = '') -> dict:
  """Train (or resume), sample at every step count, evaluate; returns the done record.

  `stage_one_seconds`: a two-stage row's first-stage training time, kept in the record.
  `trained_run`: a finished run directory to sample instead of training (Row.samples_of); the
  record takes its training time and step time."""
  from ldlm_jax import sampling as sample_lib
  from ldlm_jax.evaluate import read_samples
  from ldlm_jax.training import loop, restore
  done_path = os.path.join(run_dir, DONE_FILE)
  if os.path.isfile(done_path):
    return read_json(done_path)
  if trained_run:
    trained = read_json(os.path.join(trained_run, DONE_FILE))
    t_train = trained['seconds']['train']
    resumed_from = trained.get('train_resumed_from_step')
    run = restore.load_run(trained_run)
  else:
    # A run continued from its checkpoint (a killed sweep) times only the steps after it; the
    # report scales that time to the whole run (report._train_minutes).
    resumed_from = _latest_checkpoint_step(run_dir) or None
    t0 = time.time()
    loop.train(config, run_dir)
    t_train = time.time() - t0
    run = restore.load_run(run_dir)
  _check_finished(run.step, config, run_dir)
  sampler = sampler_options(config)
  results, t_sample, t_eval = {}, 0.0, 0.0
  for steps in scale.sample_steps:
    path = os.path.join(run_dir, 'samples', f'steps{steps}.jsonl')
    t1 = time.time()
    # The batches' wall seconds are kept beside the samples, so a run evaluated again (its
    # done.json lost) reports the times its samples were drawn in.
    timings_path = path.replace('.jsonl', '.timings.json')
    timings = []
    if os.path.isfile(path):
      records = read_samples(path)
      timings = read_json(timings_path)['batch_seconds'] if os.path.isfile(timings_path) else []
    else:
      records = sample_lib.generate_samples(
          run, scale.num_samples, steps, seed, int(config.sample.batch_size), progress=False,
          timings=timings, **sampler)
      write_json(timings_path, {'batch_seconds': [round(t, 4) for t in timings]})
      sample_lib.write_jsonl(path, records)
    t2 = time.time()
    # MAUVE at the headline step count only: the table reports it there, the Pareto plot not at all.
    results[str(steps)] = evaluator.evaluate(path, records, mauve=steps == scale.sample_steps[-1])
    if timings:   # seconds per batch after compilation (the first batch when there is only one)
      results[str(steps)]['sample_seconds_per_batch'] = round(float(np.median(timings[1:] or timings)), 4)
    t_sample += t2 - t1
    t_eval += time.time() - t2
  record = {'results': results, 'checkpoint_step': run.step, 'finished': now(),
            'config_sha256': config_sha256(config),
            'seconds': {'train': round(t_train, 1), 'sample': round(t_sample, 1), 'evaluate': round(t_eval, 1)}}
  if trained_run:
    record['trained_by'] = os.path.abspath(trained_run)
  if resumed_from:
    record['train_resumed_from_step'] = resumed_from
  step_seconds = (trained.get('train_step_seconds') if trained_run else train_step_seconds(run_dir))
  if step_seconds is not None:
    record['train_step_seconds'] = step_seconds
  if stage_one_seconds is not None:   # the row's training time includes its first stage's
    record['seconds']['stage_one_train'] = round(stage_one_seconds, 1)
  write_json(done_path, record)
  return record


def _latest_checkpoint_step(run_dir: str) -> int:
  """The step of the run's latest checkpoint, 0 when it has none (a fresh run)."""
  from ldlm_jax.training import checkpoint as ckpt_lib
  if not os.path.isdir(os.path.join(run_dir, 'checkpoints')):
    return 0
  checkpointer = ckpt_lib.Checkpointer(os.path.abspath(run_dir), read_only=True)
  try:
    return checkpointer.latest_step() or 0
  finally:
    checkpointer.close()


def train_step_seconds(run_dir: str) -> float | None:
  """Median seconds per optimizer step over the logged windows after the first (which holds the
  compilation), from the run's metrics.jsonl; None without two windows."""
  import json
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    rates = [r['steps_per_sec'] for r in map(json.loads, f) if r.get('steps_per_sec')]
  return round(float(np.median([1.0 / r for r in rates[1:]])), 5) if len(rates) > 1 else None


def clock_matched(row: Row, out_dir: str, seed: int) -> Row:
  """`row` with train.num_steps set so that its training takes the wall clock of its reference
  row's (Row.match_clock): reference steps x reference s/step / timing row's s/step."""
  import dataclasses
  reference, timing = row.match_clock
  found = {}
  for name in (reference, timing):
    done = os.path.join(out_dir, 'runs', name, f'seed{seed}', DONE_FILE)
    record = read_json(done) if os.path.isfile(done) else {}
    if not record.get('train_step_seconds'):
      raise ExperimentError(f'{row.name} matches the wall clock of {reference} at the step time of {timing}, '
                            f'but {done} holds no finished, timed run; run those rows first (drop --rows).')
    found[name] = record
  ref = found[reference]
  steps = max(1, round(ref['checkpoint_step'] * ref['train_step_seconds'] / found[timing]['train_step_seconds']))
  return dataclasses.replace(row, overrides={**row.overrides, 'train.num_steps': steps}, match_clock=())


def sampled_run(row: Row, groups: dict[str, list[str]], out_dir: str, seed: int) -> str:
  """The finished run directory that Row.samples_of names (the run serving that row, same seed)."""
  run = next((name for name, served in groups.items() if row.samples_of in served), row.samples_of)
  run_dir = os.path.join(out_dir, 'runs', run, f'seed{seed}')
  if not os.path.isfile(os.path.join(run_dir, DONE_FILE)):
    raise ExperimentError(f'{row.name} samples the run of row {row.samples_of}, but {run_dir} holds no '
                          'finished run; run that row first (drop --rows).')
  return run_dir


def _check_finished(step: int, config, run_dir: str) -> None:
  if step < int(config.train.num_steps):   # the trainer returns early on SIGTERM
    raise ExperimentError(f'Training of {run_dir} stopped at step {step} of {config.train.num_steps} '
                          '(preempted); run the same command again to continue from that checkpoint.')


def train_stage_one(config, run_dir: str) -> dict:
  """Train (or resume) a first stage to its length and mark it done; nothing is sampled
  (cosmos stage one has no denoiser). Returns the done record."""
  from ldlm_jax.training import checkpoint as ckpt_lib
  from ldlm_jax.training import loop
  done_path = os.path.join(run_dir, DONE_FILE)
  if os.path.isfile(done_path):
    return read_json(done_path)
  t0 = time.time()
  loop.train(config, run_dir)
  t_train = time.time() - t0
  checkpointer = ckpt_lib.Checkpointer(os.path.abspath(run_dir), read_only=True)
  try:
    step = max(checkpointer.all_steps(), default=0)
  finally:
    checkpointer.close()
  _check_finished(step, config, run_dir)
  record = {'stage': 'one', 'checkpoint_step': step, 'finished': now(),
            'seconds': {'train': round(t_train, 1)}}
  write_json(done_path, record)
  return record


def _seed_normalization(out_dir: str, run_dir: str) -> None:
  """Copies another run's normalization statistics into a new run directory.

  The trainer reads WORKDIR/normalization.npz only when its signature (encoder,
  layer, data, chunk count) matches the run's config and recomputes otherwise,
  so this only saves the encoder pass (seconds per run) where the rows agree.
  Only the same seed's runs are used: the chunks sampled for the statistics
  depend on data.seed, which the signature does not record.
  """
  from ldlm_jax.training.loop import NORM_FILE
  target = os.path.join(run_dir, NORM_FILE)
  if os.path.exists(target):
    return
  runs = os.path.join(out_dir, 'runs')
  for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else ():
    source = os.path.join(runs, name, os.path.basename(run_dir), NORM_FILE)
    if os.path.isfile(source):
      os.makedirs(run_dir, exist_ok=True)
      shutil.copyfile(source, target + '.tmp')
      os.replace(target + '.tmp', target)
      return


def run_table(table: str, scale_name: str, seeds: int, out_dir: str, only_rows: Sequence[str] = (),
              skip_unavailable: bool = False, command: str = '', reuse: Sequence[str] = (),
              publish: str = '') -> dict:
  """The whole sweep (resumable), then the report. `reuse`: other sweep directories whose finished
  runs stand for this sweep's where config, seed and evaluation protocol agree (find_reusable).
  `publish`: the report's --publish directory, written again after every run that finishes, so a
  sweep on a machine that may be lost keeps its finished runs (raw/TABLE continues it elsewhere).
  Every check that can refuse the sweep runs before DIR is written."""
  module = tables.get(table)
  if scale_name not in SCALES:
    raise ExperimentError(f'Unknown scale {scale_name!r}; choose one of {", ".join(SCALES)}.')
  if seeds < 1:
    raise ExperimentError(f'--seeds must be >= 1, got {seeds}.')
  # A table may set its own sampling budgets and sampling batch (the main comparison's NFE grid).
  scale = getattr(module, 'adjust_scale', lambda s: s)(SCALES[scale_name])
  rows = all_rows = module.rows(scale)
  if only_rows:
    unknown = sorted(set(only_rows) - {r.name for r in rows})
    if unknown:
      raise ExperimentError(f'{table} has no rows {unknown}; its rows are {[r.name for r in rows]}.')
    rows = [r for r in rows if r.name in only_rows]
  unavailable = {r.name: why for r in rows if (why := row_availability(r))}
  if unavailable and not skip_unavailable:
    raise ExperimentError(
        f'{table} rows {sorted(unavailable)} cannot run here ({"; ".join(sorted(set(unavailable.values())))}); '
        'provide them or pass --skip_unavailable to report them as not run.')
  runnable = [r for r in rows if r.name not in unavailable]
  if not runnable:
    raise ExperimentError(f'No row of {table} can run here: {unavailable}.')
  if publish and os.path.exists(publish) and not os.path.isdir(publish):
    raise ExperimentError(f'--publish {publish} is a file; name a directory (such as docs/results).')
  for directory in reuse:
    if not os.path.isfile(os.path.join(directory, PLAN_FILE)):
      raise ExperimentError(f'--reuse {directory} holds no sweep ({PLAN_FILE} is missing); '
                            'name a directory written by `experiments run`.')
  reuse = [d for d in reuse if os.path.abspath(d) != os.path.abspath(out_dir)]
  plan_path = os.path.join(out_dir, PLAN_FILE)
  plan = {'table': table, 'scale': scale_name, 'seeds': seeds, 'rows': [r.name for r in rows],
          'unavailable': unavailable, 'command': command, 'machine': machine_description(),
          'started': now(), 'sample_steps': list(scale.sample_steps), 'num_samples': scale.num_samples,
          'num_references': scale.num_references, 'scorer': scale.scorer, 'base_config': scale.base_config,
          'scale_overrides': scale.overrides, 'expected_minutes_per_run': scale.minutes_per_run,
          'stage_one': {r.name: {'config': r.stage_one, 'num_steps': stage_one_steps(scale, r)}
                        for r in runnable if r.stage_one}}
  if os.path.isfile(plan_path):
    old = read_json(plan_path)
    if (old['table'], old['scale']) != (table, scale_name):
      raise ExperimentError(f'{out_dir} holds a {old["table"]} sweep at scale {old["scale"]}; '
                            'pass another --out for this one.')
    plan['started'] = old.get('started', plan['started'])
    plan['rows'] = old['rows'] + [r for r in plan['rows'] if r not in old['rows']]
    plan['seeds'] = max(seeds, int(old['seeds']))
    plan['stage_one'] = {**old.get('stage_one', {}), **plan['stage_one']}
  write_json(plan_path, plan)

  base = row_config(scale, runnable[0], 0)
  references, held_out = reference_texts(base, scale.num_references, scale.num_samples)
  evaluator = Evaluator(scale, out_dir, references)
  run_reference_rows(base, scale, plan['seeds'], out_dir, evaluator, held_out)

  def published() -> None:   # the report and raw/TABLE in `publish`, as they stand now
    if publish:
      report_lib.report(out_dir, publish)

  published()
  selected = {r.name for r in runnable}
  for seed in range(seeds):
    # Grouped over every available row, so run names do not depend on --rows.
    groups = groups_all = run_groups(scale, [r for r in all_rows if not row_availability(r)], seed)
    groups = {run: served for run, served in groups.items() if selected & set(served)}
    for run_name, served in groups.items():
      row = next(r for r in all_rows if r.name == run_name)
      for name in served[1:]:   # the rows served by another row's run point at it
        write_json(os.path.join(out_dir, 'runs', name, 'alias.json'), {'run': run_name})
      run_dir = os.path.join(out_dir, 'runs', run_name, f'seed{seed}')
      if os.path.isfile(os.path.join(run_dir, DONE_FILE)):
        log(f'{run_name} seed {seed}: done, skipped')
        continue
      if row.match_clock:
        row = clock_matched(row, out_dir, seed)
      if row.samples_of:
        trained = sampled_run(row, groups_all, out_dir, seed)
        log(f'{run_name} seed {seed} (rows {", ".join(served)}): sampling {trained}')
        run_one(row_config(scale, row, seed), scale, run_dir, seed, evaluator, trained_run=trained)
        published()
        continue
      *first_stages, (_, config) = run_stages(scale, row, seed, run_dir)
      source = '' if first_stages else find_reusable(reuse, config, plan, seed)
      if source:
        reuse_run(source, run_dir)
        log(f'{run_name} seed {seed}: the same run is finished in {source}; its evaluation reused')
        published()
        continue
      for stage_dir, stage_config in first_stages:
        if os.path.isfile(os.path.join(stage_dir, DONE_FILE)):
          log(f'{run_name} seed {seed}: stage one done, skipped')
          continue
        log(f'{run_name} seed {seed}: training stage one ({stage_config.train.num_steps} steps, {stage_dir})')
        _seed_normalization(out_dir, stage_dir)
        stage_record = train_stage_one(stage_config, stage_dir)
        log(f'{run_name} seed {seed}: stage one trained ({stage_record["seconds"]})')
      log(f'{run_name} seed {seed} (rows {", ".join(served)}): training')
      _seed_normalization(out_dir, run_dir)
      stage_one_seconds = (sum(read_json(os.path.join(d, DONE_FILE))['seconds']['train']
                               for d, _ in first_stages) if first_stages else None)
      record = run_one(config, scale, run_dir, seed, evaluator, stage_one_seconds)
      headline = record['results'][str(scale.sample_steps[-1])]
      log(f'{run_name} seed {seed}: Gen. PPL {headline["gen_ppl"]:.1f}, entropy {headline["entropy"]:.2f} '
          f'({record["seconds"]})')
      published()
  _side_by_side(module, plan, out_dir, command)
  plan['finished'] = now()
  write_json(plan_path, plan)
  return report_lib.report(out_dir, publish)


def _side_by_side(module, plan: dict, out_dir: str, command: str) -> None:
  """The table's side-by-side timing phase (side_by_side), once seed 0 of its rows is finished:
  the parts DIR/side_by_side.json lacks (delete it to measure again)."""
  from ldlm_jax.experiments import side_by_side
  if not getattr(module, 'SIDE_BY_SIDE', None):
    return
  path = os.path.join(out_dir, SIDE_BY_SIDE_FILE)
  record = read_json(path) if os.path.isfile(path) else {}
  missing = [p for p in side_by_side.PARTS if p not in record]
  if not missing:
    return
  rows = side_by_side.timed_rows(module, plan)
  try:
    for row in rows:
      side_by_side.run_dirs(out_dir, row, 0)
  except ExperimentError as e:
    log(f'side by side: not measured yet ({e})')
    return
  log(f'side by side: {" and ".join(missing)} time of {", ".join(rows)} in one process')
  side_by_side.time_side_by_side(out_dir, 0, command=command,
                                 part=missing[0] if len(missing) == 1 else 'all')

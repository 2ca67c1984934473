"""The report: a sweep directory's JSON records in; TABLE.md, TABLE.json and the Pareto plot out.

  python -m ldlm_jax.experiments report DIR [--publish P]

Reads plan.json and the done.json records only (no checkpoint, no sample, no model): the same
records give the same markdown and JSON, the date lines aside. Importing this module imports no
jax; matplotlib loads when a plot is drawn.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from ldlm_jax import fileio
from ldlm_jax.evaluation import ngram as ngram_lib
from ldlm_jax.experiments import tables, verdicts
from ldlm_jax.experiments.records import (
  DONE_FILE,
  PLAN_FILE,
  RAW_DIR,
  SIDE_BY_SIDE_FILE,
  now,
  read_json,
  row_run_dir,
  stage_one_dir,
  write_json,
)
from ldlm_jax.experiments.spec import REFERENCE_ROWS, ExperimentError

METRICS = ('gen_ppl', 'entropy', 'mauve', 'diversity', 'word_ppl')


def stats(values: list) -> tuple[float | None, float | None]:
  """(mean, std) of the values that are not None, std with ddof=0 as `evaluate` reports; (None, None) if none."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values))


def collect(out_dir: str, plan: dict) -> dict:
  """{'rows': {row: {steps: {metric: (mean, std)}}}, 'reference': {name: {metric: ...}}}."""
  rows = {}
  for name in plan['rows']:
    if name in plan.get('unavailable', {}):
      continue
    run_dir = row_run_dir(out_dir, name)
    per_seed, train_minutes, reused, resumed, disturbed, step_seconds = [], [], {}, {}, {}, []
    for seed in range(int(plan['seeds'])):
      done = os.path.join(run_dir, f'seed{seed}', DONE_FILE)
      if os.path.isfile(done):
        record = read_json(done)
        per_seed.append(record['results'])
        step_seconds.append(record.get('train_step_seconds'))
        if 'reused_from' in record:
          reused[str(seed)] = record['reused_from']
        if record.get('train_resumed_from_step'):
          resumed[str(seed)] = record['train_resumed_from_step']
        if record.get('train_time_disturbed'):
          disturbed[str(seed)] = record['train_time_disturbed']
        train_minutes.append(_train_minutes(record, os.path.join(run_dir, f'seed{seed}'), name in
                                            plan.get('stage_one', {})))
    if not per_seed:
      continue
    rows[name] = {'run': os.path.relpath(run_dir, out_dir), 'seeds': len(per_seed), 'steps': {},
                  'train_minutes': stats(train_minutes), 'reused_from': reused,
                  **({'train_resumed_from_step': resumed} if resumed else {}),
                  **({'train_time_disturbed': disturbed} if disturbed else {})}
    for steps in plan['sample_steps']:
      vals = [r[str(steps)] for r in per_seed if str(steps) in r]
      rows[name]['steps'][str(steps)] = {m: stats([v.get(m) for v in vals]) for m in METRICS}
    timing = _timing(per_seed, step_seconds, plan)
    if timing:   # only the tables whose sweeps time sampling (their JSON gains the entry)
      rows[name]['timing'] = timing
  reference = {}
  ref_seeds = []
  for seed in range(int(plan['seeds'])):
    done = os.path.join(out_dir, 'reference', f'seed{seed}', DONE_FILE)
    if os.path.isfile(done):
      ref_seeds.append(read_json(done)['results'])
  for name in REFERENCE_ROWS:
    vals = [r[name] for r in ref_seeds if name in r]
    if vals:
      reference[name] = {'seeds': len(vals), **{m: stats([v.get(m) for v in vals]) for m in METRICS}}
  data = {'rows': rows, 'reference': reference}
  side = os.path.join(out_dir, SIDE_BY_SIDE_FILE)
  if os.path.isfile(side):
    data['side_by_side'] = read_json(side)
  return data


def _timing(per_seed: list[dict], step_seconds: list, plan: dict) -> dict:
  """{'train_step_seconds': (mean, std), 'sample_seconds_per_batch': {steps: (mean, std)}}, or {}
  when the records hold no sampling times."""
  sample = {str(s): stats([r.get(str(s), {}).get('sample_seconds_per_batch') for r in per_seed])
            for s in plan['sample_steps']}
  if all(v[0] is None for v in sample.values()):
    return {}
  return {'train_step_seconds': stats(step_seconds), 'sample_seconds_per_batch': sample}


def render_timing(data: dict, plan: dict) -> list[str]:
  """The markdown section of train step and sampling times (rows whose records hold them)."""
  timed = {n: e['timing'] for n, e in data['rows'].items() if 'timing' in e}
  if not timed:
    return []
  steps = plan['sample_steps']
  lines = ['', '## Time as the sweep measured it, run by run', '',
           ('Seconds per optimizer step (median over logged windows after the first) and seconds per '
            'sampling batch (sample.batch_size samples, after compilation) at each budget, mean ± std over '
            'seeds, each measured while its run trained and sampled: runs hours apart, so a shared '
            'machine\'s drift is in the differences' + (' (Table 3 above measures the rows side by side).'
                                                        if data.get('side_by_side') else '.')), '',
           '| row | train s/step | ' + ' | '.join(f'{s} steps s/batch' for s in steps) + ' |',
           '|---|---|' + '---|' * len(steps)]
  for name, t in timed.items():
    cells = [fmt(t['sample_seconds_per_batch'][str(s)], 3) for s in steps]
    lines.append(f'| {name} | {fmt(t["train_step_seconds"], 4)} | ' + ' | '.join(cells) + ' |')
  return lines


def render_side_by_side(data: dict) -> list[str]:
  """Table 3: the rows' train step and sampling times measured side by side in one process."""
  side = data.get('side_by_side')
  if not side:
    return []
  train, sample = side.get('train'), side.get('sample')

  def when(part: dict) -> str:
    speed = part.get('matmul_gflops_start_end')
    return part['finished'] + (f', float32 2048^3 matmul {speed[0]:.0f} then {speed[1]:.0f} GFLOP/s' if speed else '')

  what = [f'seed {side["seed"]}\'s runs restored into one process by `python -m ldlm_jax.experiments time`; '
          'the _flops and _clock rows run the same step and sampler as their base row.']
  if train:
    w = train['windows']
    what.append(f'Train step ({when(train)}): {w["repeats"]} alternating windows of {w["iters"]} steps after '
                f'{w["warmup"]} untimed, from step 0 and from near the run\'s last step (median [fastest, slowest '
                'window]; a method whose step cost changes during training shows it).')
  if sample:
    floor = sample.get('min_round_seconds')   # records before it drew one batch per row per round
    if floor:
      what.append(f'Sampling ({when(sample)}): {sample["repeats"]} rounds at {sample["sample_steps"]} steps, rows '
                  f'alternating; in a round each row draws batches until it has sampled {floor:g} s (at least one '
                  'batch); median over every batch [min, max].')
    else:
      what.append(f'Sampling ({when(sample)}): {sample["repeats"]} rounds of one batch per row at '
                  f'{sample["sample_steps"]} steps, rows alternating (median [min, max]).')
  lines = ['', '## Table 3: train step and sampling time, side by side in one process', '', ' '.join(what), '',
           '| row | train s/step from step 0 | train s/step near the last step | sampling s/batch | '
           'samples per batch | sampling time ÷ ldlm\'s |', '|---|---|---|---|---|---|']

  def cell(t) -> str:
    return f'{t["median"]:.4f} [{t["min"]:.4f}, {t["max"]:.4f}]' if t else 'not measured'

  base = (sample or {}).get('rows', {}).get('ldlm')
  for name, r in side['rows'].items():
    t = (train or {}).get('rows', {}).get(r.get('train_step_of', name), {})
    shared = f' (= {r["train_step_of"]}\'s run)' if 'train_step_of' in r and t else ''
    s_ = (sample or {}).get('rows', {}).get(name)
    sampled = (f'{s_["seconds_per_batch"]["median"]:.3f} [{s_["seconds_per_batch"]["min"]:.3f}, '
               f'{s_["seconds_per_batch"]["max"]:.3f}] | {s_["batch_size"]}' if s_ else 'not measured | ')
    ratio = (f'{s_["seconds_per_batch"]["median"] / base["seconds_per_batch"]["median"]:.1f}x'
             if s_ and base else '')
    lines.append(f'| {name} | {cell(t.get("first"))}{shared} | {cell(t.get("last"))}{shared} | {sampled} | {ratio} |')
  return lines


def speed_plot(table: str, data: dict, plan: dict, path: str) -> str | None:
  """Gen. PPL (log) against sampling seconds per batch: one curve per timed row across budgets."""
  from matplotlib.figure import Figure
  timed = {n: e for n, e in data['rows'].items() if 'timing' in e}
  if not timed:
    return None
  fig = Figure(figsize=(8, 5), layout='constrained')
  ax = fig.subplots()
  for name, entry in timed.items():
    pts = [(entry['timing']['sample_seconds_per_batch'][str(s)][0], entry['steps'][str(s)]['gen_ppl'][0], s)
           for s in plan['sample_steps']]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if pts:
      xs, ys, ss = zip(*pts)
      line, = ax.plot(xs, ys, marker='o', label=name)
      for x, y, s in pts:
        ax.annotate(str(s), (x, y), fontsize=7, color=line.get_color())
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('sampling seconds per batch')
  ax.set_ylabel(f'Gen. PPL ({plan["scorer"]})')
  ax.set_title(f'{table} [{plan["scale"]}]: quality against sampling time (budgets annotated)', fontsize=9)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  with fileio.atomic_open(path, binary=True) as f:
    fig.savefig(f, format='png', dpi=110)
  return path


def frontier(reference: dict, order_name: str) -> list[tuple[float, float]]:
  """The order's frontier (ngram.frontier) from a table's reference rows' means."""
  return ngram_lib.frontier({n: (r['entropy'][0], r['gen_ppl'][0]) for n, r in reference.items()}, order_name)


def _train_minutes(record: dict, run_dir: str, two_stage: bool) -> float | None:
  """Wall minutes of a run's training, its first stage included (None where a stage's time is unknown).
  A run continued from a checkpoint (record['train_resumed_from_step']) timed only the steps after it:
  that time is scaled by steps / steps after the resume (the report names those runs). A record
  marked `train_time_disturbed` (a sentence: what else ran or paused it while it trained, set by
  hand) has no clean time: None, and the report names it."""
  seconds = record.get('seconds', {})
  if 'train' not in seconds or record.get('train_time_disturbed'):
    return None
  total = seconds['train']
  resumed, steps = record.get('train_resumed_from_step'), record.get('checkpoint_step')
  if resumed and steps:   # timed after a resume only: scaled to the whole run
    if steps <= resumed:   # trained before this record was begun (a lost done.json): unknown
      return None
    total *= steps / (steps - resumed)
  if two_stage:
    stage_one = seconds.get('stage_one_train')
    if stage_one is None:   # a record written before the stage's time was added to it
      stage_done = os.path.join(stage_one_dir(run_dir), DONE_FILE)
      if not os.path.isfile(stage_done):
        return None
      stage_one = read_json(stage_done)['seconds']['train']
    total += stage_one
  return total / 60


def _fmt_ratio(metrics: dict, points: list[tuple[float, float]]) -> str:
  return ngram_lib.format_frontier_ratio(metrics['entropy'][0], metrics['gen_ppl'][0], points)


def fmt(stat, digits: int = 1) -> str:
  """'mean ± std' with `digits` decimals, 'n/a' without a mean."""
  mean, std = stat
  if mean is None:
    return 'n/a'
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def render_markdown(table: str, data: dict, plan: dict, plot_name: str, report_date: str) -> str:
  """TABLE.md: the header (command, machine, dates, protocol), the headline table, the orderings, every step count."""
  steps = plan['sample_steps']
  head = str(steps[-1])
  lines = [f'# {tables.get(table).TITLE} (scale: {plan["scale"]})', '',
           f'- command: `{plan.get("command") or "python -m ldlm_jax.experiments run " + table}`',
           f'- machine: {plan["machine"]}',
           (f'- date: started {plan["started"]}, finished {plan.get("finished", "(not finished)")}; '
            f'report {report_date}'),
           (f'- base config `{plan["base_config"]}` with `{json.dumps(plan["scale_overrides"])}`; '
            f'{plan["seeds"]} seed(s); {plan["num_samples"]} samples per run and step count; '
            f'MAUVE against {plan["num_references"]} held-out chunks; scorer `{plan["scorer"]}`; '
            f'expected time per run: {plan.get("expected_minutes_per_run", "?")} minutes')]
  for name, stage in plan.get('stage_one', {}).items():
    lines.append(f'- `{name}` trains in two stages: `{stage["config"]}` for {stage["num_steps"]} steps '
                 f'(runs/{name}/stage_one/seedS, not sampled), then the row\'s config for the full run '
                 'from it (train.init_from, autoencoder frozen)')
  for name, entry in data['rows'].items():
    for seed, step in entry.get('train_resumed_from_step', {}).items():
      lines.append(f'- `{name}` seed {seed}: training continued from its step-{step} checkpoint (a stopped '
                   'sweep); its train minutes are the time after it, scaled to the whole run (unknown '
                   'where the checkpoint was the last step)')
    for seed, why in entry.get('train_time_disturbed', {}).items():
      lines.append(f'- `{name}` seed {seed}: its train minutes are left out ({why}); its quality numbers '
                   'do not depend on them')
    for seed, source in entry['reused_from'].items():
      lines.append(f'- `{name}` seed {seed}: the same run (identical config, seed and protocol) finished in '
                   f'another sweep, `{source}`; its evaluation is reused (`--reuse`)')
  if plan['scorer'] == 'tiny-random':
    lines.append('- **smoke scale: the scorer is a tiny random Llama and training runs a few steps; '
                 'these numbers only show that the pipeline runs.**')
  lines += ['', (f'Mean ± std over seeds at {head} denoising steps (Gen. PPL lower is better; entropy of '
                'held-out text is the target; MAUVE higher is better; train minutes: wall clock of training on '
                'the sweep\'s machine, a two-stage row\'s first stage included).'), '',
            ('| row | seeds | Gen. PPL | entropy | MAUVE | 2-4-gram diversity | PPL per word | '
             '÷ unigram frontier | train minutes |'),
            '|---|---|---|---|---|---|---|---|---|']
  unigram_frontier = frontier(data['reference'], 'unigram')
  for name in plan['rows']:
    if name in plan.get('unavailable', {}):
      lines.append(f'| {name} | - | {plan["unavailable"][name]} | | | | | |')
      continue
    entry = data['rows'].get(name)
    if entry is None:
      lines.append(f'| {name} | 0 | (not finished) | | | | | |')
      continue
    m = entry['steps'][head]
    lines.append(f'| {name} | {entry["seeds"]} | {fmt(m["gen_ppl"])} | {fmt(m["entropy"], 2)} | '
                 f'{fmt(m["mauve"], 3)} | {fmt(m["diversity"], 2)} | {fmt(m["word_ppl"], 0)} | '
                 f'{_fmt_ratio(m, unigram_frontier)} | {fmt(entry.get("train_minutes", (None, None)))} |')
  for name in REFERENCE_ROWS:
    m = data['reference'].get(name)
    if m:
      order_name, temperature = ngram_lib.split_row_name(name)
      label = ('held-out text' if name == 'held_out' else
               f'{order_name} samples' + (f', T = {temperature:g}' if temperature else ''))
      lines.append(f'| *{label}* | {m["seeds"]} | {fmt(m["gen_ppl"])} | {fmt(m["entropy"], 2)} | '
                   f'{fmt(m["mauve"], 3)} | {fmt(m["diversity"], 2)} | {fmt(m["word_ppl"], 0)} | '
                   f'{"" if order_name == "unigram" else _fmt_ratio(m, unigram_frontier)} | |')
  lines += ['', ('"÷ unigram frontier": the row\'s Gen. PPL over that of word-frequency samples at the same '
                'entropy (the unigram and tempered-unigram rows, interpolated log-linearly in entropy; above '
                'the untempered row\'s entropy "≤ r", r = the row\'s Gen. PPL over that row\'s, an upper bound; '
                'blank below the range). Below 1: better than word frequencies alone at that entropy, i.e. some '
                'word order learned; about 1: a lower Gen. PPL bought with a lower entropy only.')]
  checks = tables.orderings(table, data, plan)
  if checks:
    lines += ['', '## The paper\'s orderings', '']
    lines += [f'- **{claim}**: {verdict}. {numbers}.' for claim, verdict, numbers in checks]
    lines += ['', verdicts.RULE]
  lines += ['', '## Every step count (Gen. PPL / entropy)', '',
            '| row | ' + ' | '.join(f'{s} steps' for s in steps) + ' |', '|---|' + '---|' * len(steps)]
  for name, entry in data['rows'].items():
    cells = [f'{fmt(entry["steps"][str(s)]["gen_ppl"])} / {fmt(entry["steps"][str(s)]["entropy"], 2)}'
             for s in steps]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += render_side_by_side(data)
  lines += render_timing(data, plan)
  lines += ['', f'![Gen. PPL against entropy]({plot_name})', '']
  if any('timing' in e for e in data['rows'].values()):
    lines += [f'![Gen. PPL against sampling time]({speed_plot_name(plot_name)})', '']
  return '\n'.join(lines)


def speed_plot_name(plot_name: str) -> str:
  return plot_name.replace('pareto', 'pareto_time')


def report(out_dir: str, publish: str = '') -> dict:
  """Redraws DIR/TABLE.md, DIR/TABLE.json and DIR/pareto.png from the saved evaluations.

  With `publish`, also writes P/TABLE.md, P/TABLE.json, P/TABLE_pareto.png and mirrors the
  records into P/raw/TABLE (publish_raw). Returns TABLE.json's payload.
  """
  plan_path = os.path.join(out_dir, PLAN_FILE)
  if not os.path.isfile(plan_path):
    raise ExperimentError(f'{out_dir} holds no sweep ({PLAN_FILE} is missing); run '
                          '`python -m ldlm_jax.experiments run TABLE --out DIR` first.')
  plan = read_json(plan_path)
  table = plan['table']
  data = collect(out_dir, plan)
  checks = tables.orderings(table, data, plan)
  report_date = now()
  payload = {'plan': plan, 'rows': data['rows'], 'reference': data['reference'],
             **({'side_by_side': data['side_by_side']} if 'side_by_side' in data else {}),
             'orderings': [{'claim': c, 'verdict': v, 'numbers': n} for c, v, n in checks], 'report': report_date}
  targets = [(out_dir, 'pareto.png')]
  if publish:
    os.makedirs(publish, exist_ok=True)
    targets.append((publish, f'{table}_pareto.png'))
    publish_raw(out_dir, os.path.join(publish, RAW_DIR, table))
  for directory, plot_name in targets:
    pareto_plot(table, data, plan, os.path.join(directory, plot_name))
    speed_plot(table, data, plan, os.path.join(directory, speed_plot_name(plot_name)))
    fileio.write_text(os.path.join(directory, f'{table}.md'),
                      render_markdown(table, data, plan, plot_name, report_date))
    write_json(os.path.join(directory, f'{table}.json'), payload)
  return payload


def _raw_files(out_dir: str) -> list[str]:
  """The sweep's small JSON records, relative to DIR: plan, reference rows' and finished runs' evaluations."""
  patterns = (PLAN_FILE, SIDE_BY_SIDE_FILE, os.path.join('reference', 'seed*', DONE_FILE), os.path.join('runs', '*', 'alias.json'),
              os.path.join('runs', '*', 'seed*', DONE_FILE))
  return sorted(os.path.relpath(f, out_dir) for p in patterns for f in glob.glob(os.path.join(out_dir, p)))


def publish_raw(out_dir: str, raw_dir: str) -> None:
  """Mirrors the sweep's evaluations (no checkpoints, no samples) into raw_dir, in the sweep's layout.

  `report raw_dir` redraws the table from it, and a sweep directory seeded with a copy of it continues
  the sweep: its finished runs and reference rows are skipped, and `run --reuse raw_dir` matches its runs
  (a run's done.json there carries its config hash). (A stage one is not mirrored: its
  checkpoint is what a stage two needs, so an unfinished two-stage run starts again from stage one.)
  """
  if os.path.abspath(raw_dir) == os.path.abspath(out_dir):
    return
  for rel in _raw_files(out_dir):
    with open(os.path.join(out_dir, rel), encoding='utf-8') as f:
      text = f.read()
    if rel.startswith('runs') and rel.endswith(DONE_FILE):   # the mirror keeps what --reuse matches on
      record = json.loads(text)
      if 'stage' not in record and 'config_sha256' not in record:
        from ldlm_jax.experiments.reuse import run_config_sha256
        sha = run_config_sha256(os.path.dirname(os.path.join(out_dir, rel)), record)
        if sha:
          text = json.dumps({**record, 'config_sha256': sha}, indent=2, allow_nan=False) + '\n'
    target = os.path.join(raw_dir, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fileio.write_text(target, text)


def pareto_plot(table: str, data: dict, plan: dict, path: str) -> str:
  """Gen. PPL (log) against entropy: one curve per row across step counts, reference rows as markers."""
  from matplotlib import colormaps
  from matplotlib.figure import Figure
  fig = Figure(figsize=(9.5, 5.5), layout='constrained')
  ax = fig.subplots()
  colors = colormaps['tab20'].colors
  for index, (name, entry) in enumerate(data['rows'].items()):
    pts = [(entry['steps'][str(s)]['entropy'][0], entry['steps'][str(s)]['gen_ppl'][0], s)
           for s in plan['sample_steps'] if entry['steps'].get(str(s), {}).get('gen_ppl', (None,))[0] is not None]
    if not pts:
      continue
    xs, ys, ss = zip(*pts)
    line, = ax.plot(xs, ys, marker='os^D'[index // 10 % 4], color=colors[index % 20], label=name,
                    linestyle=('-', '--')[index // 10 % 2])
    ax.annotate(str(ss[-1]), (xs[-1], ys[-1]), fontsize=7, color=line.get_color())
  for order_name, style in (('unigram', ':'), ('bigram', '-.')):
    points = frontier(data['reference'], order_name)
    if len(points) > 1:
      ax.plot(*zip(*points), linestyle=style, color='gray', marker='.',
              label=f'{order_name}, T = {", ".join(f"{t:g}" for t in ngram_lib.TEMPERED[order_name])}, 1')
  markers = {'unigram': 'x', 'bigram': '+', 'trigram': '1', 'held_out': '*'}
  for name, entry in data['reference'].items():
    if name in markers and entry['gen_ppl'][0] is not None:
      ax.scatter([entry['entropy'][0]], [entry['gen_ppl'][0]], marker=markers[name], s=90, color='black',
                 label=name.replace('_', '-'), zorder=5)
  ax.set_yscale('log')
  ax.set_xlabel('unigram entropy (nats, scorer tokens)')
  ax.set_ylabel(f'Gen. PPL ({plan["scorer"]})')
  ax.set_title(f'{table} [{plan["scale"]}]: one curve per row over {plan["sample_steps"]} denoising steps '
               '(the last annotated)', fontsize=9)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  with fileio.atomic_open(path, binary=True) as f:
    fig.savefig(f, format='png', dpi=110)
  return path

"""A one-off study on one trained run: decoding the last latent z against the last clean estimate x0_hat.

  python -m ldlm_jax.experiments ab_final WORKDIR --out DIR [--steps 25,50,100] [--seeds 2]

Same checkpoint, seeds and step counts for both arms (so the same initial noise and solver
noise); every sample set evaluated like the tables'. Writes DIR/ab_final.md and
DIR/ab_final.json; resumable (sample files are kept and read back).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from ldlm_jax import fileio
from ldlm_jax.experiments import verdicts
from ldlm_jax.experiments.evaluator import (
  Evaluator,
  machine_description,
  reference_texts,
)
from ldlm_jax.experiments.records import now, write_json
from ldlm_jax.experiments.report import METRICS, fmt, stats
from ldlm_jax.experiments.spec import SCALES

ARMS = ('z', 'x0')


def render_markdown(results: dict, steps: Sequence[int], seeds: int, header: dict) -> str:
  """ab_final.md from the per-arm results ({arm: {steps: {metric: (mean, std)}}}) and the header's fields:
  command, workdir, checkpoint_step, solver, time_grid, t_min, machine, date, num_samples, scorer,
  num_references."""
  h = header
  lines = ['# A/B: decode the last latent z vs the last clean estimate x0_hat', '',
           f'- command: `{h["command"]}`',
           (f'- run: `{h["workdir"]}` (checkpoint step {h["checkpoint_step"]}), '
            f'solver {h["solver"]}, time grid {h["time_grid"]}, t_min {h["t_min"]}'),
           f'- machine: {h["machine"]}', f'- date: {h["date"]}',
           (f'- {seeds} seed(s) x {h["num_samples"]} samples per arm and step count; scorer `{h["scorer"]}`; '
            f'MAUVE against {h["num_references"]} held-out chunks'), '',
           '| steps | arm | Gen. PPL | entropy | MAUVE |', '|---|---|---|---|---|']
  for n in steps:
    for final in ARMS:
      m = results[final][str(n)]
      lines.append(f'| {n} | {final} | {fmt(m["gen_ppl"])} | {fmt(m["entropy"], 2)} | {fmt(m["mauve"], 3)} |')
  lines += ['', ('Verdict per step count: "x0 better" / "z better" when the Gen. PPL means differ by more than '
                'sqrt(std_x0^2 + std_z^2) (std over seeds, ddof=0), else "inside the error bars".'), '']
  for n in steps:
    data = {'rows': {f: {'seeds': seeds, 'steps': {str(n): results[f][str(n)]}} for f in ARMS}, 'reference': {}}
    verdict, numbers = verdicts.beats(data, {'sample_steps': [n]}, 'x0', 'z')
    verdict = {'reproduced': 'x0 better', 'not reproduced': 'z better'}.get(verdict, verdict)
    lines.append(f'- {n} steps: {verdict}. {numbers}.')
  return '\n'.join(lines) + '\n'


def ab_final(workdir: str, out_dir: str, steps: Sequence[int], seeds: int, num_samples: int,
             scorer: str = 'smollm2', num_references: int = 256, command: str = '') -> str:
  """Samples and evaluates both arms at every step count and seed; returns the path of ab_final.md."""
  from ldlm_jax import sampling as sample_lib
  from ldlm_jax.evaluate import read_samples
  from ldlm_jax.training import restore
  run = restore.load_run(workdir)
  sc = run.config.sample
  references, _ = reference_texts(run.config, num_references, 2)
  scale = dataclasses.replace(SCALES['smoke' if scorer == 'tiny-random' else 'cpu'], scorer=scorer)
  evaluator = Evaluator(scale, out_dir, references)
  results = {}
  for final in ARMS:
    for n in steps:
      per_seed = []
      for seed in range(seeds):
        path = os.path.join(out_dir, f'final_{final}', f'steps{n}_seed{seed}.jsonl')
        if os.path.isfile(path):
          records = read_samples(path)
        else:
          records = sample_lib.generate_samples(
              run, num_samples, n, seed, int(sc.batch_size), time_grid=sc.time_grid, t_min=float(sc.t_min),
              solver=sc.solver, final=final, progress=False)
          sample_lib.write_jsonl(path, records)
        per_seed.append(evaluator.evaluate(path, records))
      results.setdefault(final, {})[str(n)] = {m: stats([r.get(m) for r in per_seed]) for m in METRICS}
  header = {'command': command, 'workdir': workdir, 'checkpoint_step': run.step, 'solver': sc.solver,
            'time_grid': sc.time_grid, 't_min': sc.t_min, 'machine': machine_description(), 'date': now(),
            'num_samples': num_samples, 'scorer': scorer, 'num_references': len(references)}
  path = os.path.join(out_dir, 'ab_final.md')
  fileio.write_text(path, render_markdown(results, steps, seeds, header))
  write_json(os.path.join(out_dir, 'ab_final.json'), {'workdir': workdir, 'results': results, 'command': command})
  return path

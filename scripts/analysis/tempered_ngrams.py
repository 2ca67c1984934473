"""Tempered n-gram sample sets (3 seeds x 64 samples of the run's length) scored like a run's samples (SmolLM2, no MAUVE).

  python -m scripts.analysis.tempered_ngrams WORKDIR ORDER T [T ...] [--dry_run]

ORDER 1 (unigram) or 2 (bigram); for each temperature T writes WORKDIR/eval/ngramORDER_TT_sS.jsonl
per seed and WORKDIR/eval/ngramORDER_TT.json (`evaluate` metrics), then prints one line: Gen.
PPL and entropy, mean +- std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

SEEDS = 3
NUM_SAMPLES = 64


def commands(workdir: str, order: int, temperature: str, python: str = sys.executable) -> tuple[list[list[str]], str]:
  """(the sampling commands and the evaluate command, the metrics JSON the last one writes)."""
  eval_dir = os.path.join(workdir, 'eval')
  stem = os.path.join(eval_dir, f'ngram{order}_T{temperature}')
  samples = [f'{stem}_s{s}.jsonl' for s in range(SEEDS)]
  out = [[python, '-m', 'ldlm_jax.evaluation.ngram', '--workdir', workdir, '--order', str(order),
          '--num_samples', str(NUM_SAMPLES), '--seed', str(s), '--temperature', temperature, '--out', path]
         for s, path in enumerate(samples)]
  out.append([python, '-m', 'ldlm_jax.evaluate', '--samples', *samples, '--scorer', 'smollm2', '--out', f'{stem}.json'])
  return out, f'{stem}.json'


def summary(metrics_path: str) -> str:
  """'PATH: Gen. PPL M +- S, entropy M +- S' from an `evaluate` metrics JSON."""
  with open(metrics_path, encoding='utf-8') as f:
    d = json.load(f)
  m, s = d['mean'], d['std']
  return (f"{metrics_path}: Gen. PPL {m['gen_ppl']:.0f} +- {s['gen_ppl']:.0f}, "
          f"entropy {m['entropy']:.2f} +- {s['entropy']:.2f}")


def main(argv: Sequence[str] | None = None) -> list[str]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdir')
  parser.add_argument('order', type=int, choices=(1, 2))
  parser.add_argument('temperatures', nargs='+', help='e.g. 0.6 0.8 (used as given in the file names)')
  parser.add_argument('--dry_run', action='store_true', help='print the commands instead of running them')
  args = parser.parse_args(argv)
  lines = []
  if not args.dry_run:
    os.makedirs(os.path.join(args.workdir, 'eval'), exist_ok=True)
  for temperature in args.temperatures:
    todo, metrics = commands(args.workdir, args.order, temperature)
    for command in todo:
      if args.dry_run:
        print(' '.join(command))
      else:
        # The metrics go to the JSON file; the sampling commands print their own progress.
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL if command is todo[-1] else None)
    if not args.dry_run:
      lines.append(summary(metrics))
      print(lines[-1], flush=True)
  return lines


if __name__ == '__main__':
  main()

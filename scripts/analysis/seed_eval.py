"""A trained run sampled with 3 seeds x 64 samples and evaluated: Gen. PPL (SmolLM2), MAUVE vs 256 references, n-gram rows.

  python -m scripts.analysis.seed_eval WORKDIR [--final z|x0] [--steps 100] [--no_ngram]
      [--checkpoint_step N] [--dry_run]

Writes WORKDIR/references.jsonl (once), WORKDIR/eval/FINAL_STEPS[_cN]_sS.jsonl per seed and
WORKDIR/eval/FINAL_STEPS[_cN].json (the `evaluate` metrics; _cN when --checkpoint_step N is
given). Each step is the repository's own command (`ldlm_jax.data.references`, `ldlm_jax.sample`,
`ldlm_jax.evaluate`) run in a subprocess; --dry_run prints them instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence


def commands(workdir: str, final: str = 'z', steps: int = 100, ngram: bool = True, checkpoint_step: int | None = None,
             seeds: int = 3, num_samples: int = 64, num_references: int = 256,
             python: str = sys.executable) -> list[tuple[list[str], int]]:
  """[(argv, lines of its output to print)] in order; the references command only while the file is missing."""
  tag = f'_c{checkpoint_step}' if checkpoint_step is not None else ''
  eval_dir = os.path.join(workdir, 'eval')
  references = os.path.join(workdir, 'references.jsonl')
  out = []
  if not os.path.isfile(references):
    out.append(([python, '-m', 'ldlm_jax.data.references', '--workdir', workdir, '--num_texts', str(num_references),
                 '--out', references], 1))
  samples = [os.path.join(eval_dir, f'{final}_{steps}{tag}_s{s}.jsonl') for s in range(seeds)]
  for seed, path in enumerate(samples):
    ckpt = ['--checkpoint_step', str(checkpoint_step)] if checkpoint_step is not None else []
    out.append(([python, '-m', 'ldlm_jax.sample', '--workdir', workdir, '--num_samples', str(num_samples),
                 '--seed', str(seed), '--steps', str(steps), '--final', final, *ckpt, '--out', path], 1))
  evaluate = [python, '-m', 'ldlm_jax.evaluate', '--samples', *samples, '--references', references,
              '--scorer', 'smollm2', '--out', os.path.join(eval_dir, f'{final}_{steps}{tag}.json')]
  if ngram:
    evaluate += ['--ngram_baselines', workdir]
  out.append((evaluate, 20))
  return out


def run(argv: list[str], tail: int) -> None:
  """Runs one command; prints the last `tail` lines of its output, warnings left out. Raises on failure."""
  proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if 'Warn' not in l]
  print('\n'.join(lines[-tail:]), flush=True)
  if proc.returncode:
    raise SystemExit(f'failed ({proc.returncode}): {" ".join(argv)}')


def main(argv: Sequence[str] | None = None) -> list[tuple[list[str], int]]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdir')
  parser.add_argument('--final', default='z', choices=('z', 'x0'))
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--no_ngram', action='store_true', help='leave out the n-gram rows of `evaluate`')
  parser.add_argument('--checkpoint_step', type=int, default=None, help='default: the latest checkpoint')
  parser.add_argument('--dry_run', action='store_true', help='print the commands instead of running them')
  args = parser.parse_args(argv)
  todo = commands(args.workdir, args.final, args.steps, not args.no_ngram, args.checkpoint_step)
  if not args.dry_run:
    os.makedirs(os.path.join(args.workdir, 'eval'), exist_ok=True)
  for command, tail in todo:
    if args.dry_run:
      print(' '.join(command))
    else:
      run(command, tail)
  return todo


if __name__ == '__main__':
  main()

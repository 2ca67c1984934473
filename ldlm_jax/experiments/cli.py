"""`python -m ldlm_jax.experiments {run,report,time,ab_final}`: the command line of the experiments package.

A user error (ExperimentError, ConfigError, DataError, FileNotFoundError) prints one line,
`error: MESSAGE`, on stderr and returns 2; anything else is a bug and raises.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from ldlm_jax.experiments import tables
from ldlm_jax.experiments.spec import SCALES

DESCRIPTION = 'The paper\'s tables reproduced at small scale: one command per table.'


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  from ldlm_jax import cli
  parser = cli.ArgumentParser(prog='python -m ldlm_jax.experiments', description=DESCRIPTION)
  sub = parser.add_subparsers(dest='command', required=True)
  run = sub.add_parser('run', help='train, sample and evaluate every row of a table (resumable)')
  run.add_argument('table', choices=tables.NAMES)
  run.add_argument('--scale', default='cpu', choices=tuple(SCALES))
  run.add_argument('--seeds', type=int, default=2)
  run.add_argument('--out', required=True, help='sweep directory (runs, evaluations, TABLE.md)')
  run.add_argument('--rows', default='', help='comma-separated subset of the rows (default: all)')
  run.add_argument('--skip_unavailable', action='store_true',
                   help='report rows that cannot run here (missing weights or configs) instead of stopping')
  run.add_argument('--reuse', action='append', default=[], metavar='DIR',
                   help='another sweep directory (repeatable): a finished run there with the same config, seed and '
                        'evaluation protocol is copied instead of trained (its done.json says from where)')
  run.add_argument('--publish', default='', metavar='P',
                   help='publish the report here (as `report --publish P`) after every run that finishes and at the '
                        'end: P/raw/TABLE keeps the finished runs if this machine is lost')
  rep = sub.add_parser('report', help='redraw TABLE.md, TABLE.json and pareto.png from a sweep directory')
  rep.add_argument('dir')
  rep.add_argument('--publish', default='',
                   help='also write TABLE.md, TABLE.json, TABLE_pareto.png here, and the evaluations in raw/TABLE '
                        '(a copy of it continues the sweep in a fresh directory)')
  tim = sub.add_parser('time', help='time the train step and sampler of a finished sweep\'s rows side by side '
                                    'in one process (Table 3; `run` does it when its runs are done)')
  tim.add_argument('dir')
  tim.add_argument('--seed', type=int, default=0, help='whose runs are restored (default 0)')
  tim.add_argument('--repeats', type=int, default=None,
                   help='sampling rounds, one headline-budget batch per row each (default: per scale)')
  tim.add_argument('--part', default='all', choices=('all', 'train', 'sample'),
                   help='measure only the train steps or only the samplers; the record keeps the other part')
  ab = sub.add_parser('ab_final', help='A/B on one trained run: decode the last z vs the last x0_hat')
  ab.add_argument('workdir')
  ab.add_argument('--out', required=True)
  ab.add_argument('--steps', default='25,50,100', help='comma-separated denoising step counts')
  ab.add_argument('--seeds', type=int, default=2)
  ab.add_argument('--num_samples', type=int, default=64)
  ab.add_argument('--num_references', type=int, default=256)
  ab.add_argument('--scorer', default='smollm2', choices=('smollm2', 'tiny-random'))
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  from ldlm_jax import cli
  cli.hide_expected_warnings()
  command = 'python -m ldlm_jax.experiments ' + ' '.join(
      shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
  try:
    if args.command == 'run':
      from ldlm_jax.experiments.sweep import run_table
      payload = run_table(args.table, args.scale, args.seeds, args.out,
                          [r for r in args.rows.split(',') if r], args.skip_unavailable, command, args.reuse,
                          args.publish)
    elif args.command == 'time':
      from ldlm_jax.experiments.report import report
      from ldlm_jax.experiments.side_by_side import time_side_by_side
      time_side_by_side(args.dir, args.seed, args.repeats, command, args.part)
      payload = report(args.dir)
    elif args.command == 'ab_final':
      from ldlm_jax.experiments.ab_final import ab_final
      path = ab_final(args.workdir, args.out, [int(s) for s in args.steps.split(',') if s], args.seeds,
                      args.num_samples, args.scorer, args.num_references, command)
      with open(path, encoding='utf-8') as f:
        print(f.read())
      return 0
    else:
      from ldlm_jax.experiments.report import report
      payload = report(args.dir, args.publish)
  except cli.USER_ERRORS as e:   # ExperimentError, config, data, checkpoint, encoder errors
    print(f'error: {e}', file=sys.stderr)
    return 2
  table = payload['plan']['table']
  out = args.out if args.command == 'run' else args.dir
  # The terminal gets the results table of TABLE.md (the rows beside the reference rows);
  # every number is in TABLE.json.
  with open(os.path.join(out, table + '.md'), encoding='utf-8') as f:
    md = f.read().split('\n')
  start = next((i for i, line in enumerate(md) if line.startswith('| row | seeds |')), len(md))
  for line in md[start:]:
    if not line.startswith('|'):
      break
    print(line)
  print(f'wrote {os.path.join(out, table + ".md")}, {table}.json and pareto.png')
  for item in payload['orderings']:
    print(f'  {item["claim"]}: {item["verdict"]}')
  return 0

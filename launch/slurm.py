r"""Writes and submits a SLURM batch job that trains LDLM on several GPU nodes.

  python launch/slurm.py --nodes 2 --gpus_per_node 8 \
      --config configs/owt.py --workdir /shared/runs/owt \
      [--partition gpu] [--account ACC] [--time 2-00:00:00] [--cpus_per_task 12] \
      [--setup none|pip|venv] [--preamble 'module load cuda/12'] \
      [--env LDLM_GPT2_PATH=/shared/models/gpt2] [--sbatch_arg=--qos=high] \
      [--dry_run] [--config.train.batch_size=512 ...]

The script goes to --script (default WORKDIR/slurm/JOB_NAME.sbatch), then
`sbatch SCRIPT` submits it; --dry_run prints the script and the sbatch
command and writes nothing. The repository, its Python environment and the
work directory are assumed to be on a filesystem every node shares (so
set-up runs once, on the first node), and relative paths given here are
made absolute against the current directory (config paths: against the
repository).

One task per GPU (--ntasks-per-node = --gpus_per_node), every task seeing
all of its node's GPUs: JAX's SLURM auto-detection, which the trainer's
jax.distributed.initialize() uses when SLURM_NTASKS > 1, reads SLURM_JOB_ID,
SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID (all set by
srun) and makes process i on a node drive local GPU i. One task per node
would therefore drive GPU 0 only, and per-task GPU binding (--gpus-per-task,
--gpu-bind) would renumber the GPUs under it. --exclusive (default on) keeps
partial-node allocations, whose GPU numbering need not start at 0, away.
Each task logs to its own file: WORKDIR/slurm/JOB_NAME-JOBID.taskN.log.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

if __package__ in (None, ''):  # run as a file: python launch/slurm.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # noqa: E402

_SAFE_VALUE = re.compile(r'[^\s%#]+\Z')   # #SBATCH lines are not shell-parsed: no quoting there


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python launch/slurm.py', allow_abbrev=False,
      description='Write and submit a multi-node SLURM GPU job that trains LDLM (one task per GPU). '
                  'Config overrides (--config.a.b=value) go after the other arguments.')
  group = parser.add_argument_group('SLURM')
  group.add_argument('--nodes', type=int, required=True, help='Number of nodes.')
  group.add_argument('--gpus_per_node', type=int, required=True,
                     help='GPUs per node; one training process (task) runs per GPU.')
  group.add_argument('--cpus_per_task', type=int, default=None,
                     help='CPU cores per task (data loading); default: the partition default.')
  group.add_argument('--job_name', default=None, help='Job name (default ldlm-<workdir name>).')
  group.add_argument('--partition', default=None)
  group.add_argument('--account', default=None)
  group.add_argument('--time', default=None, help='Time limit, e.g. 2-00:00:00.')
  group.add_argument('--no_exclusive', action='store_true',
                     help='Do not ask for whole nodes (only if your GPUs are always numbered from 0).')
  group.add_argument('--sbatch_arg', action='append', default=[], metavar='--OPTION=VALUE',
                     help='An extra #SBATCH option, verbatim (repeatable), e.g. --sbatch_arg=--qos=high.')
  group.add_argument('--repo_dir', default=common.REPO_ROOT,
                     help='The repository on the shared filesystem (default: this checkout).')
  group.add_argument('--log_dir', default=None, help='SLURM log directory (default WORKDIR/slurm).')
  group.add_argument('--script', default=None, help='Where to write the batch script '
                     '(default LOG_DIR/JOB_NAME.sbatch).')
  common.add_train_args(parser, default_jax_extra='jax[cuda12]')
  return parser


def _directive_value(flag: str, value: str) -> str:
  if not _SAFE_VALUE.match(value):
    raise common.LaunchError(f'{flag} {value!r} cannot go on an #SBATCH line (no spaces, "%" or "#"); '
                             'choose a value without them.')
  return value


def resolve(args) -> None:
  """Validates the request and fills in the derived paths (in place); raises LaunchError."""
  if args.nodes < 1 or args.gpus_per_node < 1:
    raise common.LaunchError(f'--nodes ({args.nodes}) and --gpus_per_node ({args.gpus_per_node}) '
                             'must be at least 1.')
  if args.cpus_per_task is not None and args.cpus_per_task < 1:
    raise common.LaunchError(f'--cpus_per_task must be at least 1, got {args.cpus_per_task}.')
  args.env_pairs = common.parse_env(args.env)
  common.check_workdir(args.workdir)
  args.repo_dir = os.path.abspath(args.repo_dir)
  common.check_config(args.config, args.repo_dir)
  args.workdir = os.path.abspath(args.workdir)
  args.job_name = _directive_value('--job_name', args.job_name or f'ldlm-{common.run_name(args.workdir)}')
  args.log_dir = _directive_value(
      '--log_dir', os.path.abspath(args.log_dir or os.path.join(args.workdir, 'slurm')))
  args.script = os.path.abspath(args.script or os.path.join(args.log_dir, f'{args.job_name}.sbatch'))
  for flag in ('partition', 'account', 'time'):
    if getattr(args, flag) is not None:
      _directive_value(f'--{flag}', getattr(args, flag))
  for extra in args.sbatch_arg:
    if not extra.startswith('-') or '\n' in extra:
      raise common.LaunchError(f'--sbatch_arg {extra!r} is not an sbatch option; write e.g. '
                               '--sbatch_arg=--qos=high.')


def batch_script(args) -> str:
  """The sbatch script text (args as filled in by `resolve`)."""
  tasks_per_node = args.gpus_per_node
  directives = [
      f'--job-name={args.job_name}',
      f'--nodes={args.nodes}',
      f'--ntasks-per-node={tasks_per_node}',
      f'--gres=gpu:{args.gpus_per_node}',
      f'--output={args.log_dir}/%x-%j.out',
  ]
  if not args.no_exclusive:
    directives.append('--exclusive')
  if args.cpus_per_task is not None:
    directives.append(f'--cpus-per-task={args.cpus_per_task}')
  for flag in ('partition', 'account', 'time'):
    if getattr(args, flag) is not None:
      directives.append(f'--{flag}={getattr(args, flag)}')
  directives += args.sbatch_arg

  python = common.runtime_python(args.setup, args.python)
  srun = ['srun', '--kill-on-bad-exit=1', f'--ntasks-per-node={tasks_per_node}',
          f'--output={args.log_dir}/{args.job_name}-%j.task%t.log']
  if args.cpus_per_task is not None:
    # Newer SLURM versions do not pass the job's --cpus-per-task on to srun by themselves.
    srun.append(f'--cpus-per-task={args.cpus_per_task}')
  srun += common.train_argv(python, args.config, args.workdir, args.overrides)

  lines = ['#!/bin/bash',
           f'# LDLM training: {args.nodes} node(s) x {args.gpus_per_node} GPU(s), one task (JAX process) '
           f'per GPU, {args.nodes * args.gpus_per_node} in all.',
           '# Written by launch/slurm.py; submit with: sbatch THIS_FILE']
  lines += [f'#SBATCH {d}' for d in directives]
  lines += ['set -eo pipefail', f'cd {shlex.quote(args.repo_dir)}']
  lines += common.env_lines(args.env_pairs)
  if args.preamble:
    lines.append(args.preamble)
  setup = common.setup_lines(args.setup, args.python, args.jax_extra)
  if setup:
    lines.append('# Set-up, once, on the first node (repository and environment on a shared filesystem).')
    lines += setup
  lines += ['# srun sets SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS per task; the trainer then calls',
            '# jax.distributed.initialize(), whose SLURM detection gives task i of a node GPU i.',
            shlex.join(srun)]
  return '\n'.join(lines) + '\n'


def write_script(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def main(argv=None) -> int:
  args = common.parse_with_overrides(build_parser(), argv)
  try:
    resolve(args)
  except common.LaunchError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  script = batch_script(args)
  sbatch = ['sbatch', args.script]
  if args.dry_run:
    print(script, end='')
    print(f'# would write the script above to {args.script} and submit it with:')
    print(shlex.join(sbatch))
    return 0
  if shutil.which('sbatch') is None:
    print('error: sbatch is not on PATH; run this on a SLURM login node, or use --dry_run to '
          'print the script.', file=sys.stderr)
    return 2
  # SLURM does not create the directory of --output; without it the job's logs vanish.
  os.makedirs(args.log_dir, exist_ok=True)
  write_script(args.script, script)
  print(f'wrote {args.script}', file=sys.stderr)
  print(f'+ {shlex.join(sbatch)}', file=sys.stderr, flush=True)
  return subprocess.run(sbatch, check=False).returncode


if __name__ == '__main__':
  sys.exit(main())

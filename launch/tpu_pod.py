r"""Starts LDLM training on every worker of a Cloud TPU VM pod slice.

  python launch/tpu_pod.py --tpu my-v4-32 --zone us-central2-b \
      --config configs/lm1b.py --workdir /mnt/ldlm/runs/lm1b \
      [--project P] [--sync_code] [--setup none|pip|venv] [--python python3.11] \
      [--env LDLM_GPT2_PATH=/models/gpt2] [--env TFDS_DATA_DIR=gs://bucket/tfds] \
      [--detach] [--dry_run] [--config.train.batch_size=512 ...]

What it runs, in order (--dry_run prints exactly these and exits 0):
  1. with --sync_code: packs this checkout (git-tracked and untracked,
     non-ignored files, uncommitted edits included) into a local tarball and
     copies it to every worker with `gcloud compute tpus tpu-vm scp --worker=all`;
  2. `gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=all --command CMD`,
     where CMD, on every worker (each is one JAX process): unpacks the code
     into --repo_dir (with --sync_code), cd's there, exports --env, runs
     --preamble and the --setup install, then
     `python -m ldlm_jax.train --config C --workdir W [overrides]`.
Each worker's output goes to its own log, --log_dir/RUN.$(hostname).log on
that worker (TPU VM host names end in -w-<worker number>); attached runs
also stream it back here. --detach starts training under nohup and returns,
so it survives this terminal; follow it with
  gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=0 --command 'tail -f ldlm_logs/RUN.*.log'

The work directory must be one directory all workers share (checkpoints are
written by every process): a gcsfuse-mounted bucket or an NFS/Filestore
mount. The workers' login shell is assumed to be bash (as on TPU VM images).
Their system Python may be older than the 3.11 ldlm_jax needs: point
--python at a newer interpreter, or --preamble at an environment to activate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Callable

if __package__ in (None, ''):  # run as a file: python launch/tpu_pod.py
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch import common  # noqa: E402

# Where --sync_code puts the tarball on the workers before unpacking it.
REMOTE_TARBALL = '/tmp/ldlm_jax_code.tgz'


@dataclasses.dataclass
class Step:
  shell: str                  # what --dry_run prints: the exact command (or a '#' note for local work)
  run: Callable[[], int]      # does it; returns an exit code


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python launch/tpu_pod.py', allow_abbrev=False,
      description='Start LDLM training on all workers of a Cloud TPU VM pod slice. Config '
                  'overrides (--config.a.b=value) go after the other arguments.')
  group = parser.add_argument_group('TPU')
  group.add_argument('--tpu', required=True, help='TPU VM name (gcloud compute tpus tpu-vm list).')
  group.add_argument('--zone', required=True, help='Its zone, e.g. us-central2-b.')
  group.add_argument('--project', default=None, help='Google Cloud project (default: gcloud config).')
  group.add_argument('--repo_dir', default='ldlm_jax',
                     help='The repository on the workers (relative to the home directory).')
  group.add_argument('--sync_code', action='store_true',
                     help='Copy this checkout to --repo_dir on every worker first.')
  group.add_argument('--log_dir', default='ldlm_logs',
                     help='Per-worker log directory on the workers (relative to the home directory).')
  group.add_argument('--detach', action='store_true',
                     help='Start training under nohup and return (output only in the worker logs).')
  common.add_train_args(parser, default_jax_extra='jax[tpu]')
  return parser


def _gcloud(verb: str) -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb]


def _target_flags(args) -> list[str]:
  flags = [f'--zone={args.zone}']
  if args.project:
    flags.append(f'--project={args.project}')
  return flags + ['--worker=all']


def worker_script(args, env: list[tuple[str, str]]) -> str:
  """The shell lines every worker runs: code, environment, set-up, then the trainer."""
  repo = shlex.quote(args.repo_dir)
  lines = ['set -e']
  if args.sync_code:
    lines.append(f'mkdir -p {repo} && tar -xzf {REMOTE_TARBALL} -C {repo}')
  lines.append(f'cd {repo}')
  lines += common.env_lines(env)
  if args.preamble:
    lines.append(args.preamble)
  lines += common.setup_lines(args.setup, args.python, args.jax_extra)
  python = common.runtime_python(args.setup, args.python)
  # Cloud TPU VMs announce the pod through the metadata server, not the
  # environment, so the trainer is told to initialize jax.distributed.
  lines.append('exec ' + shlex.join(common.train_argv(python, args.config, args.workdir,
                                                      ['--distributed', *args.overrides])))
  return '\n'.join(lines)


def worker_command(args, env: list[tuple[str, str]]) -> str:
  """What --command runs on each worker: the script as a { } group with its output in a per-worker log.

  A brace group rather than `bash -c '...'` keeps one level of quoting, so the
  printed command stays readable; it runs in a subshell (pipeline or
  background), so its `set -e` and `cd` do not leak.
  """
  log_dir = shlex.quote(args.log_dir)
  log = f'{log_dir}/{shlex.quote(common.run_name(args.workdir))}.$(hostname).log'
  body = worker_script(args, env)
  if args.detach:
    # SIGHUP ignored (as nohup does) so that training outlives the ssh session.
    return (f"mkdir -p {log_dir} && {{\ntrap '' HUP\n{body}\n}} > {log} 2>&1 < /dev/null &\n"
            f'echo "$(hostname): training started, log $(readlink -f {log})"')
  return f'set -o pipefail; mkdir -p {log_dir} && {{\n{body}\n}} 2>&1 | tee {log}'


def pack_checkout(repo_dir: str, out_path: str) -> int:
  """Tars the checkout's tracked and untracked-but-not-ignored files (no .venv, no runs/)."""
  try:
    listed = subprocess.run(['git', '-C', repo_dir, 'ls-files', '-z', '--cached', '--others',
                             '--exclude-standard'], check=True, capture_output=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    print(f'error: --sync_code needs {repo_dir} to be a git checkout with git on PATH ({e}); '
          'copy the code to the workers yourself and drop --sync_code.', file=sys.stderr)
    return 2
  names = [n for n in listed.decode().split('\0') if n and os.path.isfile(os.path.join(repo_dir, n))]
  tmp = out_path + '.tmp'
  with tarfile.open(tmp, 'w:gz') as tar:
    for name in names:
      tar.add(os.path.join(repo_dir, name), arcname=name)
  os.replace(tmp, out_path)
  print(f'packed {len(names)} files of {repo_dir} into {out_path}', file=sys.stderr)
  return 0


def plan(args) -> list[Step]:
  """The steps of the launch, validated; raises LaunchError for a request that cannot work."""
  env = common.parse_env(args.env)
  common.check_workdir(args.workdir)
  common.check_config(args.config, common.REPO_ROOT)
  steps = []
  if args.sync_code:
    tarball = os.path.join(tempfile.gettempdir(), f'ldlm_jax_code_{common.run_name(args.workdir)}.tgz')
    steps.append(Step(
        f'# pack: git -C {shlex.quote(common.REPO_ROOT)} ls-files --cached --others '
        f'--exclude-standard -> {shlex.quote(tarball)} (tar.gz, written by this script)',
        lambda: pack_checkout(common.REPO_ROOT, tarball)))
    scp = _gcloud('scp') + [tarball, f'{args.tpu}:{REMOTE_TARBALL}'] + _target_flags(args)
    steps.append(Step(shlex.join(scp), lambda: subprocess.run(scp, check=False).returncode))
  ssh = (_gcloud('ssh') + [args.tpu] + _target_flags(args)
         + ['--command', worker_command(args, env)])
  steps.append(Step(shlex.join(ssh), lambda: subprocess.run(ssh, check=False).returncode))
  return steps


def main(argv=None) -> int:
  args = common.parse_with_overrides(build_parser(), argv)
  try:
    steps = plan(args)
  except common.LaunchError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.dry_run:
    for step in steps:
      print(step.shell)
    return 0
  if shutil.which('gcloud') is None:
    print('error: gcloud is not on PATH; install the Google Cloud CLI '
          '(https://cloud.google.com/sdk/docs/install), or use --dry_run to print the commands.',
          file=sys.stderr)
    return 2
  for step in steps:
    print(f'+ {step.shell}', file=sys.stderr, flush=True)
    rc = step.run()
    if rc != 0:
      print(f'error: step failed with exit code {rc}: {step.shell[:200]}', file=sys.stderr)
      return rc
  return 0


if __name__ == '__main__':
  sys.exit(main())

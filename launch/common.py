"""What the TPU-pod and SLURM launchers share: arguments, the train command, set-up lines.

Everything that reaches a remote shell is built as shell text here with
every user value passed through `shlex.quote`, so an override such as
--config.data.path='my dir/$HOME' arrives on the workers byte for byte.
Nothing in this module touches the network or runs a process.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_MODULE = 'ldlm_jax.train'
SETUP_CHOICES = ('none', 'pip', 'venv')
# Where scripts/setup_env.sh puts its interpreter, relative to the repository.
VENV_PYTHON = '.venv/bin/python'

_ENV_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')
_OVERRIDE = re.compile(r'--config\.[A-Za-z_][A-Za-z0-9_.]*=')


class LaunchError(ValueError):
  """A launch request that cannot work; the message names the fix."""


def add_train_args(parser: argparse.ArgumentParser, default_jax_extra: str) -> None:
  """The arguments both launchers take: what to train, where, and how to set the hosts up."""
  group = parser.add_argument_group('training')
  group.add_argument('--config', required=True,
                     help='Config file as the trainer takes it, e.g. configs/lm1b.py or '
                          'configs/ablations.py:warmup_25k (relative to the repository on the hosts).')
  group.add_argument('--workdir', required=True,
                     help='Work directory every host can reach (shared filesystem or mounted bucket).')
  group.add_argument('--env', action='append', default=[], metavar='KEY=VALUE',
                     help='Environment variable for the training processes (repeatable), '
                          'e.g. LDLM_GPT2_PATH=/models/gpt2 or TFDS_DATA_DIR=/data/tfds.')
  group = parser.add_argument_group('environment on the hosts')
  group.add_argument('--setup', choices=SETUP_CHOICES, default='none',
                     help="Before training: 'none' (the environment is ready), 'pip' (pip install -e . "
                          "plus --jax_extra into the --python environment), 'venv' (bash "
                          "scripts/setup_env.sh, then --jax_extra, then train with .venv/bin/python).")
  group.add_argument('--python', default='python3',
                     help='Interpreter (Python >= 3.11) to train with, or to build .venv from with '
                          '--setup venv.')
  group.add_argument('--jax_extra', default=default_jax_extra,
                     help='The accelerator build of jax that --setup installs '
                          f"(default {default_jax_extra}); '' for none.")
  group.add_argument('--preamble', default='',
                     help='Shell code run before set-up and training on every host, verbatim '
                          "(e.g. 'module load cuda' or 'source ~/env/bin/activate').")
  parser.add_argument('--dry_run', action='store_true',
                      help='Print what would be run or written, and exit without running anything.')


def parse_with_overrides(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
  """Parses argv; trailing --config.a.b=value overrides (after an optional --) go to args.overrides."""
  args, extra = parser.parse_known_args(argv)
  if extra and extra[0] == '--':
    extra = extra[1:]
  for item in extra:
    if not _OVERRIDE.match(item):
      parser.error(f'unexpected argument {item!r}: config overrides are written '
                   '--config.a.b=value (one argument each, with "=").')
  args.overrides = list(extra)
  return args


def parse_env(pairs) -> list[tuple[str, str]]:
  env = []
  for pair in pairs:
    name, sep, value = pair.partition('=')
    if not sep or not _ENV_NAME.match(name):
      raise LaunchError(f'--env {pair!r} is not KEY=VALUE with KEY a shell variable name; '
                        'write e.g. --env LDLM_GPT2_PATH=/models/gpt2.')
    env.append((name, value))
  return env


def check_workdir(workdir: str) -> None:
  """The trainer writes its work directory with local file I/O (os.makedirs, open)."""
  if '://' in workdir:
    raise LaunchError(
        f'--workdir {workdir} is a URL, but the trainer writes its work directory with local file '
        'I/O; mount the bucket on every host (e.g. gcsfuse gs://BUCKET /mnt/BUCKET) or use a shared '
        'filesystem, and pass that path.')


def check_config(config: str, repo_dir: str) -> None:
  """A relative config path must exist in the checkout the hosts run (absolute ones are host paths)."""
  path = config.split(':', 1)[0]
  if not os.path.isabs(path) and not os.path.isfile(os.path.join(repo_dir, path)):
    raise LaunchError(f'--config {config}: {path} does not exist in {repo_dir}; pass a config file '
                      'of this repository (e.g. configs/lm1b.py) or an absolute path on the hosts.')


def runtime_python(setup: str, python: str) -> str:
  return VENV_PYTHON if setup == 'venv' else python


def setup_lines(setup: str, python: str, jax_extra: str) -> list[str]:
  """Shell lines (run in the repository root) that install ldlm_jax and an accelerator jax."""
  extra = [jax_extra] if jax_extra else []
  if setup == 'pip':
    # One resolver run, so the accelerator jax stays inside setup.py's jax range.
    return [shlex.join([python, '-m', 'pip', 'install', '-q', '-e', '.', *extra])]
  if setup == 'venv':
    lines = [f'PYTHON={shlex.quote(python)} bash scripts/setup_env.sh']
    if extra:
      # jax is already installed by then, so pip only adds the extra's plugin at the same version.
      lines.append(shlex.join([VENV_PYTHON, '-m', 'pip', 'install', '-q', *extra]))
    return lines
  return []


def env_lines(env: list[tuple[str, str]]) -> list[str]:
  return [f'export {name}={shlex.quote(value)}' for name, value in env]


def train_argv(python: str, config: str, workdir: str, overrides: list[str]) -> list[str]:
  return [python, '-m', TRAIN_MODULE, '--config', config, '--workdir', workdir, *overrides]


def run_name(workdir: str) -> str:
  """A file-name-safe name for log files, from the work directory's last component."""
  name = os.path.basename(os.path.normpath(workdir)) or 'run'
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name)

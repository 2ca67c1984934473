"""One way for every command line to turn a user's mistake into one line on stderr.

Every entry point (train, sample, bench, post_train_decoder, evaluate,
prepare, plots, ...) ends a run it refuses with `error: <one sentence>` on
stderr and exit code 2, never a traceback:

- `run_absl(main)` replaces `absl.app.run(main)`: flag parsing errors
  (absl's own, and the config-file flags of ml_collections: a missing or
  broken config file, an unknown `--config.a.b` override key, which gets the
  nearest valid key) and the user errors `main` raises become one line.
- `@user_errors_exit_2` on an argparse CLI's `main(argv) -> int` does the same
  for the user errors it raises (it returns 2).
- `fail(message)` ends a run by hand (argparse CLIs use it too).
- `check_output_file` / `check_output_dir` / `check_positive` check a flag
  before any work is done, so a run is never refused after it compiled.

A user error is an `ldlm_jax.errors.UserError` (config, data, checkpoint,
encoder, tokenizer, scorer, evaluation, plot errors all derive from it) or an
OS error about a path the user gave (`USER_ERRORS`); both wrappers above catch
exactly `USER_ERRORS`, so every command line treats the same errors alike.

ml_collections defers a config file's load error until the config is first
read, as chained tracebacks from deep inside the trainer; here the file is
checked right after parsing, and on any flag error the overrides are
re-checked against the config to name the key that does not exist.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import os
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags
from absl import logging as absl_logging

from ldlm_jax.config import load_file
from ldlm_jax.errors import ConfigError, UserError

# Exceptions whose message is written for the user (one sentence naming the fix).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, PermissionError)
EXIT_USER_ERROR = 2


def report(message) -> int:
  """Prints `error: message` (one line, no traceback) to stderr; returns exit code 2."""
  print(f'error: {str(message).strip()}', file=sys.stderr, flush=True)
  return EXIT_USER_ERROR


def fail(message: str) -> NoReturn:
  """Prints `error: message` to stderr and exits with code 2."""
  sys.exit(report(message))


def user_errors_exit_2(main: Callable[..., int]) -> Callable[..., int]:
  """An argparse CLI's `main(argv) -> int` whose user errors (USER_ERRORS) print one line and return 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs) -> int:
    try:
      return main(*args, **kwargs)
    except USER_ERRORS as e:
      return report(e)
  return wrapped


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one `error:` line (exit 2) like every other user error."""

  def error(self, message: str) -> NoReturn:
    fail(f'{message} ({self.prog}); run it with --help to see the options.')


# --- Output paths and numbers, checked before any work --------------------------------


def _first_existing_ancestor(path: str) -> str:
  parent = os.path.dirname(path)
  while parent and not os.path.exists(parent):
    up = os.path.dirname(parent)
    if up == parent:
      break
    parent = up
  return parent


def _check_parents(path: str, flag: str) -> None:
  ancestor = _first_existing_ancestor(path)
  if ancestor and not os.path.isdir(ancestor):
    raise ConfigError(f'{flag} {path} cannot be written: {ancestor} is a file, not a directory; '
                      'choose another path.')
  if ancestor and not os.access(ancestor, os.W_OK | os.X_OK):
    raise ConfigError(f'{flag} {path} cannot be written: {ancestor} is not writable; '
                      'choose another path.')


def check_output_file(path: str, flag: str) -> str:
  """Raises ConfigError unless `path` can be written as a file (its folders are created later)."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    raise ConfigError(f'{flag} {path} is a directory; give a file path.')
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise ConfigError(f'{flag} {path} exists and is not writable; choose another path.')
  _check_parents(path, flag)
  return path


def check_output_dir(path: str, flag: str) -> str:
  """Raises ConfigError unless `path` is, or can be created as, a writable directory."""
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise ConfigError(f'{flag} {path} is a file, not a directory; choose another path.')
    if not os.access(path, os.W_OK | os.X_OK):
      raise ConfigError(f'{flag} {path} is not writable; choose another path.')
    return path
  _check_parents(path, flag)
  return path


def check_positive(**values) -> None:
  """check_positive(steps=..., batch_size=...): each given (not None) value must be >= 1."""
  for name, value in values.items():
    if value is not None and value < 1:
      raise ConfigError(f'--{name} must be >= 1 (got {value}).')


# --- absl entry points ---------------------------------------------------------------


def _load_config_file(spec: str):
  """The config of `path[:arg]`, or raises ConfigError naming what is wrong with the file."""
  path, *args = spec.split(':', 1)
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path} does not exist; pass the path of a config file '
                      '(e.g. --config configs/tiny.py).')
  try:
    return load_file(path, '_ldlm_checked_config').get_config(*args)
  except SyntaxError as e:
    raise ConfigError(f'config file {path} has a syntax error at line {e.lineno}: {e.msg}; '
                      'fix the file.') from None
  except Exception as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise ConfigError(f'config file {path} failed to load ({type(e).__name__}: {first}); '
                      'fix the file.') from None


def _all_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for key, value in config.items():
    full = f'{prefix}{key}'
    keys.append(full)
    if hasattr(value, 'items'):
      keys.extend(_all_keys(value, full + '.'))
  return keys


def unknown_key_message(config, key: str, flag: str) -> str | None:
  """A sentence for `--flag.key` when `key` is not in `config`, else None."""
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      near = difflib.get_close_matches(key, _all_keys(config), n=1, cutoff=0.5)
      hint = f'did you mean --{flag}.{near[0]}?' if near else 'see the config file for the valid keys.'
      return f'--{flag}.{key} is not a config key; {hint}'
    node = node[part]
  return None


def _overrides(argv: Sequence[str], flag: str) -> list[str]:
  """Keys of `--flag.a.b=v`, `--flag.a.b v` and `--noflag.a.b` in argv."""
  keys = []
  for arg in argv[1:]:
    if arg == '--':
      break
    for prefix in (f'--{flag}.', f'-{flag}.', f'--no{flag}.', f'-no{flag}.'):
      if arg.startswith(prefix):
        keys.append(arg[len(prefix):].split('=', 1)[0])
        break
  return keys


def _config_flag_names() -> list[str]:
  names = []
  for name, flag in flags.FLAGS._flags().items():
    # ml_collections' config_flags.DEFINE_config_file parser (its class is not exported).
    if type(flag.parser).__name__ == 'ConfigFileFlagParser' and name not in names:
      names.append(name)
  return names


def _flag_value_arg(argv: Sequence[str], flag: str) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    for prefix in (f'--{flag}', f'-{flag}'):
      if arg == prefix and i + 1 < len(argv):
        return argv[i + 1]
      if arg.startswith(prefix + '='):
        return arg[len(prefix) + 1:]
  return None


def config_problem(argv: Sequence[str]) -> str | None:
  """The first problem with the config-file flags in argv (file, syntax, unknown key), or None."""
  for flag in _config_flag_names():
    spec = _flag_value_arg(argv, flag)
    if spec is None:
      continue
    try:
      config = _load_config_file(spec)
    except ConfigError as e:
      return str(e)
    for key in _overrides(argv, flag):
      message = unknown_key_message(config, key, flag)
      if message:
        return message
  return None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing where every failure, the config file's included, is one line."""
  try:
    args = flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(config_problem(argv) or str(e).splitlines()[0])
  except Exception as e:
    # ml_collections raises plain AttributeError/KeyError/SyntaxError from an override or a file.
    fail(config_problem(argv) or f'cannot parse the flags ({type(e).__name__}: '
         f'{str(e).splitlines()[0] if str(e) else ""}).')
  for flag in _config_flag_names():
    # ml_collections keeps a load error (a missing file) until the config is first read.
    if type(flags.FLAGS[flag].value).__name__ == '_ErrorConfig':
      fail(config_problem(argv) or f'--{flag} could not be loaded; check the path.')
  return args


def guarded(main: Callable, extra_errors: tuple = ()) -> Callable:
  """main(argv) with user errors (and absl UsageError) printed as one line, exit code 2."""

  def wrapped(argv):
    quiet_library_logs(sys.argv)
    try:
      return main(argv)
    except (app.UsageError, *USER_ERRORS, *extra_errors) as e:
      fail(str(e))
    except KeyboardInterrupt:
      print('interrupted (Ctrl-C); nothing more was written.', file=sys.stderr, flush=True)
      sys.exit(130)
  return wrapped


def run_absl(main: Callable, extra_errors: tuple = ()) -> None:
  """`absl.app.run(main)` with every user error as one line (see the module docstring)."""
  app.run(guarded(main, extra_errors), flags_parser=parse_flags)


class _ProjectInfoOnly:
  """Logging filter: below WARNING, only records logged by ldlm_jax itself pass."""

  # orbax warns on every read-only open (sampling, evaluation), which is what we ask for,
  # and on reading the state item alone (its metadata file is the step's, one level up).
  EXPECTED_WARNINGS = ('Given directory is read only', 'Metadata file does not exist')

  def filter(self, record) -> bool:
    if record.pathname.startswith(_PACKAGE_DIR):
      return True
    if record.levelno == 30 and str(record.msg).startswith(self.EXPECTED_WARNINGS):
      return False
    return record.levelno >= 30


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def quiet_library_logs(argv: Sequence[str]) -> None:
  """Hides the INFO lines of libraries (orbax writes over a hundred per short run).

  The project's own INFO lines stay. An explicit --verbosity (or -v) on the command line
  shows everything, as absl would.
  """
  if any(a.split('=', 1)[0] in ('--verbosity', '-verbosity', '-v', '--v') for a in argv[1:]):
    return
  absl_logging.set_verbosity(absl_logging.INFO)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _ProjectInfoOnly) for f in handler.filters):
    handler.addFilter(_ProjectInfoOnly())
  hide_expected_warnings()


def hide_expected_warnings() -> None:
  """Drops orbax's expected warnings (_ProjectInfoOnly) at the 'absl' logger itself.

  For the argparse entry points (evaluate, experiments), whose absl records reach
  Python's own handlers rather than absl's; their verbosity is left as it is.
  """
  target = logging.getLogger('absl')
  if not any(isinstance(f, _ProjectInfoOnly) for f in target.filters):
    target.addFilter(_ProjectInfoOnly())

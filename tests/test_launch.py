"""Launchers: the exact commands of dry runs, quoting through a real bash, and clear errors.

gcloud and sbatch are never run: dry runs print, the "not on PATH" cases
empty PATH first, and the shell checks run the generated command or batch
script under bash with a stand-in `python` or `srun` that records its argv.
"""

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from ldlm_testing import REPO

if REPO not in sys.path:
  sys.path.insert(0, REPO)
from launch import common, slurm, tpu_pod  # noqa: E402

# Overrides a shell would mangle if quoting were wrong: a space, a quote, $, a glob.
OVERRIDES = ["--config.data.path=/data/my corpus/it's $HOME", '--config.train.batch_size=512',
             '--config.data.name=*']
TRAIN_TAIL = ['-m', 'ldlm_jax.train', '--config', 'configs/tiny.py', '--workdir', '/mnt/runs/tiny',
              *OVERRIDES]
# On a TPU pod slice the trainer is told to initialize jax.distributed.
TPU_TRAIN_TAIL = [*TRAIN_TAIL[:6], '--distributed', *OVERRIDES]


def _tpu_argv(*extra):
  return ['--tpu', 'pod-1', '--zone', 'us-central2-b', '--config', 'configs/tiny.py',
          '--workdir', '/mnt/runs/tiny', *extra]


def _fake_program(path, record_path):
  """An executable that writes its argv (after the program name) as JSON to record_path."""
  path.write_text(f'#!{sys.executable}\nimport json, sys\n'
                  f'json.dump(sys.argv[1:], open({str(record_path)!r}, "w"))\n')
  path.chmod(0o755)
  return str(path)


def _ssh_command(steps):
  ssh = shlex.split(steps[-1].shell)
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod-1']
  return ssh, ssh[ssh.index('--command') + 1]


def test_tpu_dry_run_prints_the_ssh_command_for_all_workers(capsys):
  argv = _tpu_argv('--project', 'proj', '--env', 'LDLM_GPT2_PATH=/models/gpt 2', '--dry_run', '--',
                   *OVERRIDES)
  assert tpu_pod.main(argv) == 0
  printed = capsys.readouterr().out
  steps = tpu_pod.plan(common.parse_with_overrides(tpu_pod.build_parser(), argv))
  assert printed == ''.join(step.shell + '\n' for step in steps)
  ssh, command = _ssh_command(steps)
  assert len(steps) == 1
  assert '--worker=all' in ssh and '--zone=us-central2-b' in ssh and '--project=proj' in ssh
  lines = command.split('\n')
  assert "export LDLM_GPT2_PATH='/models/gpt 2'" in lines
  train_line = [line for line in lines if 'ldlm_jax.train' in line]
  assert len(train_line) == 1
  assert shlex.split(train_line[0]) == ['exec', 'python3', *TPU_TRAIN_TAIL]
  assert 'tee ldlm_logs/tiny.$(hostname).log' in command   # one log per worker


def test_tpu_sync_code_and_setup_steps():
  args = common.parse_with_overrides(
      tpu_pod.build_parser(), _tpu_argv('--sync_code', '--setup', 'pip', '--python', 'python3.11'))
  steps = tpu_pod.plan(args)
  assert steps[0].shell.startswith('# pack: git')
  scp = shlex.split(steps[1].shell)
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert f'pod-1:{tpu_pod.REMOTE_TARBALL}' in scp and '--worker=all' in scp
  _, command = _ssh_command(steps)
  lines = command.split('\n')
  assert f'mkdir -p ldlm_jax && tar -xzf {tpu_pod.REMOTE_TARBALL} -C ldlm_jax' in lines
  assert "python3.11 -m pip install -q -e . 'jax[tpu]'" in lines
  assert lines.index('cd ldlm_jax') < lines.index("python3.11 -m pip install -q -e . 'jax[tpu]'")


def test_tpu_venv_setup_trains_with_the_venv_python():
  args = common.parse_with_overrides(tpu_pod.build_parser(), _tpu_argv('--setup', 'venv'))
  _, command = _ssh_command(tpu_pod.plan(args))
  assert 'PYTHON=python3 bash scripts/setup_env.sh' in command
  assert "exec .venv/bin/python -m ldlm_jax.train" in command


@pytest.mark.parametrize('detach', [False, True])
def test_tpu_worker_command_runs_under_bash_with_exact_argv(tmp_path, detach):
  """The --command text, run by a local bash, hands the trainer exactly the argv given here."""
  repo, home = tmp_path / 'repo', tmp_path / 'home'
  repo.mkdir()
  home.mkdir()
  record = tmp_path / 'argv.json'
  python = _fake_program(tmp_path / 'fake_python', record)
  argv = _tpu_argv('--repo_dir', str(repo), '--python', python, '--env', 'WHO=a b',
                   *(['--detach'] if detach else []), *OVERRIDES)
  _, command = _ssh_command(tpu_pod.plan(common.parse_with_overrides(tpu_pod.build_parser(), argv)))
  result = subprocess.run(['bash', '-c', command], cwd=home, capture_output=True, text=True,
                          timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  deadline = time.time() + 30
  while not record.exists() and time.time() < deadline:   # the detached run is in the background
    time.sleep(0.1)
  assert json.loads(record.read_text()) == TPU_TRAIN_TAIL
  logs = os.listdir(home / 'ldlm_logs')
  assert logs == [f'tiny.{os.uname().nodename}.log']


def test_tpu_failing_worker_script_fails_the_command(tmp_path):
  args = common.parse_with_overrides(
      tpu_pod.build_parser(), _tpu_argv('--repo_dir', str(tmp_path / 'missing'), '--python', 'true'))
  _, command = _ssh_command(tpu_pod.plan(args))
  result = subprocess.run(['bash', '-c', command], cwd=tmp_path, capture_output=True, timeout=60,
                          check=False)
  assert result.returncode != 0   # `cd` failed: tee must not hide it


def test_pack_checkout_ships_tracked_and_untracked_but_not_ignored(tmp_path):
  repo = tmp_path / 'repo'
  repo.mkdir()
  git = lambda *a: subprocess.run(['git', '-C', str(repo), *a], check=True, capture_output=True)
  git('init', '-q')
  (repo / '.gitignore').write_text('runs/\n')
  (repo / 'tracked.py').write_text('x = 1\n')
  git('add', '.gitignore', 'tracked.py')
  (repo / 'new_config.py').write_text('y = 2\n')
  (repo / 'runs').mkdir()
  (repo / 'runs' / 'big.bin').write_text('z')
  out = tmp_path / 'code.tgz'
  assert tpu_pod.pack_checkout(str(repo), str(out)) == 0
  with tarfile.open(out) as tar:
    assert sorted(tar.getnames()) == ['.gitignore', 'new_config.py', 'tracked.py']


@pytest.mark.parametrize('extra, message', [
    (['--workdir', 'gs://bucket/run'], 'local file I/O'),
    (['--config', 'configs/no_such.py'], 'does not exist'),
    (['--env', 'NOT A NAME=1'], 'KEY=VALUE'),
])
def test_tpu_bad_values_are_one_clear_error(extra, message, capsys):
  assert tpu_pod.main(_tpu_argv('--dry_run') + extra) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and message in err and err.count('\n') == 1


@pytest.mark.parametrize('argv', [
    ['--zone', 'z', '--config', 'configs/tiny.py', '--workdir', 'w'],       # no --tpu
    ['--tpu', 't', '--zone', 'z', '--workdir', 'w'],                        # no --config
    _tpu_argv('--config.train.batch_size', '512'),                          # override without '='
    _tpu_argv('--setup', 'conda'),
])
def test_tpu_missing_or_malformed_args_exit_2(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    tpu_pod.main(argv)
  assert exit_info.value.code == 2
  assert 'error:' in capsys.readouterr().err


def test_tpu_without_gcloud_on_path_says_so(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('PATH', str(tmp_path))   # an empty directory: no gcloud to run
  assert tpu_pod.main(_tpu_argv()) == 2
  assert 'gcloud is not on PATH' in capsys.readouterr().err


def _slurm_argv(tmp_path, *extra):
  return ['--nodes', '2', '--gpus_per_node', '4', '--config', 'configs/tiny.py',
          '--workdir', str(tmp_path / 'runs' / 'tiny'), *extra]


def test_slurm_dry_run_prints_script_and_sbatch_without_writing(tmp_path, capsys):
  argv = _slurm_argv(tmp_path, '--partition', 'gpu', '--cpus_per_task', '6',
                     '--sbatch_arg=--qos=high', '--dry_run', *OVERRIDES)
  assert slurm.main(argv) == 0
  out = capsys.readouterr().out
  log_dir = tmp_path / 'runs' / 'tiny' / 'slurm'
  script_path = log_dir / 'ldlm-tiny.sbatch'
  assert out.splitlines()[-1] == f'sbatch {script_path}'
  assert out.startswith('#!/bin/bash\n')
  for directive in ('--nodes=2', '--ntasks-per-node=4', '--gres=gpu:4', '--exclusive',
                    '--partition=gpu', '--cpus-per-task=6', '--qos=high', '--job-name=ldlm-tiny',
                    f'--output={log_dir}/%x-%j.out'):
    assert f'#SBATCH {directive}\n' in out
  srun_lines = [line for line in out.splitlines() if line.startswith('srun ')]
  assert len(srun_lines) == 1
  srun = shlex.split(srun_lines[0])
  assert srun[:5] == ['srun', '--kill-on-bad-exit=1', '--ntasks-per-node=4',
                      f'--output={log_dir}/ldlm-tiny-%j.task%t.log', '--cpus-per-task=6']
  assert srun[5:] == ['python3', *TRAIN_TAIL[:5], str(tmp_path / 'runs' / 'tiny'), *OVERRIDES]
  assert not (tmp_path / 'runs').exists()   # a dry run writes nothing


def test_slurm_script_runs_under_bash_with_exact_srun_argv(tmp_path):
  """The batch script, run by bash with a stand-in srun, launches the exact train command."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  record = tmp_path / 'srun_argv.json'
  _fake_program(bin_dir / 'srun', record)
  args = common.parse_with_overrides(
      slurm.build_parser(), _slurm_argv(tmp_path, '--env', 'WHO=a b', '--preamble', 'test "$WHO" = "a b"',
                                        *OVERRIDES))
  slurm.resolve(args)
  script = tmp_path / 'job.sbatch'
  script.write_text(slurm.batch_script(args))
  env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  result = subprocess.run(['bash', str(script)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
  assert result.returncode == 0, result.stderr
  recorded = json.loads(record.read_text())
  assert recorded[recorded.index('python3'):] == [
      'python3', *TRAIN_TAIL[:5], str(tmp_path / 'runs' / 'tiny'), *OVERRIDES]


def test_slurm_without_sbatch_writes_nothing(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
  assert slurm.main(_slurm_argv(tmp_path)) == 2
  assert 'sbatch is not on PATH' in capsys.readouterr().err
  assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('extra, message', [
    (['--nodes', '0'], 'at least 1'),
    (['--gpus_per_node', '0'], 'at least 1'),
    (['--partition', 'gpu a100'], '#SBATCH'),
    (['--sbatch_arg', 'qos=high'], 'not an sbatch option'),
    (['--workdir', 'gs://bucket/run'], 'local file I/O'),
    (['--config', 'configs/no_such.py'], 'does not exist'),
])
def test_slurm_bad_values_are_one_clear_error(tmp_path, extra, message, capsys):
  assert slurm.main(_slurm_argv(tmp_path, '--dry_run') + extra) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and message in err and err.count('\n') == 1


@pytest.mark.parametrize('drop', ['--nodes', '--gpus_per_node', '--config', '--workdir'])
def test_slurm_missing_required_args_exit_2(tmp_path, drop, capsys):
  argv = _slurm_argv(tmp_path, '--dry_run')
  i = argv.index(drop)
  del argv[i:i + 2]
  with pytest.raises(SystemExit) as exit_info:
    slurm.main(argv)
  assert exit_info.value.code == 2
  assert f'{drop}' in capsys.readouterr().err

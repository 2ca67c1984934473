"""Training runs end to end, as users start them: `python -m ldlm_jax.train`.

Exact resume after SIGKILL, a checkpoint on SIGTERM, NaN stops, mismatched
checkpoints, and a 2-process loopback run against 1 process with 2 devices.
Each run is a subprocess on configs/tiny.py (MiniLM encoder, Brown corpus);
the session-wide XLA cache (conftest.py) makes repeated compiles cheap.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ldlm_testing import REPO
from ldlm_testing import subprocess_env as _env
from ldlm_testing import train_command as _cmd

# Every test here trains (subprocesses, several devices or processes).
pytestmark = pytest.mark.slow

TIMING_KEYS = ('steps_per_sec', 'tokens_per_sec')


def _run(workdir, *overrides, devices=1, check=True):
  proc = subprocess.run(_cmd(workdir, *overrides), env=_env(devices), cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _checkpoint_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope='module')
def straight_run(tiny_run):
  return tiny_run


def test_straight_run_writes_everything(straight_run):
  losses = _losses(straight_run)
  assert [r['step'] for r in losses] == list(range(2, 25, 2))
  assert _checkpoint_steps(straight_run)[-1] == 24
  for name in ('config.json', 'normalization.npz', 'timesteps.jsonl'):
    assert os.path.exists(os.path.join(straight_run, name)), name
  assert os.listdir(os.path.join(straight_run, 'tensorboard'))


def test_sigkill_then_resume_matches_uninterrupted(straight_run, tmp_path):
  proc = subprocess.Popen(_cmd(tmp_path), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and 8 not in _checkpoint_steps(tmp_path):
    time.sleep(0.05)
  assert proc.poll() is None, 'the run finished before it could be killed: ' + proc.stderr.read()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = _checkpoint_steps(tmp_path)
  assert killed_at and killed_at[-1] < 24
  _run(tmp_path)  # the same command again resumes
  assert _losses(tmp_path) == _losses(straight_run)  # bitwise: same floats in the JSON


def test_sigterm_checkpoints_current_step(tmp_path):
  proc = subprocess.Popen(_cmd(tmp_path, '--config.train.num_steps=100000',
                               '--config.train.checkpoint_every=100000'),
                          env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(tmp_path, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not (
      os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    time.sleep(0.05)
  time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  steps = _checkpoint_steps(tmp_path)
  assert len(steps) == 1 and 0 < steps[0] < 100000
  assert f'checkpoint at step {steps[0]} written' in out
  from ldlm_jax.training.restore import load_run
  run = load_run(str(tmp_path))
  assert run.step == steps[0] == int(run.state.step)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(straight_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_run, workdir)
  before = _checkpoint_steps(workdir)
  proc = _run(workdir, '--config.train.num_steps=40', '--config.loss.diffusion_weight=nan', check=False)
  assert proc.returncode == 2
  assert 'NaN/Inf' in proc.stderr and f'checkpoint (step {before[-1]})' in proc.stderr
  assert _checkpoint_steps(workdir) == before


def test_mismatched_checkpoint_is_a_clear_error_and_untouched(straight_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_run, workdir)
  listing = sorted(os.listdir(workdir / 'checkpoints' / '24'))
  everything = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  proc = _run(workdir, '--config.model.latent_dim=8', check=False)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'model.latent_dim=16' in last and 'new --workdir' in last
  assert sorted(os.listdir(workdir / 'checkpoints' / '24')) == listing
  # Nothing added (no TensorBoard events file), nothing changed.
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == everything
  assert _checkpoint_steps(workdir) == _checkpoint_steps(straight_run)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
  overrides = ['--config.train.num_steps=6', '--config.train.checkpoint_every=6']
  single, multi = tmp_path / 'single', tmp_path / 'multi'
  port = _free_port()
  # All three processes at once: the reference run overlaps the two-process run's start-up.
  procs = [subprocess.Popen(_cmd(single, *overrides), env=_env(2), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)]
  procs += [subprocess.Popen(
      _cmd(multi, *overrides, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--process_id={i}'),
      env=_env(1), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  a, b = _losses(single), _losses(multi)
  assert [r['step'] for r in a] == [r['step'] for r in b] == [2, 4, 6]
  for ra, rb in zip(a, b):
    for key in ('loss', 'diffusion_loss', 'reconstruction_loss', 'ce_loss', 'grad_norm'):
      assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), key

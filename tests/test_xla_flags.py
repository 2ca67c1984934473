"""XLA GPU flags: added only for a GPU, never over the user's, and all known to XLA."""

import os
import subprocess
import sys

from ldlm_jax import xla_flags
from ldlm_testing import REPO


def test_added_only_on_gpu_and_never_over_the_users_flags(monkeypatch):
  # As in a fresh process (other tests in this one have started jax's backend).
  monkeypatch.setattr(xla_flags, 'backends_started', lambda: False)
  env = {'XLA_FLAGS': '--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/x'}
  assert xla_flags.add_gpu_flags(env, gpu=False) == [] and env['XLA_FLAGS'].endswith('/tmp/x')
  added = xla_flags.add_gpu_flags(env, gpu=True)
  assert len(added) == len(xla_flags.GPU_FLAGS) - 1
  assert '--xla_gpu_enable_triton_gemm=true' in env['XLA_FLAGS']          # the user's value
  assert '--xla_gpu_enable_triton_gemm=false' not in env['XLA_FLAGS']
  assert '--xla_gpu_enable_latency_hiding_scheduler=true' in env['XLA_FLAGS']
  assert xla_flags.add_gpu_flags(env, gpu=True) == []                       # idempotent
  off = {xla_flags.OPT_OUT: '0'}
  assert xla_flags.add_gpu_flags(off, gpu=True) == [] and 'XLA_FLAGS' not in off


def test_no_gpu_expected_when_jax_platforms_excludes_it():
  assert not xla_flags.nvidia_gpu_expected({'JAX_PLATFORMS': 'cpu'})


def test_every_flag_is_known_to_this_xla_and_the_trainer_sets_none_on_cpu():
  """XLA aborts on an unknown flag name at backend start: a CPU start with all of them passes."""
  flags = ' '.join(f'--{k}={v}' for k, (v, _) in xla_flags.GPU_FLAGS.items())
  code = ('import os; from ldlm_jax import xla_flags; '
          'assert xla_flags.add_gpu_flags() == [], "CPU-only: nothing added"; '
          'import jax; jax.numpy.ones(2).block_until_ready(); '
          'assert xla_flags.add_gpu_flags(gpu=True) == [], "after backend start: nothing"; '
          'print("ok")')
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                        timeout=120, cwd=REPO)
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]


def test_gpu_memory_fraction_is_set_only_on_a_gpu_and_only_when_unset(monkeypatch):
  monkeypatch.setattr(xla_flags, 'backends_started', lambda: False)   # as in a fresh process
  env = {}
  assert xla_flags.set_gpu_memory_fraction(env, gpu=False) is None and env == {}
  assert xla_flags.set_gpu_memory_fraction(env, gpu=True) == xla_flags.MEM_FRACTION
  assert env[xla_flags.MEM_FRACTION_VAR] == xla_flags.MEM_FRACTION
  mine = {xla_flags.MEM_FRACTION_VAR: '0.5'}
  assert xla_flags.set_gpu_memory_fraction(mine, gpu=True) is None
  assert xla_flags.memory_fraction(mine) == 0.5 and xla_flags.memory_fraction({}) == 0.95
  off = {xla_flags.OPT_OUT: '0'}
  assert xla_flags.set_gpu_memory_fraction(off, gpu=True) is None and xla_flags.MEM_FRACTION_VAR not in off

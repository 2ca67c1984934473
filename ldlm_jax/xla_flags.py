"""XLA flags for NVIDIA GPUs, set by the trainer and the benchmarks before jax starts.

XLA reads XLA_FLAGS once, when the first backend is created, so these are
added to the environment before anything imports jax, and only when this
process will run on an NVIDIA GPU (a CUDA plugin is installed, a device node
exists, and JAX_PLATFORMS, if set, allows CUDA). A flag the user already
named in XLA_FLAGS is left as the user set it; LDLM_XLA_GPU_FLAGS=0 turns the
whole set off (for A/B timing: scripts/bench_gpu.sh). Effects on our models
are pending a GPU measurement (BUILD_NOTES.md, "Training and sampling speed, memory plans").
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import MutableMapping

# name -> (value, why). The MaxText / JAX GPU performance-guide set, less
# the pipelining flags (they target layers under a scan with collectives
# inside; our blocks are unrolled).
GPU_FLAGS = {
    'xla_gpu_enable_latency_hiding_scheduler': (
        'true', 'schedule collectives (fsdp all-gathers, gradient reduce-scatters / all-reduces) '
                'to overlap with independent compute'),
    'xla_gpu_enable_highest_priority_async_stream': (
        'true', 'run those collectives on a high-priority stream so the overlap happens'),
    'xla_gpu_all_reduce_combine_threshold_bytes': (
        '134217728', 'combine small gradient all-reduces into 128 MiB ones (fewer launches)'),
    'xla_gpu_all_gather_combine_threshold_bytes': (
        '134217728', 'the same for fsdp parameter all-gathers'),
    'xla_gpu_reduce_scatter_combine_threshold_bytes': (
        '134217728', 'the same for fsdp gradient reduce-scatters'),
    'xla_gpu_enable_triton_gemm': (
        'false', 'cuBLAS for the bf16 matmuls instead of Triton-generated GEMM fusions'),
    'xla_gpu_enable_while_loop_double_buffering': (
        'true', 'double-buffer loop-carried values in while loops (the sampler scan, the '
                'vocabulary-chunk scan of the CE)'),
}

OPT_OUT = 'LDLM_XLA_GPU_FLAGS'
CUDA_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_cuda12_pjrt', 'jax_cuda13_pjrt')


def nvidia_gpu_expected(environ: MutableMapping[str, str] = os.environ) -> bool:
  """True if jax in this process will use an NVIDIA GPU, decided without importing jax."""
  platforms = (environ.get('JAX_PLATFORMS') or environ.get('JAX_PLATFORM_NAME') or '').lower()
  if platforms and not any(p in platforms for p in ('cuda', 'gpu')):
    return False
  if not any(importlib.util.find_spec(name) for name in CUDA_PLUGINS):
    return False
  return os.path.exists('/dev/nvidiactl') or bool(glob.glob('/dev/nvidia[0-9]*'))


def add_gpu_flags(environ: MutableMapping[str, str] = os.environ,
                  gpu: bool | None = None) -> list[str]:
  """Adds GPU_FLAGS the user did not set to environ['XLA_FLAGS']; returns those added.

  Does nothing (returns []) without an NVIDIA GPU, with LDLM_XLA_GPU_FLAGS=0,
  or once jax has created its backends (the flags would be ignored).
  """
  if environ.get(OPT_OUT, '1').strip().lower() in ('0', 'false', 'no', 'off') or backends_started():
    return []
  if gpu is None:
    gpu = nvidia_gpu_expected(environ)
  if not gpu:
    return []
  current = environ.get('XLA_FLAGS', '')
  added = [f'--{name}={value}' for name, (value, _) in GPU_FLAGS.items()
           if f'--{name}=' not in current and f'--{name} ' not in f'{current} ']
  if added:
    environ['XLA_FLAGS'] = ' '.join([current] + added).strip()
  return added


# The share of GPU memory JAX's allocator may take. JAX's own default is 0.75;
# the paper-size configs are laid out for 0.95 of an 80 GiB GPU (configs/owt.py
# plans ~70 GiB per device), so the trainer and the benchmarks set it on an
# NVIDIA GPU unless the user did (or LDLM_XLA_GPU_FLAGS=0).
MEM_FRACTION_VAR = 'XLA_PYTHON_CLIENT_MEM_FRACTION'
MEM_FRACTION = '0.95'


def set_gpu_memory_fraction(environ: MutableMapping[str, str] = os.environ,
                            gpu: bool | None = None) -> str | None:
  """Sets XLA_PYTHON_CLIENT_MEM_FRACTION to MEM_FRACTION on an NVIDIA GPU when unset.

  Returns the value set, or None when nothing was changed (no GPU, opted out,
  already set by the user, or jax's backends already started)."""
  if environ.get(OPT_OUT, '1').strip().lower() in ('0', 'false', 'no', 'off') or backends_started():
    return None
  if MEM_FRACTION_VAR in environ:
    return None
  if gpu is None:
    gpu = nvidia_gpu_expected(environ)
  if not gpu:
    return None
  environ[MEM_FRACTION_VAR] = MEM_FRACTION
  return MEM_FRACTION


def memory_fraction(environ: MutableMapping[str, str] = os.environ) -> float:
  """The share of GPU memory a training run here gets: the user's setting, else MEM_FRACTION."""
  return float(environ.get(MEM_FRACTION_VAR, MEM_FRACTION))


def backends_started() -> bool:
  """Whether jax has already created a backend (then XLA_FLAGS changes are ignored)."""
  xla_bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(xla_bridge is not None and getattr(xla_bridge, '_backends', None))

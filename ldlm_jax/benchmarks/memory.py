"""Memory per device: what the compiler planned and what the device saw.

`compiled_memory` reads `compiled.memory_analysis()`: the sizes of the
program's arguments, outputs, temporaries (activations and scratch) and
generated code, and the bytes aliased between donated inputs and outputs
(those are counted once). Their sum, arguments + outputs - aliased +
temporaries + code, is the compiler's estimate of the device memory the
program needs at its peak. `device_peak_bytes` is the runtime allocator's
high-water mark, where the backend keeps one (GPU and TPU; not CPU).
"""

from __future__ import annotations

import jax
import numpy as np

GiB = 2.0 ** 30

_FIELDS = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
           'temp_size_in_bytes', 'generated_code_size_in_bytes')


def compiled_memory(compiled) -> dict[str, int]:
  """Per-device sizes from the compiled program; {} where the backend gives none."""
  try:
    analysis = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    return {}
  if analysis is None:
    return {}
  out = {name.replace('_size_in_bytes', ''): int(getattr(analysis, name, 0) or 0)
         for name in _FIELDS}
  out['total_estimate'] = (out['argument'] + out['output'] - out['alias'] + out['temp']
                           + out['generated_code'])
  peak = getattr(analysis, 'peak_memory_in_bytes', None)
  if peak:
    out['compiler_peak'] = int(peak)
  return out


def _memory_stat(name: str, device=None) -> int | None:
  """One entry of `device.memory_stats()` (default: the first device); None where it is not kept."""
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats()
  except (NotImplementedError, RuntimeError):
    return None
  value = stats.get(name) if stats else None
  return int(value) if value is not None else None


def device_peak_bytes(device=None) -> int | None:
  """The allocator's peak bytes in use on `device`, or None where it is not tracked."""
  return _memory_stat('peak_bytes_in_use', device)


def device_capacity_bytes(device=None) -> int | None:
  """The memory the allocator may use on `device`, or None where it is not reported."""
  return _memory_stat('bytes_limit', device)


def sharded_bytes_per_device(tree) -> int:
  """Bytes one device holds of a pytree of sharded arrays or ShapeDtypeStructs.

  Exact for any NamedSharding: the shard shape times the item size, summed
  over leaves (replicated leaves count in full).
  """
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = tuple(leaf.shape)
    sharding = getattr(leaf, 'sharding', None)
    if sharding is not None:
      shape = sharding.shard_shape(shape)
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def gib(num_bytes) -> str:
  return 'n/a' if num_bytes is None else f'{num_bytes / GiB:.3f} GiB'

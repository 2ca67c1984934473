"""Compile-then-time helpers and the peak FLOP/s that utilization is measured against.

Timing protocol (the same for every benchmark): lower and compile once
(timed separately, never inside a step time); a few warm-up calls; then
`repeats` windows of `iters` calls each, where the calls are dispatched
back to back and `jax.block_until_ready` runs once at the end of the window,
so no host synchronisation sits between steps. The reported time is the
median window over its calls, with the fastest and slowest windows as the
spread.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak FLOP/s per chip from the vendors' data sheets (no sparsity).
# Keys are matched against jax's `device.device_kind`.
GPU_BF16_PEAKS = {
    'H100': 989e12,    # H100 SXM; the reference number
    'H200': 989e12,    # same compute die as the H100 SXM
    'A100': 312e12,
}


@dataclasses.dataclass
class Timing:
  """Seconds per call: median over windows, with the spread of the windows."""
  median_s: float
  min_s: float
  max_s: float
  iters: int
  repeats: int

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Compiled:
  compiled: Any
  lower_s: float
  compile_s: float


def lower_and_compile(jitted, *args, **kwargs) -> Compiled:
  """jitted.lower(*args).compile(), each phase timed."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args, **kwargs)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return Compiled(compiled, t1 - t0, t2 - t1)


def time_loop(advance: Callable[[Any], Any], carry: Any, *, warmup: int, iters: int,
              repeats: int) -> tuple[Timing, Any]:
  """Times `carry = advance(carry)`; blocks only at the end of each window.

  `advance` must return the pytree the next call consumes (for a train step:
  the donated state), so successive calls form a dependency chain and the
  final block waits for all of them.
  """
  timings, carries = time_interleaved([(advance, carry)], warmup=warmup, iters=iters,
                                      repeats=repeats)
  return timings[0], carries[0]


def time_interleaved(cases, *, warmup: int, iters: int,
                     repeats: int) -> tuple[list[Timing], list[Any]]:
  """Like `time_loop` for several (advance, carry) cases, their windows alternating.

  Alternating windows (A, B, A, B, ...) exposes every case to the same
  background load, so a comparison stays fair on a shared machine.
  """
  if iters < 1 or repeats < 1 or warmup < 0:
    raise ValueError('iters and repeats must be >= 1 and warmup >= 0.')
  carries = [carry for _, carry in cases]
  for i, (advance, _) in enumerate(cases):
    for _ in range(warmup):
      carries[i] = advance(carries[i])
    jax.block_until_ready(carries[i])
  windows = [[] for _ in cases]
  for _ in range(repeats):
    for i, (advance, _) in enumerate(cases):
      start = time.perf_counter()
      for _ in range(iters):
        carries[i] = advance(carries[i])
      jax.block_until_ready(carries[i])
      windows[i].append((time.perf_counter() - start) / iters)
  timings = [Timing(statistics.median(w), min(w), max(w), iters, repeats) for w in windows]
  return timings, carries


def measure_matmul_peak(size: int = 2048, dtype=jnp.float32, repeats: int = 5,
                        chain: int = 4, device=None) -> float:
  """Best FLOP/s of a size^3 matmul on `device`, measured in this process.

  Each timed window runs `chain` dependent products (a @ b, then that @ b,
  ...) so the dispatch overhead is amortised; the best window wins.
  """
  device = device or jax.devices()[0]
  rng = np.random.default_rng(0)
  # Scaled so repeated products stay O(1) (no overflow or denormals).
  a = jax.device_put(jnp.asarray(rng.standard_normal((size, size)), dtype), device)
  b = jax.device_put(jnp.asarray(rng.standard_normal((size, size)) / np.sqrt(size), dtype),
                     device)

  @jax.jit
  def products(x, w):
    for _ in range(chain):
      x = jnp.dot(x, w, preferred_element_type=jnp.float32).astype(dtype)
    return x

  jax.block_until_ready(products(a, b))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(products(a, b))
    best = min(best, time.perf_counter() - start)
  return chain * 2.0 * size ** 3 / best


@dataclasses.dataclass
class Peak:
  flops_per_s: float
  source: str          # how the number was obtained, for the report


def device_peak(device=None, override_tflops: float = 0.0, matmul_size: int = 0) -> Peak:
  """The FLOP/s utilization is measured against.

  GPU: the data-sheet dense bf16 peak of a known chip (H100: 989 TFLOP/s),
  else a bf16 matmul measured here. CPU: a float32 matmul peak measured in
  this process (the machine's realistic ceiling; CPUs have no bf16 units
  that XLA uses). `override_tflops` > 0 replaces both.
  """
  device = device or jax.devices()[0]
  if override_tflops > 0:
    return Peak(override_tflops * 1e12, f'given on the command line ({override_tflops} TFLOP/s)')
  if device.platform == 'gpu':
    for key, peak in GPU_BF16_PEAKS.items():
      if key in device.device_kind:
        return Peak(peak, f'{device.device_kind} dense bf16 data-sheet peak')
    size = matmul_size or 8192
    measured = measure_matmul_peak(size, jnp.bfloat16, device=device)
    return Peak(measured, f'bf16 {size}^3 matmul measured on {device.device_kind}')
  size = matmul_size or 2048
  measured = measure_matmul_peak(size, jnp.float32, device=device)
  return Peak(measured, f'float32 {size}^3 matmul measured in this process ({device.device_kind})')

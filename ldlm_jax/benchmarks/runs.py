"""The train-step and sampler benchmarks behind `python -m ldlm_jax.bench train|sample`.

Both build the real objects the trainer and the sampler use (`LDLM`, the
sharded `TrainState`, `compile_train_step`, `LDLM.generate`) on random token
batches (input-pipeline speed is `python -m ldlm_jax.data.bench`), then:
compile once (timed apart), time with `timing.time_loop`, and put beside the
time the analytic FLOPs (`flops`), XLA's own count, utilization against the
device peak and the memory per device. Each returns a JSON-ready dict;
`log` receives the human-readable lines as they become known.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax import conditioning
from ldlm_jax.benchmarks import (encoders as encoders_lib, flops as flops_lib, memory as memory_lib,
                                 timing)
from ldlm_jax.config import validate
from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.models.ldlm import count_params, LDLM
from ldlm_jax.training import sharding as sharding_lib, state as state_lib, step as step_lib

Log = Callable[[str], None]


@dataclasses.dataclass
class Options:
  warmup: int = 2          # untimed calls after compilation
  iters: int = 5           # calls per timed window (one block at its end)
  repeats: int = 3         # timed windows; the median is reported
  seed: int = 0
  profile_dir: str = ''    # if set: one more window of `iters` calls under jax.profiler


def xla_flops(compiled) -> float | None:
  try:
    analysis = compiled.cost_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if isinstance(analysis, (list, tuple)):     # older jax: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis or 'flops' not in analysis:
    return None
  return float(analysis['flops'])


def build_model(config, log: Log, abstract: bool = False):
  """(LDLM, EncoderChoice) for `config`, with the same checks as the trainer."""
  validate(config)
  choice = encoders_lib.benchmark_encoder(config, abstract=abstract)
  enc = choice.encoder
  enc.check_config(config)
  log(choice.note)
  return LDLM(config, enc), choice


def _random_tokens(batch: int, seq_len: int, vocab: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(0, vocab, size=(batch, seq_len), dtype=np.int32)


def _utilization(flops: float, seconds: float, peak: timing.Peak) -> float:
  return flops / seconds / peak.flops_per_s


def _device_summary() -> dict:
  device = jax.devices()[0]
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'num_devices': jax.device_count(), 'jax': jax.__version__}


@dataclasses.dataclass
class TrainCase:
  """A compiled train step ready to time: `advance((state, metrics))` is one step."""
  config: object
  model: LDLM
  choice: encoders_lib.EncoderChoice
  mesh: object
  compiled: timing.Compiled
  advance: Callable
  carry: tuple


def prepare_train(config, opts: Options, log: Log = print) -> TrainCase:
  """Builds the state, frozen inputs, a random batch and the compiled, donated step."""
  _, choice = build_model(config, log)
  mesh = sharding_lib.make_mesh(config)
  batch, seq_len = int(config.train.batch_size), int(config.data.seq_len)
  sharding_lib.check_batch_size(batch, mesh)
  replicated = sharding_lib.replicated(mesh)
  encoder = choice.encoder.on_device(replicated)   # once: never copied per step
  model = LDLM(config, encoder)
  hidden = encoder.hidden_size
  frozen = jax.device_put(
      model.frozen_inputs(encoder.params, np.zeros(hidden, np.float32),
                          np.ones(hidden, np.float32)), replicated)
  state, _ = state_lib.create_sharded_train_state(model, config, mesh,
                                                  jax.random.PRNGKey(opts.seed))
  tokens = _random_tokens(batch, seq_len, encoder.vocab_size, opts.seed)
  if config.condition.enabled:   # the batch dict of a conditional run (see LDLM.unpack_batch)
    tokens = {'tokens': tokens, 'prompt_mask': conditioning.draw_prompt_masks(
        config, conditioning.mask_rng(opts.seed, 0), batch, seq_len)}
  tokens = jax.device_put(tokens, sharding_lib.batch_sharding(mesh))
  metrics = jax.jit(lambda: step_lib.empty_train_metrics(model.extra_metrics), out_shardings=replicated)()
  jitted = step_lib.compile_train_step(model, config, mesh, state, frozen)
  comp = timing.lower_and_compile(jitted, state, frozen, tokens, metrics)
  log(f'compile: lower {comp.lower_s:.1f}s + compile {comp.compile_s:.1f}s (excluded from step time)')
  step = comp.compiled
  advance = lambda carry: step(carry[0], frozen, tokens, carry[1])
  return TrainCase(config, model, choice, mesh, comp, advance, (state, metrics))


def train_result(case: TrainCase, t: timing.Timing, carry, peak: timing.Peak) -> dict:
  """The JSON-ready numbers of a timed TrainCase (`carry`: its final state, metrics)."""
  config, model, step = case.config, case.model, case.compiled.compiled
  state, metrics = carry
  batch, seq_len = int(config.train.batch_size), int(config.data.seq_len)
  scalars = {k: float(v) for k, v in jax.device_get(metrics.compute()).items()}
  analytic = flops_lib.train_step_flops(model, batch)
  analytic_xla_view = flops_lib.train_step_flops(model, batch, xla_view=True)['total']
  xla = xla_flops(step)
  if xla is not None and case.mesh.size > 1:
    xla *= case.mesh.size    # cost_analysis is per device under SPMD
  return {
      'kind': 'train',
      'device': _device_summary(),
      'encoder': {'name': config.encoder.name, 'random_weights': case.choice.random_weights,
                  'note': case.choice.note},
      'batch_size': batch, 'seq_len': seq_len,
      'dtype': config.model.dtype, 'encoder_dtype': config.encoder.dtype,
      'attention_impl': config.model.attention_impl or 'default',
      'self_cond': {'prob': float(config.diffusion.self_cond_prob),
                    'mode': config.diffusion.self_cond_mode},
      'remat': config.model.remat, 'ce_vocab_chunk': int(config.loss.ce_vocab_chunk),
      'params': count_params(state.params),
      'compile': {'lower_s': case.compiled.lower_s, 'compile_s': case.compiled.compile_s},
      'step_time': t.as_dict(),
      'tokens_per_s': batch * seq_len / t.median_s,
      'flops': {'analytic_per_step': analytic,
                'analytic_per_step_as_xla_counts': analytic_xla_view,
                'xla_cost_analysis_per_step': xla},
      'peak': {'flops_per_s': peak.flops_per_s, 'source': peak.source},
      'utilization': _utilization(analytic['total'], t.median_s, peak),
      'achieved_flops_per_s': analytic['total'] / t.median_s,
      'memory': {'compiled': memory_lib.compiled_memory(step),
                 'device_peak_bytes': memory_lib.device_peak_bytes()},
      'metrics_over_timed_steps': scalars,
  }


def train_benchmark(config, opts: Options, peak: timing.Peak, log: Log = print) -> dict:
  """Times the compiled, donated train step of `config` at train.batch_size."""
  case = prepare_train(config, opts, log)
  t, carry = timing.time_loop(case.advance, case.carry, warmup=opts.warmup, iters=opts.iters,
                              repeats=opts.repeats)
  if opts.profile_dir:
    carry = _profile(case.advance, carry, opts, log)
  return train_result(case, t, carry, peak)


def _profile(advance, carry, opts: Options, log: Log):
  """One extra window of `iters` calls under jax.profiler (a TensorBoard /
  Perfetto trace in opts.profile_dir); not part of any reported time."""
  with jax.profiler.trace(opts.profile_dir):
    for _ in range(opts.iters):
      carry = advance(carry)
    jax.block_until_ready(carry)
  log(f'profiler trace of {opts.iters} calls written under {opts.profile_dir}')
  return carry


def compare_train(configs, opts: Options, peak: timing.Peak, log: Log = print) -> list[dict]:
  """Several train configs timed with alternating windows (fair on a shared machine)."""
  cases = [prepare_train(c, opts, log) for c in configs]
  timings, carries = timing.time_interleaved([(c.advance, c.carry) for c in cases],
                                             warmup=opts.warmup, iters=opts.iters,
                                             repeats=opts.repeats)
  return [train_result(c, t, carry, peak) for c, t, carry in zip(cases, timings, carries)]


def with_self_cond_mode(config, mode: str):
  c = copy.deepcopy(config)
  c.diffusion.self_cond_mode = mode
  return c


def random_params(model: LDLM, seed: int):
  """Random trainable params of `model` drawn on the host: N(0, 0.02) weights,
  1 + N(0, 0.02) norm scales. Unlike `model.init`, nothing is compiled (an
  init program takes XLA:CPU seconds), and unlike a fresh init the DiT is not
  the constant map adaLN-Zero starts from, so a sampler comparison is not
  trivially equal. Speed does not depend on the values."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = 0.02 * rng.standard_normal(leaf.shape, dtype=np.float32)
    is_scale = getattr(path[-1], 'key', None) == 'scale'
    return jnp.asarray(noise + 1.0 if is_scale else noise, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def python_loop_sampler(model: LDLM, denoise, params, rng, num_samples: int, num_steps: int,
                        t_min: float):
  """The Euler-Maruyama sampler stepped from Python, the way an eager sampler runs.

  `denoise` is `jax.jit(model.denoise)` (made once by the caller, so it is
  compiled once): one call per step; the update is the same `em_step` run as
  separate eager jnp ops; the grid, the initial latent and every
  step's noise come from the same keys as `solver.sample`, so the result
  must match the compiled scan.
  """
  d = model.dims
  shape = (num_samples, d.latent_len, d.latent_dim)
  grid = solver_lib.time_grid(num_steps, t_min)
  rng_init, rng_steps = jax.random.split(rng)
  z = jax.random.normal(rng_init, shape, jnp.float32)
  keys = jax.random.split(rng_steps, num_steps)
  x0_sc = jnp.zeros(shape, jnp.float32)
  z_mean = z
  denoise_fn = lambda z_, t_, sc_: denoise(params, z_, t_, sc_)
  for i in range(num_steps):
    noise = jax.random.normal(keys[i], shape, jnp.float32)
    z, z_mean, x0_sc = solver_lib.em_step(denoise_fn, model.schedule, z, x0_sc, grid[i],
                                          grid[i + 1], noise)
  return z_mean


def sample_benchmark(config, opts: Options, peak: timing.Peak, log: Log = print,
                     compare_python_loop: bool = False) -> dict:
  """Times `LDLM.generate` (one compiled lax.scan, decoders once) at sample.batch_size."""
  sc = config.sample
  batch, num_steps, t_min = int(sc.batch_size), int(sc.num_steps), float(sc.t_min)
  # Sampling never runs the frozen encoder: its shapes are enough.
  model, choice = build_model(config, log, abstract=True)
  if sc.time_grid != 'uniform':
    log(f'sample.time_grid={sc.time_grid!r}: timed on the uniform grid (same cost per step).')
  params = random_params(model, opts.seed)
  rng = jax.random.PRNGKey(opts.seed + 7)

  generate = jax.jit(lambda p, r: model.generate(p, r, batch, num_steps, t_min=t_min,
                                                 solver=sc.solver))
  comp = timing.lower_and_compile(generate, params, rng)
  log(f'compile: lower {comp.lower_s:.1f}s + compile {comp.compile_s:.1f}s (excluded)')
  gen = comp.compiled
  # Independent calls dispatched back to back; the window blocks on all of its
  # outputs (only the last `iters` are kept, so memory stays bounded).
  keep = lambda outs, new: (outs + [new])[-opts.iters:]
  t, _ = timing.time_loop(lambda outs: keep(outs, gen(params, rng)), [], warmup=opts.warmup,
                          iters=opts.iters, repeats=opts.repeats)

  # The decoders alone, to split the call into denoising steps and decoding.
  z_shape = (batch, model.dims.latent_len, model.dims.latent_dim)
  decode = jax.jit(model.decode_tokens).lower(
      params, jax.ShapeDtypeStruct(z_shape, jnp.float32)).compile()
  z0 = jax.random.normal(rng, z_shape, jnp.float32)
  t_dec, _ = timing.time_loop(lambda outs: keep(outs, decode(params, z0)), [],
                              warmup=1, iters=opts.iters, repeats=opts.repeats)
  per_step = max(t.median_s - t_dec.median_s, 0.0) / num_steps
  if opts.profile_dir:
    _profile(lambda outs: keep(outs, gen(params, rng)), [], opts, log)

  fl = flops_lib.sampling_flops(model, batch, num_steps)
  seq_len = model.dims.seq_len
  result = {
      'kind': 'sample',
      'device': _device_summary(),
      'encoder': {'name': config.encoder.name, 'random_weights': choice.random_weights,
                  'note': choice.note},
      'batch_size': batch, 'num_steps': num_steps, 'seq_len': seq_len,
      'dtype': config.model.dtype, 'attention_impl': config.model.attention_impl or 'default',
      'solver': sc.solver,
      'params': count_params(params),
      'compile': {'lower_s': comp.lower_s, 'compile_s': comp.compile_s},
      'sampler_call': t.as_dict(),
      'decode_call': t_dec.as_dict(),
      'per_step_s': per_step,
      'samples_per_s': batch / t.median_s,
      'tokens_per_s': batch * seq_len / t.median_s,
      'flops': {'analytic_per_call': fl,
                'xla_cost_analysis_per_call': xla_flops(gen),
                'xla_note': ('XLA counts a lax.scan body once, not once per step: compare '
                             'it with analytic per_step + decode')},
      'peak': {'flops_per_s': peak.flops_per_s, 'source': peak.source},
      'utilization': _utilization(fl['total'], t.median_s, peak),
      'memory': {'compiled': memory_lib.compiled_memory(gen),
                 'device_peak_bytes': memory_lib.device_peak_bytes()},
  }
  if compare_python_loop:
    result['python_loop'] = _compare_python_loop(model, params, rng, batch, num_steps, t_min,
                                                 opts, log)
  return result


def _compare_python_loop(model, params, rng, batch, num_steps, t_min, opts: Options,
                         log: Log) -> dict:
  """The compiled scan vs the Python-stepped sampler: time, speed-up, agreement."""
  # The Python loop steps Euler-Maruyama, so the scan it is compared with does too.
  scan = jax.jit(lambda p, r: model.sample_latents(p, r, batch, num_steps, t_min=t_min,
                                                   solver='euler_maruyama'))
  scan_c = timing.lower_and_compile(scan, params, rng).compiled
  denoise = jax.jit(model.denoise)
  # Windows of one run each: the carry is that run's latents.
  scan_call = lambda _: scan_c(params, rng)
  # The scan returns latents in the encoder's units; the loop's are mapped back the same way.
  loop_call = lambda _: model.from_diffusion_space(
      params, python_loop_sampler(model, denoise, params, rng, batch, num_steps, t_min))
  # One warm-up each (the loop's compiles its denoiser and the eager ops).
  (t_scan, t_loop), (scans, loops) = timing.time_interleaved(
      [(scan_call, None), (loop_call, None)], warmup=1, iters=1, repeats=opts.repeats)
  ref = np.asarray(scans, np.float64)
  err = float(np.linalg.norm(np.asarray(loops, np.float64) - ref) / np.linalg.norm(ref))
  speedup = t_loop.median_s / t_scan.median_s
  log(f'python loop: {t_loop.median_s:.4f}s vs compiled scan {t_scan.median_s:.4f}s for '
      f'{num_steps} steps: {speedup:.1f}x; relative difference of the latents {err:.2e}')
  return {'scan': t_scan.as_dict(), 'python_loop': t_loop.as_dict(), 'speedup': speedup,
          'relative_difference': err}

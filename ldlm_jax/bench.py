r"""Benchmarks: train-step and sampler speed, FLOPs, utilization, memory, AOT compile.

  python -m ldlm_jax.bench train   --config configs/lm1b.py [--config.x=...] [--batch_size 8]
  python -m ldlm_jax.bench train   --preset lm1b_train [--batch_size 4] [--compare_self_cond]
  python -m ldlm_jax.bench sample  --preset owt_sample [--compare_python_loop]
  python -m ldlm_jax.bench sample  --config configs/tiny.py --compare_python_loop
  python -m ldlm_jax.bench compile --config configs/lm1b.py --devices 8 [--fsdp 2]
  ... [--out results.json] [--json] [--profile_dir DIR]

The report is printed as text; every number goes to the JSON file --out (or
--json_out), and to stdout after the report with --json.
On a GPU add --config.model.attention_impl=cudnn (cuDNN flash attention):
on an H100 it halved the OWT sampling time (BUILD_NOTES.md has the numbers).

train: the compiled, donated train step on random token batches (data
  loading is `python -m ldlm_jax.data.bench`): compile time apart, then step
  time (median and spread of timed windows, one block per window), tokens/s,
  analytic model FLOPs per step and XLA's count, utilization against the
  device peak (GPU: data-sheet bf16 peak, H100 989 TFLOP/s; CPU: a float32
  matmul peak measured in this process) and memory per device.
  --compare_self_cond times diffusion.self_cond_mode 'cond' and 'per_example'.
  --compare FIELD=V1,V2,... times the config with each value of one field
  (e.g. model.remat=none,block or loss.ce_vocab_chunk=0,8192), all compiled
  first, then timed with alternating windows; memory per value beside it.
sample: `LDLM.generate` (one lax.scan, decoders once): seconds per batch of
  sample.num_steps steps, per-step time, samples/s and tokens/s.
  --compare_python_loop also steps the same model from a Python loop.
compile: lowers + compiles the train step for a mesh of --devices devices
  from abstract inputs and reports memory per device; with fewer real
  devices it compiles for that many virtual CPU devices (see
  ldlm_jax/benchmarks/aot.py for what that does and does not tell).

Presets (the paper's timing setups; later --config.x=... flags override them):
  owt_sample  configs/owt.py, L = 1024, batch 16, 1024 steps (paper Table 3)
  lm1b_train  configs/lm1b.py at batch 512 (paper App. C); --batch_size
              shrinks it for a small machine and the output says so.
When the frozen encoder's weights are not on the machine, a randomly
initialised encoder of the same architecture is used and the output says so.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys


def _argv_value(argv, name: str, default: str) -> str:
  for i, arg in enumerate(argv):
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
  return default


# XLA:CPU schedules for thread concurrency by default, which keeps
# rematerialised activations alive from the forward pass (model.remat then
# saves nothing in the plan; measured in BUILD_NOTES.md, "Training and sampling speed, memory plans"). The GPU
# and TPU schedulers are memory-aware, so `compile` plans on CPU with the
# memory-minimising schedule instead. CPU-only flag; the user's value wins.
CPU_MEMORY_SCHEDULE_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler'


def _request_host_devices(argv) -> None:
  """`compile --devices N` needs N CPU devices, which XLA only creates if told
  before jax is imported: set the flag now (a no-op when jax is already in);
  likewise the memory-minimising CPU schedule."""
  if 'compile' not in argv[1:] or 'jax' in sys.modules:
    return
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if CPU_MEMORY_SCHEDULE_FLAG not in xla_flags:
    xla_flags = f'{xla_flags} {CPU_MEMORY_SCHEDULE_FLAG}=false'.strip()
  count = _argv_value(argv, 'devices', '8')
  if ('--xla_force_host_platform_device_count' not in xla_flags and count.isdigit()
      and int(count) > 1):
    xla_flags = f'{xla_flags} --xla_force_host_platform_device_count={count}'
  os.environ['XLA_FLAGS'] = xla_flags


_request_host_devices(sys.argv)


def _add_gpu_flags() -> list[str]:
  from ldlm_jax import xla_flags
  added = xla_flags.add_gpu_flags()
  fraction = xla_flags.set_gpu_memory_fraction()   # the trainer's share, so timings match it
  return added + ([f'{xla_flags.MEM_FRACTION_VAR}={fraction}'] if fraction else [])


_GPU_FLAGS_ADDED = _add_gpu_flags()    # before jax is imported (XLA reads XLA_FLAGS once)

# The imports below run after the flags above are set (ruff.toml allows E402 in this file); jax and
# the benchmarks are imported inside functions (ruff.toml exempts the entry points from PLC0415).
from absl import app, flags, logging
from ml_collections import config_flags

from ldlm_jax import cli, fileio
from ldlm_jax.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_USER_ARGV = list(sys.argv)   # as typed, before --preset is expanded (for the JSON record)
COMMANDS = ('train', 'sample', 'compile')
# What JAX's allocator reported for an H100 80GB at its default share of 0.75
# (59.385 GiB), as the whole: the compile plan is checked against the share a
# training run gets (xla_flags.memory_fraction: 0.95 unless the user sets it).
H100_ALLOCATABLE_GIB = 59.385 / 0.75

# name -> (config file under configs/, overrides, the subcommands it is for)
PRESETS = {
    'owt_sample': ('owt.py', {'data.seq_len': 1024, 'sample.batch_size': 16,
                              'sample.num_steps': 1024, 'sample.solver': 'euler_maruyama'},
                   ('sample',)),
    'lm1b_train': ('lm1b.py', {'data.seq_len': 128, 'train.batch_size': 512},
                   ('train', 'compile')),
}

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.',
                                          lock_config=True)
_PRESET = flags.DEFINE_enum('preset', None, sorted(PRESETS),
                            'A paper timing setup (sets --config; see the module docstring).')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Override the batch (train/compile: '
                              'train.batch_size; sample: sample.batch_size). 0 = the config.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls after compilation.')
_ITERS = flags.DEFINE_integer('iters', 5, 'Calls per timed window (train steps or sampler calls).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed windows; the median is reported.')
_SELF_COND = flags.DEFINE_bool('compare_self_cond', False,
                               'train: time self_cond_mode cond and per_example.')
_COMPARE = flags.DEFINE_string(
    'compare', '', 'train: FIELD=V1,V2,... time the config with each value of one config field.')
_PY_LOOP = flags.DEFINE_bool('compare_python_loop', False,
                             'sample: also time the sampler stepped from a Python loop.')
_DEVICES = flags.DEFINE_integer('devices', 8, 'compile: devices in the target mesh.')
_FSDP = flags.DEFINE_integer('fsdp', 0, 'compile: size of the fsdp mesh axis (0 = mesh.fsdp).')
_MEMORY_GIB = flags.DEFINE_float(
    'device_memory_gib', 0.0, 'compile: device memory to check the plan against (0 = what the '
    "backend reports, else 75.2 GiB: the trainer's 0.95 share of an H100 80GB).")
_PEAK = flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s for utilization (0 = automatic).')
_MATMUL = flags.DEFINE_integer('matmul_size', 0, 'Matrix size of the measured matmul peak '
                               '(0 = 2048 on CPU, 8192 on GPU).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random parameters and tokens.')
_JSON = flags.DEFINE_string('json_out', None, 'Write every number to this JSON file.')
_OUT = flags.DEFINE_string('out', None, 'Write every number to this JSON file (the same as --json_out).')
_PRINT_JSON = flags.DEFINE_bool('json', False, 'Also print the JSON payload to stdout, after the '
                                'readable report.')
_PROFILE = flags.DEFINE_string('profile_dir', '', 'train (single mode) and sample: also write a '
                               'jax.profiler trace of one extra, untimed window to this directory.')


def expand_preset(argv: list[str]) -> list[str]:
  """--preset NAME -> --config=configs/FILE plus its overrides, placed before the
  user's own flags so that those still win."""
  name = _argv_value(argv, 'preset', '')
  if not name:
    return argv
  if name not in PRESETS:
    return argv          # absl's enum check reports it
  if any(a == '--config' or a.startswith('--config=') for a in argv):
    raise app.UsageError('--preset chooses the config file; drop --config (use --config.x=... '
                         'to override single fields).')
  config_file, overrides, _ = PRESETS[name]
  path = os.path.join(REPO_ROOT, 'configs', config_file)
  inserted = [f'--config={path}'] + [f'--config.{k}={v}' for k, v in overrides.items()]
  return argv[:1] + inserted + argv[1:]


def _fmt_s(seconds: float) -> str:
  if seconds >= 1.0:
    return f'{seconds:.3f} s'
  if seconds >= 1e-3:
    return f'{seconds * 1e3:.2f} ms'
  return f'{seconds * 1e6:.1f} us'


def _fmt_flops(value) -> str:
  if value is None:
    return 'n/a'
  return f'{value / 1e12:.4f} TFLOP' if value >= 1e11 else f'{value / 1e9:.3f} GFLOP'


def _print_memory(mem: dict, device_peak, indent='  ') -> None:
  from ldlm_jax.benchmarks.memory import gib
  c = mem
  if c:
    print(f'{indent}compiled per device: arguments {gib(c["argument"])}, outputs '
          f'{gib(c["output"])}, aliased (donated) {gib(c["alias"])}, temporaries '
          f'{gib(c["temp"])}, code {gib(c["generated_code"])}; total {gib(c["total_estimate"])}')
  print(f'{indent}device peak in use: {gib(device_peak)}'
        + ('' if device_peak is not None else ' (this backend keeps no allocator statistics)'))


def _xla_note(r: dict) -> str:
  if r['device']['platform'] == 'gpu':
    return ('XLA:GPU leaves the cuBLAS/cuDNN library calls, i.e. most matmuls, out of its count: '
            'compare on CPU')
  return 'XLA adds element-wise ops and counts a lax.scan body (the chunked CE) once'


def print_train(r: dict) -> None:
  st = r['step_time']
  fl = r['flops']
  print(f'train  batch {r["batch_size"]} x L {r["seq_len"]}, dtype {r["dtype"]}, attention '
        f'{r["attention_impl"]}, self-cond p={r["self_cond"]["prob"]} mode {r["self_cond"]["mode"]}, '
        f'remat {r["remat"]}, CE vocab chunk {r["ce_vocab_chunk"] or "dense"}')
  print(f'  params (trainable): {r["params"]["total"] / 1e6:.2f}M = ' + ', '.join(
      f'{k} {v / 1e6:.2f}M' for k, v in r['params'].items() if k != 'total'))
  print(f'  compile: {r["compile"]["lower_s"] + r["compile"]["compile_s"]:.1f} s (not in step time)')
  print(f'  step time: {_fmt_s(st["median_s"])} median ({_fmt_s(st["min_s"])} .. '
        f'{_fmt_s(st["max_s"])} over {st["repeats"]} windows of {st["iters"]} steps)')
  print(f'  tokens/s: {r["tokens_per_s"]:,.0f}')
  a = fl['analytic_per_step']
  print(f'  model FLOPs/step (analytic): {_fmt_flops(a["total"])} = ' + ', '.join(
      f'{k} {_fmt_flops(v)}' for k, v in a.items() if k != 'total'))
  print(f'  XLA cost analysis FLOPs/step: {_fmt_flops(fl["xla_cost_analysis_per_step"])} '
        f'(analytic as XLA counts it, lax.cond = dearer branch: '
        f'{_fmt_flops(fl["analytic_per_step_as_xla_counts"])}; {_xla_note(r)})')
  print(f'  achieved: {r["achieved_flops_per_s"] / 1e12:.3f} TFLOP/s; utilization '
        f'{100 * r["utilization"]:.1f}% of {r["peak"]["flops_per_s"] / 1e12:.2f} TFLOP/s '
        f'({r["peak"]["source"]})')
  _print_memory(r['memory']['compiled'], r['memory']['device_peak_bytes'])
  m = r['metrics_over_timed_steps']
  print(f'  loss over the timed steps {m.get("loss", float("nan")):.4f}, non-finite steps '
        f'{m.get("nonfinite", 0.0):.2f}')


def print_sample(r: dict) -> None:
  t = r['sampler_call']
  fl = r['flops']['analytic_per_call']
  print(f'sample  batch {r["batch_size"]} x L {r["seq_len"]}, {r["num_steps"]} steps '
        f'({r["solver"]}), dtype {r["dtype"]}, attention {r["attention_impl"]}')
  print(f'  params (trainable): {r["params"]["total"] / 1e6:.2f}M, denoiser '
        f'{r["params"].get("denoiser", 0) / 1e6:.2f}M')
  print(f'  compile: {r["compile"]["lower_s"] + r["compile"]["compile_s"]:.1f} s (not timed)')
  print(f'  batch of {r["batch_size"]} x {r["num_steps"]} steps: {_fmt_s(t["median_s"])} median '
        f'({_fmt_s(t["min_s"])} .. {_fmt_s(t["max_s"])}); decoders once '
        f'{_fmt_s(r["decode_call"]["median_s"])}; per step {_fmt_s(r["per_step_s"])}')
  print(f'  samples/s {r["samples_per_s"]:.3f}, tokens/s {r["tokens_per_s"]:,.0f}')
  print(f'  model FLOPs (analytic): per step {_fmt_flops(fl["per_step"])}, decode '
        f'{_fmt_flops(fl["decode"])}, per call {_fmt_flops(fl["total"])}; XLA cost analysis '
        f'{_fmt_flops(r["flops"]["xla_cost_analysis_per_call"])} (counts the scan body once; '
        f'{_xla_note(r)})')
  print(f'  utilization {100 * r["utilization"]:.1f}% of {r["peak"]["flops_per_s"] / 1e12:.2f} '
        f'TFLOP/s ({r["peak"]["source"]})')
  _print_memory(r['memory']['compiled'], r['memory']['device_peak_bytes'])
  if 'python_loop' in r:
    p = r['python_loop']
    print(f'  compiled scan {_fmt_s(p["scan"]["median_s"])} vs Python loop '
          f'{_fmt_s(p["python_loop"]["median_s"])}: {p["speedup"]:.1f}x faster; latents agree '
          f'to {p["relative_difference"]:.1e} (relative)')


def print_compile(r: dict, capacity_bytes: float, capacity_source: str) -> None:
  from ldlm_jax.benchmarks.memory import gib
  s = r['sharded_arguments_per_device']
  c = r['compiled_per_device']
  print(f'compile  train step, {r["num_devices"]} x {r["platform"]} ({r["device_kind"]}), mesh '
        f'data={r["mesh"]["data"]} fsdp={r["mesh"]["fsdp"]}, global batch {r["global_batch"]} '
        f'({r["per_device_batch"]} per device) x L {r["seq_len"]}, dtype {r["dtype"]}, remat '
        f'{r["remat"]}, CE vocab chunk {r["ce_vocab_chunk"] or "dense"}')
  print(f'  compile: {r["compile"]["lower_s"] + r["compile"]["compile_s"]:.1f} s')
  print(f'  per device, sharded state: params {gib(s["params"])}, AdamW moments '
        f'{gib(s["opt_state"])}, EMA {gib(s["ema_params"])} (state {gib(s["state_total"])}); '
        f'frozen encoder {gib(s["frozen_encoder"])} (all its weights; the step reads only the '
        f'blocks it runs); batch {gib(s["batch"])}')
  fl = r['flops']
  xla = fl['xla_cost_analysis_per_device']
  print(f'  model FLOPs/step (analytic, global batch): {_fmt_flops(fl["analytic_per_step"])}; '
        f'XLA cost analysis: {_fmt_flops(xla)} per device'
        + (f' x {r["num_devices"]} = {_fmt_flops(xla * r["num_devices"])}' if xla else '')
        + (' (XLA:GPU leaves cuBLAS/cuDNN calls out of its count)' if r['platform'] == 'gpu'
           else ''))
  if c:
    print(f'  per device, compiled: arguments {gib(c["argument"])}, outputs {gib(c["output"])}, '
          f'aliased {gib(c["alias"])}, temporaries (activations etc.) {gib(c["temp"])}, code '
          f'{gib(c["generated_code"])}; total {gib(c["total_estimate"])}')
    p = r['plan_per_device']
    print(f'  plan per device: params {gib(p["params"])} + optimizer {gib(p["optimizer"])} + EMA '
          f'{gib(p["ema_params"])} + other state {gib(p["other_state"])} + frozen encoder (used '
          f'blocks), batch, metrics {gib(p["frozen_encoder_batch_metrics"])} + new outputs '
          f'{gib(p["outputs_not_aliased"])} + activations/temporaries '
          f'{gib(p["activations_and_temporaries"])} + code {gib(p["code"])} = {gib(p["total"])}')
    verdict = 'fits' if c['total_estimate'] <= capacity_bytes else 'DOES NOT FIT'
    print(f'  {verdict} in {gib(capacity_bytes)} per device ({capacity_source})')
  print(f'  note: {r["caveat"]}')


def parse_compare(spec: str, config):
  """'a.b=v1,v2' -> ('a.b', [v1, v2]) with each value of the field's own type."""
  field, sep, raw = spec.partition('=')
  node = config
  try:
    for part in field.split('.'):
      node = node[part]
  except (KeyError, AttributeError):
    raise ConfigError(f'--compare field {field!r} is not a config field; give e.g. '
                      '--compare=model.remat=none,block.') from None
  values = [v for v in raw.split(',') if v != '']
  if not sep or len(values) < 2:
    raise ConfigError(f'--compare={spec!r} needs FIELD=V1,V2 with at least two values.')
  kind = type(node)
  if kind is bool:
    return field, [v.lower() in ('1', 'true', 'yes') for v in values]
  try:
    return field, [kind(v) for v in values]
  except ValueError:
    raise ConfigError(f'--compare: the values of {field} must be {kind.__name__} '
                      f'(got {values}).') from None


def with_field(config, field: str, value):
  import copy
  c = copy.deepcopy(config)
  *path, last = field.split('.')
  node = c
  for part in path:
    node = node[part]
  node[last] = value
  return c


def _write_json(path: str, payload: dict) -> None:
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'--json_out directory {directory} does not exist; create it first.')
  fileio.write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=float))


def _select_devices(count: int):
  import jax
  if count < 1:
    raise ConfigError(f'--devices={count} must be >= 1.')
  if len(jax.devices()) >= count:
    return jax.devices()[:count]
  cpu = jax.devices('cpu')
  if len(cpu) < count:
    raise ConfigError(
        f'--devices={count} needs {count} devices but this process has {len(cpu)} CPU devices; '
        f'start a new process with XLA_FLAGS=--xla_force_host_platform_device_count={count} '
        '(`python -m ldlm_jax.bench compile` sets it itself).')
  return cpu[:count]


def run(command: str, config, argv: list[str]) -> dict:
  """Runs one subcommand; prints as it goes; returns the JSON payload."""
  import jax
  from ldlm_jax.benchmarks import aot, runs, timing
  from ldlm_jax.benchmarks import memory as memory_lib

  preset = _PRESET.value
  if preset and command not in PRESETS[preset][2]:
    raise app.UsageError(f'--preset {preset} is for {"/".join(PRESETS[preset][2])}, not {command}.')
  batch_key = 'sample' if command == 'sample' else 'train'
  if _BATCH.value:
    old = int(config[batch_key].batch_size)
    config[batch_key].batch_size = int(_BATCH.value)
    if _BATCH.value != old:
      print(f'NOTE: {batch_key}.batch_size set to {_BATCH.value} by --batch_size (the config '
            f'says {old}); per-step numbers are for this batch, not the paper\'s.')
  if preset == 'owt_sample' and (int(config.sample.batch_size) != 16
                                 or int(config.sample.num_steps) != 1024):
    print(f'NOTE: preset owt_sample is batch 16 x 1024 steps; this run is batch '
          f'{config.sample.batch_size} x {config.sample.num_steps} steps.')

  opts = runs.Options(warmup=_WARMUP.value, iters=_ITERS.value, repeats=_REPEATS.value,
                      seed=_SEED.value, profile_dir=_PROFILE.value)
  payload = {
      'command': ' '.join(['python -m ldlm_jax.bench'] + _USER_ARGV[1:]),
      'expanded_command': ' '.join(['python -m ldlm_jax.bench'] + argv[1:]),
      'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      'host': {'cpu_count': os.cpu_count(), 'machine': platform.machine(),
               'processor': platform.processor() or platform.machine()},
      'jax': jax.__version__, 'backend': jax.default_backend(),
      'preset': preset, 'results': [],
  }
  payload['xla_flags'] = os.environ.get('XLA_FLAGS', '')
  payload['xla_gpu_flags_added'] = _GPU_FLAGS_ADDED
  if _GPU_FLAGS_ADDED:
    print(f'XLA GPU flags added (LDLM_XLA_GPU_FLAGS=0 skips them): {" ".join(_GPU_FLAGS_ADDED)}')
  device = jax.devices()[0]
  print(f'{jax.default_backend()} backend, {jax.device_count()} x {device.device_kind}; '
        f'jax {jax.__version__}; host CPUs {os.cpu_count()}')

  if command == 'compile':
    if _FSDP.value:
      config.mesh.fsdp = int(_FSDP.value)
    config.mesh.data = -1
    devices = _select_devices(_DEVICES.value)
    result = aot.aot_train_step(config, devices)
    capacity = None
    if _MEMORY_GIB.value > 0:
      capacity, source = _MEMORY_GIB.value * memory_lib.GiB, '--device_memory_gib'
    elif devices[0].platform != 'cpu':
      capacity = memory_lib.device_capacity_bytes(devices[0])
      source = f'{devices[0].device_kind} allocator limit'
    if capacity is None:
      # What a training run may use of an H100 80GB (the trainer sets the allocator's share).
      from ldlm_jax import xla_flags as flags_lib
      fraction = flags_lib.memory_fraction()
      capacity = H100_ALLOCATABLE_GIB * fraction * memory_lib.GiB
      source = (f'{fraction:.0%} of an H100 80GB ({flags_lib.MEM_FRACTION_VAR}, the trainer\'s '
                'default on GPU); set --device_memory_gib')
    result['capacity_bytes'] = capacity
    print_compile(result, capacity, source)
    payload['results'].append(result)
    return payload

  peak = timing.device_peak(override_tflops=_PEAK.value, matmul_size=_MATMUL.value)
  print(f'peak for utilization: {peak.flops_per_s / 1e12:.3f} TFLOP/s ({peak.source})')
  payload['peak'] = {'flops_per_s': peak.flops_per_s, 'source': peak.source}

  if command == 'train' and _COMPARE.value:
    field, values = parse_compare(_COMPARE.value, config)
    configs = [with_field(config, field, v) for v in values]
    results = runs.compare_train(configs, opts, peak)
    for result in results:
      print_train(result)
      payload['results'].append(result)
    print(f'{field}: ' + '; '.join(
        f'{v}: {_fmt_s(r["step_time"]["median_s"])}/step, temporaries '
        f'{memory_lib.gib(r["memory"]["compiled"].get("temp"))}, total '
        f'{memory_lib.gib(r["memory"]["compiled"].get("total_estimate"))}'
        for v, r in zip(values, results)))
    payload['compare'] = {'field': field, 'values': [str(v) for v in values]}
    return payload
  if command == 'train':
    if not _SELF_COND.value:
      result = runs.train_benchmark(config, opts, peak)
      print_train(result)
      payload['results'].append(result)
      return payload
    # Both modes compiled first, then timed with alternating windows.
    results = runs.compare_train([runs.with_self_cond_mode(config, m)
                                  for m in ('cond', 'per_example')], opts, peak)
    for result in results:
      print_train(result)
      payload['results'].append(result)
    cond, per_ex = (r['step_time']['median_s'] for r in results)
    faster = 'cond' if cond <= per_ex else 'per_example'
    ratio = max(cond, per_ex) / min(cond, per_ex)
    print(f'self-conditioning: cond {_fmt_s(cond)}/step vs per_example {_fmt_s(per_ex)}/step '
          f'(p={config.diffusion.self_cond_prob}): {faster} is faster by {ratio:.2f}x')
    payload['self_cond_faster'] = faster
    return payload

  result = runs.sample_benchmark(config, opts, peak, compare_python_loop=_PY_LOOP.value)
  print_sample(result)
  payload['results'].append(result)
  return payload


def _json_path() -> str | None:
  return _OUT.value or _JSON.value


def check_flags() -> None:
  """Every number and output path checked before anything is compiled (one sentence each)."""
  cli.check_positive(iters=_ITERS.value, repeats=_REPEATS.value, devices=_DEVICES.value)
  for name, value in (('batch_size', _BATCH.value), ('warmup', _WARMUP.value), ('fsdp', _FSDP.value),
                      ('matmul_size', _MATMUL.value), ('device_memory_gib', _MEMORY_GIB.value),
                      ('peak_tflops', _PEAK.value)):
    if value < 0:
      raise ConfigError(f'--{name} must be >= 0 (got {value}; 0 = the default).')
  if _JSON.value and _OUT.value and _JSON.value != _OUT.value:
    raise ConfigError('--out and --json_out name two different files; give one of them.')
  if _json_path():
    flag = '--out' if _OUT.value else '--json_out'
    path = cli.check_output_file(_json_path(), flag)
    if not os.path.isdir(os.path.dirname(path)):
      raise ConfigError(f'{flag} directory {os.path.dirname(path)} does not exist; create it first.')
  if _PROFILE.value:
    cli.check_output_dir(_PROFILE.value, '--profile_dir')


def main(argv):
  logging.set_verbosity(logging.WARNING)    # jax's backend probing is not for this output
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'Give one subcommand: {" | ".join(COMMANDS)} (got {argv[1:]}).')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('Give --config FILE or --preset NAME.')
  check_flags()
  # A user error here (config, missing file) is one line from cli.run_absl.
  payload = run(argv[1], config, sys.argv)
  if _json_path():
    _write_json(_json_path(), payload)
    print(f'wrote {_json_path()}')
  if _PRINT_JSON.value:
    print(json.dumps(payload, indent=2, sort_keys=True, default=float))


def entry():
  try:
    sys.argv = expand_preset(sys.argv)
  except app.UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  cli.run_absl(main)


if __name__ == '__main__':
  entry()

"""Ahead-of-time compile of the train step for an N-device mesh, without the hardware.

`aot_train_step(config, devices)` lowers and compiles exactly the program
the trainer runs (`compile_train_step`: same shardings, same donation) from
abstract inputs only (`jax.ShapeDtypeStruct` with shardings, from
`jax.eval_shape`), so no array of the full size is ever allocated, and
reports per device: the sharded state (params, AdamW moments, EMA, sampler
state), the frozen encoder, the batch shard, and the compiler's plan for
outputs, temporaries (activations, gradients, scratch) and code.

With fewer real devices than asked, the CLI compiles for N virtual CPU
devices (`--xla_force_host_platform_device_count`), with XLA:CPU's
memory-minimising schedule (its default concurrency-optimised schedule keeps
rematerialised activations alive, so `model.remat` would show no saving).
What such a CPU compile does and does not tell about a GPU or TPU:
  * exact: the bytes of every sharded argument (state, frozen weights,
    batch), since they depend only on shapes, dtypes and shardings; that the
    shardings are consistent and the collectives exist for the mesh;
  * an upper estimate: the temporaries. XLA:CPU fuses and lays out
    differently, keeps bf16 dots' operands in float32 and has no cuDNN flash
    attention (which never materialises the L x L scores). Measured: the
    LM1B step at 128 examples per device (dense CE) plans 42.8 GiB of
    temporaries on CPU (55.3 with XLA:CPU's default concurrency schedule),
    16.7 GiB with the H100's compiler (XLA attention; 13.6 with cuDNN),
    whose plan matched the allocator's measured peak within 0.3%.
On a GPU machine, `--devices 1 --batch_size B/N` compiles with the real GPU
compiler the per-device program of a pure data-parallel N-device run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.benchmarks import flops as flops_lib
from ldlm_jax.benchmarks import memory as memory_lib
from ldlm_jax.benchmarks import timing
from ldlm_jax.benchmarks.runs import build_model, xla_flops
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib
from ldlm_jax.training import step as step_lib

CPU_CAVEAT = (
    'compiled by XLA:CPU: the sharded argument sizes (state, frozen encoder, batch) are exact; '
    'temporaries are an upper estimate (CPU fusion/layouts, float32 dot operands, no flash '
    'attention): for LM1B at 128 per device they were 2.6x what the H100 compiler plans. '
    'For GPU numbers run `compile --devices 1 --batch_size B/N` on one GPU.')


def _with_sharding(shapes, shardings):
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def aot_train_step(config, devices, log=print) -> dict:
  """Lowers + compiles the train step of `config` for a mesh over `devices`."""
  mesh = sharding_lib.make_mesh(config, devices)
  batch, seq_len = int(config.train.batch_size), int(config.data.seq_len)
  sharding_lib.check_batch_size(batch, mesh)
  model, choice = build_model(config, log, abstract=True)
  replicated = sharding_lib.replicated(mesh)

  state_shapes = jax.eval_shape(
      functools.partial(state_lib.create_train_state, model, config), jax.random.PRNGKey(0))
  state_abs = _with_sharding(state_shapes, sharding_lib.state_shardings(mesh, state_shapes))
  hidden = model.dims.feature_dim
  frozen_shapes = jax.eval_shape(
      lambda p: model.frozen_inputs(p, np.zeros(hidden, np.float32), np.ones(hidden, np.float32)),
      choice.encoder.params)
  frozen_abs = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), frozen_shapes)
  tokens_abs = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32,
                                    sharding=sharding_lib.batch_sharding(mesh))
  if config.condition.enabled:   # the batch dict of a conditional run (see LDLM.unpack_batch)
    tokens_abs = {'tokens': tokens_abs, 'prompt_mask': jax.ShapeDtypeStruct(
        (batch, seq_len), jnp.bool_, sharding=sharding_lib.batch_sharding(mesh))}
  metrics_abs = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      jax.eval_shape(lambda: step_lib.empty_train_metrics(model.extra_metrics)))

  jitted = step_lib.compile_train_step(model, config, mesh, state_shapes, frozen_shapes)
  comp = timing.lower_and_compile(jitted, state_abs, frozen_abs, tokens_abs, metrics_abs)
  log(f'compile for {mesh.size} {devices[0].platform} devices (data={mesh.shape["data"]}, '
      f'fsdp={mesh.shape["fsdp"]}): lower {comp.lower_s:.1f}s + compile {comp.compile_s:.1f}s')

  per_device = {
      'params': memory_lib.sharded_bytes_per_device(state_abs.params),
      'opt_state': memory_lib.sharded_bytes_per_device(state_abs.opt_state),
      'ema_params': memory_lib.sharded_bytes_per_device(state_abs.ema_params),
      'other_state': memory_lib.sharded_bytes_per_device(
          (state_abs.step, state_abs.timesteps, state_abs.rng)),
      'frozen_encoder': memory_lib.sharded_bytes_per_device(frozen_abs),
      'batch': memory_lib.sharded_bytes_per_device(tokens_abs),
  }
  per_device['state_total'] = (per_device['params'] + per_device['opt_state']
                               + per_device['ema_params'] + per_device['other_state'])
  compiled_mem = memory_lib.compiled_memory(comp.compiled)
  platform = devices[0].platform
  plan = {}
  if compiled_mem:
    # The compiler's total split by what the bytes are. Arguments: the state
    # parts (exact), then the rest of what the program reads (the frozen
    # weights of the blocks it runs, the batch, the metrics; XLA drops unused
    # arguments, e.g. the encoder blocks above the used layer). The donated
    # state is aliased to the new state, so the outputs add only what is not
    # aliased; the temporaries are activations, gradients and scratch.
    state = per_device['state_total']
    plan = {'params': per_device['params'], 'optimizer': per_device['opt_state'],
            'ema_params': per_device['ema_params'],
            'other_state': per_device['other_state'],
            'frozen_encoder_batch_metrics': compiled_mem['argument'] - state,
            'outputs_not_aliased': compiled_mem['output'] - compiled_mem['alias'],
            'activations_and_temporaries': compiled_mem['temp'],
            'code': compiled_mem['generated_code'],
            'total': compiled_mem['total_estimate']}
  return {
      'kind': 'compile',
      'platform': platform,
      'device_kind': devices[0].device_kind,
      'num_devices': mesh.size,
      'mesh': {'data': int(mesh.shape['data']), 'fsdp': int(mesh.shape['fsdp'])},
      'global_batch': batch, 'per_device_batch': batch // mesh.size, 'seq_len': seq_len,
      'dtype': config.model.dtype,
      'encoder': {'name': config.encoder.name, 'random_weights': choice.random_weights},
      'compile': {'lower_s': comp.lower_s, 'compile_s': comp.compile_s},
      'remat': config.model.remat, 'ce_vocab_chunk': int(config.loss.ce_vocab_chunk),
      'sharded_arguments_per_device': per_device,
      'compiled_per_device': compiled_mem,
      'plan_per_device': plan,
      'flops': {'analytic_per_step': flops_lib.train_step_flops(model, batch)['total'],
                'analytic_per_step_as_xla_counts': flops_lib.train_step_flops(
                    model, batch, xla_view=True)['total'],
                'xla_cost_analysis_per_device': xla_flops(comp.compiled)},
      'caveat': CPU_CAVEAT if platform == 'cpu' else
                f'compiled by the {platform} compiler of this machine.',
  }

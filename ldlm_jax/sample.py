r"""Samples text from a trained run.

  python -m ldlm_jax.sample --workdir runs/demo --num_samples 64 --steps 200 \
      --out samples.jsonl [--seed 0] [--batch_size 32] [--checkpoint_step STEP] \
      [--time_grid uniform|adaptive] [--t_min 0.05] [--solver euler_maruyama|ddim] \
      [--token_decoder runs/demo/token_decoder_k2] [--final z|x0]

Restores the EMA parameters, runs the reverse SDE as one compiled lax.scan
(self-conditioning carried inside the scan), then the latent decoder and the
token decoder once at the end. The batch is sharded over all devices.
Writes one JSON object per sample: text, tokens, seed, steps, checkpoint_step,
eos_token, and the sampler settings.
"""

from __future__ import annotations

import math
import os
import time

from absl import flags

from ldlm_jax import fileio

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run.')
_NUM = flags.DEFINE_integer('num_samples', 64, 'Number of samples.')
_STEPS = flags.DEFINE_integer('steps', None, 'Denoising steps (default: the run\'s sample.num_steps).')
_OUT = flags.DEFINE_string('out', None, 'Output JSONL file.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Samples per compiled call (default: sample.batch_size).')
_STEP = flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint step (default: latest).')
_GRID = flags.DEFINE_enum('time_grid', None, ['uniform', 'adaptive'], 'Time grid (default: the run\'s).')
_TMIN = flags.DEFINE_float('t_min', None, 'Last time of the grid (default: the run\'s sample.t_min).')
_SOLVER = flags.DEFINE_enum('solver', None, ['euler_maruyama', 'ddim'], 'Solver (default: the run\'s).')
_TOKEN_DECODER = flags.DEFINE_string('token_decoder', '', 'A post-trained token decoder directory.')
_FINAL = flags.DEFINE_enum('final', None, ['z', 'x0'],
                           'Latent decoded: the last z, or the last clean estimate x0_hat '
                           '(default: the run\'s sample.final).')
_NO_EMA = flags.DEFINE_bool('no_ema', False, 'Use the raw parameters instead of the EMA.')


def generate_samples(run, num_samples: int, steps: int, seed: int, batch_size: int, *,
                     time_grid: str, t_min: float, solver: str, token_decoder: str = '',
                     use_ema: bool = True, progress: bool = True, final: str = 'z') -> list[dict]:
  """Returns the sample records (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from ldlm_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  from ldlm_jax.training.post_decoder import load_decoder  # pylint: disable=import-outside-toplevel
  from ldlm_jax.training import sharding as sharding_lib  # pylint: disable=import-outside-toplevel

  model, mesh = run.model, run.mesh
  params = run.state.ema_params if use_ema else run.state.params
  if params is None:
    raise ValueError(f'load_run was asked for the other params kind than use_ema={use_ema}')
  if steps < 1 or num_samples < 1 or batch_size < 1:
    raise ConfigError('--steps, --num_samples and --batch_size must be >= 1.')
  if not 0.0 < t_min < 1.0:
    raise ConfigError(f'--t_min must be in (0, 1) (got {t_min}).')
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  batch_size = int(math.ceil(batch_size / shards) * shards)  # every device gets a slice
  run.check_can_sample()
  if token_decoder:
    module, dec_params, _ = load_decoder(token_decoder, model)
    decode = lambda p, z: jax.numpy.argmax(module.apply({'params': dec_params}, z), -1).astype(jax.numpy.int32)
  elif 'token_decoder' in params:
    decode = model.decode_tokens
  else:
    raise ConfigError(
        f'The run in {run.workdir} was trained without a token decoder; post-train one with '
        f'`python -m ldlm_jax.post_train_decoder --workdir {run.workdir}` and pass --token_decoder.')
  probs = run.state.timesteps.probs

  def generate(params, rng):
    z0 = model.sample_latents(params, rng, batch_size, steps, t_min=t_min, time_grid=time_grid,
                              solver=solver, timestep_probs=probs, final=final)
    return decode(params, z0)

  out_sharding = sharding_lib.batch_sharding(mesh)
  generate = jax.jit(generate, out_shardings=out_sharding)
  eos_token = run.tokenizer.tokenizer.id_to_token(run.tokenizer.eos_id)
  base_key = jax.random.PRNGKey(seed)
  records = []
  num_batches = int(math.ceil(num_samples / batch_size))
  for b in tqdm(range(num_batches), desc='sampling', unit='batch', disable=not progress):
    tokens = generate(params, jax.random.fold_in(base_key, b))
    tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
    for row in tokens:
      if len(records) == num_samples:
        break
      records.append({'index': len(records), 'text': run.tokenizer.decode(row), 'tokens': row.tolist(),
                      'seed': seed, 'steps': steps, 'checkpoint_step': run.step, 'eos_token': eos_token,
                      'solver': solver, 'time_grid': time_grid, 't_min': t_min,
                      'token_decoder': token_decoder or 'joint', 'ema': use_ema, 'final': final})
  return records


def write_jsonl(path: str, records) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_jsonl(path, records)


def check_flags() -> str:
  """Every flag checked before the run is restored; returns the absolute --out path."""
  from ldlm_jax import cli  # pylint: disable=import-outside-toplevel
  from ldlm_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  if not _WORKDIR.value or not _OUT.value:
    raise ConfigError('--workdir and --out are required.')
  cli.check_positive(num_samples=_NUM.value, steps=_STEPS.value, batch_size=_BATCH.value)
  if _STEP.value is not None and _STEP.value < 0:
    raise ConfigError(f'--checkpoint_step must be >= 0 (got {_STEP.value}).')
  if _TMIN.value is not None and not 0.0 < _TMIN.value < 1.0:
    raise ConfigError(f'--t_min must be in (0, 1) (got {_TMIN.value}).')
  if _TOKEN_DECODER.value and not os.path.isdir(_TOKEN_DECODER.value):
    raise ConfigError(f'--token_decoder {_TOKEN_DECODER.value} is not a directory; pass the '
                      'folder post_train_decoder wrote.')
  return cli.check_output_file(_OUT.value, '--out')


def main(argv):
  del argv
  from ldlm_jax.training import restore  # pylint: disable=import-outside-toplevel
  out = check_flags()
  run = restore.load_run(_WORKDIR.value, _STEP.value,
                         params='params' if _NO_EMA.value else 'ema_params')
  sc = run.config.sample
  steps = _STEPS.value if _STEPS.value is not None else int(sc.num_steps)
  t0 = time.time()
  records = generate_samples(
      run, _NUM.value, steps, _SEED.value, _BATCH.value if _BATCH.value is not None else int(sc.batch_size),
      time_grid=_GRID.value or sc.time_grid, t_min=_TMIN.value if _TMIN.value is not None else float(sc.t_min),
      solver=_SOLVER.value or sc.solver, token_decoder=_TOKEN_DECODER.value, use_ema=not _NO_EMA.value,
      final=_FINAL.value or sc.get('final', 'z'))
  write_jsonl(out, records)
  print(f'wrote {len(records)} samples from step {run.step} to {_OUT.value} '
        f'({time.time() - t0:.1f}s including compilation)')
  for r in records[:3]:
    print('  ' + r['text'][:300])


if __name__ == '__main__':
  from ldlm_jax import cli as _cli  # pylint: disable=import-outside-toplevel
  _cli.run_absl(main)

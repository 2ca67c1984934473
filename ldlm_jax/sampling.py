"""Sampling from a restored run, as a library (no command-line flags, so any
program can import it): `generate_samples` returns the sample records that
`python -m ldlm_jax.sample` writes, `write_jsonl` writes them atomically.
"""

from __future__ import annotations

import math
import os

from ldlm_jax import fileio


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
  from ldlm_jax.diffusion.solver import mismatch  # pylint: disable=import-outside-toplevel
  wrong = mismatch(solver, model.process)   # before compiling (sample_latents says the same)
  if wrong:
    raise ConfigError(wrong)
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
                      'solver': solver, 'time_grid': time_grid,
                      't_min': model.process.sampling_t_end(t_min),   # a flow's ODE ends at 0
                      'token_decoder': token_decoder or 'joint', 'ema': use_ema, 'final': final})
  return records


def write_jsonl(path: str, records) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_jsonl(path, records)

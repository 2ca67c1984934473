"""Sampling from a restored run, as a library (no command-line flags, so any
program can import it): `generate_samples` returns the sample records that
`python -m ldlm_jax.sample` writes, `generate_conditional` the records of
prompted sampling (`--prompts`), `write_jsonl` writes them atomically.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from ldlm_jax import conditioning, fileio
from ldlm_jax.diffusion.solver import mismatch
from ldlm_jax.encoders.registry import load_frozen_encoder
from ldlm_jax.errors import ConfigError
from ldlm_jax.methods import is_baseline
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import restore, sharding as sharding_lib
from ldlm_jax.training.post_decoder import load_decoder


def build_sampler(run, steps: int, batch_size: int, *, time_grid: str, t_min: float, solver: str,
                  token_decoder: str = '', use_ema: bool = True, final: str = 'z',
                  remdm_eta: float | None = None):
  """(generate, params, batch_size): the jitted `generate(params, rng) -> tokens [batch, L]` of one
  sampling batch, the params it takes, and the batch size rounded up to a multiple of the data
  shards. Every check that can refuse the arguments runs here, before anything compiles.
  `remdm_eta`: an MDLM run sampled with ReMDM remasking at this eta (None: the run's method.remdm_eta)."""
  model, mesh = run.model, run.mesh
  params = run.state.ema_params if use_ema else run.state.params
  if params is None:
    raise ValueError(f'load_run was asked for the other params kind than use_ema={use_ema}')
  if steps < 1 or batch_size < 1:
    raise ConfigError('--steps and --batch_size must be >= 1.')
  if not 0.0 < t_min < 1.0:
    raise ConfigError(f'--t_min must be in (0, 1) (got {t_min}).')
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  batch_size = int(math.ceil(batch_size / shards) * shards)  # every device gets a slice
  run.check_can_sample()
  baseline = is_baseline(model)   # a discrete baseline samples tokens itself (ldlm_jax/methods)
  if remdm_eta is not None:
    if not getattr(model, 'remasks', False):
      raise ConfigError(f'The run in {run.workdir} is not an MDLM run; remdm_eta (ReMDM remasking) '
                        'applies to MDLM runs only, so leave it out.')
    if not 0.0 <= remdm_eta <= 1.0:
      raise ConfigError(f'remdm_eta must be in [0, 1] (got {remdm_eta}; 0 = no remasking).')
  wrong = None if baseline else mismatch(solver, model.process)   # before compiling
  if wrong:
    raise ConfigError(wrong)
  if baseline:
    decode = None
  elif token_decoder:
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
    if baseline:
      extra = {} if remdm_eta is None else {'remdm_eta': remdm_eta}
      return model.generate(params, rng, batch_size, steps, **extra)
    z0 = model.sample_latents(params, rng, batch_size, steps, t_min=t_min, time_grid=time_grid,
                              solver=solver, timestep_probs=probs, final=final)
    return decode(params, z0)

  return jax.jit(generate, out_shardings=sharding_lib.batch_sharding(mesh)), params, batch_size


def generate_samples(run, num_samples: int, steps: int, seed: int, batch_size: int, *,
                     time_grid: str, t_min: float, solver: str, token_decoder: str = '',
                     use_ema: bool = True, progress: bool = True, final: str = 'z',
                     timings: list | None = None, remdm_eta: float | None = None,
                     sampler: tuple | None = None) -> list[dict]:
  """Returns the sample records (see the module docstring). `timings`: a list that gets the wall
  seconds of each batch (the first includes compilation). `remdm_eta`: see `build_sampler`.
  `sampler`: what `build_sampler` returned for these same settings, reused (not compiled again)."""
  if num_samples < 1:
    raise ConfigError('--num_samples must be >= 1.')
  generate, params, batch_size = sampler or build_sampler(
      run, steps, batch_size, time_grid=time_grid, t_min=t_min, solver=solver,
      token_decoder=token_decoder, use_ema=use_ema, final=final, remdm_eta=remdm_eta)
  model = run.model
  eos_token = run.tokenizer.tokenizer.id_to_token(run.tokenizer.eos_id)
  base_key = jax.random.PRNGKey(seed)
  records = []
  num_batches = int(math.ceil(num_samples / batch_size))
  for b in tqdm(range(num_batches), desc='sampling', unit='batch', disable=not progress):
    t0 = time.perf_counter()
    tokens = generate(params, jax.random.fold_in(base_key, b))
    tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
    if timings is not None:
      timings.append(time.perf_counter() - t0)
    for row in tokens:
      if len(records) == num_samples:
        break
      records.append({'index': len(records), 'text': run.tokenizer.decode(row), 'tokens': row.tolist(),
                      'seed': seed, 'steps': steps, 'checkpoint_step': run.step, 'eos_token': eos_token,
                      'solver': solver, 'time_grid': time_grid,
                      't_min': model.process.sampling_t_end(t_min),   # a flow's ODE ends at 0
                      'token_decoder': token_decoder or 'joint', 'ema': use_ema, 'final': final,
                      **({} if remdm_eta is None else {'remdm_eta': remdm_eta})})
  return records


def write_jsonl(path: str, records) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_jsonl(path, records)


# ----------------------------------------------------------- conditional --
def check_conditional(run) -> None:
  if not run.model.condition_path:
    raise ConfigError(f'The run in {run.workdir} was trained without conditions '
                      '(condition.enabled=False), so it cannot follow prompts; sample without '
                      '--prompts, or train with --config.condition.enabled=True.')


def condition_inputs(run):
  """(model, frozen): an LDLM over the run's frozen encoder and its FrozenInputs, which the
  condition (the given tokens' features) needs; same params tree as `run.model`."""
  check_conditional(run)
  return encoder_inputs(run)


def encoder_inputs(run):
  """(model, frozen): an LDLM over the run's frozen encoder (config encoder.name / path) and its
  FrozenInputs with the run's normalization statistics, replicated over the run's mesh; same
  params tree as `run.model`. A latent space over trainable scratch embeddings loads no encoder."""
  config = run.config
  ec = config.encoder
  mean, std = restore.norm_stats(run.meta)
  if ec.input == 'scratch':
    model, encoder_params = run.model, None
  else:
    encoder = load_frozen_encoder(ec.name, ec.path, ec.dtype).on_device(sharding_lib.replicated(run.mesh))
    model, encoder_params = LDLM(config, encoder), encoder.params
  frozen = jax.device_put(model.frozen_inputs(encoder_params, mean, std),
                          sharding_lib.replicated(run.mesh))
  return model, frozen


def _join(left: str, right: str) -> str:
  """The separator between a given piece and a generated one: none where either side has a space."""
  if not left or not right or left[-1].isspace() or right[0].isspace():
    return ''
  return ' '


def assemble(p, row, mask_row, tokenizer) -> dict:
  """The record fields of one prompted sample: the given text verbatim, generated text marked.

  A continuation: prompt, continuation, text = prompt + continuation, and
  generated_from (the char offset in text where generated text begins).
  An infill: text with each gap's fill between the given pieces verbatim,
  spans = [[start, end], ...] char offsets of the fills in text, and tail =
  what was generated after the last given piece (not part of text)."""
  row, mask_row = np.asarray(row), np.asarray(mask_row)
  given_pos = np.flatnonzero(mask_row)
  if p.kind == 'continuation':
    prompt = p.pieces[0]
    continuation = tokenizer.decode(row[given_pos[-1] + 1:])
    sep = _join(prompt, continuation)
    return {'kind': 'continuation', 'prompt': prompt, 'continuation': continuation,
            'text': prompt + sep + continuation, 'generated_from': len(prompt + sep)}
  text, spans, pos = '', [], 0
  for piece in p.pieces:
    if isinstance(piece, int):
      fill = tokenizer.decode(row[pos:pos + piece])
      text += _join(text, fill)
      spans.append([len(text), len(text) + len(fill)])
      text += fill
      pos += piece
    else:
      text += _join(text, piece) if spans and text else ''
      text += piece
      pos += len(list(tokenizer.encode(piece)))
  return {'kind': 'infill', 'text': text, 'spans': spans, 'tail': tokenizer.decode(row[pos:])}


def generate_prompted_tokens(run, prompt_tokens, prompt_mask, steps: int, seed: int,
                            batch_size: int, *, guidance: float, time_grid: str, t_min: float,
                            solver: str, use_ema: bool = True, progress: bool = True,
                            final: str = 'z'):
  """Tokens (P, L) sampled for each row of (prompt_tokens, prompt_mask) (P, L), the given tokens
  forced at their positions; `guidance` is the classifier-free guidance weight (1 = none)."""
  run.check_can_sample()
  check_conditional(run)
  if guidance < 0:
    raise ConfigError(f'--guidance must be >= 0 (got {guidance}; 1 = no guidance).')
  if steps < 1 or batch_size < 1:
    raise ConfigError('--steps and --batch_size must be >= 1.')
  model, frozen = condition_inputs(run)
  params = run.state.ema_params if use_ema else run.state.params
  if 'token_decoder' not in params:
    raise ConfigError(f'The run in {run.workdir} was trained without a token decoder; prompted '
                      'sampling needs the jointly trained one.')
  mesh = run.mesh
  shards = mesh.shape['data'] * mesh.shape['fsdp']
  batch_size = int(math.ceil(batch_size / shards) * shards)
  probs = run.state.timesteps.probs
  total = len(prompt_tokens)
  order = list(range(total)) + [total - 1] * (-total % batch_size)   # last batch padded with repeats
  rows_tok = np.asarray(prompt_tokens, np.int32)[order]
  rows_mask = np.asarray(prompt_mask, bool)[order]

  def generate(params, rng, tok, mask):
    return model.generate(params, rng, batch_size, steps, t_min=t_min, time_grid=time_grid,
                          solver=solver, timestep_probs=probs, final=final,
                          prompt=(tok, mask), frozen=frozen, guidance=guidance)

  generate = jax.jit(generate, out_shardings=sharding_lib.batch_sharding(mesh))
  base_key = jax.random.PRNGKey(seed)
  out = []
  for b in tqdm(range(len(order) // batch_size), desc='sampling', unit='batch', disable=not progress):
    sl = slice(b * batch_size, (b + 1) * batch_size)
    tokens = generate(params, jax.random.fold_in(base_key, b), rows_tok[sl], rows_mask[sl])
    out.append(np.asarray(multihost_utils.process_allgather(tokens, tiled=True)))
  return np.concatenate(out)[:total]


def generate_conditional(run, prompts, samples_per_prompt: int, steps: int, seed: int,
                         batch_size: int, *, guidance: float, time_grid: str, t_min: float,
                         solver: str, use_ema: bool = True, progress: bool = True,
                         final: str = 'z') -> list[dict]:
  """Records of prompted samples (conditioning.read_prompts' prompts), `samples_per_prompt`
  each; the given tokens are forced at their positions (they survive bit for bit)."""
  check_conditional(run)
  ptokens, pmask = conditioning.encode_prompts(prompts, run.tokenizer, int(run.config.data.seq_len))
  order = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
  tokens = generate_prompted_tokens(run, ptokens[order], pmask[order], steps, seed, batch_size,
                                    guidance=guidance, time_grid=time_grid, t_min=t_min,
                                    solver=solver, use_ema=use_ema, progress=progress, final=final)
  records = []
  for k, row in enumerate(tokens):
    p = prompts[order[k]]
    records.append({'index': k, 'prompt_index': p.index,
                    **assemble(p, row, pmask[order[k]], run.tokenizer),
                    'tokens': row.tolist(), 'prompt_mask': pmask[order[k]].astype(int).tolist(),
                    'guidance': guidance, 'seed': seed, 'steps': steps,
                    'checkpoint_step': run.step, 'solver': solver, 'time_grid': time_grid,
                    't_min': run.model.process.sampling_t_end(t_min), 'ema': use_ema, 'final': final})
  return records

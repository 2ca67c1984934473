"""Using a trained LDLM from Python: load, generate, encode, decode, evaluate.

  from ldlm_jax import api
  model = api.load('runs/demo')              # a run's work directory or an exported model
  out = model.generate(num_samples=4, steps=100, seed=0)
  out.texts, out.tokens                      # list[str], (4, L) int32
  z = model.encode(['The jury said it did find that ...'])   # (1, N, D) float32 latents
  model.decode(z)                            # back to texts
  api.evaluate_texts(out.texts, references=[...])  # Gen. PPL, entropy, diversity, MAUVE

The command lines are wrappers over these functions: `python -m ldlm_jax.sample`
calls `Model.generate` and writes `Generation.records`, so the API and the CLI
give the same samples for the same seed and options. A Model keeps each compiled
unconditional sampler, so `generate` again with the same settings (another seed, say)
runs without compiling. Nothing here depends on
the device kind: the batch is sharded over every visible device (CPU, GPU or
TPU) exactly as the sampler shards it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from ldlm_jax import conditioning, evaluate, export, sampling
from ldlm_jax.diffusion.solver import FINALS, SOLVERS
from ldlm_jax.errors import ConfigError
from ldlm_jax.training import restore


@dataclasses.dataclass
class Generation:
  """What `Model.generate` returns: one entry per sample, in order."""
  texts: list[str]
  tokens: np.ndarray          # (num_samples, L) int32
  records: list[dict]         # the JSONL records `python -m ldlm_jax.sample` writes


def load(path: str, step: int | None = None, *, use_ema: bool = True, mesh=None) -> 'Model':
  """The model of a run's work directory (its latest or `step` checkpoint) or of a directory
  written by `python -m ldlm_jax.export`. `use_ema=False` takes a run's raw parameters."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if export.is_export_dir(path):
    if step is not None:
      raise ConfigError(f'{path} is an exported model of one step; leave out the step.')
    run, kind = export.load_export(path, mesh=mesh)
    if kind != ('ema_params' if use_ema else 'params'):
      raise ConfigError(f'{path} holds the {"EMA" if kind == "ema_params" else "raw"} parameters '
                        f'only; load it with use_ema={kind == "ema_params"}.')
    return Model(run, source='export', use_ema=use_ema)
  run = restore.load_run(path, step, mesh=mesh, params='ema_params' if use_ema else 'params')
  return Model(run, source='run', use_ema=use_ema)


def _positive(**values) -> None:
  for name, value in values.items():
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < 1):
      raise ConfigError(f'{name} must be an integer >= 1 (got {value!r}).')


class Model:
  """A loaded LDLM (see the module docstring); `run` is the restored `training.restore.Run`."""

  def __init__(self, run, source: str, use_ema: bool = True):
    self.run = run
    self.source = source          # 'run' or 'export'
    self.use_ema = use_ema
    # The compiled unconditional samplers, by their settings: a second `generate` with the same
    # settings (another seed, say) reuses one instead of compiling it again.
    self._samplers: dict[tuple, tuple] = {}

  config = property(lambda self: self.run.config)
  step = property(lambda self: self.run.step)
  tokenizer = property(lambda self: self.run.tokenizer)
  path = property(lambda self: self.run.workdir)
  seq_len = property(lambda self: int(self.run.config.data.seq_len))
  latent_shape = property(lambda self: (self.run.model.dims.latent_len, self.run.model.dims.latent_dim))

  @property
  def params(self):
    return self.run.state.ema_params if self.use_ema else self.run.state.params

  @property
  def eos_token(self) -> str:
    return self.tokenizer.tokenizer.id_to_token(self.tokenizer.eos_id)

  def __repr__(self) -> str:
    return (f'ldlm_jax.api.Model({self.source} {self.path}, step {self.step}, '
            f'L={self.seq_len}, latents {self.latent_shape})')

  # ------------------------------------------------------------ sampling --
  def sampling_options(self, *, steps: int | None = None, batch_size: int | None = None,
                       time_grid: str | None = None, t_min: float | None = None,
                       solver: str | None = None, final: str | None = None) -> dict:
    """The sampler settings: each one given, else the run's `sample` section."""
    sc, process = self.config.sample, self.run.model.process
    _positive(steps=steps, batch_size=batch_size)
    if solver is not None and solver not in SOLVERS:
      raise ConfigError(f'solver {solver!r} is not one of {tuple(SOLVERS)}.')
    if time_grid is not None and time_grid not in ('uniform', 'adaptive'):
      raise ConfigError(f"time_grid {time_grid!r} is not 'uniform' or 'adaptive'.")
    if final is not None and final not in FINALS:
      raise ConfigError(f'final {final!r} is not one of {tuple(FINALS)}.')
    if t_min is not None:
      if not 0.0 < t_min < 1.0:
        raise ConfigError(f't_min must be in (0, 1) (got {t_min}).')
      if process.sampling_t_end(t_min) != t_min:
        raise ConfigError(f'The run in {self.path} is a {process.name} run, whose ODE always '
                          'ends at t = 0; drop --t_min (it applies to VP runs).')
    return dict(steps=int(steps if steps is not None else sc.num_steps),
                batch_size=int(batch_size if batch_size is not None else sc.batch_size),
                time_grid=time_grid or sc.time_grid,
                t_min=float(t_min if t_min is not None else sc.t_min),
                solver=solver or sc.solver, final=final or sc.get('final', 'z'))

  def generate(self, num_samples: int | None = None, steps: int | None = None, seed: int = 0, *,
               batch_size: int | None = None, time_grid: str | None = None,
               t_min: float | None = None, solver: str | None = None, final: str | None = None,
               token_decoder: str = '', prompts=None, samples_per_prompt: int = 1,
               guidance: float = 1.0, remdm_eta: float | None = None,
               progress: bool = False) -> Generation:
    """Samples texts. Unset sampler settings come from the run's `sample` section.

    Unconditional: `num_samples` samples (default 8). With `prompts` (a model trained
    with conditions): a list of texts to continue, or of records {"prompt": ...} /
    {"text": "a [[...]] b"} (gaps to fill), `samples_per_prompt` each, with
    classifier-free guidance weight `guidance` (1 = none); the given tokens are kept
    bit for bit. The same seed and settings give the same samples, on any number of
    devices. `remdm_eta` (an MDLM run, unconditional): sample with ReMDM remasking at this
    eta instead of the run's method.remdm_eta."""
    options = self.sampling_options(steps=steps, batch_size=batch_size, time_grid=time_grid,
                                    t_min=t_min, solver=solver, final=final)
    steps, batch_size = options.pop('steps'), options.pop('batch_size')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise ConfigError(f'seed must be an integer (got {seed!r}).')
    if token_decoder and not os.path.isdir(token_decoder):
      raise ConfigError(f'token_decoder {token_decoder} is not a directory; pass the folder '
                        'post_train_decoder wrote.')
    if prompts is None:
      if guidance != 1.0 or samples_per_prompt != 1:
        raise ConfigError('guidance and samples_per_prompt apply to prompted sampling; '
                          'pass prompts too.')
      num_samples = 8 if num_samples is None else num_samples
      _positive(num_samples=num_samples)
      key = (steps, batch_size, token_decoder, remdm_eta, *sorted(options.items()))
      if key not in self._samplers:
        self._samplers[key] = sampling.build_sampler(
            self.run, steps, batch_size, token_decoder=token_decoder, use_ema=self.use_ema,
            remdm_eta=remdm_eta, **options)
      records = sampling.generate_samples(self.run, int(num_samples), steps, int(seed), batch_size,
                                          token_decoder=token_decoder, use_ema=self.use_ema,
                                          progress=progress, remdm_eta=remdm_eta,
                                          sampler=self._samplers[key], **options)
    else:
      if remdm_eta is not None:
        raise ConfigError('remdm_eta applies to unconditional sampling of an MDLM run; '
                          'leave it out with prompts.')
      if num_samples is not None:
        raise ConfigError('num_samples is for unconditional sampling; with prompts use '
                          'samples_per_prompt.')
      if token_decoder:
        raise ConfigError('token_decoder is not supported with prompts; leave it out.')
      if guidance < 0:
        raise ConfigError(f'guidance must be >= 0 (got {guidance}; 1 = no guidance).')
      _positive(samples_per_prompt=samples_per_prompt)
      if not (prompts and isinstance(prompts[0], conditioning.Prompt)):
        prompts = conditioning.prompts_from_records(prompts)
      records = sampling.generate_conditional(self.run, prompts, int(samples_per_prompt), steps,
                                              int(seed), batch_size, guidance=float(guidance),
                                              use_ema=self.use_ema, progress=progress, **options)
    tokens = np.asarray([r['tokens'] for r in records], np.int32)
    return Generation(texts=[r['text'] for r in records], tokens=tokens, records=records)

  # ------------------------------------------------------ encode / decode --
  def tokenize(self, texts: Sequence[str], *, truncate: bool = False) -> np.ndarray:
    """(B, L) int32: each text's tokens, then the EOS token to fill the model's length L.

    A text longer than L tokens is refused unless `truncate` (then its first L are kept)."""
    if isinstance(texts, str):
      texts = [texts]
    if not texts or not all(isinstance(t, str) for t in texts):
      raise ConfigError('texts must be a non-empty list of strings.')
    length, eos = self.seq_len, self.tokenizer.eos_id
    rows = np.full((len(texts), length), eos, np.int32)
    for i, ids in enumerate(self.tokenizer.encode_batch(texts)):
      if len(ids) > length and not truncate:
        raise ConfigError(f'text {i} is {len(ids)} tokens, longer than the model\'s {length} '
                          '(data.seq_len); shorten it or pass truncate=True.')
      ids = ids[:length]
      rows[i, :len(ids)] = ids
    return rows

  def _token_rows(self, texts_or_tokens, truncate: bool) -> np.ndarray:
    if isinstance(texts_or_tokens, np.ndarray) or (
        isinstance(texts_or_tokens, (list, tuple)) and texts_or_tokens
        and not isinstance(texts_or_tokens[0], str)):
      tokens = np.asarray(texts_or_tokens)
      if tokens.ndim != 2 or tokens.shape[1] != self.seq_len or not np.issubdtype(tokens.dtype, np.integer):
        raise ConfigError(f'token rows must be an integer array (B, {self.seq_len}); got shape '
                          f'{tokens.shape}, dtype {tokens.dtype}.')
      if tokens.size and (tokens.min() < 0 or tokens.max() >= self.tokenizer.vocab_size):
        raise ConfigError(f'token ids must be in [0, {self.tokenizer.vocab_size}).')
      return tokens.astype(np.int32)
    return self.tokenize(texts_or_tokens, truncate=truncate)

  @functools.cached_property
  def _encoder_inputs(self):
    """(model, frozen): the LDLM over the frozen encoder, and its FrozenInputs (on the mesh)."""
    return sampling.encoder_inputs(self.run)

  @functools.cached_property
  def _compiled(self):
    model, frozen = self._encoder_inputs

    def encode(params, tokens):
      return model.encode(params, model.features(frozen, params, tokens))

    return {'encode': jax.jit(encode), 'decode': jax.jit(self.run.model.decode_tokens)}

  def _batched(self, fn, rows: np.ndarray, batch_size: int | None) -> np.ndarray:
    """fn(params, batch) over fixed-size batches (the last one padded by repeating its last row),
    so one program serves every call."""
    size = int(batch_size or self.config.sample.batch_size)
    shards = self.run.mesh.shape['data'] * self.run.mesh.shape['fsdp']
    size = int(math.ceil(min(size, len(rows)) / shards) * shards)
    out = []
    for start in range(0, len(rows), size):
      batch = rows[start:start + size]
      pad = size - len(batch)
      if pad:
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
      result = np.asarray(multihost_utils.process_allgather(fn(self.params, batch), tiled=True))
      out.append(result[:len(batch) - pad])
    return np.concatenate(out)

  def encode(self, texts_or_tokens, *, truncate: bool = False, batch_size: int | None = None) -> np.ndarray:
    """Latents (B, N, D) float32 of texts (or of token rows (B, L)): the frozen encoder's
    normalized features through the latent encoder, deterministically (no sampling noise).

    Needs the frozen encoder's weights (the run's encoder.name / encoder.path), except for a
    latent space over trainable scratch embeddings."""
    _positive(batch_size=batch_size)
    rows = self._token_rows(texts_or_tokens, truncate)
    return self._batched(self._compiled['encode'], rows, batch_size).astype(np.float32)

  def decode_tokens(self, latents, *, batch_size: int | None = None) -> np.ndarray:
    """Token rows (B, L) int32 of latents (B, N, D): the latent decoder, then the argmax of the
    token decoder, as sampling decodes."""
    _positive(batch_size=batch_size)
    z = np.asarray(latents, np.float32)
    if z.ndim == 2:
      z = z[None]
    if z.ndim != 3 or z.shape[1:] != tuple(self.latent_shape):
      raise ConfigError(f'latents must have shape (B, {self.latent_shape[0]}, {self.latent_shape[1]}); '
                        f'got {tuple(np.shape(latents))}.')
    if 'token_decoder' not in self.params:
      raise ConfigError(f'The model in {self.path} has no jointly trained token decoder, so it '
                        'cannot decode latents to text.')
    return self._batched(self._compiled['decode'], z, batch_size).astype(np.int32)

  def decode(self, latents, *, stop_at_eos: bool = False, batch_size: int | None = None) -> list[str]:
    """Texts of latents (B, N, D); `stop_at_eos` cuts each text at its first EOS token."""
    return self.tokenizer.decode_batch(self.decode_tokens(latents, batch_size=batch_size),
                                       stop_at_eos=stop_at_eos)

  def reconstruction_accuracy(self, texts_or_tokens, *, truncate: bool = False,
                              batch_size: int | None = None) -> float:
    """The fraction of tokens that encode -> decode gives back (all L positions of each row)."""
    rows = self._token_rows(texts_or_tokens, truncate)
    decoded = self.decode_tokens(self.encode(rows, batch_size=batch_size), batch_size=batch_size)
    return float(np.mean(decoded == rows))

  # ----------------------------------------------------------- metrics --
  def evaluate(self, texts: Sequence[str], **options) -> dict:
    """`evaluate_texts` of texts this model wrote (its EOS token counts as the end of a text)."""
    options.setdefault('eos_token', self.eos_token)
    return evaluate_texts(texts, **options)


def evaluate_texts(texts: Sequence[str], references: Sequence[str] | None = None, *,
                   scorer: str = 'smollm2', scorer_path: str = '', batch_size: int = 8,
                   metric_tokens: str = 'scorer', eos_token: str | None = None) -> dict[str, Any]:
  """The metrics `python -m ldlm_jax.evaluate` computes for one samples file, of a list of texts:
  gen_ppl, word_ppl, entropy, diversity, and mauve when `references` (a list of texts) are given."""
  return evaluate.evaluate_texts(texts, references, scorer=scorer, scorer_path=scorer_path,
                                 batch_size=batch_size, metric_tokens=metric_tokens,
                                 eos_token=eos_token)

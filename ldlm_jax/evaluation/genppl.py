"""Generative perplexity (Gen. PPL) of text samples under a causal scorer, MDLM protocol.

Protocol (docs/method.md Section 8.1, paper section 6):
  * samples are decoded text, retokenized with the scorer's tokenizer;
  * no BOS is prepended, so a sample's first token is context only;
  * tokens are scored up to and including the sample's first EOS; later
    tokens are masked out. The first EOS is searched among the scored
    positions (t >= 1): an EOS in the first position is context, like a BOS;
  * PPL = exp(sum of NLL / number of scored tokens) over the whole sample set,
    not a mean of per-sample perplexities;
  * a sample longer than the scorer's context is truncated to it.

EOS markers: a sample's text may contain the generator's EOS marker string
(the samples file gives it per record, e.g. "<|endoftext|>" or "[SEP]").
`encode_with_eos_marker` splits the text at the marker, encodes the pieces
with the scorer's tokenizer and joins them with the scorer's EOS id, so the
first EOS is exact whatever the two tokenizers are. Reference texts carry no
marker.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ldlm_jax.evaluation.scorers import MAUVE_MAX_TOKENS, PAD_MULTIPLE, CausalScorer, pad_batch, padded_length


def encode_with_eos_marker(tokenizer, text: str, eos_marker: str | None = None) -> list[int]:
  """Scorer token ids of `text`, each occurrence of `eos_marker` becoming the scorer's EOS id.

  Text next to a marker keeps its own spacing: "a<|endoftext|> b" encodes
  "a", EOS, " b".
  """
  if not eos_marker:
    return tokenizer.encode(text)
  ids: list[int] = []
  pieces = text.split(eos_marker)
  for i, piece in enumerate(pieces):
    if i:
      ids.append(tokenizer.eos_id)
    if piece:
      ids.extend(tokenizer.encode(piece))
  return ids


def scored_target_mask(ids_BL: np.ndarray, mask_BL: np.ndarray, eos_id: int,
                       first_target_B: np.ndarray | None = None) -> np.ndarray:
  """Which targets x_t, t = 1..L-1, count towards Gen. PPL: (B, L-1) bool.

  A target counts when it is a real token and no EOS occurs at positions 1..t-1
  (so the first EOS itself counts, everything after it does not). With
  `first_target_B` only targets t >= first_target_B[b] are real (a continuation
  after its prompt: the prompt is context, and an EOS in it does not count).
  """
  targets_BT = ids_BL[:, 1:]
  real_BT = mask_BL[:, 1:] > 0
  if first_target_B is not None:
    real_BT &= np.arange(1, ids_BL.shape[1])[None, :] >= np.asarray(first_target_B)[:, None]
  is_eos_BT = (targets_BT == eos_id) & real_BT
  eos_before_BT = np.cumsum(is_eos_BT, axis=1) - is_eos_BT  # EOS strictly before t
  return real_BT & (eos_before_BT == 0)


@dataclasses.dataclass(frozen=True)
class GenPPLResult:
  """Gen. PPL over a sample set and its per-sample parts (original order)."""
  gen_ppl: float                # exp(nll_sum / num_tokens); nan when no token was scored
  nll_sum: float                # sum of -log p over all scored tokens (nats)
  num_tokens: int               # number of scored tokens
  sample_nll: np.ndarray        # (n,) per-sample NLL sums
  sample_tokens: np.ndarray     # (n,) per-sample scored-token counts

  def sample_ppl(self) -> np.ndarray:
    """Per-sample perplexities (n,), nan where a sample has no scored token (for diagnostics)."""
    with np.errstate(invalid='ignore', divide='ignore'):
      return np.exp(self.sample_nll / self.sample_tokens)


def generative_perplexity(scorer: CausalScorer, token_lists: Sequence[Sequence[int]],
                          batch_size: int = 8, length_multiple: int = PAD_MULTIPLE) -> GenPPLResult:
  """Gen. PPL of samples already encoded with the scorer's tokenizer (see `encode_with_eos_marker`).

  Samples are batched by similar length; lengths are padded as
  `scorers.padded_length` says (capped at the scorer's context) to bound
  recompilation.
  """
  return _score(scorer, token_lists, batch_size, length_multiple, with_features=False)[0]


def perplexity_and_features(scorer: CausalScorer, token_lists: Sequence[Sequence[int]],
                            batch_size: int = 8, length_multiple: int = PAD_MULTIPLE
                            ) -> tuple[GenPPLResult, np.ndarray]:
  """`generative_perplexity` and the MAUVE features (`CausalScorer.features_from_ids`) of the
  non-empty lists, from one forward pass per batch.

  The one pass applies when every list is scored and featurized whole (2 to
  min(context, 1024) tokens, the usual case); otherwise the two are computed
  apart, with the same results.
  """
  cap = min(scorer.max_len, MAUVE_MAX_TOKENS)
  if token_lists and all(2 <= len(s) <= cap for s in token_lists):
    result, features = _score(scorer, token_lists, batch_size, length_multiple, with_features=True)
    return result, np.stack(features).astype(np.float32)
  nonempty = [s for s in token_lists if len(s)]
  return (generative_perplexity(scorer, token_lists, batch_size, length_multiple),
          scorer.features_from_ids(nonempty, batch_size, length_multiple))


def _score(scorer: CausalScorer, token_lists: Sequence[Sequence[int]], batch_size: int,
           length_multiple: int, with_features: bool) -> tuple[GenPPLResult, list]:
  """The batched scoring loop of the two functions above (features: one per list, or None)."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  seqs = [list(s)[:scorer.max_len] for s in token_lists]
  n = len(seqs)
  sample_nll = np.zeros(n, np.float64)
  sample_tokens = np.zeros(n, np.int64)
  features = [None] * n
  # Samples with < 2 tokens have no target; skip them instead of running the model.
  order = sorted((i for i in range(n) if len(seqs[i]) >= 2), key=lambda i: len(seqs[i]))
  eos_id = scorer.tokenizer.eos_id
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    length = padded_length(max(len(seqs[i]) for i in idx), length_multiple, scorer.max_len)
    ids_BL, mask_BL = pad_batch([seqs[i] for i in idx], length, batch_size, eos_id)
    if with_features:
      logprobs_BT, feats_BH = scorer.logprobs_and_last_hidden(ids_BL, mask_BL)
      for row, i in enumerate(idx):
        features[i] = feats_BH[row]
    else:
      logprobs_BT = scorer.token_logprobs(ids_BL, mask_BL)
    logprobs_BT = np.asarray(logprobs_BT, np.float64)
    scored_BT = scored_target_mask(ids_BL, mask_BL, eos_id)
    nll_B = -(logprobs_BT * scored_BT).sum(axis=1)
    for row, i in enumerate(idx):
      sample_nll[i] = nll_B[row]
      sample_tokens[i] = scored_BT[row].sum()
  nll_sum, num_tokens = float(sample_nll.sum()), int(sample_tokens.sum())
  gen_ppl = math.exp(nll_sum / num_tokens) if num_tokens else float('nan')
  return GenPPLResult(gen_ppl, nll_sum, num_tokens, sample_nll, sample_tokens), features


def generative_perplexity_of_texts(scorer: CausalScorer, texts: Sequence[str],
                                   eos_markers: Sequence[str | None] | str | None = None,
                                   batch_size: int = 8) -> GenPPLResult:
  """Gen. PPL of decoded texts; `eos_markers` is one marker for all texts or one per text."""
  if eos_markers is None or isinstance(eos_markers, str):
    eos_markers = [eos_markers] * len(texts)
  if len(eos_markers) != len(texts):
    raise ValueError(f'{len(eos_markers)} EOS markers for {len(texts)} texts; give one per text.')
  token_lists = [encode_with_eos_marker(scorer.tokenizer, t, m) for t, m in zip(texts, eos_markers)]
  return generative_perplexity(scorer, token_lists, batch_size)


def continuation_perplexity(scorer: CausalScorer, context_lists: Sequence[Sequence[int]],
                            continuation_lists: Sequence[Sequence[int]], batch_size: int = 8,
                            length_multiple: int = PAD_MULTIPLE) -> GenPPLResult:
  """Gen. PPL of continuations with their prompts as the scorer's context.

  Each row is context + continuation in scorer tokens; only the continuation's
  tokens are scored, up to and including its first EOS (an EOS inside the
  context is context). An empty context falls back to the plain protocol (the
  continuation's first token is context only). A row longer than the scorer's
  window loses context tokens from the left.
  """
  if len(context_lists) != len(continuation_lists):
    raise ValueError(f'{len(context_lists)} contexts for {len(continuation_lists)} continuations.')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  rows = []
  for ctx, cont in zip(context_lists, continuation_lists):
    ctx, cont = list(ctx), list(cont)[:scorer.max_len - 1]
    ctx = ctx[max(0, len(ctx) + len(cont) - scorer.max_len):]
    rows.append((ctx + cont, max(len(ctx), 1)))
  n = len(rows)
  sample_nll = np.zeros(n, np.float64)
  sample_tokens = np.zeros(n, np.int64)
  order = sorted((i for i in range(n) if len(rows[i][0]) > rows[i][1]), key=lambda i: len(rows[i][0]))
  eos_id = scorer.tokenizer.eos_id
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    length = padded_length(max(len(rows[i][0]) for i in idx), length_multiple, scorer.max_len)
    ids_BL, mask_BL = pad_batch([rows[i][0] for i in idx], length, batch_size, eos_id)
    logprobs_BT = np.asarray(scorer.token_logprobs(ids_BL, mask_BL), np.float64)
    # Targets t = 1..L-1 count from the continuation's first token on, up to its first EOS.
    first_B = np.zeros(batch_size, np.int64)
    first_B[:len(idx)] = [rows[i][1] for i in idx]
    scored_BT = scored_target_mask(ids_BL, mask_BL, eos_id, first_B)
    nll_B = -(logprobs_BT * scored_BT).sum(axis=1)
    for row, i in enumerate(idx):
      sample_nll[i] = nll_B[row]
      sample_tokens[i] = scored_BT[row].sum()
  nll_sum, num_tokens = float(sample_nll.sum()), int(sample_tokens.sum())
  gen_ppl = math.exp(nll_sum / num_tokens) if num_tokens else float('nan')
  return GenPPLResult(gen_ppl, nll_sum, num_tokens, sample_nll, sample_tokens)

"""N-gram reference generators: where a diffusion model stands between word salad and text.

A unigram, bigram or trigram model is fitted to a run's own training split,
in the run's own tokenizer ids (the chunks the trainer reads, from the data
pipeline), then sampled to the length and count of the model's samples and
decoded with the same tokenizer. The records have the sampler's format, so
they pass through exactly the same evaluation (Gen. PPL, entropy, MAUVE).

Estimation and backoff (our choice; why: a reference row should reproduce the
corpus statistics of its order and nothing else):
  * maximum likelihood: p(w | context) = count(context, w) / count(context),
    n-grams counted inside each training chunk (none spans two chunks; the
    EOS separators between documents inside a chunk are ordinary tokens, as
    the diffusion model sees them);
  * no discounting or interpolation: smoothing would put mass on
    continuations never seen after a context, i.e. add word salad that
    belongs to neither the corpus nor the n-gram order;
  * backoff only where a context was never followed by anything (a token
    seen only at the end of chunks): the longest shorter context that has a
    continuation is used, down to the unigram distribution;
  * the first token of a sample is drawn from the unigram distribution (a
    training chunk starts anywhere in a document, and so does a sample).

Counting is exact integer work in numpy: an n-gram is one int64 key
(sum_i w_i V^(n-1-i)), counted with np.unique; a context's continuations are
the contiguous key range [ctx V, ctx V + V) of the sorted keys.

  python -m ldlm_jax.evaluation.ngram --workdir runs/demo --order 2 \
      --num_samples 64 --length 32 --seed 0 [--temperature 1.0] --out runs/demo/bigram.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

from ldlm_jax import cli, fileio
from ldlm_jax.config import from_saved
from ldlm_jax.errors import ConfigError

# The data pipeline (grain) and the encoder registry (jax, flax) are imported inside the
# functions that read a run's data: experiments.py imports this module when it starts, and
# its `report` command needs neither.

ORDER_NAMES = {1: 'unigram', 2: 'bigram', 3: 'trigram'}
# Tempered rows (`NGramModel.sample(temperature=T)`, p ~ count ** (1 / T)): a word-frequency sampler
# pushed to lower entropy. The unigram ones with the plain unigram row trace the Gen. PPL that word
# frequencies alone reach at a given entropy (the "unigram frontier"); samples under that curve have
# learned something of word order, samples on it bought their Gen. PPL with entropy only. The bigram
# ones trace the same curve for one word of context. Temperatures: ours, chosen to span the
# entropies the cpu-scale models reach (2.5-3.4 nats; BUILD_NOTES.md, "Demo quality").
TEMPERED = {'unigram': (0.6, 0.7, 0.8, 0.9), 'bigram': (0.8, 0.9)}


def tempered_name(order_name: str, temperature: float) -> str:
  return f'{order_name}_T{temperature:g}'


def split_row_name(name: str) -> tuple[str, float | None]:
  """(order name, temperature) of a reference row's name: ('unigram', 0.8) for tempered_name's
  'unigram_T0.8', ('bigram', None) for a plain row (and (name, None) for any other, e.g. 'held_out')."""
  order_name, _, temperature = name.partition('_T')
  return order_name, (float(temperature) if temperature else None)


def frontier(points_by_name: dict, order_name: str) -> list[tuple[float, float]]:
  """(entropy, Gen. PPL) of an order's plain and tempered rows, sorted by entropy.

  `points_by_name`: row name -> (entropy, Gen. PPL) (means); rows missing or without numbers are left out."""
  names = [order_name] + [tempered_name(order_name, t) for t in TEMPERED.get(order_name, ())]
  return sorted(tuple(points_by_name[n]) for n in names if n in points_by_name and None not in points_by_name[n])


def frontier_ratio(entropy: float | None, gen_ppl: float | None, points: list[tuple[float, float]]) -> float | None:
  """gen_ppl over the frontier's Gen. PPL at the same entropy (log-linear between the two nearest
  points); None outside the frontier's entropy range (no extrapolation) or without numbers."""
  if entropy is None or gen_ppl is None:
    return None
  for (e0, p0), (e1, p1) in zip(points, points[1:]):
    if e0 <= entropy <= e1 and e1 > e0:
      at = math.exp(math.log(p0) + (entropy - e0) / (e1 - e0) * (math.log(p1) - math.log(p0)))
      return gen_ppl / at
  return None


def frontier_ratio_bound(entropy: float | None, gen_ppl: float | None,
                         points: list[tuple[float, float]]) -> float | None:
  """Above the frontier's entropy range: gen_ppl over the Gen. PPL of its highest-entropy point (the
  untempered row), an upper bound on the ratio, since tempering word-frequency samples hotter raises
  their entropy and their Gen. PPL together. None inside or below the range, or without numbers."""
  if entropy is None or gen_ppl is None or len(points) < 2 or entropy <= points[-1][0]:
    return None
  return gen_ppl / points[-1][1]


def format_frontier_ratio(entropy: float | None, gen_ppl: float | None, points: list[tuple[float, float]]) -> str:
  """'0.73' inside the frontier's range, '≤ 0.71' above it (frontier_ratio_bound), '' otherwise."""
  ratio = frontier_ratio(entropy, gen_ppl, points)
  if ratio is not None:
    return f'{ratio:.2f}'
  bound = frontier_ratio_bound(entropy, gen_ppl, points)
  return '' if bound is None else f'≤ {bound:.2f}'


class NGramModel:
  """Maximum-likelihood n-gram counts of orders 1..order with backoff sampling."""

  def __init__(self, order: int, vocab_size: int, keys: list[np.ndarray], counts: list[np.ndarray]):
    self.order = order
    self.vocab_size = vocab_size
    self.keys = keys        # keys[k-1]: sorted unique int64 keys of the k-grams
    self.counts = counts    # counts[k-1]: their int64 counts

  @classmethod
  def fit(cls, chunks: Sequence[Sequence[int]], order: int, vocab_size: int) -> 'NGramModel':
    """Counts every k-gram (k = 1..order) inside each chunk of token ids."""
    if order < 1:
      raise ValueError(f'n-gram order must be >= 1, got {order}.')
    if vocab_size ** order >= 2 ** 63:
      raise ValueError(f'vocab_size {vocab_size} ** order {order} does not fit an int64 key.')
    rows = [np.asarray(c, np.int64).ravel() for c in chunks]
    if not rows or not any(r.size for r in rows):
      raise ValueError('cannot fit an n-gram model to no tokens.')
    if any(r.size and (r.min() < 0 or r.max() >= vocab_size) for r in rows):
      raise ValueError(f'token ids must lie in [0, {vocab_size}).')
    keys, counts = [], []
    for k in range(1, order + 1):
      grams = [_keys_of(r, k, vocab_size) for r in rows if r.size >= k]
      flat = np.concatenate(grams) if grams else np.zeros((0,), np.int64)
      unique, count = np.unique(flat, return_counts=True)
      keys.append(unique)
      counts.append(count.astype(np.int64))
    return cls(order, vocab_size, keys, counts)

  def continuations(self, context: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(next tokens, counts) seen after `context` (len = k - 1 for the k-grams); empty if unseen."""
    k = len(context) + 1
    prefix = 0
    for w in context:
      prefix = prefix * self.vocab_size + int(w)
    lo, hi = np.searchsorted(self.keys[k - 1], [prefix * self.vocab_size, (prefix + 1) * self.vocab_size])
    return self.keys[k - 1][lo:hi] % self.vocab_size, self.counts[k - 1][lo:hi]

  def sample(self, num_samples: int, length: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """(num_samples, length) int32 token ids, each drawn left to right with backoff (module docstring).

    `temperature` T draws w with probability proportional to count(context, w) ** (1 / T): below 1 the
    samples lean on frequent continuations (lower entropy), as a diffusion model's often do; a
    tempered unigram row shows what that alone does to Gen. PPL, with no word order at all."""
    if temperature <= 0:
      raise ValueError(f'temperature must be > 0, got {temperature}.')
    rng = np.random.default_rng(seed)
    out = np.zeros((num_samples, length), np.int32)
    for b in range(num_samples):
      for j in range(length):
        history = out[b, max(0, j - self.order + 1):j]
        for start in range(len(history) + 1):   # longest context first
          tokens, counts = self.continuations(history[start:])
          if counts.size:
            break
        weights = counts if temperature == 1.0 else counts.astype(np.float64) ** (1.0 / temperature)
        out[b, j] = tokens[rng.choice(counts.size, p=weights / weights.sum())]
    return out


def _keys_of(row: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
  n = row.size - k + 1
  key = np.zeros(n, np.int64)
  for i in range(k):
    key = key * vocab_size + row[i:i + n]
  return key


def training_chunks(config, tokenizer, max_chunks: int = 200_000) -> np.ndarray:
  """The run's training split as the trainer reads it: (n, L) chunks, at most `max_chunks`."""
  from ldlm_jax.data import pipeline  # noqa: PLC0415  (grain: see the imports)
  return pipeline.iter_train_chunks(config, tokenizer, max_chunks)


def records(tokens_BL: np.ndarray, tokenizer, name: str, seed: int) -> list[dict]:
  """Sample records in `sample.py`'s format (text decoded like the model's samples)."""
  eos_token = tokenizer.tokenizer.id_to_token(tokenizer.eos_id)
  return [{'index': i, 'text': tokenizer.decode(row.tolist()), 'tokens': row.tolist(), 'seed': seed,
           'steps': None, 'checkpoint_step': None, 'eos_token': eos_token, 'generator': name}
          for i, row in enumerate(np.asarray(tokens_BL))]


def fit_models(config, tokenizer, orders=(1, 2, 3), max_chunks: int = 200_000) -> dict[str, NGramModel]:
  """{'unigram': ..., 'bigram': ..., 'trigram': ...} fitted to the run's training split.

  One trigram count set serves every order (its lower orders are the same counts).
  """
  chunks = training_chunks(config, tokenizer, max_chunks)
  full = NGramModel.fit(chunks, max(orders), tokenizer.vocab_size)
  return {ORDER_NAMES[k]: NGramModel(k, full.vocab_size, full.keys[:k], full.counts[:k]) for k in orders}


def load_run_config(workdir: str):
  """The config a run was trained with (its config.json over today's schema)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ConfigError(f'{path} does not exist; pass the work directory of a training run.')
  with open(path, encoding='utf-8') as f:
    return from_saved(json.load(f))


def baseline_sample_sets(workdir: str, num_sets: int, num_samples: int, length: int = 0,
                         references: Sequence[str] = ()) -> dict[str, list[list[dict]]]:
  """The reference rows of a run, for `evaluate --ngram_baselines`.

  {'unigram' | 'bigram' | 'trigram': `num_sets` sample sets (seeds 0..num_sets-1) of
  `num_samples` records of `length` tokens (0 = data.seq_len), fitted to the run's
  training split; 'unigram_T<T>' (TEMPERED): one such set of tempered unigram samples (the
  unigram frontier); 'held_out': one set of held-out texts, the run's reference-split
  chunks that are not among `references` (the MAUVE references)}.
  """
  from ldlm_jax.data import pipeline  # noqa: PLC0415  (grain: see the imports)
  from ldlm_jax.encoders.registry import load_encoder_tokenizer  # noqa: PLC0415  (jax: see the imports)
  config = load_run_config(workdir)
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  length = length or int(config.data.seq_len)
  models = fit_models(config, tokenizer)
  sets = {name: [records(model.sample(num_samples, length, seed), tokenizer, name, seed) for seed in range(num_sets)]
          for name, model in models.items()}
  for temperature in TEMPERED['unigram']:   # one set each: the frontier's points vary 2-4 % between seeds
    name = tempered_name('unigram', temperature)
    sets[name] = [records(models['unigram'].sample(num_samples, length, 0, temperature), tokenizer, name, 0)]
  taken = set(references)
  texts = [t for t in pipeline.load_reference_texts(config, tokenizer, len(taken) + num_samples) if t not in taken]
  held_out = [{'index': i, 'text': t, 'generator': 'held_out'} for i, t in enumerate(texts[:num_samples])]
  if len(held_out) >= 2:
    sets['held_out'] = [held_out]
  return sets


@cli.user_errors_exit_2
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a run directory (its config.json names the data)')
  parser.add_argument('--order', type=int, default=2, choices=sorted(ORDER_NAMES))
  parser.add_argument('--num_samples', type=int, default=64)
  parser.add_argument('--length', type=int, default=0, help='tokens per sample (0 = data.seq_len)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--temperature', type=float, default=1.0,
                      help='draw continuations with probability ~ count ** (1 / T) (default 1: the fitted model)')
  parser.add_argument('--out', required=True, help='samples JSONL to write')
  args = parser.parse_args(argv)
  if args.temperature <= 0:
    print(f'error: --temperature must be > 0, got {args.temperature}.', file=sys.stderr)
    return 2
  from ldlm_jax.encoders.registry import load_encoder_tokenizer  # noqa: PLC0415  (jax: see the imports)
  config = load_run_config(args.workdir)
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  model = fit_models(config, tokenizer, orders=(args.order,))[ORDER_NAMES[args.order]]
  tokens = model.sample(args.num_samples, args.length or int(config.data.seq_len), args.seed, args.temperature)
  name = (ORDER_NAMES[args.order] if args.temperature == 1.0
          else tempered_name(ORDER_NAMES[args.order], args.temperature))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fileio.write_jsonl(args.out, records(tokens, tokenizer, name, args.seed))
  print(f'wrote {args.num_samples} {name} samples to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

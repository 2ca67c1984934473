"""Diversity metrics of generated samples on token ids (docs/method.md Section 8.2, paper App. E), pure numpy.

  * unigram entropy: for each sample, the entropy (nats) of its empirical
    token frequency distribution, -sum_v p_v log p_v with p_v = count_v / len;
    averaged over samples. Sample-level diversity: low for a text that repeats
    itself.
  * n-gram diversity: over the whole sample set, prod over n = 2..4 of
    (unique n-grams / total n-grams), n-grams taken within each sample (none
    spans two samples). Corpus-level diversity: low when samples repeat each
    other's phrases (Su et al., 2022, on token ids).

Which tokenization the ids come from is the caller's choice (`evaluate`
uses the scorer's retokenization by default); the metrics only see ids.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def sample_unigram_entropy(tokens: Sequence[int]) -> float:
  """Entropy in nats of one sample's token frequencies; 0.0 for an empty sample."""
  tokens = np.asarray(tokens, dtype=np.int64).ravel()
  if tokens.size == 0:
    return 0.0
  _, counts = np.unique(tokens, return_counts=True)
  p = counts / tokens.size
  return float(-(p * np.log(p)).sum())


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
  """Mean over samples of `sample_unigram_entropy` (nats)."""
  if len(samples) == 0:
    raise ValueError('unigram_entropy needs at least one sample.')
  return float(np.mean([sample_unigram_entropy(s) for s in samples]))


def ngram_counts(samples: Sequence[Sequence[int]], n: int) -> tuple[int, int]:
  """(unique, total) n-grams over all samples, each n-gram inside one sample."""
  if n < 1:
    raise ValueError(f'n-gram order must be >= 1, got {n}.')
  unique: set[tuple[int, ...]] = set()
  total = 0
  for sample in samples:
    ids = [int(t) for t in sample]
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    unique.update(grams)
    total += len(grams)
  return len(unique), total


def ngram_diversity(samples: Sequence[Sequence[int]], orders: Sequence[int] = (2, 3, 4)) -> float:
  """prod over n in `orders` of unique/total n-grams over the sample set; nan if some order has none."""
  if len(samples) == 0:
    raise ValueError('ngram_diversity needs at least one sample.')
  diversity = 1.0
  for n in orders:
    unique, total = ngram_counts(samples, n)
    if total == 0:
      return float('nan')
    diversity *= unique / total
  return float(diversity)

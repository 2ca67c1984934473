"""Unigram entropy and n-gram diversity against hand-computed values."""

import math

import pytest

from ldlm_jax.evaluation import metrics


def test_sample_entropy_hand_values():
  # Frequencies 1/2, 1/4, 1/4 -> H = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2.
  assert metrics.sample_unigram_entropy([7, 7, 3, 9]) == pytest.approx(1.5 * math.log(2), abs=1e-12)
  # Uniform over 5 distinct ids -> ln 5; a constant sample -> 0; empty -> 0.
  assert metrics.sample_unigram_entropy([1, 2, 3, 4, 5]) == pytest.approx(math.log(5), abs=1e-12)
  assert metrics.sample_unigram_entropy([4, 4, 4]) == 0.0
  assert metrics.sample_unigram_entropy([]) == 0.0


def test_entropy_is_mean_over_samples_not_pooled():
  samples = [[7, 7, 3, 9], [5, 5, 5], [1, 2]]
  expected = (1.5 * math.log(2) + 0.0 + math.log(2)) / 3
  assert metrics.unigram_entropy(samples) == pytest.approx(expected, abs=1e-12)
  # Pooling all tokens would give a different number: the metric is per sample.
  pooled = metrics.sample_unigram_entropy([t for s in samples for t in s])
  assert abs(pooled - expected) > 0.1


def test_ngram_diversity_hand_values():
  samples = [[1, 2, 3, 1, 2], [1, 2, 3]]
  # bigrams: 12 23 31 12 | 12 23 -> 3 unique / 6; trigrams: 123 231 312 | 123 -> 3 / 4;
  # 4-grams: 1231 2312 | (none) -> 2 / 2.
  assert metrics.ngram_counts(samples, 2) == (3, 6)
  assert metrics.ngram_counts(samples, 3) == (3, 4)
  assert metrics.ngram_counts(samples, 4) == (2, 2)
  assert metrics.ngram_diversity(samples) == pytest.approx(0.5 * 0.75 * 1.0, abs=1e-12)


def test_ngrams_do_not_span_samples():
  # Joined, [1, 2] + [3, 4] would contain the bigram (2, 3); per sample it does not.
  assert metrics.ngram_counts([[1, 2], [3, 4]], 2) == (2, 2)
  assert metrics.ngram_counts([[1, 2], [3, 4]], 3) == (0, 0)
  # Repeats across samples count against diversity (corpus level).
  assert metrics.ngram_diversity([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(0.5 ** 3)
  assert metrics.ngram_diversity([[1, 2, 3, 4], [5, 6, 7, 8]]) == 1.0


def test_diversity_without_ngrams_is_nan_and_empty_sets_raise():
  assert math.isnan(metrics.ngram_diversity([[1, 2, 3]]))  # no 4-gram at all
  assert metrics.ngram_diversity([[1, 2, 3]], orders=(2, 3)) == 1.0
  with pytest.raises(ValueError):
    metrics.unigram_entropy([])
  with pytest.raises(ValueError):
    metrics.ngram_diversity([])

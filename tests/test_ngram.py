"""N-gram reference generators: exact counts and sampling on toy corpora."""

import collections

import numpy as np
import pytest

from ldlm_jax.evaluation import ngram


def test_counts_match_python_counter():
  rng = np.random.RandomState(0)
  chunks = rng.randint(0, 7, size=(5, 9))
  model = ngram.NGramModel.fit(chunks, 3, 7)
  for k in (1, 2, 3):
    want = collections.Counter(tuple(c[i:i + k]) for c in chunks.tolist() for i in range(len(c) - k + 1))
    got = {}
    for key, count in zip(model.keys[k - 1], model.counts[k - 1]):
      gram = []
      for _ in range(k):
        gram.append(int(key % 7))
        key //= 7
      got[tuple(reversed(gram))] = int(count)
    assert got == dict(want)
  tokens, counts = model.continuations([int(chunks[0, 0]), int(chunks[0, 1])])
  want = collections.Counter(c[i + 2] for c in chunks.tolist() for i in range(7)
                             if c[i:i + 2] == chunks[0, :2].tolist())
  assert dict(zip(tokens.tolist(), counts.tolist())) == dict(want)


def test_deterministic_bigram_chain_reproduces_itself():
  """Every token has one successor: a bigram sample is the cycle from its first token."""
  cycle = [3, 1, 4, 0, 5, 2]
  chunks = [np.roll(cycle * 3, -s)[:10] for s in range(6)]   # n-grams never span chunks
  model = ngram.NGramModel.fit(chunks, 2, 6)
  out = model.sample(8, 13, seed=0)
  for row in out:
    start = cycle.index(int(row[0]))
    np.testing.assert_array_equal(row, [cycle[(start + j) % 6] for j in range(13)])
  # Seeded: the same seed gives the same samples, another seed other first tokens.
  np.testing.assert_array_equal(out, model.sample(8, 13, seed=0))


@pytest.mark.slow
def test_unigram_frequencies_and_backoff():
  chunks = [[0, 0, 0, 1]] * 50   # token 1 only ends chunks: no continuation, back off to the unigram
  bigram = ngram.NGramModel.fit(chunks, 2, 3)
  tokens, counts = bigram.continuations([1])
  assert counts.size == 0
  out = bigram.sample(400, 6, seed=1)
  assert set(np.unique(out)) <= {0, 1}              # token 2 is never seen, never drawn
  after_one = out[:, 1:][out[:, :-1] == 1]
  assert after_one.size > 0 and set(np.unique(after_one)) <= {0, 1}
  unigram = ngram.NGramModel(1, 3, bigram.keys[:1], bigram.counts[:1])
  draws = unigram.sample(2000, 10, seed=2)
  assert abs(np.mean(draws == 1) - 0.25) < 0.02      # p(1) = 50 / 200
  np.testing.assert_array_equal(draws, unigram.sample(2000, 10, seed=2, temperature=1.0))
  # Tempered: p(w) ~ count ** (1 / T), here 50 ** 2 / (150 ** 2 + 50 ** 2) = 0.1 at T = 0.5.
  cold = unigram.sample(2000, 10, seed=2, temperature=0.5)
  assert abs(np.mean(cold == 1) - 0.1) < 0.015
  with pytest.raises(ValueError, match='temperature must be > 0'):
    unigram.sample(1, 1, seed=0, temperature=0.0)
  with pytest.raises(ValueError):
    ngram.NGramModel.fit([[0, 9]], 2, 5)


def test_frontier_ratio_interpolates_log_linearly_inside_the_measured_range():
  points = ngram.frontier({'unigram': (3.4, 4000.0), 'unigram_T0.8': (3.0, 1000.0), 'bigram': (3.3, 1.0),
                           'unigram_T0.7': (None, 5.0)}, 'unigram')
  assert points == [(3.0, 1000.0), (3.4, 4000.0)]
  assert ngram.frontier_ratio(3.2, 1000.0, points) == pytest.approx(0.5)   # the frontier is 2000 there
  assert ngram.frontier_ratio(3.0, 500.0, points) == pytest.approx(0.5)
  assert ngram.frontier_ratio(2.9, 500.0, points) is None                 # no extrapolation
  assert ngram.frontier_ratio(None, 500.0, points) is None
  # Above the untempered row's entropy: an upper bound, Gen. PPL over that row's.
  assert ngram.frontier_ratio(3.5, 2000.0, points) is None
  assert ngram.frontier_ratio_bound(3.5, 2000.0, points) == pytest.approx(0.5)
  assert ngram.frontier_ratio_bound(3.2, 1000.0, points) is None            # inside: the ratio itself
  assert ngram.frontier_ratio_bound(2.9, 500.0, points) is None             # below: nothing
  assert [ngram.format_frontier_ratio(e, p, points) for e, p in ((3.2, 1000.0), (3.5, 2000.0), (2.9, 500.0))] \
      == ['0.50', '≤ 0.50', '']


def test_row_names_round_trip_and_a_bad_temperature_stops_before_any_work(tmp_path, capsys):
  assert ngram.split_row_name(ngram.tempered_name('unigram', 0.8)) == ('unigram', 0.8)
  assert ngram.split_row_name('bigram') == ('bigram', None)
  assert ngram.split_row_name('held_out') == ('held_out', None)
  out = tmp_path / 'u.jsonl'
  assert ngram.main(['--workdir', str(tmp_path / 'no_run'), '--temperature', '0', '--out', str(out)]) == 2
  assert capsys.readouterr().err.strip() == 'error: --temperature must be > 0, got 0.0.'
  assert not out.exists()

"""The MDLM chunking rule against hand-computed chunks, in all three forms."""

import json

import grain
import numpy as np
import pytest

from ldlm_jax.data.chunking import (ChunkIterDataset, DocumentTokenizer, StreamChunker,
                                    chunk_documents)
from ldlm_jax.data.testing import NumberTokenizer

EOS = 0
# Documents as token ids (without EOS); the third is empty and must vanish.
DOCS = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9], [10]]
# Stream: 1 2 3 E 4 5 E 6 7 8 9 E 10 E (14 tokens) -> three chunks of 4, and
# the tail "10 E" is dropped. No padding anywhere.
EXPECTED_L4 = np.array([[1, 2, 3, 0],
                        [4, 5, 0, 6],
                        [7, 8, 9, 0]], np.int32)


def test_chunk_documents_matches_hand_example():
  got = chunk_documents(DOCS, seq_len=4, eos_id=EOS)
  np.testing.assert_array_equal(got, EXPECTED_L4)
  assert got.dtype == np.int32


def test_chunk_documents_exact_fit_and_too_short():
  # 2 + 1 EOS + 2 + 1 EOS = 6 = 2 chunks of 3, nothing dropped.
  np.testing.assert_array_equal(chunk_documents([[1, 2], [3, 4]], 3, 9),
                                [[1, 2, 9], [3, 4, 9]])
  assert chunk_documents([[1, 2]], 4, 0).shape == (0, 4)


def test_document_tokenizer_appends_one_eos_and_skips_empty():
  to_tokens = DocumentTokenizer(NumberTokenizer(eos_id=7))
  np.testing.assert_array_equal(to_tokens('5 6'), [5, 6, 7])
  assert to_tokens('').size == 0
  assert to_tokens(None).size == 0  # Undecodable document: skipped, no lone EOS.


def _with_eos(doc):
  return np.asarray(list(doc) + [EOS], np.int32) if doc else np.zeros(0, np.int32)


def test_stream_chunker_matches_hand_example():
  chunker = StreamChunker(4)
  out = [chunker.add(_with_eos(d)) for d in DOCS]
  np.testing.assert_array_equal(np.concatenate(out), EXPECTED_L4)
  assert chunker.leftover == 2  # "10 E" would be dropped.


def test_stream_chunker_matches_reference_on_random_documents():
  rng = np.random.RandomState(0)
  docs = [list(rng.randint(1, 50, size=rng.randint(0, 30))) for _ in range(60)]
  for seq_len in (1, 5, 16, 64):
    chunker = StreamChunker(seq_len)
    got = np.concatenate([chunker.add(_with_eos(d)) for d in docs])
    np.testing.assert_array_equal(got, chunk_documents(docs, seq_len, EOS))


def _chunk_dataset(docs, seq_len):
  ds = grain.MapDataset.source([_with_eos(d) for d in docs]).to_iter_dataset()
  return ChunkIterDataset(ds, seq_len)


def test_chunk_iter_dataset_matches_hand_example():
  got = list(_chunk_dataset(DOCS, 4))
  np.testing.assert_array_equal(np.stack(got), EXPECTED_L4)


@pytest.mark.parametrize('seq_len', [3, 4, 7])
def test_chunk_iter_dataset_restores_exactly_from_every_position(seq_len):
  rng = np.random.RandomState(1)
  docs = [list(rng.randint(1, 50, size=rng.randint(0, 12))) for _ in range(25)]
  expected = chunk_documents(docs, seq_len, EOS)
  assert len(expected) > 5
  it = iter(_chunk_dataset(docs, seq_len))
  for position in range(len(expected) + 1):
    state = json.loads(json.dumps(it.get_state()))  # Checkpoints go through JSON.
    restored = iter(_chunk_dataset(docs, seq_len))
    restored.set_state(state)
    rest = list(restored)
    np.testing.assert_array_equal(np.array(rest).reshape(-1, seq_len), expected[position:])
    if position < len(expected):
      np.testing.assert_array_equal(next(it), expected[position])
  with pytest.raises(StopIteration):
    next(it)


def test_window_shuffle_permutes_each_window_and_restores_exactly():
  from ldlm_jax.data.shuffling import WindowShuffleIterDataset

  def dataset():
    return WindowShuffleIterDataset(grain.MapDataset.range(23).to_iter_dataset(), 5, seed=3)

  expected = list(dataset())
  for w in range(5):  # Each window of 5 (the last of 3) is a permutation of its inputs.
    assert sorted(expected[5 * w: 5 * w + 5]) == list(range(5 * w, min(5 * w + 5, 23)))
  assert expected != list(range(23))
  it = iter(dataset())
  for position in range(24):
    restored = iter(dataset())
    restored.set_state(json.loads(json.dumps(it.get_state())))
    assert list(restored) == expected[position:]
    if position < 23:
      assert next(it) == expected[position]

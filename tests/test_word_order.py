"""The toy language with a strict word order, and the check that a trained LDLM learns that order.

The learning check trains configs/toy_order.py (real MiniLM encoder, the
paper's recipe, a tiny model) on the toy corpus and samples 64 texts: at
least 0.95 of their adjacent word pairs must follow the cycle, while the same
samples with their words shuffled stay below 0.5 (a model that learned only
word frequencies scores about the same on both). Before latent
standardization and rotary positions the same config sampled at the
word-frequency level (BUILD_NOTES.md, "Word order").
"""

import json
import os

import pytest

from ldlm_jax.data import toy

from ldlm_testing import toy_order_run


def test_corpus_is_legal_and_its_shuffle_is_not(tmp_path):
  out = toy.write_corpus(str(tmp_path), num_documents=20, sentences_per_document=10)
  for split in toy.SPLITS:
    with open(os.path.join(out, f'{split}.jsonl')) as f:
      texts = [json.loads(line)['text'] for line in f]
    assert texts and toy.legal_pair_fraction(texts) == 1.0
  report = toy.order_report(texts)
  assert report['known_words'] == 1.0
  assert report['shuffled_legal_pairs'] < 0.35


def test_legal_pairs_by_hand():
  assert toy.legal_pair_fraction(['the big dog saw here. a']) == 1.0
  assert toy.legal_pair_fraction(['dog the big']) == 0.5       # dog->the illegal, the->big legal
  assert toy.legal_pair_fraction(['the zebra big']) == 0.0     # unknown words are illegal
  assert toy.words_of('Here.The') == ['here', '.', 'the']


def test_corpus_cli_writes_the_splits(tmp_path):
  toy.main(['--out', str(tmp_path / 'c'), '--num_documents', '3', '--sentences_per_document', '2'])
  assert sorted(os.listdir(tmp_path / 'c')) == ['reference.jsonl', 'train.jsonl', 'validation.jsonl']


@pytest.mark.slow
def test_ldlm_learns_the_word_order(tmp_path):
  """Trains and samples through the CLIs, with XLA's optimised CPU backend (the
  tests' -O0 flag makes a few hundred steps slower than compiling them)."""
  report = toy_order_run(tmp_path, 'toy_order.py')
  texts = report.pop('texts')
  print('order report', report, texts[:3])
  assert report['known_words'] > 0.9, report
  assert report['legal_pairs'] >= 0.95, report
  assert report['shuffled_legal_pairs'] < 0.5, report

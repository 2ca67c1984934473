"""The toy language with a strict word order, and the check that a trained LDLM learns that order.

The learning check trains configs/toy_order.py (the language's own 26-token
encoder, the paper's recipe, a tiny model) on the toy corpus and samples 64
texts: at least 0.95 of their adjacent word pairs must follow the cycle, while
the same samples with their words shuffled stay below 0.5 (a model that
learned only word frequencies scores about the same on both). Without latent
standardization and rotary positions the same config fails it: 0.34 legal
pairs (BUILD_NOTES.md, "Word order"; with MiniLM's encoder,
configs/toy_order.py:minilm, 0.205 before the fix and 1.000 after).
"""

import json
import os

import jax.numpy as jnp
import numpy as np
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


def test_toy_encoder_is_one_token_per_word_and_loads_as_a_local_bert(tmp_path):
  from ldlm_jax.encoders.registry import load_encoder_tokenizer, load_frozen_encoder
  path = toy.write_encoder(str(tmp_path / 'encoder'), seed=3)
  tok = load_encoder_tokenizer('local', path)
  words = [w for _, members in toy.CLASSES for w in members]
  assert tok.vocab_size == len(toy.SPECIAL_TOKENS) + len(words) == 26
  assert tok.eos_id == tok.tokenizer.token_to_id('[SEP]')
  text = 'The big dog saw here. a small cat'
  ids = tok.encode(text)
  assert len(ids) == len(toy.words_of(text)) and tok.tokenizer.token_to_id('[UNK]') not in ids
  assert toy.words_of(tok.decode(ids)) == toy.words_of(text)
  assert tok.decode(tok.encode('the zebra')) == 'the [UNK]'
  enc = load_frozen_encoder('local', path=path)
  assert (enc.vocab_size, enc.hidden_size, enc.num_layers) == (26, 64, 2)
  # BERT's initialisation: embeddings N(0, 0.02), norms at 1 and 0; one seed, one set of weights.
  table = np.asarray(enc.params['word_embeddings']['embedding'])
  assert abs(table.std() - 0.02) < 0.003
  assert np.all(np.asarray(enc.params['embeddings_norm']['scale']) == 1.0)
  again = load_frozen_encoder('local', path=toy.write_encoder(str(tmp_path / 'again'), seed=3))
  assert np.array_equal(np.asarray(again.params['layer_1']['query']['kernel']),
                        np.asarray(enc.params['layer_1']['query']['kernel']))
  hidden = np.asarray(enc.hidden_state(enc.params, jnp.asarray([ids]), -1))
  assert hidden.shape == (1, len(ids), 64) and np.all(np.isfinite(hidden))


def test_legal_pairs_by_hand():
  assert toy.legal_pair_fraction(['the big dog saw here. a']) == 1.0
  assert toy.legal_pair_fraction(['dog the big']) == 0.5       # dog->the illegal, the->big legal
  assert toy.legal_pair_fraction(['the zebra big']) == 0.0     # unknown words are illegal
  assert toy.words_of('Here.The') == ['here', '.', 'the']


def test_corpus_cli_writes_the_splits(tmp_path):
  toy.main(['--out', str(tmp_path / 'c'), '--num_documents', '3', '--sentences_per_document', '2'])
  assert sorted(os.listdir(tmp_path / 'c')) == ['encoder', 'reference.jsonl', 'train.jsonl', 'validation.jsonl']
  assert sorted(os.listdir(tmp_path / 'c' / 'encoder')) == ['config.json', 'model.safetensors', 'tokenizer.json']


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

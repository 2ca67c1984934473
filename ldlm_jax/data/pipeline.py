"""grain input pipelines: what the trainer and the evaluation read.

Every pipeline yields chunks of L = `data.seq_len` tokens made by the MDLM
protocol (`chunking.py`). Both shapes start from `shuffling.ShuffledGroups`,
random access to this process's groups of a per-epoch shuffled stream:

  * 'prepared' and 'brown' (one chunk per ArrayRecord record):
      ShuffledGroups of chunks, one group = one batch (one batched read)
      -> reader threads -> {'tokens'}
    a global shuffle over all chunks; the iterator state is one index.
  * 'files' and 'tfds' (tokenized on the fly):
      ShuffledGroups of documents, 64 per group -> tokenize (one
      encode_batch per group) -> reader threads -> concatenate + cut
      (ChunkIterDataset) -> window shuffle of chunks -> batch -> {'tokens'}
    documents are shuffled globally; the window shuffle breaks up runs of
    consecutive chunks from one long document.

Epochs: epoch e is reshuffled with the order permutation(seed, 'epoch/<e>'),
the seed mixed from `data.seed` (`shuffling.derive_seed`). Training never
stops: the stream runs across epoch boundaries without dropping anything.

Multi-host: the one global shuffled stream is cut into global batches and
process p takes the p-th contiguous block of each (`shuffling.ShuffledGroups`),
so within every epoch the shards are disjoint and together cover the data,
and for prepared data the global batch is the same whatever the number of
processes (a 2-host run sees exactly the batches of a 1-host run).

Checkpointing: `make_train_iterator` returns a grain `DatasetIterator` whose
state is a small JSON-serialisable dict (no tokens in it) carrying a
signature of the pipeline; restoring a state made by a different pipeline
(other batch size, seed, process count, corpus size) stops with one sentence.
Save it with orbax in the trainer's checkpoint through grain's own handler,
which writes one file per process (`process_<i>-of-<n>.json`) and so is the
right fit for multi-host; `ocp.args.JsonSave` would keep only process 0's:

    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(train_iter)))
    mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data_iter=grain.checkpoint.CheckpointRestore(train_iter)))

`get_iterator_state` / `set_iterator_state` give the same dict directly.
"""

from __future__ import annotations

import itertools
import json
import logging
import math

from absl import flags
import grain
import numpy as np

from ldlm_jax.data import brown, prepare
from ldlm_jax.data.chunking import ChunkIterDataset, DocumentTokenizer
from ldlm_jax.data.errors import DataError
from ldlm_jax.data.shuffling import ShuffledGroups, WindowShuffleIterDataset, derive_seed
from ldlm_jax.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ('tfds', 'files', 'prepared', 'brown')
_PREPARED_SOURCES = ('prepared', 'brown')
# Defaults of fields read with a fallback (proposed for config.py).
DEFAULT_SHUFFLE_WINDOW = 1024   # data.shuffle_window: chunks per window ('files'/'tfds').
DEFAULT_READ_THREADS = 2        # data.read_threads: grain reader threads per process.
DEFAULT_REFERENCE_SPLIT = ''    # data.reference_split: '' = 'reference' for brown, else eval_split.
# Consecutive documents tokenized by one encode_batch call (see DocumentTokenizer).
DOCS_PER_GROUP = 64
_STATE_VERSION = 1


# --- Config ------------------------------------------------------------------------------


def _data(config, key: str, default=None):
  return config.data.get(key, default)


def _source(config) -> str:
  source = _data(config, 'source')
  if source not in SOURCES:
    raise ConfigError(f'data.source={source!r} is not one of {SOURCES}; set it to one '
                      'of those.')
  return source


def _seq_len(config) -> int:
  seq_len = int(_data(config, 'seq_len', 0))
  if seq_len <= 0:
    raise ConfigError(f'data.seq_len={seq_len} must be a positive number of tokens.')
  return seq_len


def _reference_split(config) -> str:
  split = _data(config, 'reference_split', DEFAULT_REFERENCE_SPLIT)
  if split:
    return split
  return 'reference' if _source(config) == 'brown' else _data(config, 'eval_split')


def _read_options(config) -> grain.ReadOptions:
  threads = int(_data(config, 'read_threads', DEFAULT_READ_THREADS))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(16, 8 * threads))


# --- Sources -----------------------------------------------------------------------------


def prepared_path(config, tokenizer) -> str:
  """The prepared dataset directory of a 'prepared' or 'brown' config."""
  source = _source(config)
  if source == 'prepared':
    return _data(config, 'path')
  if source == 'brown':
    return brown.ensure_prepared(_data(config, 'path') or brown.default_root(), tokenizer,
                                 _seq_len(config))
  raise ConfigError(f'data.source={source!r} has no prepared directory.')


def open_split(config, tokenizer, split: str):
  """('prepared', PreparedSplit) or ('documents', a document source) for `split`."""
  source = _source(config)
  seq_len = _seq_len(config)
  if source in _PREPARED_SOURCES:
    return 'prepared', prepare.PreparedSplit(prepared_path(config, tokenizer), split,
                                             tokenizer, seq_len)
  other_splits = [s for s in (_data(config, 'train_split'), _data(config, 'eval_split'),
                              _data(config, 'reference_split', '')) if s]
  docs = prepare.documents_for(
      source, split, path=_data(config, 'path'), text_field=_data(config, 'text_field'),
      tfds_name=_data(config, 'tfds_name'), data_dir=_data(config, 'data_dir'),
      train_split=_data(config, 'train_split'), other_splits=other_splits)
  _check_one_chunk(docs, tokenizer, seq_len, split)
  return 'documents', docs


def _check_one_chunk(docs, tokenizer, seq_len: int, split: str, min_chunks: int = 1) -> int:
  """Stops early when a split cannot fill one chunk (else training would spin).

  Reads documents only until `min_chunks` chunks are filled; returns how many were
  (at most `min_chunks`).
  """
  if len(docs) == 0:
    raise DataError(f'The {split!r} split has no documents; add text or fix data.path.')
  tokens = undecodable = 0
  for i in range(len(docs)):
    text = docs[i]
    if text is None:  # bytes that are not UTF-8 (sources.py)
      undecodable += 1
      continue
    ids = tokenizer.encode(text)
    tokens += len(ids) + 1 if ids else 0  # + EOS, as DocumentTokenizer
    if tokens >= seq_len * max(1, min_chunks):
      return max(1, min_chunks)
  if tokens < seq_len:
    if undecodable == len(docs):
      raise DataError(f'All {undecodable} documents of the {split!r} split were skipped as '
                      'undecodable (not valid UTF-8); point data.path at UTF-8 text.')
    skipped = (f' ({undecodable} of {len(docs)} documents were skipped as undecodable, not '
               'valid UTF-8)' if undecodable else '')
    raise DataError(f'The {split!r} split has only {tokens} tokens{skipped}, fewer than one '
                    f'chunk of data.seq_len={seq_len}; add text or lower data.seq_len.')
  return tokens // seq_len


class _ReadChunks:
  """item indices -> (k, L) int32 chunks of a prepared split, in one batched read."""

  def __init__(self, split: prepare.PreparedSplit):
    self.split = split

  def __call__(self, indices: np.ndarray) -> np.ndarray:
    records = self.split.source.__getitems__(indices.tolist())
    flat = np.frombuffer(b''.join(records), self.split.dtype)
    if flat.size != len(indices) * self.split.seq_len:
      raise DataError(f'Prepared dataset {self.split.path} has records that are not '
                      f'{self.split.seq_len} tokens long; prepare it again.')
    return flat.reshape(len(indices), self.split.seq_len).astype(np.int32)


class _ReadDocuments:
  """item indices -> the list of those documents' texts (None = undecodable)."""

  def __init__(self, documents):
    self.documents = documents

  def __call__(self, indices: np.ndarray) -> list:
    return [self.documents[int(i)] for i in indices]


def _take_chunks(config, tokenizer, split: str, num_chunks: int,
                 shuffle_seed: int | None = None) -> np.ndarray:
  """Up to num_chunks chunks of one pass over `split` (shuffled if a seed is given), (k, L)."""
  kind, src = open_split(config, tokenizer, split)
  if kind == 'prepared':
    count = min(num_chunks, len(src))
    return ShuffledGroups(_ReadChunks(src), len(src), count, seed=shuffle_seed,
                          endless=False)[0]
  groups = ShuffledGroups(_ReadDocuments(src), len(src), DOCS_PER_GROUP, seed=shuffle_seed,
                          endless=False)
  ds = grain.MapDataset.source(groups).map(DocumentTokenizer(tokenizer))
  it = iter(ChunkIterDataset(ds.to_iter_dataset(_read_options(config)), _seq_len(config)))
  try:
    chunks = list(itertools.islice(it, num_chunks))
  finally:
    it.close()
  if not chunks:
    raise DataError(f'The {split!r} split has no complete chunk of '
                    f'data.seq_len={_seq_len(config)} tokens; add text or lower data.seq_len.')
  return np.stack(chunks).astype(np.int32)


# --- Training ----------------------------------------------------------------------------


class _TrainIterator(grain.DatasetIterator):
  """The training iterator: the grain pipeline plus a signature checked on restore."""

  def __init__(self, parent: grain.DatasetIterator, signature: dict):
    super().__init__(parent)
    self.signature = signature

  def __next__(self) -> dict:
    return next(self._parent)

  def get_state(self) -> dict:
    return {'signature': dict(self.signature), 'pipeline': self._parent.get_state()}

  def set_state(self, state: dict) -> None:
    saved = state.get('signature') if isinstance(state, dict) else None
    if saved != self.signature:
      if not isinstance(saved, dict):
        raise DataError('The data-iterator state was not written by make_train_iterator; '
                        'restore a state from get_iterator_state or start afresh.')
      diff = ', '.join(f'{k}: saved {saved.get(k)!r} vs now {self.signature.get(k)!r}'
                       for k in sorted(set(saved) | set(self.signature))
                       if saved.get(k) != self.signature.get(k))
      raise DataError(f'The saved data-iterator state belongs to another pipeline ({diff}); '
                      'resume with the same data settings or drop the iterator state.')
    self._parent.set_state(state['pipeline'])

  def __str__(self) -> str:
    return f'ldlm_jax TrainIterator({self.signature})'


def make_train_iterator(config, tokenizer, *, process_index: int = 0, process_count: int = 1,
                        batch_size: int | None = None) -> grain.DatasetIterator:
  """The endless, shuffled training stream of this process.

  Yields {'tokens': np.int32 (batch_size, L)}; batch_size defaults to
  config.train.batch_size // process_count (the per-process batch).
  """
  source = _source(config)
  seq_len = _seq_len(config)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(f'process_index={process_index} / process_count={process_count} '
                      'is not a valid process.')
  if batch_size is None:
    global_batch = int(config.train.batch_size)
    if global_batch % process_count:
      raise ConfigError(f'train.batch_size={global_batch} is not divisible by the '
                        f'{process_count} processes; make it a multiple.')
    batch_size = global_batch // process_count
  if batch_size <= 0:
    raise ConfigError(f'The per-process batch size {batch_size} must be positive; raise '
                      'train.batch_size.')
  shuffle = bool(_data(config, 'shuffle', True))
  seed = derive_seed(_data(config, 'seed', 0), 'train')
  num_workers = int(_data(config, 'num_workers', 0))
  prefetch = int(_data(config, 'prefetch', 0))
  window = int(_data(config, 'shuffle_window', DEFAULT_SHUFFLE_WINDOW))

  train_split = _data(config, 'train_split')
  kind, src = open_split(config, tokenizer, train_split)
  _warn_if_smaller_than_a_batch(
      len(src) if kind == 'prepared' else _check_one_chunk(
          src, tokenizer, seq_len, train_split, batch_size * process_count),
      batch_size * process_count, train_split, seq_len)
  order_seed = seed if shuffle else None
  if kind == 'prepared':
    # One group = one batch: a single batched ArrayRecord read per batch.
    batches = ShuffledGroups(_ReadChunks(src), len(src), batch_size, seed=order_seed,
                             process_index=process_index, process_count=process_count,
                             layout='blocked')
    ids = grain.MapDataset.source(batches).map(_as_batch).to_iter_dataset(_read_options(config))
  else:
    groups = ShuffledGroups(_ReadDocuments(src), len(src), DOCS_PER_GROUP, seed=order_seed,
                            process_index=process_index, process_count=process_count)
    ds = grain.MapDataset.source(groups).map(DocumentTokenizer(tokenizer))
    ids = ChunkIterDataset(ds.to_iter_dataset(_read_options(config)), seq_len)
    if shuffle and window > 1:
      ids = WindowShuffleIterDataset(ids, window, derive_seed(_data(config, 'seed', 0), 'window'))
    ids = ids.batch(batch_size, drop_remainder=True).map(_as_batch)
  if num_workers > 0:
    # grain's worker processes read absl flags; outside an absl app (tests,
    # notebooks) they are unparsed, so take their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(1, prefetch)))
  elif prefetch > 0:
    ids = grain.experimental.ThreadPrefetchIterDataset(ids, prefetch_buffer_size=prefetch)
  signature = {
      'version': _STATE_VERSION, 'source': source, 'seq_len': seq_len,
      'batch_size': int(batch_size), 'process_index': int(process_index),
      'process_count': int(process_count), 'seed': int(_data(config, 'seed', 0)),
      'shuffle': shuffle, 'num_workers': num_workers,
      'shuffle_window': window if kind == 'documents' else 0,
      'docs_per_group': DOCS_PER_GROUP if kind == 'documents' else 0,
      'num_items': len(src),
  }
  return _TrainIterator(iter(ids), signature)


def _warn_if_smaller_than_a_batch(num_chunks: int, global_batch: int, split: str,
                                  seq_len: int) -> None:
  if num_chunks < global_batch:
    log.warning('The %r split holds only %d chunk(s) of data.seq_len=%d tokens, fewer than one '
                'batch of %d: every batch repeats the same chunks. Add text, or lower '
                'data.seq_len or train.batch_size.', split, num_chunks, seq_len, global_batch)


def _as_batch(tokens_BL: np.ndarray) -> dict:
  return {'tokens': np.asarray(tokens_BL, np.int32)}


def get_iterator_state(it: grain.DatasetIterator) -> dict:
  """The iterator's state as plain JSON data (a JSON round trip is exact)."""
  state = it.get_state()
  try:
    return json.loads(json.dumps(state))
  except TypeError as e:
    raise DataError(f'The iterator state is not JSON-serialisable ({e}); use an iterator '
                    'from make_train_iterator.') from e


def set_iterator_state(it: grain.DatasetIterator, state: dict) -> None:
  """Restores a state from get_iterator_state: `it` continues exactly where it was."""
  it.set_state(state)


# --- Evaluation --------------------------------------------------------------------------


def make_eval_batches(config, tokenizer, num_batches: int, batch_size: int) -> list[np.ndarray]:
  """Deterministic validation batches: the first num_batches * batch_size chunks.

  Chunks come in corpus order (no shuffle) from `data.eval_split`, so every
  evaluation sees the same data. A split with fewer chunks is cycled (with a
  warning), which keeps the shapes the caller asked for.
  """
  if num_batches <= 0 or batch_size <= 0:
    raise ConfigError(f'num_batches={num_batches} and batch_size={batch_size} must be '
                      'positive.')
  need = num_batches * batch_size
  split = _data(config, 'eval_split')
  chunks = _take_chunks(config, tokenizer, split, need)
  if len(chunks) < need:
    log.warning('The %r split has only %d chunks of %d tokens; the %d eval batches of %d '
                'repeat them.', split, len(chunks), chunks.shape[1], num_batches, batch_size)
    chunks = np.concatenate([chunks] * math.ceil(need / len(chunks)))[:need]
  return [chunks[i * batch_size:(i + 1) * batch_size] for i in range(num_batches)]


def iter_train_chunks(config, tokenizer, num_chunks: int) -> np.ndarray:
  """A deterministic random sample of training chunks, (n, L) int32.

  For the encoder normalization statistics: a fixed shuffle (seed derived from
  data.seed) of the training split, so it does not depend on process count or
  batch size. n = num_chunks, or every chunk when the split has fewer (logged).
  """
  if num_chunks <= 0:
    raise ConfigError(f'num_chunks={num_chunks} must be positive.')
  seed = derive_seed(_data(config, 'seed', 0), 'normalization_sample')
  chunks = _take_chunks(config, tokenizer, _data(config, 'train_split'), num_chunks, seed)
  if len(chunks) < num_chunks:
    log.warning('The training split has only %d chunks; using all of them instead of %d.',
                len(chunks), num_chunks)
  return chunks


def decode_chunk(tokenizer, chunk_L: np.ndarray) -> str:
  """A chunk as text: the pieces between EOS separators decoded, one per line."""
  chunk_L = np.asarray(chunk_L)
  cuts = np.flatnonzero(chunk_L == tokenizer.eos_id)
  pieces = np.split(chunk_L, cuts)
  texts = []
  for i, piece in enumerate(pieces):
    ids = piece[1:] if i else piece  # Drop the EOS each later piece starts with.
    if ids.size:
      text = tokenizer.decode(ids.tolist()).strip()
      if text:
        texts.append(text)
  return '\n'.join(texts)


def load_reference_texts(config, tokenizer, num_texts: int) -> list[str]:
  """Held-out texts of about L tokens each, decoded (Gen. PPL / MAUVE references).

  The first num_texts chunks, in corpus order, of the reference split
  (`data.reference_split`; default 'reference' for brown, else
  `data.eval_split`), decoded with `decode_chunk`. Fewer are returned (with
  a warning) when the split is shorter: repeating references would bias MAUVE.
  """
  if num_texts <= 0:
    raise ConfigError(f'num_texts={num_texts} must be positive.')
  split = _reference_split(config)
  chunks = _take_chunks(config, tokenizer, split, num_texts)
  if len(chunks) < num_texts:
    log.warning('The %r split has only %d chunks; returning %d reference texts instead of %d.',
                split, len(chunks), len(chunks), num_texts)
  return [decode_chunk(tokenizer, c) for c in chunks]


def load_reference_chunks(config, tokenizer, num_chunks: int) -> np.ndarray:
  """The token chunks (k, L) behind `load_reference_texts` (continuation prompts)."""
  if num_chunks <= 0:
    raise ConfigError(f'num_chunks={num_chunks} must be positive.')
  split = _reference_split(config)
  chunks = np.asarray(_take_chunks(config, tokenizer, split, num_chunks))
  if len(chunks) < num_chunks:
    log.warning('The %r split has only %d chunks; using %d instead of %d.',
                split, len(chunks), len(chunks), num_chunks)
  return chunks

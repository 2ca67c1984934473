"""The prepare step: tokenize a corpus once into ArrayRecord chunk shards.

    python -m ldlm_jax.data.prepare --source files --path DIR \\
        --tokenizer minilm-l6 --seq_len 128 --out OUTDIR [--splits train,validation]

Layout of OUTDIR (the 'prepared' source reads it; `data.path` = OUTDIR):
  manifest.json                    what is below, and how it was made
  <split>-<shard:05d>.array_record one record = one chunk of L tokens

A record is the raw little-endian bytes of one chunk, uint16 when the
vocabulary fits (GPT-2's 50257 and BERT's 30522 do: half the disk and read
bandwidth), else int32; readers always return int32. One record per chunk is
what makes the training pipeline simple and exact: a global shuffle over all
chunks, per-process sharding and the iterator state are all plain indices.
Shards are written with `group_size:1` so every chunk is one independent
read (ArrayRecord's default groups of 65536 records would decompress a whole
group per random read).

The manifest records the tokenizer fingerprint, L, EOS id, vocab size, the
source, and per split the number of chunks, tokens, documents and skipped
documents. Loading checks it against the configured tokenizer and L, so data
made with another tokenizer or chunk length stops with one sentence instead of
training on the wrong ids.

Writing is atomic: everything goes into a temporary sibling directory that is
renamed to OUTDIR only when complete; an existing complete OUTDIR is kept
unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
import time
import uuid
from typing import Iterable, Mapping

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from ldlm_jax import cli
from ldlm_jax.data import sources
from ldlm_jax.data.chunking import StreamChunker
from ldlm_jax.data.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_NAME = 'manifest.json'
FORMAT_NAME = 'ldlm_jax.prepared'
FORMAT_VERSION = 1
# One record per group: random access per chunk. ArrayRecord's default
# compression on each record made Brown's uint16 chunks 1.2x smaller at
# L=1024 (no change at L=128) and read as fast as 'uncompressed'.
ARRAY_RECORD_OPTIONS = 'group_size:1'
_SHARD_BYTES = 256 << 20  # ~256 MiB per shard: many shards, few files.
_TOKENIZE_BATCH_CHARS = 4 << 20  # Text handed to one encode_batch call.


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype('<u2') if vocab_size <= 1 << 16 else np.dtype('<i4')


def shard_name(split: str, index: int) -> str:
  return f'{split}-{index:05d}.array_record'


# --- Writing ---------------------------------------------------------------------------


def _write_split(texts: Iterable[str | None], tokenizer, seq_len: int, tmp_dir: str,
                 split: str, records_per_shard: int) -> dict:
  """Tokenizes, chunks and writes one split; returns its manifest entry."""
  dtype = token_dtype(tokenizer.vocab_size)
  eos = int(tokenizer.eos_id)
  chunker = StreamChunker(seq_len)
  stats = dict(num_documents=0, skipped_documents=0, empty_documents=0,
               num_tokens=0, num_chunks=0)
  files: list[str] = []
  writer = None
  in_shard = 0
  last_log = time.time()

  def write_chunks(chunks_KL: np.ndarray):
    nonlocal writer, in_shard
    for chunk in chunks_KL:
      if writer is None or in_shard == records_per_shard:
        if writer is not None:
          writer.close()
        files.append(shard_name(split, len(files)))
        writer = ArrayRecordWriter(os.path.join(tmp_dir, files[-1]), ARRAY_RECORD_OPTIONS)
        in_shard = 0
      writer.write(chunk.astype(dtype).tobytes())
      in_shard += 1
    stats['num_chunks'] += len(chunks_KL)

  def flush(batch: list[str]):
    for ids in tokenizer.encode_batch(batch):
      if not ids:
        stats['empty_documents'] += 1
        continue
      stats['num_documents'] += 1
      stats['num_tokens'] += len(ids) + 1
      doc = np.empty(len(ids) + 1, np.int32)
      doc[:-1] = ids
      doc[-1] = eos
      write_chunks(chunker.add(doc))

  batch, batch_chars = [], 0
  try:
    for text in texts:
      if text is None:
        stats['skipped_documents'] += 1
        continue
      batch.append(text)
      batch_chars += len(text)
      if batch_chars >= _TOKENIZE_BATCH_CHARS or len(batch) >= 4096:
        flush(batch)
        batch, batch_chars = [], 0
        if time.time() - last_log > 30:
          log.info('prepare %s: %d documents, %d chunks so far', split,
                   stats['num_documents'], stats['num_chunks'])
          last_log = time.time()
    if batch:
      flush(batch)
  finally:
    if writer is not None:
      writer.close()
  stats['dropped_tokens'] = chunker.leftover
  if stats['skipped_documents']:
    log.warning('prepare %s: skipped %d document(s) whose bytes are not valid UTF-8.',
                split, stats['skipped_documents'])
  if stats['num_documents'] == 0:
    detail = (f' ({stats["skipped_documents"]} skipped as invalid UTF-8)'
              if stats['skipped_documents'] else '')
    raise DataError(f'The {split!r} split has no documents with text{detail}; '
                    'check data.path (--path) and data.text_field (--text_field).')
  if stats['num_chunks'] == 0:
    raise DataError(
        f'The {split!r} split has only {stats["num_tokens"]} tokens, fewer than one '
        f'chunk of seq_len={seq_len}; add text or lower data.seq_len.')
  stats['files'] = files
  return stats


def is_prepared_dataset(path: str) -> bool:
  """True if `path` holds a manifest this module wrote (the only folders --overwrite replaces)."""
  try:
    with open(os.path.join(path, MANIFEST_NAME), encoding='utf-8') as f:
      return json.load(f).get('format') == FORMAT_NAME
  except (OSError, ValueError, AttributeError):
    return False


def check_out_dir(out_dir: str, overwrite: bool) -> str:
  """The absolute output folder, or DataError if writing there would lose something."""
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DataError(f'--out {out_dir} is a file, not a directory; choose another --out.')
  if not os.path.exists(out_dir) or not os.listdir(out_dir):
    parent = os.path.dirname(out_dir)
    while parent and not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
      raise DataError(f'--out {out_dir} cannot be created: {parent} is a file, not a directory.')
    return out_dir
  ours = is_prepared_dataset(out_dir)
  if ours and not overwrite:
    raise DataError(f'{out_dir} already holds a prepared dataset; pass '
                    '--overwrite to replace it or choose another --out.')
  if not ours:
    # --overwrite replaces only what this step wrote: never a user's own folder.
    raise DataError(f'{out_dir} exists and is not a prepared dataset (no {MANIFEST_NAME} '
                    'written by ldlm_jax.data.prepare), so it is not replaced even with '
                    '--overwrite; nothing was deleted: remove it yourself or choose another --out.')
  return out_dir


def prepare_dataset(documents_by_split: Mapping[str, object], tokenizer, seq_len: int,
                    out_dir: str, *, source: Mapping, overwrite: bool = False,
                    records_per_shard: int = 0) -> dict:
  """Writes the prepared dataset to `out_dir` atomically; returns its manifest.

  Args:
    documents_by_split: split name -> a document source with `iter_texts()`
      (sources.FileDocuments / TfdsDocuments) or an iterable of texts.
    tokenizer: the frozen encoder's `TextTokenizer`.
    seq_len: L.
    out_dir: the output directory (must not hold a complete dataset unless
      `overwrite`).
    source: a JSON-serialisable description of where the text came from.
    overwrite: replace an existing complete dataset.
    records_per_shard: chunks per shard file (0 = ~256 MiB per shard).
  """
  if seq_len <= 0:
    raise DataError(f'seq_len must be positive (got {seq_len}).')
  out_dir = check_out_dir(out_dir, overwrite)
  dtype = token_dtype(tokenizer.vocab_size)
  records_per_shard = records_per_shard or max(1, _SHARD_BYTES // (seq_len * dtype.itemsize))
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp_dir = f'{out_dir}.incomplete-{uuid.uuid4().hex[:8]}'
  os.makedirs(tmp_dir)
  try:
    splits = {}
    for split, docs in documents_by_split.items():
      texts = docs.iter_texts() if hasattr(docs, 'iter_texts') else docs
      start = time.time()
      splits[split] = _write_split(texts, tokenizer, seq_len, tmp_dir, split,
                                   records_per_shard)
      log.info('prepare %s: %d chunks from %d documents in %.1fs', split,
               splits[split]['num_chunks'], splits[split]['num_documents'],
               time.time() - start)
    manifest = {
        'format': FORMAT_NAME,
        'version': FORMAT_VERSION,
        'seq_len': int(seq_len),
        'dtype': dtype.name,
        'eos_id': int(tokenizer.eos_id),
        'vocab_size': int(tokenizer.vocab_size),
        'tokenizer': {'fingerprint': tokenizer.fingerprint, 'source': str(tokenizer.source)},
        'source': dict(source),
        'array_record_options': ARRAY_RECORD_OPTIONS,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'splits': splits,
    }
    with open(os.path.join(tmp_dir, MANIFEST_NAME), 'w', encoding='utf-8') as f:
      json.dump(manifest, f, indent=2)
    _publish(tmp_dir, out_dir, overwrite)
  finally:
    if os.path.exists(tmp_dir):
      shutil.rmtree(tmp_dir, ignore_errors=True)
  return manifest


def _publish(tmp_dir: str, out_dir: str, overwrite: bool) -> None:
  """Renames the finished tmp_dir to out_dir (the one step a reader can observe)."""
  old = None
  if os.path.exists(out_dir):
    if not overwrite and os.listdir(out_dir):
      # Another process finished the same dataset first (shared caches): keep theirs.
      return
    old = f'{out_dir}.old-{uuid.uuid4().hex[:8]}'
    os.rename(out_dir, old)
  try:
    os.rename(tmp_dir, out_dir)
  except OSError:
    if not os.path.isfile(os.path.join(out_dir, MANIFEST_NAME)):
      raise
  if old:
    shutil.rmtree(old, ignore_errors=True)


# --- Reading ---------------------------------------------------------------------------


def read_manifest(path: str) -> dict:
  """The manifest of the prepared dataset at `path`."""
  if not path:
    raise DataError("data.path is empty; set it to a directory written by "
                    "`python -m ldlm_jax.data.prepare`.")
  manifest_path = os.path.join(path, MANIFEST_NAME)
  if not os.path.isdir(path):
    raise DataError(f'Prepared dataset {path!r} does not exist; run '
                    '`python -m ldlm_jax.data.prepare ... --out DIR` and set data.path to DIR.')
  if not os.path.isfile(manifest_path):
    raise DataError(f'{path!r} has no {MANIFEST_NAME}, so it is not (or not completely) '
                    'a prepared dataset; rerun `python -m ldlm_jax.data.prepare`.')
  try:
    with open(manifest_path, encoding='utf-8') as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f'{manifest_path} is not valid JSON ({e}); rerun the prepare step.') from e
  if manifest.get('format') != FORMAT_NAME or manifest.get('version') != FORMAT_VERSION:
    raise DataError(f'{manifest_path} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest; '
                    'rerun the prepare step with this version of ldlm_jax.')
  return manifest


def check_manifest(manifest: Mapping, tokenizer, seq_len: int, path: str) -> None:
  """Stops with one sentence if the data was made for another tokenizer or L."""
  fp = manifest['tokenizer']['fingerprint']
  if fp != tokenizer.fingerprint:
    raise DataError(
        f'Prepared dataset {path} was tokenized with another tokenizer (fingerprint '
        f'{fp}, from {manifest["tokenizer"]["source"]}) than the configured encoder\'s '
        f'({tokenizer.fingerprint}, from {tokenizer.source}); prepare the data again with '
        'this encoder\'s tokenizer or configure the matching encoder.')
  if int(manifest['seq_len']) != int(seq_len):
    raise DataError(
        f'Prepared dataset {path} has chunks of {manifest["seq_len"]} tokens but '
        f'data.seq_len is {seq_len}; set data.seq_len={manifest["seq_len"]} or '
        'prepare the data again with --seq_len.')


class PreparedSplit:
  """Random access to one split of a prepared dataset: `[i]` -> (L,) int32."""

  def __init__(self, path: str, split: str, tokenizer, seq_len: int):
    import grain  # noqa: PLC0415  (2 s; `python -m ldlm_jax.data.brown` prepares without it)
    self.path, self.split = path, split
    self.manifest = read_manifest(path)
    check_manifest(self.manifest, tokenizer, seq_len, path)
    if split not in self.manifest['splits']:
      raise DataError(f'Prepared dataset {path} has no split {split!r} (it has '
                      f'{sorted(self.manifest["splits"])}); set data.train_split / '
                      'data.eval_split, or prepare that split with --splits.')
    entry = self.manifest['splits'][split]
    files = [os.path.join(path, f) for f in entry['files']]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise DataError(f'Prepared dataset {path} is missing {missing[0]}; prepare it again.')
    self.dtype = np.dtype(self.manifest['dtype'])
    self.seq_len = int(seq_len)
    self.source = grain.sources.ArrayRecordDataSource(files)
    if len(self.source) != entry['num_chunks']:
      raise DataError(f'Prepared dataset {path} split {split!r} holds {len(self.source)} '
                      f'chunks but its manifest says {entry["num_chunks"]}; prepare it again.')

  def __len__(self) -> int:
    return len(self.source)

  def decode(self, record: bytes) -> np.ndarray:
    return np.frombuffer(record, self.dtype).astype(np.int32)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.decode(self.source[int(index)])


# --- CLI -------------------------------------------------------------------------------


def load_tokenizer_by_name(name: str):
  """A registry encoder name ('minilm-l6', 'gpt2', ...) or a local tokenizer/model dir."""
  from ldlm_jax.encoders import registry  # noqa: PLC0415  (jax/flax; preparing from a tokenizer dir needs neither)
  if os.path.isdir(os.path.expanduser(name)):
    return registry.load_encoder_tokenizer('local', os.path.expanduser(name))
  return registry.load_encoder_tokenizer(name, '')


def _default_file_splits(path: str) -> list[str]:
  """'train' plus every known split that has an entry of its own under `path`."""
  if not os.path.isdir(path):
    return ['train']
  entries = [e for e in os.listdir(path) if not e.startswith('.')]
  found = [s for s in sources.KNOWN_SPLIT_NAMES
           if s != 'train' and any(sources._is_named_for(e, s) for e in entries)]
  return ['train'] + found


def documents_for(source: str, split: str, *, path: str = '', text_field: str = 'text',
                  tfds_name: str = '', data_dir: str = '', train_split: str = 'train',
                  other_splits=()):
  """The document source of one split for 'files' or 'tfds'."""
  if source == 'files':
    files = sources.corpus_files(path, split, train_split=train_split,
                                 other_splits=other_splits)
    docs = sources.FileDocuments(files, text_field)
    if len(docs) == 0:
      raise DataError(f'The {split!r} split under {path!r} has no documents (every '
                      'file is empty); add text or fix data.path (--path).')
    return docs
  if source == 'tfds':
    return sources.TfdsDocuments(tfds_name, split, data_dir, text_field)
  raise DataError(f'Cannot prepare from source {source!r}; use files or tfds.')


@cli.user_errors_exit_2
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m ldlm_jax.data.prepare',
      description='Tokenize a corpus once into ArrayRecord chunks of L tokens '
                  '(read back with data.source=prepared, data.path=OUT).')
  parser.add_argument('--source', choices=('files', 'tfds'), default='files',
                      help='files: a directory or file of .txt/.jsonl/.parquet; '
                           'tfds: a TFDS dataset prepared locally.')
  parser.add_argument('--path', default='', help="Directory or file for --source files.")
  parser.add_argument('--tfds_name', default='lm1b', help='TFDS dataset for --source tfds.')
  parser.add_argument('--data_dir', default='', help="TFDS data_dir ('' = TFDS default).")
  parser.add_argument('--text_field', default='text', help='JSONL/parquet/TFDS text field.')
  parser.add_argument('--tokenizer', required=True,
                      help='Encoder name (minilm-l6, gpt2, ...) or a local tokenizer/model directory.')
  parser.add_argument('--seq_len', type=int, required=True, help='L: tokens per chunk.')
  parser.add_argument('--out', required=True, help='Output directory (written atomically).')
  parser.add_argument('--splits', default='',
                      help="Comma-separated splits (default: files: train plus any "
                           "validation/test/reference entries; tfds: all splits).")
  parser.add_argument('--overwrite', action='store_true', help='Replace an existing OUT.')
  parser.add_argument('--records_per_shard', type=int, default=0,
                      help='Chunks per shard file (0 = about 256 MiB per shard).')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  # Numbers and the output folder first: nothing is read or tokenized for a refused run.
  if args.seq_len <= 0:
    raise DataError(f'--seq_len must be >= 1 (got {args.seq_len}).')
  if args.records_per_shard < 0:
    raise DataError(f'--records_per_shard must be >= 0 (got {args.records_per_shard}; 0 = auto).')
  check_out_dir(args.out, args.overwrite)
  tokenizer = load_tokenizer_by_name(args.tokenizer)
  if args.splits:
    splits = [s.strip() for s in args.splits.split(',') if s.strip()]
  elif args.source == 'files':
    splits = _default_file_splits(args.path)
  else:
    # Opening the train split validates the dataset and gives its split list.
    sources.open_tfds_source(args.tfds_name, 'train', args.data_dir, args.text_field)
    import tensorflow_datasets as tfds
    splits = sorted(tfds.builder(args.tfds_name, data_dir=args.data_dir or None).info.splits)
  docs = {s: documents_for(args.source, s, path=args.path, text_field=args.text_field,
                           tfds_name=args.tfds_name, data_dir=args.data_dir,
                           other_splits=splits)
          for s in splits}
  if args.source == 'files':
    description = {'kind': 'files', 'path': os.path.abspath(args.path),
                   'text_field': args.text_field}
  else:
    description = {'kind': 'tfds', 'name': args.tfds_name, 'data_dir': args.data_dir,
                   'text_field': args.text_field}
  manifest = prepare_dataset(docs, tokenizer, args.seq_len, args.out, source=description,
                             overwrite=args.overwrite,
                             records_per_shard=args.records_per_shard)
  for split, entry in manifest['splits'].items():
    print(f'{split}: {entry["num_chunks"]} chunks of {args.seq_len} tokens from '
          f'{entry["num_documents"]} documents ({entry["num_tokens"]} tokens, '
          f'{entry["skipped_documents"]} skipped, {entry["dropped_tokens"]} dropped at the end)')
  print(f'wrote {os.path.abspath(args.out)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

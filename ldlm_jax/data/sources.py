"""Random-access document sources: local text files and TFDS datasets.

A document source is a sequence of raw documents (`len(src)`, `src[i]`) that
grain can shuffle and shard by index; chunking into L-token pieces happens
later (`chunking.py`). `src[i]` is the document text, or `None` when its bytes
are not valid UTF-8: such a document is skipped (and counted) rather than
stopping a long run, because one corrupt file in a large crawl should not cost
a day of preparation; the count lands in the prepared manifest and the log.
Structural problems (a JSON line that does not parse, a missing text field)
do stop, with the file and line: they mean the configuration or the file type
is wrong, and skipping them would silently train on an empty corpus.

Local files ('files' source):
  * `.txt`: one file = one document. Blank-line paragraphs stay inside the
    document as paragraph breaks; splitting them into documents would put an
    EOS between every paragraph of a book. One-sentence-per-line corpora
    (LM1B-like) should be written as .jsonl, one object per document.
  * `.jsonl`: one JSON object per non-blank line; text in `data.text_field`.
  * `.parquet`: column `data.text_field` (string or UTF-8 binary), read with
    pyarrow one row group at a time.
A directory is searched recursively (hidden entries ignored) in sorted order.
Splits: `PATH/<split>/`, `PATH/<split>.<ext>` or `PATH/<split>-*.<ext>` /
`PATH/<split>_*.<ext>` (the Hugging Face shard naming) select a split; when
none exists for the training split, the whole path minus the entries named
for other splits is the training corpus.

TFDS ('tfds' source): `tfds.builder(...).as_data_source(split)` over the
ArrayRecord files of a dataset prepared beforehand; nothing is downloaded.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from typing import Iterator, Sequence

import numpy as np

from ldlm_jax.data.errors import DataError

TEXT_EXTENSIONS = ('.txt', '.jsonl', '.parquet')
# Names treated as split names when deciding what belongs to the training
# split of a directory that has no `train` entry of its own.
KNOWN_SPLIT_NAMES = ('train', 'validation', 'valid', 'dev', 'test', 'reference')

_KIND_TXT, _KIND_JSONL, _KIND_PARQUET = 0, 1, 2
_KIND_BY_EXT = {'.txt': _KIND_TXT, '.jsonl': _KIND_JSONL, '.parquet': _KIND_PARQUET}


def _ext(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def _walk_text_files(path: str) -> list[str]:
  """Supported files under `path` (a file or a directory), sorted, recursive."""
  if os.path.isfile(path):
    return [path] if _ext(path) in TEXT_EXTENSIONS else []
  found = []
  for root, dirs, files in os.walk(path, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if not name.startswith('.') and _ext(name) in TEXT_EXTENSIONS:
        found.append(os.path.join(root, name))
  return found


def _is_named_for(entry: str, split: str) -> bool:
  """Whether a directory entry name belongs to `split` (train, train.jsonl, train-0001.parquet)."""
  if entry == split:
    return True
  stem = entry
  if _ext(entry) in TEXT_EXTENSIONS:
    stem = entry[: -len(_ext(entry))]
  if stem == split:
    return True
  return any(stem.startswith(split + sep) for sep in ('-', '_'))


def corpus_files(path: str, split: str, *, train_split: str = 'train',
                 other_splits: Sequence[str] = ()) -> list[str]:
  """The text files of `split` under `path` (see the module docstring).

  Args:
    path: a file or a directory.
    split: the split wanted.
    train_split: the name of the training split; only it may fall back to
      "everything under path".
    other_splits: further split names (besides KNOWN_SPLIT_NAMES) whose
      entries are excluded from that fallback.
  Raises:
    DataError: the path is missing, or the split has no files.
  """
  if not path:
    raise DataError('data.path (--path) is empty; set it to a directory or file of '
                    '.txt / .jsonl / .parquet documents.')
  if not os.path.exists(path):
    raise DataError(f'Data path {path!r} does not exist; set data.path (--path) to a '
                    'directory or file of .txt / .jsonl / .parquet documents.')
  if os.path.isfile(path):
    if _ext(path) not in TEXT_EXTENSIONS:
      raise DataError(f'{path!r} is not a .txt, .jsonl or .parquet file; point '
                      'data.path (--path) at one of those or at a directory of them.')
    if split != train_split:
      raise DataError(f'{path!r} is a single file, so it has no {split!r} split; '
                      f'point data.path (--path) at a directory with a {split}/ folder '
                      f'or {split}.jsonl file, or change the split name.')
    return [path]
  entries = sorted(e for e in os.listdir(path) if not e.startswith('.'))
  named = [e for e in entries if _is_named_for(e, split)]
  if named:
    files = []
    for e in named:
      files.extend(_walk_text_files(os.path.join(path, e)))
  elif split == train_split:
    excluded = set(KNOWN_SPLIT_NAMES) | set(other_splits)
    excluded.discard(train_split)
    keep = [e for e in entries if not any(_is_named_for(e, s) for s in excluded)]
    files = []
    for e in keep:
      files.extend(_walk_text_files(os.path.join(path, e)))
  else:
    raise DataError(f'{path!r} has no {split!r} split; add {split}/ or '
                    f'{split}.jsonl inside it, or set the split name '
                    '(data.eval_split) to one that exists.')
  if not files:
    raise DataError(f'No .txt, .jsonl or .parquet files for split {split!r} '
                    f'under {path!r}; add documents there or fix data.path (--path).')
  return files


def _jsonl_line_spans(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Byte (start, end) of every non-blank line, found with numpy (about 1 GB/s)."""
  starts, ends = [], []
  offset = 0
  carry_start = 0
  block_size = 1 << 26
  with open(path, 'rb') as f:
    while True:
      block = f.read(block_size)
      if not block:
        break
      newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + offset
      if newlines.size:
        line_starts = np.concatenate([[carry_start], newlines[:-1] + 1])
        starts.append(line_starts)
        ends.append(newlines)
        carry_start = int(newlines[-1]) + 1
      offset += len(block)
  if carry_start < offset:  # Last line without a trailing newline.
    starts.append(np.array([carry_start]))
    ends.append(np.array([offset]))
  if not starts:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  s = np.concatenate(starts).astype(np.int64)
  e = np.concatenate(ends).astype(np.int64)
  # Lines of at most one byte ('' or '\r') are blank; longer whitespace-only
  # lines are caught at read time and yield an empty document.
  keep = (e - s) > 1
  return s[keep], e[keep]


class FileDocuments:
  """Documents of local .txt / .jsonl / .parquet files, by index.

  The index (file, offset or row) is built once at construction; file handles
  and parquet row groups are opened lazily per process, so the object pickles
  cheaply into grain workers.
  """

  def __init__(self, files: Sequence[str], text_field: str = 'text'):
    self.files = [os.fspath(f) for f in files]
    self.text_field = text_field
    file_ids, starts, ends = [], [], []
    for fid, path in enumerate(self.files):
      kind = _KIND_BY_EXT[_ext(path)]
      if kind == _KIND_TXT:
        if os.path.getsize(path) == 0:
          continue
        s, e = np.array([0]), np.array([os.path.getsize(path)])
      elif kind == _KIND_JSONL:
        s, e = _jsonl_line_spans(path)
        if s.size:
          self._check_jsonl_first_line(path, int(s[0]), int(e[0]))
      else:
        s, e = self._parquet_rows(path)
      file_ids.append(np.full(s.shape, fid, np.int32))
      starts.append(s)
      ends.append(e)
    if file_ids:
      self._file_ids = np.concatenate(file_ids)
      self._starts = np.concatenate(starts).astype(np.int64)
      self._ends = np.concatenate(ends).astype(np.int64)
    else:
      self._file_ids = np.zeros(0, np.int32)
      self._starts = self._ends = np.zeros(0, np.int64)
    self._local = threading.local()

  # For txt and jsonl, (start, end) are byte offsets; for parquet they are
  # (row group, row within the group).
  def _parquet_rows(self, path):
    import pyarrow.parquet as pq
    try:
      pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for bad files.
      raise DataError(f'{path!r} is not a readable parquet file ({e}); fix or '
                      'remove it.') from e
    if self.text_field not in pf.schema_arrow.names:
      raise DataError(f'{path!r} has no column {self.text_field!r} (columns: '
                      f'{pf.schema_arrow.names}); set data.text_field (--text_field).')
    groups, rows = [], []
    for rg in range(pf.metadata.num_row_groups):
      n = pf.metadata.row_group(rg).num_rows
      groups.append(np.full(n, rg, np.int64))
      rows.append(np.arange(n, dtype=np.int64))
    if not groups:
      return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(groups), np.concatenate(rows)

  def _check_jsonl_first_line(self, path, start, end):
    """Fails at construction (not hours later) on a wrong text_field or file type."""
    with open(path, 'rb') as f:
      f.seek(start)
      raw = f.read(end - start)
    try:
      self._text_from_json(raw.decode('utf-8'), path, start)
    except UnicodeDecodeError:
      pass  # An undecodable line is skipped like any other.

  def __len__(self) -> int:
    return int(self._file_ids.size)

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop('_local')
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def _handle(self, fid: int):
    handles = getattr(self._local, 'handles', None)
    if handles is None:
      handles = self._local.handles = {}
    if fid not in handles:
      if len(handles) >= 64:  # Bound open files on corpora of many shards.
        handles.pop(next(iter(handles))).close()
      handles[fid] = open(self.files[fid], 'rb')
    return handles[fid]

  def _row_group(self, fid: int, rg: int) -> list:
    cache = getattr(self._local, 'row_groups', None)
    if cache is None:
      cache = self._local.row_groups = collections.OrderedDict()
    key = (fid, rg)
    if key not in cache:
      import pyarrow.parquet as pq
      table = pq.ParquetFile(self.files[fid]).read_row_group(rg, columns=[self.text_field])
      cache[key] = table.column(0).to_pylist()
      while len(cache) > 2:
        cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]

  def _line_number(self, path: str, byte_offset: int) -> int:
    with open(path, 'rb') as f:
      return f.read(byte_offset).count(b'\n') + 1

  def _text_from_json(self, line: str, path: str, start: int) -> str:
    if not line.strip():
      return ''
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f'{path}:{self._line_number(path, start)} is not valid JSON '
                      f'({e.msg}); fix the line or remove it.') from e
    if not isinstance(obj, dict) or self.text_field not in obj:
      keys = list(obj) if isinstance(obj, dict) else type(obj).__name__
      raise DataError(f'{path}:{self._line_number(path, start)} has no field '
                      f'{self.text_field!r} (found {keys}); set data.text_field (--text_field).')
    text = obj[self.text_field]
    if text is None:
      return ''
    if not isinstance(text, str):
      raise DataError(f'{path}:{self._line_number(path, start)} field '
                      f'{self.text_field!r} is a {type(text).__name__}, not text; '
                      'set data.text_field (--text_field) to a string field.')
    return text

  @staticmethod
  def _decode_value(value) -> str | None:
    if value is None:
      return ''
    if isinstance(value, bytes):
      try:
        return value.decode('utf-8')
      except UnicodeDecodeError:
        return None
    return str(value)

  def __getitem__(self, index: int) -> str | None:
    """The text of document `index`, or None if its bytes are not UTF-8."""
    fid = int(self._file_ids[index])
    start, end = int(self._starts[index]), int(self._ends[index])
    path = self.files[fid]
    kind = _KIND_BY_EXT[_ext(path)]
    if kind == _KIND_PARQUET:
      return self._decode_value(self._row_group(fid, start)[end])
    f = self._handle(fid)
    f.seek(start)
    raw = f.read(end - start)
    try:
      text = raw.decode('utf-8-sig' if start == 0 else 'utf-8')
    except UnicodeDecodeError:
      return None
    if kind == _KIND_TXT:
      return text
    return self._text_from_json(text, path, start)

  def iter_texts(self) -> Iterator[str | None]:
    """All documents in index order, read sequentially (the fast path for prepare)."""
    import pyarrow.parquet as pq
    n = len(self)
    i = 0
    while i < n:
      fid = int(self._file_ids[i])
      path = self.files[fid]
      kind = _KIND_BY_EXT[_ext(path)]
      j = i
      while j < n and self._file_ids[j] == fid:
        j += 1
      if kind == _KIND_PARQUET:
        pf = pq.ParquetFile(path)
        rg_wanted = self._starts[i:j]
        for rg in np.unique(rg_wanted):
          values = pf.read_row_group(int(rg), columns=[self.text_field]).column(0).to_pylist()
          for v in values:
            yield self._decode_value(v)
      else:
        # Sequential seeks in one buffered handle: constant memory on large files.
        with open(path, 'rb', buffering=1 << 20) as f:
          for k in range(i, j):
            s, e = int(self._starts[k]), int(self._ends[k])
            f.seek(s)
            raw = f.read(e - s)
            try:
              text = raw.decode('utf-8-sig' if s == 0 else 'utf-8')
            except UnicodeDecodeError:
              yield None
              continue
            yield text if kind == _KIND_TXT else self._text_from_json(text, path, s)
      i = j


class TfdsDocuments:
  """Documents of a locally prepared TFDS dataset (ArrayRecord), by index."""

  def __init__(self, name: str, split: str, data_dir: str = '', text_field: str = 'text'):
    self.name, self.split, self.text_field = name, split, text_field
    self._source = open_tfds_source(name, split, data_dir, text_field)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str | None:
    return FileDocuments._decode_value(self._source[int(index)][self.text_field])

  def iter_texts(self) -> Iterator[str | None]:
    for i in range(len(self)):
      yield self[i]


def open_tfds_source(name: str, split: str, data_dir: str, text_field: str):
  """`tfds` random-access source for a prepared dataset; never downloads.

  Every check below reads local metadata only, so a dataset that is missing
  fails in about a second instead of attempting a download.
  """
  # Imported here: TFDS costs ~0.5 s to import and only this source needs it.
  import tensorflow_datasets as tfds
  where = data_dir or '(the TFDS default data_dir)'
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(f'TFDS has no dataset {name!r} and none is prepared under '
                    f'{where}; check data.tfds_name and data.data_dir.') from e
  if not builder.is_prepared():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared under {where} and this project '
        'never downloads; prepare it once where there is network access '
        f'(`tfds build {name} --file_format=array_record --data_dir DIR`) and '
        'set data.data_dir to DIR.')
  fmt = getattr(builder.info.file_format, 'value', str(builder.info.file_format))
  if fmt not in ('array_record', 'parquet'):
    raise DataError(
        f'TFDS dataset {name!r} under {builder.data_dir} is stored as {fmt}, which '
        f'has no random access; rebuild it with `tfds build {name} '
        '--file_format=array_record`.')
  if split not in builder.info.splits:
    raise DataError(f'TFDS dataset {name!r} has no split {split!r} (it has '
                    f'{sorted(builder.info.splits)}); set data.train_split / '
                    'data.eval_split.')
  features = getattr(builder.info.features, 'keys', lambda: [])()
  if features and text_field not in features:
    raise DataError(f'TFDS dataset {name!r} has no feature {text_field!r} (it has '
                    f'{sorted(features)}); set data.text_field (--text_field).')
  return builder.as_data_source(split=split)

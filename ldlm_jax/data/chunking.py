"""The MDLM chunking protocol: documents -> one token stream -> L-token chunks.

Every document is tokenized without special tokens and followed by exactly one
EOS (`tokenizer.eos_id`); the documents are concatenated in order into one
stream and cut into consecutive chunks of L tokens. There is no padding: a
chunk may start or end in the middle of a document, and the final partial
chunk of a finite stream is dropped. Documents that are undecodable or
tokenize to nothing are skipped entirely (no lone EOS).

Three forms of the same rule:
  * `chunk_documents`: a pure function, the reference the tests check by hand.
  * `StreamChunker`: streaming, for the prepare step (bounded memory).
  * `ChunkIterDataset`: a grain `IterDataset` for on-the-fly pipelines, with
    an exact, small checkpoint state (the parent's state before the current
    document plus an offset into it; no tokens are stored in the state).
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable, Sequence

import grain
import numpy as np

log = logging.getLogger(__name__)


class DocumentTokenizer:
  """text -> int32 tokens followed by one EOS; empty for skipped documents.

  Called with a list of texts (a group of consecutive documents) it returns
  their token streams concatenated, from one `encode_batch` call: grouping
  keeps the stream identical while paying grain's per-element overhead (and
  the reader-thread hand-off, ~1 ms under load) once per group instead of once
  per document, which dominates for sentence-sized documents such as LM1B's.
  A picklable callable for `MapDataset.map`, so grain worker processes each get
  their own copy of the tokenizer.
  """

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.eos_id = int(tokenizer.eos_id)
    self._skipped = 0

  def _note_skipped(self) -> None:
    self._skipped += 1
    if self._skipped <= 10 or self._skipped % 1000 == 0:
      log.warning('Skipped %d document(s) whose bytes are not valid UTF-8.', self._skipped)

  def __call__(self, text: str | None | list) -> np.ndarray:
    if isinstance(text, list):
      return self._group(text)
    if text is None:  # Bytes that are not UTF-8 (see sources.py).
      self._note_skipped()
      return np.zeros(0, np.int32)
    ids = self.tokenizer.encode(text)
    if not ids:
      return np.zeros(0, np.int32)
    out = np.empty(len(ids) + 1, np.int32)
    out[:-1] = ids
    out[-1] = self.eos_id
    return out

  def _group(self, texts: list) -> np.ndarray:
    """Concatenated tokens + EOS of the decodable, non-empty texts, in order."""
    valid = [t for t in texts if t is not None]
    for _ in range(len(texts) - len(valid)):
      self._note_skipped()
    pieces = []
    for ids in (self.tokenizer.encode_batch(valid) if valid else []):
      if ids:
        pieces.append(ids)
        pieces.append([self.eos_id])
    if not pieces:
      return np.zeros(0, np.int32)
    return np.fromiter(itertools.chain.from_iterable(pieces), np.int32)


def chunk_documents(docs_tokens: Iterable[Sequence[int]], seq_len: int,
                    eos_id: int) -> np.ndarray:
  """Chunks (n, seq_len) int32 of documents given WITHOUT their EOS.

  Empty documents are skipped (no EOS); the last partial chunk is dropped.
  """
  stream = []
  for doc in docs_tokens:
    if len(doc):
      stream.extend(int(t) for t in doc)
      stream.append(int(eos_id))
  n = len(stream) // seq_len
  return np.asarray(stream[: n * seq_len], np.int32).reshape(n, seq_len)


class StreamChunker:
  """Streaming concatenate-and-cut: feed documents (with EOS), get full chunks."""

  def __init__(self, seq_len: int):
    self.seq_len = int(seq_len)
    self._pending: list[np.ndarray] = []
    self._pending_len = 0

  @property
  def leftover(self) -> int:
    """Tokens waiting for the next chunk (dropped if the stream ends now)."""
    return self._pending_len

  def add(self, doc_with_eos: np.ndarray) -> np.ndarray:
    """Adds one document; returns the chunks it completed, (k, seq_len) int32."""
    if doc_with_eos.size == 0:
      return np.zeros((0, self.seq_len), np.int32)
    self._pending.append(np.asarray(doc_with_eos, np.int32))
    self._pending_len += doc_with_eos.size
    n = self._pending_len // self.seq_len
    if n == 0:
      return np.zeros((0, self.seq_len), np.int32)
    stream = np.concatenate(self._pending)
    cut = n * self.seq_len
    rest = stream[cut:]
    self._pending = [rest] if rest.size else []
    self._pending_len = rest.size
    return stream[:cut].reshape(n, self.seq_len)


class _ChunkDatasetIterator(grain.DatasetIterator):
  """Concatenates the parent's token arrays and yields (L,) int32 chunks.

  A parent element is the tokens of one document or of a group of documents
  (each followed by its EOS); the cut ignores where they came from.

  State: `parent` is the parent state just before the element that holds the
  next chunk's first token and `offset` the position of that token in it; on
  restore that one element is read again. StopIteration of the parent drops
  the partial chunk in progress, as the protocol requires.
  """

  def __init__(self, parent: grain.DatasetIterator, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len
    self._doc = np.zeros(0, np.int32)
    self._pos = 0
    self._doc_state = self._parent.get_state()

  def _next_document(self) -> None:
    """Loads the next non-empty document (raises StopIteration at the end)."""
    while True:
      state = self._parent.get_state()
      doc = next(self._parent)
      if doc.size:
        self._doc_state, self._doc, self._pos = state, doc, 0
        return

  def __next__(self) -> np.ndarray:
    need = self._seq_len
    if self._doc.size - self._pos >= need:  # Fast path: inside one document.
      out = self._doc[self._pos: self._pos + need]
      self._pos += need
      return out
    pieces = []
    while need:
      if self._pos == self._doc.size:
        self._next_document()
      take = min(need, self._doc.size - self._pos)
      pieces.append(self._doc[self._pos: self._pos + take])
      self._pos += take
      need -= take
    return np.concatenate(pieces)

  def get_state(self) -> dict:
    if self._pos == self._doc.size:  # Nothing buffered: resume at the parent.
      return {'parent': self._parent.get_state(), 'offset': 0}
    return {'parent': self._doc_state, 'offset': int(self._pos)}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._doc = np.zeros(0, np.int32)
    self._pos = 0
    if state['offset']:
      self._next_document()
      self._pos = int(state['offset'])


class ChunkIterDataset(grain.IterDataset):
  """grain IterDataset: token arrays (each ending in EOS) -> (seq_len,) int32 chunks."""

  def __init__(self, parent: grain.IterDataset, seq_len: int):
    super().__init__(parent)
    self._seq_len = int(seq_len)

  def __iter__(self) -> _ChunkDatasetIterator:
    return _ChunkDatasetIterator(self._parent.__iter__(), self._seq_len)

  def __str__(self) -> str:
    return f'ChunkIterDataset(seq_len={self._seq_len})'

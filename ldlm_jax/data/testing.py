"""A transparent tokenizer for exact data tests: the text "5 7 9" is tokens [5, 7, 9].

With it a test can write documents whose token ids are known by eye, so the
expected chunks (EOS placement, no padding, dropped tail) are computed by hand
rather than by the code under test. It has the `TextTokenizer` interface the
data package uses (encode, encode_batch, decode, eos_id, vocab_size,
fingerprint, source).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence


class NumberTokenizer:
  """Whitespace-separated integers are the token ids; `eos_id` is the separator."""

  def __init__(self, eos_id: int = 0, vocab_size: int = 1000):
    self.eos_id = int(eos_id)
    self.vocab_size = int(vocab_size)
    self.source = f'NumberTokenizer(eos_id={eos_id}, vocab_size={vocab_size})'

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(self.source.encode()).hexdigest()[:16]

  def encode(self, text: str) -> list[int]:
    return [int(w) for w in text.split()]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Iterable[int], stop_at_eos: bool = False) -> str:
    ids = [int(i) for i in ids]
    if stop_at_eos and self.eos_id in ids:
      ids = ids[: ids.index(self.eos_id)]
    return ' '.join(str(i) for i in ids)

  def decode_batch(self, batch, stop_at_eos: bool = False) -> list[str]:
    return [self.decode(ids, stop_at_eos) for ids in batch]

"""Files written whole or not at all.

Every run file (config.json, metrics.jsonl, samples, evaluation results,
benchmark JSON, plots) is written to a hidden temporary file beside its
target and renamed into place, so a reader or an interrupted process never
sees half a file and an older complete file is replaced only by a complete
new one. The temporary file is removed if writing fails. It is opened with
`open`, so the final file gets the usual umask permissions.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterable, Iterator, IO


@contextlib.contextmanager
def atomic_open(path: str, binary: bool = False) -> Iterator[IO]:
  """Yields a file to write; on a clean exit it becomes `path` in one rename."""
  path = os.fspath(path)
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                     f'.{os.path.basename(path)}.{os.getpid()}.tmp')
  try:
    with (open(tmp, 'wb') if binary else open(tmp, 'w', encoding='utf-8')) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def write_jsonl(path: str, records: Iterable[dict]) -> None:
  """One JSON object per line."""
  with atomic_open(path) as f:
    for record in records:
      f.write(json.dumps(record) + '\n')

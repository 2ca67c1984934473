"""A training run that is refused (config or data error) leaves the work directory as it was.

The trainer creates folders and files as it sets up (checkpoints/, TensorBoard events,
normalization statistics) before every check has run: some checks need the encoder or
the data. Rather than ordering every check before every write, the command line takes a
listing of the work directory first and, if the run is refused before it wrote a new
checkpoint step, removes what appeared since. Files that existed are never touched, and a
run that did write a checkpoint keeps everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from ldlm_jax.training.checkpoint import DAMAGED_DIR


def _listing(workdir: str) -> set[str] | None:
  if not os.path.isdir(workdir):
    return None
  out = set()
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      out.add(os.path.relpath(os.path.join(root, name), workdir))
  return out


def _steps(listing) -> set[str]:
  return {p for p in listing or () if p.startswith('checkpoints' + os.sep) and
          p.count(os.sep) == 1 and p.rsplit(os.sep, 1)[1].isdigit()}


def remove_new_files(workdir: str, before: set[str] | None) -> None:
  after = _listing(workdir)
  if after is None or _steps(after) - _steps(before):
    return  # nothing there, or a new checkpoint: keep everything
  if before is None:
    shutil.rmtree(workdir, ignore_errors=True)
    return
  # Deepest first, so a new folder is empty (or gone) when its turn comes.
  for rel in sorted(after - before, key=lambda p: p.count(os.sep), reverse=True):
    if rel.split(os.sep, 1)[0] == DAMAGED_DIR:
      continue  # a damaged checkpoint set aside for inspection is kept
    path = os.path.join(workdir, rel)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
      os.remove(path)


@contextlib.contextmanager
def undone_if_refused(workdir: str, errors: tuple, enabled: bool = True):
  """Removes what appeared in `workdir` if the block raises one of `errors` before a new checkpoint."""
  before = _listing(workdir) if enabled else None
  try:
    yield
  except errors:
    if enabled:
      remove_new_files(workdir, before)
    raise

"""Seeded shuffling for the pipelines: per-epoch global orders and a chunk window.

Why not grain's own `MapDataset.shuffle` / `WindowShuffleIterDataset`: both
call grain's `index_shuffle` once per element, which measured 0.05-0.6 ms a
call on this machine, i.e. a ceiling of a few thousand elements per second
per process (LM1B has 30M sentence documents). Here one numpy permutation per
epoch (or per window) is computed once and indexed in bulk.

Orders use numpy's legacy `RandomState`, whose stream numpy keeps fixed across
versions (NEP 19), so a checkpoint resumes into the same order after an
upgrade. A permutation is stored as uint32 (4 bytes per item: 120 MB for
LM1B's 30M documents, 36 MB for OpenWebText's 9M chunks of 1024).
"""

from __future__ import annotations

import math
import sys
import threading
import zlib
from typing import Any, Callable

import grain
import numpy as np


def derive_seed(seed: int, purpose: str) -> int:
  """A 32-bit seed for `purpose` (e.g. 'train', 'epoch/3'), mixed from data.seed."""
  entropy = [int(seed) % (1 << 32), zlib.crc32(purpose.encode())]
  return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def permutation(seed: int, purpose: str, n: int) -> np.ndarray:
  """A permutation of range(n), fixed by (seed, purpose)."""
  perm = np.random.RandomState(derive_seed(seed, purpose)).permutation(n)
  return perm.astype(np.uint32) if n <= np.iinfo(np.uint32).max else perm


class ShuffledGroups:
  """Random access to this process's groups of a shuffled stream of items.

  The global stream is the epochs one after another, epoch e being the n
  items in the order permutation(seed, 'epoch/e') (or in order when seed is
  None); position g of the stream is item perm_{g // n}[g % n]. Two layouts
  split it over P processes, both disjoint within every epoch and covering it
  together:
    'blocked' (batches of chunks): the stream is cut into global groups of
      P * group_size positions and process p takes the p-th contiguous block
      of each, i.e. its group i is positions (i * P + p) * group_size + j.
      The processes' groups i side by side in process order are exactly the
      single-process group i of size P * group_size, so a multi-host global
      batch equals the one-host batch.
    'interleaved' (groups of documents for on-the-fly tokenization): process
      p takes positions g = p (mod P), group i being (i * group_size + j) * P
      + p; this keeps every process inside the same epoch even when a group
      of documents is large compared with the corpus.
  `read_group(indices)` turns a group's item indices into the element (one
  batched read of chunks, or a list of documents).

  endless=False gives one pass over the first epoch (the last group may be
  shorter); endless=True has length sys.maxsize and never ends.
  """

  def __init__(self, read_group: Callable[[np.ndarray], Any], num_items: int, group_size: int,
               *, seed: int | None = None, process_index: int = 0, process_count: int = 1,
               endless: bool = True, layout: str = 'interleaved'):
    if layout not in ('blocked', 'interleaved'):
      raise ValueError(f'unknown layout {layout!r}')
    if num_items <= 0:
      raise ValueError('ShuffledGroups needs at least one item.')
    self.read_group = read_group
    self.num_items, self.group_size = int(num_items), int(group_size)
    self.seed = seed
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.endless = endless
    self.layout = layout
    self._offsets = np.arange(self.group_size, dtype=np.int64)
    self._perms: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    if self.endless:
      return sys.maxsize
    if self.layout == 'blocked':
      num_groups = math.ceil(self.num_items / self.group_size)
      return math.ceil(max(0, num_groups - self.process_index) / self.process_count)
    mine = math.ceil(max(0, self.num_items - self.process_index) / self.process_count)
    return math.ceil(mine / self.group_size)

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_perms'], state['_lock'] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The item order of `epoch`."""
    if self.seed is None:
      return np.arange(self.num_items, dtype=np.int64)
    with self._lock:  # grain reader threads share this object.
      perm = self._perms.get(epoch)
      if perm is None:
        perm = permutation(self.seed, f'epoch/{epoch}', self.num_items)
        # Keep the epochs reader threads may still be in; drop older ones.
        self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
        self._perms[epoch] = perm
      return perm

  def item_indices(self, group_index: int) -> np.ndarray:
    """The item indices of this process's group `group_index`."""
    if self.layout == 'blocked':
      positions = ((group_index * self.process_count + self.process_index) * self.group_size
                   + self._offsets)
    else:
      positions = ((group_index * self.group_size + self._offsets) * self.process_count
                   + self.process_index)
    if not self.endless:
      positions = positions[positions < self.num_items]
    epochs, within = np.divmod(positions, self.num_items)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
      mask = epochs == epoch
      out[mask] = self.epoch_order(int(epoch))[within[mask]]
    return out

  def __getitem__(self, group_index: int):
    if not self.endless and not 0 <= group_index < len(self):
      raise IndexError(group_index)
    return self.read_group(self.item_indices(int(group_index)))


class _WindowShuffleIterator(grain.DatasetIterator):
  """Reads `window` elements, yields them in a seeded order, repeats.

  State: the parent state at the start of the current window, the window's
  index (its order is permutation(seed, 'window/<index>')) and how many of it
  were returned; restoring reads that window again.
  """

  def __init__(self, parent: grain.DatasetIterator, window: int, seed: int):
    super().__init__(parent)
    self._window_size, self._seed = window, seed
    self._window: list = []
    self._order = np.zeros(0, np.int64)
    self._pos = 0
    self._next_window = 0
    self._start_state = self._parent.get_state()

  def _fill(self) -> None:
    self._start_state = self._parent.get_state()
    window = []
    for _ in range(self._window_size):
      try:
        window.append(next(self._parent))
      except StopIteration:
        break
    if not window:
      raise StopIteration
    self._window = window
    self._order = permutation(self._seed, f'window/{self._next_window}', len(window))
    self._next_window += 1
    self._pos = 0

  def __next__(self):
    if self._pos == len(self._window):
      self._fill()
    out = self._window[int(self._order[self._pos])]
    self._pos += 1
    return out

  def get_state(self) -> dict:
    if self._pos == len(self._window):
      return {'parent': self._parent.get_state(), 'window': self._next_window, 'pos': 0}
    return {'parent': self._start_state, 'window': self._next_window - 1, 'pos': self._pos}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state['parent'])
    self._next_window = int(state['window'])
    self._window, self._pos = [], 0
    if state['pos']:
      self._fill()
      self._pos = int(state['pos'])


class WindowShuffleIterDataset(grain.IterDataset):
  """Shuffles within consecutive windows of `window` elements (seeded, checkpointable)."""

  def __init__(self, parent: grain.IterDataset, window: int, seed: int):
    super().__init__(parent)
    self._window, self._seed = int(window), int(seed)

  def __iter__(self) -> _WindowShuffleIterator:
    return _WindowShuffleIterator(self._parent.__iter__(), self._window, self._seed)

  def __str__(self) -> str:
    return f'WindowShuffleIterDataset(window={self._window})'

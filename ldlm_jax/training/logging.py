"""What a run writes for people to watch: metrics.jsonl, TensorBoard, samples, a progress line.

Only process 0 writes (other processes get a logger that does nothing).
TensorBoard events are written with tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
import time
from typing import Iterable

import numpy as np

from ldlm_jax import fileio


def _jsonable(value):
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  if isinstance(value, (np.integer, int)):
    return int(value)
  if isinstance(value, np.ndarray):
    return [_jsonable(v) for v in value.tolist()]
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_jsonl(path: str, max_step: int) -> None:
  """Drops records logged after `max_step` (a resumed run logs them again)."""
  if not os.path.exists(path):
    return
  fileio.write_jsonl(path, [r for r in read_jsonl(path) if r.get('step', 0) <= max_step])


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  return str(datetime.timedelta(seconds=int(seconds)))


class RunLogger:
  """metrics.jsonl + TensorBoard + samples/ under the work directory."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self.metrics_path = os.path.join(workdir, 'metrics.jsonl')
    self.timesteps_path = os.path.join(workdir, 'timesteps.jsonl')
    self.samples_dir = os.path.join(workdir, 'samples')
    self._tb = None
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def resume_from(self, step: int) -> None:
    if self.enabled:
      truncate_jsonl(self.metrics_path, step)
      truncate_jsonl(self.timesteps_path, step)

  def _append(self, path: str, record: dict) -> None:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + '\n')

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    self._append(self.metrics_path, {'step': int(step), **scalars})
    if self._tb is not None:
      for key, value in scalars.items():
        if np.isscalar(value) and math.isfinite(float(value)):
          self._tb.add_scalar(key.replace('eval_', 'eval/'), float(value), int(step))
      self._tb.flush()

  def write_timesteps(self, step: int, bin_loss: np.ndarray, probs: np.ndarray) -> None:
    """Per-bin diffusion loss (EMA) and the adaptive sampler's probabilities."""
    if self.enabled:
      self._append(self.timesteps_path, {'step': int(step), 'bin_loss': bin_loss, 'probs': probs})

  def write_samples(self, step: int, records: Iterable[dict]) -> str | None:
    if not self.enabled:
      return None
    records = list(records)
    os.makedirs(self.samples_dir, exist_ok=True)
    path = os.path.join(self.samples_dir, f'step_{int(step):08d}.jsonl')
    fileio.write_jsonl(path, ({k: _jsonable(v) for k, v in r.items()} for r in records))
    if self._tb is not None:
      text = '\n\n'.join(f'{i}: {r["text"]}' for i, r in enumerate(records))
      self._tb.add_text('samples', text, int(step))
      self._tb.flush()
    return path

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A progress line per log step: step, steps/s, tokens/s, ETA and the main losses."""

  def __init__(self, total_steps: int, tokens_per_step: int, enabled: bool = True, stream=None):
    self.total = total_steps
    self.tokens_per_step = tokens_per_step
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self._last_step = None
    self._last_time = None
    self._excluded = 0.0

  def start(self, step: int) -> None:
    self._last_step, self._last_time, self._excluded = step, time.time(), 0.0

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside (evaluation, sampling, checkpointing) is not a step's time."""
    t0 = time.time()
    try:
      yield
    finally:
      self._excluded += time.time() - t0

  def rates(self, step: int) -> tuple[float, float]:
    now = time.time()
    steps = step - self._last_step
    dt = max(now - self._last_time - self._excluded, 1e-9)
    self._last_step, self._last_time, self._excluded = step, now, 0.0
    sps = steps / dt
    return sps, sps * self.tokens_per_step

  def line(self, step: int, sps: float, scalars: dict) -> None:
    if not self.enabled:
      return
    eta = (self.total - step) / sps if sps > 0 else float('inf')
    parts = [f'step {step}/{self.total}', f'{sps:.2f} steps/s',
             f'{sps * self.tokens_per_step:,.0f} tok/s', f'ETA {format_duration(eta)}']
    for key, short in (('loss', 'loss'), ('diffusion_loss', 'diff'),
                       ('reconstruction_loss', 'rec'), ('ce_loss', 'ce'),
                       ('token_accuracy', 'acc'), ('latent_norm', '|z|'), ('kl_loss', 'kl'),
                       ('repa_loss', 'repa')):
      if key in scalars:
        parts.append(f'{short} {scalars[key]:.4f}')
    print(' | '.join(parts), file=self.stream, flush=True)

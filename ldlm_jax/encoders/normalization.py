"""Per-dimension normalization of frozen-encoder hidden states (docs/method.md Section 1.1).

h_n = (h - mean) / std, with mean and std per hidden dimension measured over a
sample of training tokens (pad positions excluded) and std taken from the
variance clipped below by `min_var`. The statistics are saved with the run so
that sampling inverts exactly what training applied.

Accumulation: each batch's count, mean and centred sum of squares are reduced
on the device (float32, centred on the batch mean, so large per-channel
offsets such as GPT-2's outlier dimensions cost no precision), then merged on
the host in float64 with Chan et al.'s parallel formula. Only (H,) vectors
leave the device.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.errors import ConfigError

_FORMAT_VERSION = 1


class NormStatsError(ConfigError):
  """A statistics file that is missing or unreadable; the message says the fix."""


@flax.struct.dataclass
class NormStats:
  """Per-dimension statistics; a pytree, so it can be passed into jit."""
  mean_H: Any
  std_H: Any


def apply(stats: NormStats, h_BLH: jax.Array) -> jax.Array:
  """(h - mean) / std, broadcast over leading axes."""
  return (h_BLH - stats.mean_H) / stats.std_H


def invert(stats: NormStats, h_n_BLH: jax.Array) -> jax.Array:
  """The inverse of `apply`: h_n * std + mean."""
  return h_n_BLH * stats.std_H + stats.mean_H


@jax.jit
def _batch_moments(h_BLH: jax.Array, mask_BL: jax.Array):
  """Count, mean (H,) and centred sum of squares (H,) over the masked tokens."""
  h_NH = h_BLH.reshape(-1, h_BLH.shape[-1]).astype(jnp.float32)
  w_N1 = mask_BL.reshape(-1, 1).astype(jnp.float32)
  count = jnp.sum(w_N1)
  mean_H = jnp.sum(h_NH * w_N1, axis=0) / jnp.maximum(count, 1.0)
  m2_H = jnp.sum(jnp.square(h_NH - mean_H) * w_N1, axis=0)
  return count, mean_H, m2_H


def _split_batch(batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
  if isinstance(batch, Mapping):
    ids = next((batch[k] for k in ('input_ids', 'tokens') if k in batch), None)
    if ids is None:
      raise ConfigError(f'A normalization batch has keys {sorted(batch)}; it needs '
                        "'input_ids' (or 'tokens') and optionally 'attention_mask' (or 'mask').")
    mask = next((batch[k] for k in ('attention_mask', 'mask') if k in batch), None)
    return ids, mask
  return batch, None


def compute_stats(feature_fn: Callable[..., jax.Array], batches: Iterable[Any],
                  min_var: float = 1e-4, max_rows: int | None = None,
                  pass_mask: bool = False) -> NormStats:
  """Masked per-dimension mean/std of `feature_fn` over a stream of token batches.

  Args:
    feature_fn: int32 (B, L) -> (B, L, H) features (e.g. a jitted
      `encoder.hidden_state`). Called as feature_fn(ids, mask) when
      `pass_mask`, so a bidirectional encoder can mask padded keys.
    batches: yields int (B, L) arrays, or dicts with 'input_ids' (or
      'tokens') and an optional 1/0 'attention_mask' (or 'mask') (B, L);
      mask 0 excludes a position from the statistics.
    min_var: variance floor; std = sqrt(max(var, min_var)).
    max_rows: stop after this many rows (e.g. encoder.norm_num_chunks).
  Returns:
    NormStats with float32 mean_H and std_H.
  """
  if not min_var > 0:
    raise ConfigError(f'encoder.norm_min_var={min_var} must be > 0 (e.g. 1e-4).')
  total, mean_H, m2_H = 0.0, None, None
  rows = 0
  for batch in batches:
    if max_rows is not None and rows >= max_rows:
      break
    ids_BL, mask_BL = _split_batch(batch)
    ids_BL = np.asarray(ids_BL)
    if max_rows is not None and rows + ids_BL.shape[0] > max_rows:
      keep = max_rows - rows
      ids_BL = ids_BL[:keep]
      mask_BL = None if mask_BL is None else np.asarray(mask_BL)[:keep]
    rows += ids_BL.shape[0]
    if mask_BL is None:
      mask_BL = np.ones(ids_BL.shape, np.int32)
    mask_BL = np.asarray(mask_BL)
    features = feature_fn(ids_BL, mask_BL) if pass_mask else feature_fn(ids_BL)
    count, b_mean, b_m2 = jax.device_get(_batch_moments(features, mask_BL))
    count = float(count)
    if count == 0:
      continue
    b_mean, b_m2 = np.asarray(b_mean, np.float64), np.asarray(b_m2, np.float64)
    if mean_H is None:
      total, mean_H, m2_H = count, b_mean, b_m2
      continue
    # Chan et al. (1979): merge two (count, mean, M2) summaries.
    new_total = total + count
    delta = b_mean - mean_H
    mean_H = mean_H + delta * (count / new_total)
    m2_H = m2_H + b_m2 + np.square(delta) * (total * count / new_total)
    total = new_total
  if mean_H is None:
    raise ConfigError('No unmasked tokens reached the normalization statistics; '
                      'check the training data path and encoder.norm_num_chunks > 0.')
  var_H = m2_H / total
  std_H = np.sqrt(np.maximum(var_H, min_var))
  if not (np.all(np.isfinite(mean_H)) and np.all(np.isfinite(std_H))):
    raise ValueError('The encoder features contain NaN or Inf; the normalization '
                     'statistics cannot be computed (check the encoder weights).')
  return NormStats(mean_H=mean_H.astype(np.float32), std_H=std_H.astype(np.float32))


def save(stats: NormStats, path: str, metadata: Mapping[str, Any] | None = None) -> None:
  """Writes `stats` (and JSON-able `metadata`) to an .npz file, atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  meta = {'format_version': _FORMAT_VERSION, **(dict(metadata) if metadata else {})}
  fd, tmp = tempfile.mkstemp(prefix='.norm_stats.', suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, mean_H=np.asarray(stats.mean_H, np.float32),
               std_H=np.asarray(stats.std_H, np.float32),
               metadata=np.array(json.dumps(meta)))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_with_metadata(path: str) -> tuple[NormStats, dict[str, Any]]:
  """Reads a file written by `save`: (stats, metadata)."""
  if not os.path.isfile(path):
    raise NormStatsError(
        f'Normalization statistics {path!r} do not exist; compute them with the '
        'training run (or point at the run directory that holds them).')
  try:
    with np.load(path, allow_pickle=False) as data:
      mean_H = np.asarray(data['mean_H'], np.float32)
      std_H = np.asarray(data['std_H'], np.float32)
      metadata = json.loads(str(data['metadata']))
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise NormStatsError(
        f'Normalization statistics {path!r} are unreadable ({type(e).__name__}); '
        'delete the file and recompute them.') from e
  if (mean_H.ndim != 1 or mean_H.shape != std_H.shape or not np.all(std_H > 0)
      or not np.all(np.isfinite(mean_H))):
    raise NormStatsError(
        f'Normalization statistics {path!r} are malformed (shapes {mean_H.shape}, '
        f'{std_H.shape}); delete the file and recompute them.')
  return NormStats(mean_H=mean_H, std_H=std_H), metadata


def load(path: str) -> NormStats:
  """Reads the statistics written by `save`."""
  return load_with_metadata(path)[0]

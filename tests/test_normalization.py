"""Per-dimension hidden-state statistics against a numpy float64 reference."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.config import ConfigError
from ldlm_jax.encoders import normalization as norm

H = 6


def _features_table(seed=0):
  """A fixed (V=50, H) table: features = table[ids], so the reference is exact."""
  rng = np.random.default_rng(seed)
  scale = np.array([1.0, 3.0, 0.5, 10.0, 0.01, 2.0], np.float32)
  offset = np.array([0.0, -5.0, 100.0, 2.0, 7.0, 0.0], np.float32)
  return (rng.normal(size=(50, H)) * scale + offset).astype(np.float32)


def _batches(seed=1, n=4, B=3, L=7):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ids = rng.integers(0, 50, (B, L)).astype(np.int32)
    mask = (rng.random((B, L)) < 0.7).astype(np.int32)
    out.append({'input_ids': ids, 'attention_mask': mask})
  return out


def test_masked_mean_std_matches_numpy():
  table = _features_table()
  feature_fn = jax.jit(lambda ids: jnp.asarray(table)[ids])
  batches = _batches()
  stats = norm.compute_stats(feature_fn, batches, min_var=1e-6)
  feats = np.concatenate(
      [table[b['input_ids']][b['attention_mask'] == 1] for b in batches]).astype(np.float64)
  np.testing.assert_allclose(stats.mean_H, feats.mean(0), rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(stats.std_H, feats.std(0), rtol=1e-5)
  # Masked positions really are excluded: unmasked stats differ.
  unmasked = norm.compute_stats(feature_fn, [b['input_ids'] for b in batches], min_var=1e-6)
  assert np.abs(unmasked.mean_H - stats.mean_H).max() > 1e-3


def test_variance_floor_and_max_rows():
  table = _features_table()
  table[:, 4] = 3.0  # A constant dimension: variance 0 -> std = sqrt(min_var).
  feature_fn = lambda ids: jnp.asarray(table)[ids]
  batches = _batches()
  stats = norm.compute_stats(feature_fn, batches, min_var=1e-4)
  assert stats.std_H[4] == pytest.approx(1e-2, rel=1e-6)
  assert stats.mean_H[4] == pytest.approx(3.0)
  # max_rows=4 keeps the first batch (3 rows) and one row of the second.
  capped = norm.compute_stats(feature_fn, batches, min_var=1e-6, max_rows=4)
  ids = np.concatenate([batches[0]['input_ids'], batches[1]['input_ids'][:1]])
  mask = np.concatenate([batches[0]['attention_mask'], batches[1]['attention_mask'][:1]])
  np.testing.assert_allclose(capped.mean_H, table[ids][mask == 1].mean(0), rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError, match='norm_min_var'):
    norm.compute_stats(feature_fn, batches, min_var=0.0)


def test_large_offset_is_accumulated_stably():
  """Offset 1e4 with unit spread: a naive float32 E[x^2] - E[x]^2 would lose it."""
  rng = np.random.default_rng(2)
  batches = [rng.normal(1e4, 1.0, (64, 32, H)).astype(np.float32) for _ in range(8)]
  it = iter(batches)
  stats = norm.compute_stats(lambda ids: next(it), [np.zeros((64, 32), np.int32)] * 8, min_var=1e-8)
  ref = np.concatenate(batches).reshape(-1, H).astype(np.float64)
  np.testing.assert_allclose(stats.mean_H, ref.mean(0), rtol=2e-7)
  np.testing.assert_allclose(stats.std_H, ref.std(0), rtol=1e-3)


def test_pass_mask_and_batch_formats():
  seen = []

  def feature_fn(ids, mask):
    seen.append(mask.copy())
    return jnp.ones(ids.shape + (H,)) * 2.0

  stats = norm.compute_stats(feature_fn, [{'tokens': np.zeros((2, 3), np.int32),
                                           'mask': np.array([[1, 1, 0], [1, 0, 0]])}],
                             pass_mask=True)
  assert seen and seen[0].tolist() == [[1, 1, 0], [1, 0, 0]]
  np.testing.assert_allclose(stats.mean_H, 2.0)
  with pytest.raises(ConfigError, match="'input_ids'"):
    norm.compute_stats(lambda ids: ids, [{'ids': np.zeros((1, 2))}])
  with pytest.raises(ConfigError, match='No unmasked tokens'):
    norm.compute_stats(lambda ids: jnp.ones(ids.shape + (H,)),
                       [{'input_ids': np.zeros((1, 2), np.int32),
                         'attention_mask': np.zeros((1, 2))}])


def test_apply_invert_round_trip_and_jit():
  stats = norm.NormStats(mean_H=np.arange(H, dtype=np.float32),
                         std_H=np.linspace(0.5, 3.0, H).astype(np.float32))
  h = np.random.default_rng(3).normal(size=(2, 5, H)).astype(np.float32) * 4
  h_n = jax.jit(norm.apply)(stats, h)
  np.testing.assert_allclose(h_n, (h - stats.mean_H) / stats.std_H, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(norm.invert)(stats, h_n), h, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_and_errors(tmp_path):
  stats = norm.NormStats(mean_H=np.array([1.5, -2.0], np.float32),
                         std_H=np.array([0.1, 3.0], np.float32))
  path = str(tmp_path / 'run' / 'norm_stats.npz')
  norm.save(stats, path, metadata={'encoder': 'gpt2', 'layer': -3})
  assert os.listdir(tmp_path / 'run') == ['norm_stats.npz']  # No temp file left behind.
  loaded, meta = norm.load_with_metadata(path)
  np.testing.assert_array_equal(loaded.mean_H, stats.mean_H)
  np.testing.assert_array_equal(loaded.std_H, stats.std_H)
  assert meta['encoder'] == 'gpt2' and meta['layer'] == -3
  np.testing.assert_array_equal(norm.load(path).std_H, stats.std_H)

  with pytest.raises(norm.NormStatsError, match='do not exist'):
    norm.load(str(tmp_path / 'absent.npz'))
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not an npz file at all')
  with pytest.raises(norm.NormStatsError, match='unreadable'):
    norm.load(str(bad))
  truncated = tmp_path / 'truncated.npz'
  truncated.write_bytes(open(path, 'rb').read()[:40])
  with pytest.raises(norm.NormStatsError, match='unreadable'):
    norm.load(str(truncated))

"""MAUVE (Pillutla et al., 2021) between generated and reference texts, via `mauve-text`.

Features are the scorer's final-layer hidden state at each text's last token
(what `mauve-text` itself computes with gpt2-large; docs/method.md Section 8.3); the library then
runs its default PCA + k-means quantization and divergence frontier. We pass
features, never texts, so the library never tries to download a model.
"""

from __future__ import annotations

import numpy as np

from ldlm_jax.errors import UserError


class MauveUnavailableError(UserError, ImportError):
  """The mauve-text package is not installed; the message names the install command."""


def require_mauve():
  """The `mauve` module, or one clear error naming the install command."""
  try:
    import mauve
  except ImportError as e:
    raise MauveUnavailableError(
        'MAUVE needs the mauve-text package: run `pip install mauve-text faiss-cpu scikit-learn` '
        '(or `pip install -e .[eval]`), or leave out --references.') from e
  return mauve


def mauve_from_features(reference_features_NH: np.ndarray, sample_features_MH: np.ndarray) -> float:
  """The MAUVE score in [0, 1] (default `mauve.compute_mauve` settings); P = references, Q = samples."""
  mauve = require_mauve()
  p = np.asarray(reference_features_NH, np.float32)
  q = np.asarray(sample_features_MH, np.float32)
  if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
    raise ValueError(f'MAUVE features must be (n, H) with one H; got {p.shape} and {q.shape}.')
  if len(p) < 2 or len(q) < 2:
    raise ValueError(f'MAUVE needs at least 2 references and 2 samples; got {len(p)} and {len(q)}.')
  return float(mauve.compute_mauve(p_features=p, q_features=q, verbose=False).mauve)

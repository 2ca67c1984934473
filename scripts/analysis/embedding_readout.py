"""How much of token identity a linear map into the frozen encoder's embedding table reads.

  python -m scripts.analysis.embedding_readout WORKDIR [TRAIN_CHUNKS] [HELDOUT_CHUNKS]

Fits W by least squares from the run's normalized features h (with a bias column) to the
encoder's word embedding of each token, over TRAIN_CHUNKS (1500) training chunks, then reads
held-out tokens (HELDOUT_CHUNKS, 256) as argmax_v cos(h W, table_v). Prints one JSON line:
the accuracy on the true features and on the run's reconstructions Dec(Enc(h)) (a map fitted
to those), each also for held-out tokens the fit never saw. It is the bound that motivated
`model.token_decoder.head='encoder'` (BUILD_NOTES, "The demo's autoencoder").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np


def readout_accuracy(train_X: np.ndarray, train_tokens: np.ndarray, test_X: np.ndarray,
                     test_tokens: np.ndarray, table_VE: np.ndarray) -> dict:
  """Least-squares readout (see the module doc): {'acc', 'acc_unseen', 'unseen_fraction'}."""
  def with_bias(x):
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)
  w, *_ = np.linalg.lstsq(with_bias(train_X), table_VE[train_tokens], rcond=None)
  unit = table_VE / np.maximum(np.linalg.norm(table_VE, axis=1, keepdims=True), 1e-12)
  pred = np.argmax(with_bias(test_X) @ w @ unit.T, axis=-1)
  unseen = ~np.isin(test_tokens, np.unique(train_tokens))
  hit = pred == test_tokens
  return {'acc': float(hit.mean()), 'acc_unseen': float(hit[unseen].mean()) if unseen.any() else None,
          'unseen_fraction': float(unseen.mean())}


def main(argv: Sequence[str] | None = None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__)
    return {}
  import jax

  from ldlm_jax.data import pipeline
  if __package__:   # python -m scripts.analysis.embedding_readout
    from scripts.analysis.heldout_recon import load_with_encoder, map_batches
  else:             # python scripts/analysis/embedding_readout.py: Python searches this directory first
    from heldout_recon import load_with_encoder, map_batches
  workdir = argv[0]
  n_train = int(argv[1]) if len(argv) > 1 else 1500
  n_test = int(argv[2]) if len(argv) > 2 else 256
  run, model, frozen, encoder, test = load_with_encoder(workdir, n_test)
  params = model.with_frozen(run.state.ema_params, frozen)
  table = np.asarray(encoder.embedding_table(encoder.params), np.float32)[:model.dims.vocab_size]

  @jax.jit
  def both(tokens):
    h = model.features(frozen, params, tokens)
    return h, model.decode(params, model.encode(params, h))

  def features(chunks):
    return [x.reshape(-1, table.shape[1]) for x in map_batches(both, chunks)]

  train = pipeline.iter_train_chunks(run.config, run.tokenizer, n_train)
  (h_train, rec_train), (h_test, rec_test) = features(train), features(test)
  out = {'workdir': workdir, 'step': run.step, 'train_tokens': int(train.size),
         'features': readout_accuracy(h_train, train.reshape(-1), h_test, test.reshape(-1), table),
         'reconstructions': readout_accuracy(rec_train, train.reshape(-1), rec_test, test.reshape(-1), table)}
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main()

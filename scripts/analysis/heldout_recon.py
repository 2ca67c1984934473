"""Held-out autoencoder reconstruction accuracy of a trained run: tokens -> encode -> decode (no noise, no diffusion).

  python -m scripts.analysis.heldout_recon WORKDIR [NUM_CHUNKS]

The first NUM_CHUNKS (256) chunks of the reference split; the EMA parameters (and the raw ones
where the run loads them). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np


def reconstruction_accuracy(model, frozen, params, chunks_NL: np.ndarray, batch_size: int = 64) -> float:
  """Fraction of tokens that decode(encode(features(tokens))) gives back (argmax decoding)."""
  import jax
  import jax.numpy as jnp

  @jax.jit
  def recon(p, tokens):
    z = model.encode(p, model.features(frozen, p, tokens))
    return model.decode_tokens(p, z)

  preds = np.concatenate([np.asarray(recon(params, jnp.asarray(chunks_NL[i:i + batch_size])))
                          for i in range(0, len(chunks_NL), batch_size)])
  return float(np.mean(preds == chunks_NL))


def main(argv: Sequence[str] | None = None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__)
    return {}
  from ldlm_jax.data import pipeline
  from ldlm_jax.encoders.registry import load_frozen_encoder
  from ldlm_jax.models.ldlm import LDLM
  from ldlm_jax.training import restore
  workdir = argv[0]
  n = int(argv[1]) if len(argv) > 1 else 256
  run = restore.load_run(workdir)
  config = run.config
  encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype).on_device()
  model = LDLM(config, encoder)
  mean, std = restore.norm_stats(run.meta)
  frozen = model.frozen_inputs(encoder.params, mean, std)
  chunks = pipeline._take_chunks(config, run.tokenizer, pipeline._reference_split(config), n)
  out = {'workdir': workdir, 'step': run.step, 'num_chunks': len(chunks)}
  for name, params in (('ema', run.state.ema_params), ('raw', run.state.params)):
    if params is None:   # load_run reads the inference state (EMA) only
      continue
    out[f'acc_{name}'] = reconstruction_accuracy(model, frozen, params, chunks)
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main()

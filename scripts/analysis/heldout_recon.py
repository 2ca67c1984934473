"""Held-out autoencoder reconstruction accuracy of a trained run, and where the lost tokens go.

  python -m scripts.analysis.heldout_recon WORKDIR [NUM_CHUNKS]

The first NUM_CHUNKS (256) chunks of the reference split; the EMA parameters (and the raw ones
where the run loads them). Prints one JSON line:
  acc_ema                  decode(encode(features(tokens))) == tokens (no noise, no diffusion)
  head_on_features_ema     the token decoder applied to the true features (the head's ceiling:
                           what a perfect latent autoencoder would give)
  feature_rel_mse_ema      ||Dec(Enc(h)) - h||^2 / the features' variance, per token, averaged
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np


def reconstruction_accuracy(model, frozen, params, chunks_NL: np.ndarray, batch_size: int = 64) -> float:
  """Fraction of tokens that decode(encode(features(tokens))) gives back (argmax decoding)."""
  return where_tokens_are_lost(model, frozen, params, chunks_NL, batch_size)['acc']


def map_batches(fn, chunks_NL: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, ...]:
  """fn (tokens (b, L) -> a tuple of arrays with b rows) over the chunks in batches, each output
  concatenated over the batches."""
  import jax.numpy as jnp
  outs = [fn(jnp.asarray(chunks_NL[i:i + batch_size])) for i in range(0, len(chunks_NL), batch_size)]
  return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(len(outs[0])))


def where_tokens_are_lost(model, frozen, params, chunks_NL: np.ndarray, batch_size: int = 64) -> dict:
  """{'acc', 'head_on_features', 'feature_rel_mse'} over the chunks (see the module doc)."""
  import jax
  import jax.numpy as jnp
  p = model.with_frozen(params, frozen)

  @jax.jit
  def measure(tokens):
    h = model.features(frozen, p, tokens)
    h_hat = model.decode(p, model.encode(p, h))
    recon = jnp.argmax(model.token_logits(p, h_hat), -1)
    head = jnp.argmax(model.token_logits(p, h), -1)
    err = jnp.sum(jnp.square(h_hat - h), -1)
    return recon, head, err, h

  recon, head, err, h = map_batches(measure, chunks_NL, batch_size)
  variance = float(np.sum(np.var(h.reshape(-1, h.shape[-1]), axis=0)))
  return {'acc': float(np.mean(recon == chunks_NL)), 'head_on_features': float(np.mean(head == chunks_NL)),
          'feature_rel_mse': float(np.mean(err) / max(variance, 1e-12))}


def load_with_encoder(workdir: str, num_heldout: int):
  """(run, model bound to the run's frozen encoder, frozen inputs, encoder, the first
  `num_heldout` chunks of the reference split) of a trained LDLM run."""
  from ldlm_jax.data import pipeline
  from ldlm_jax.encoders.registry import load_frozen_encoder
  from ldlm_jax.models.ldlm import LDLM
  from ldlm_jax.training import restore
  run = restore.load_run(workdir)
  config = run.config
  encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype).on_device()
  model = LDLM(config, encoder)
  frozen = model.frozen_inputs(encoder.params, *restore.norm_stats(run.meta))
  chunks = pipeline._take_chunks(config, run.tokenizer, pipeline._reference_split(config), num_heldout)
  return run, model, frozen, encoder, chunks


def main(argv: Sequence[str] | None = None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__)
    return {}
  workdir = argv[0]
  run, model, frozen, _, chunks = load_with_encoder(workdir, int(argv[1]) if len(argv) > 1 else 256)
  out = {'workdir': workdir, 'step': run.step, 'num_chunks': len(chunks)}
  for name, params in (('ema', run.state.ema_params), ('raw', run.state.params)):
    if params is None:   # load_run reads the inference state (EMA) only
      continue
    res = where_tokens_are_lost(model, frozen, params, chunks)
    out[f'acc_{name}'] = res['acc']
    out[f'head_on_features_{name}'] = res['head_on_features']
    out[f'feature_rel_mse_{name}'] = res['feature_rel_mse']
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main()

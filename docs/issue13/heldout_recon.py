"""Held-out AE reconstruction token accuracy: encode -> decode (no noise, no diffusion).

  python docs/issue13/heldout_recon.py WORKDIR [NUM_CHUNKS]
First NUM_CHUNKS (256) chunks of the reference split, EMA params (and raw ones where loaded).
"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from ldlm_jax.data import pipeline
from ldlm_jax.encoders.registry import load_frozen_encoder
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import restore

workdir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
run = restore.load_run(workdir)
config = run.config
encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype).on_device()
model = LDLM(config, encoder)
mean, std = restore.norm_stats(run.meta)
frozen = model.frozen_inputs(encoder.params, mean, std)
chunks = pipeline._take_chunks(config, run.tokenizer, pipeline._reference_split(config), n)

@jax.jit
def recon(params, tokens):
  z = model.encode(params, model.features(frozen, params, tokens))
  return model.decode_tokens(params, z)

out = {'workdir': workdir, 'step': run.step, 'num_chunks': len(chunks)}
for name, params in (('ema', run.state.ema_params), ('raw', run.state.params)):
  if params is None:   # load_run reads the inference state (EMA) only
    continue
  preds = np.concatenate([np.asarray(recon(params, jnp.asarray(chunks[i:i + 64]))) for i in range(0, len(chunks), 64)])
  out[f'acc_{name}'] = float(np.mean(preds == chunks))
print(json.dumps(out))

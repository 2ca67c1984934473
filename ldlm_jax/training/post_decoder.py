"""Post-trained token decoders (paper B.2): build, save and load.

A post-trained decoder is a `TokenDecoder` applied to latents (B, N, D) with
N = L, written as WORKDIR/token_decoder_k{k}/{params/, decoder.json}. The
CLI that trains one is `python -m ldlm_jax.post_train_decoder`.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from ldlm_jax.errors import ConfigError
from ldlm_jax.models.token_decoder import TokenDecoder

SPEC_FILE = 'decoder.json'


def make_module(spec: dict, model) -> TokenDecoder:
  """A post-trained decoder always has a learned vocab head (it reads latents, not features)."""
  return model.make_token_decoder(num_layers=spec['num_layers'], width=spec['width'],
                                  num_heads=spec['num_heads'], mlp_ratio=spec.get('mlp_ratio', 4),
                                  tied=False)


def save_decoder(path: str, params, spec: dict) -> None:
  """Writes params + spec atomically (a temp directory, then rename)."""
  tmp = path + '.tmp'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(tmp, 'params'), params)
  with open(os.path.join(tmp, SPEC_FILE), 'w', encoding='utf-8') as f:
    json.dump(spec, f, indent=2)
  if os.path.exists(path):
    shutil.rmtree(path)
  os.replace(tmp, path)


def load_decoder(path: str, model):
  """(module, params, spec) of a post-trained decoder, checked against the run."""
  spec_path = os.path.join(path, SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise ConfigError(f'{path} is not a post-trained token decoder (no {SPEC_FILE}); '
                      'create one with `python -m ldlm_jax.post_train_decoder`.')
  with open(spec_path, encoding='utf-8') as f:
    spec = json.load(f)
  d = model.dims
  if (spec['latent_dim'], spec['latent_len'], spec['vocab_size']) != (d.latent_dim, d.latent_len, d.vocab_size):
    raise ConfigError(f'The token decoder in {path} was trained for another model '
                      f'(latent {spec["latent_len"]}x{spec["latent_dim"]}, vocab {spec["vocab_size"]}).')
  module = make_module(spec, model)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, d.latent_len, d.latent_dim)))['params']
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(os.path.abspath(path), 'params'), abstract)
  return module, params, spec

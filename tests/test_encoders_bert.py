"""Our Flax BERT against Hugging Face's PyTorch BERT: tiny random and real MiniLM."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.config import ConfigError
from ldlm_jax.encoders.registry import load_encoder_tokenizer, load_frozen_encoder

TOL = 1e-4  # max |diff| in float32.
BF16_REL_TOL = 3e-2  # max |diff| / max |reference| with bf16 matmuls.


def _torch_states(model, ids, mask=None):
  import torch
  with torch.no_grad():
    out = model(torch.tensor(ids, dtype=torch.long),
                attention_mask=None if mask is None else torch.tensor(mask),
                output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states]


def _max_diffs(ours, ref, mask=None):
  assert len(ours) == len(ref)
  sel = (lambda a: a) if mask is None else (lambda a: a[mask.astype(bool)])
  return [float(np.max(np.abs(sel(np.asarray(a)) - sel(b)))) for a, b in zip(ours, ref)]


@pytest.mark.parametrize('fmt', ['safetensors', 'msgpack'])
def test_tiny_bert_matches_hf(tiny_bert, fmt):
  enc = load_frozen_encoder('local', path=tiny_bert[fmt])
  assert (enc.family, enc.num_layers, enc.hidden_size, enc.vocab_size) == ('bert', 2, 64, 1000)
  ids = np.random.default_rng(0).integers(0, 1000, (2, 16)).astype(np.int32)
  diffs = _max_diffs(jax.jit(enc.hidden_states)(enc.params, ids),
                     _torch_states(tiny_bert['torch'], ids))
  print(f'bert {fmt} hidden-state max|diff| per index: {diffs}')
  assert max(diffs) <= TOL


def test_legacy_gamma_beta_names_load_identically(tiny_bert, tmp_path):
  """Old BERT checkpoints name LayerNorm weights gamma/beta."""
  from safetensors.numpy import load_file, save_file
  src = tiny_bert['safetensors']
  tensors = load_file(os.path.join(src, 'model.safetensors'))
  renamed = {}
  for key, value in tensors.items():
    if 'LayerNorm' in key:
      key = key.replace('.weight', '.gamma').replace('.bias', '.beta')
    renamed[key] = value
  assert any(k.endswith('LayerNorm.gamma') for k in renamed)
  save_file(renamed, str(tmp_path / 'model.safetensors'))
  with open(os.path.join(src, 'config.json')) as f_in, open(tmp_path / 'config.json', 'w') as f_out:
    f_out.write(f_in.read())
  legacy = load_frozen_encoder('local', path=str(tmp_path)).params
  current = load_frozen_encoder('local', path=src).params
  jax.tree_util.tree_map(np.testing.assert_array_equal, legacy, current)


def test_tiny_bert_padding_keeps_real_positions(tiny_bert):
  enc = load_frozen_encoder('local', path=tiny_bert['safetensors'])
  ids = np.random.default_rng(1).integers(0, 1000, (2, 10)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, 6:] = 0
  padded = np.where(mask == 1, ids, 0)
  states = jax.jit(enc.hidden_states)(enc.params, padded, mask)
  alone = jax.jit(enc.hidden_states)(enc.params, ids[:1, :6])
  for h, h_alone in zip(states, alone):
    np.testing.assert_allclose(np.asarray(h)[0, :6], np.asarray(h_alone)[0], atol=1e-5, rtol=0)
  # Without the mask the padded keys would change the real positions.
  unmasked = jax.jit(enc.hidden_states)(enc.params, padded)
  assert float(np.abs(np.asarray(unmasked[-1])[0, :6] - np.asarray(alone[-1])[0]).max()) > 1e-3


def test_tiny_bert_truncation_and_bf16(tiny_bert):
  enc32 = load_frozen_encoder('local', path=tiny_bert['safetensors'])
  ids = np.random.default_rng(2).integers(0, 1000, (2, 16)).astype(np.int32)
  full = jax.jit(enc32.hidden_states)(enc32.params, ids)
  one = jax.jit(enc32.hidden_state, static_argnums=2)(enc32.params, ids, -2)
  np.testing.assert_array_equal(np.asarray(one), np.asarray(full[-2]))
  enc16 = load_frozen_encoder('local', path=tiny_bert['safetensors'], dtype='bfloat16')
  got = jax.jit(enc16.hidden_states)(enc16.params, ids)
  rel = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, full)]
  print(f'bert bf16 relative max|diff| per index: {rel}')
  assert max(rel) <= BF16_REL_TOL and max(rel[1:]) > 0


def test_bert_has_no_lm_head(tiny_bert):
  enc = load_frozen_encoder('local', path=tiny_bert['safetensors'])
  with pytest.raises(ConfigError, match='no LM head'):
    enc.lm_logits(enc.params, np.zeros((1, 4), np.int32))
  table = enc.embedding_table(enc.params)
  np.testing.assert_array_equal(
      table, tiny_bert['torch'].embeddings.word_embeddings.weight.detach().numpy())


@pytest.mark.slow
def test_real_minilm_matches_hf():
  """all-MiniLM-L6-v2 (6 layers, 384 wide) from the installed package, padded batch."""
  import torch
  import transformers
  enc = load_frozen_encoder('minilm-l6')
  assert (enc.num_layers, enc.hidden_size, enc.vocab_size, enc.max_positions) == (
      6, 384, 30522, 512)
  tok = load_encoder_tokenizer('minilm-l6')
  rows = [tok.encode(t) for t in ('Latent diffusion for language.', 'A short one.')]
  length = max(len(r) for r in rows)
  ids = np.zeros((2, length), np.int32)
  mask = np.zeros((2, length), np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, 1
  assert mask.min() == 0  # The batch really is padded.
  model = transformers.BertModel.from_pretrained(enc.model_dir).eval()
  torch.manual_seed(0)
  diffs = _max_diffs(jax.jit(enc.hidden_states)(enc.params, ids, mask),
                     _torch_states(model, ids, mask), mask)
  print(f'minilm safetensors hidden-state max|diff| per index (real positions): {diffs}')
  assert max(diffs) <= TOL
  one = jax.jit(enc.hidden_state, static_argnums=2)(enc.params, ids, -3, mask)
  full = jax.jit(enc.hidden_states)(enc.params, ids, mask)
  np.testing.assert_array_equal(np.asarray(one), np.asarray(full[-3]))

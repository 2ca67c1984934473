"""Our Flax GPT-2 against Hugging Face's PyTorch GPT-2 on the same weights."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.config import ConfigError
from ldlm_jax.encoders.registry import load_frozen_encoder

TOL = 1e-4  # max |diff| in float32, per the parity requirement.
# bf16 matmuls (8-bit mantissa) over 2 blocks: max |diff| relative to the
# largest |value| of the float32 reference.
BF16_REL_TOL = 3e-2


def _ids(batch, length, vocab=1000, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def _torch_outputs(model, ids, mask=None):
  import torch
  with torch.no_grad():
    out = model(torch.tensor(ids, dtype=torch.long),
                attention_mask=None if mask is None else torch.tensor(mask),
                output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states], out.logits.numpy()


def _max_diffs(ours, ref):
  assert len(ours) == len(ref)
  return [float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(ours, ref)]


@pytest.mark.parametrize('fmt', ['safetensors', 'msgpack'])
def test_hidden_states_and_logits_match_hf(tiny_gpt2, fmt):
  enc = load_frozen_encoder('local', path=tiny_gpt2[fmt])
  assert (enc.family, enc.num_layers, enc.hidden_size, enc.vocab_size, enc.max_positions) == (
      'gpt2', 2, 64, 1000, 64)
  ids = _ids(2, 16)
  ref_states, ref_logits = _torch_outputs(tiny_gpt2['torch'], ids)
  states = jax.jit(enc.hidden_states)(enc.params, ids)
  diffs = _max_diffs(states, ref_states)
  print(f'gpt2 {fmt} hidden-state max|diff| per index: {diffs}; '
        f'max|ref|: {[float(np.abs(h).max()) for h in ref_states]}')
  assert max(diffs) <= TOL
  # The states are not trivially small (the tolerance means something).
  assert min(float(np.abs(h).max()) for h in ref_states) > 1.0
  logits = jax.jit(enc.lm_logits)(enc.params, ids)
  assert logits.shape == (2, 16, 1000) and logits.dtype == jnp.float32
  logit_diff = float(np.max(np.abs(np.asarray(logits) - ref_logits)))
  print(f'gpt2 {fmt} logits max|diff|: {logit_diff}')
  assert logit_diff <= TOL * max(1.0, float(np.abs(ref_logits).max()))


def test_perturbed_weight_fails_parity(tiny_gpt2):
  """The parity check can fail: one weight off by 0.01 breaks it."""
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  params = copy.deepcopy(enc.params)
  params['h_1']['attn_qkv']['kernel'][3, 70] += 0.01  # One key weight of the last block.
  ids = _ids(2, 16)
  ref_states, _ = _torch_outputs(tiny_gpt2['torch'], ids)
  diffs = _max_diffs(jax.jit(enc.hidden_states)(params, ids), ref_states)
  print(f'gpt2 perturbed hidden-state max|diff| per index: {diffs}')
  assert diffs[0] <= TOL and diffs[1] <= TOL  # Before the perturbed block: still equal.
  assert diffs[-1] > TOL


def test_right_padding_keeps_real_positions(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  ids = _ids(2, 12, seed=3)
  lengths = [7, 12]
  mask = np.zeros_like(ids)
  for row, n in enumerate(lengths):
    mask[row, :n] = 1
  padded = np.where(mask == 1, ids, 999)  # Arbitrary pad id.
  states = jax.jit(enc.hidden_states)(enc.params, padded, mask)
  for row, n in enumerate(lengths):
    alone = jax.jit(enc.hidden_states)(enc.params, ids[row:row + 1, :n])
    for h, h_alone in zip(states, alone):
      np.testing.assert_allclose(np.asarray(h)[row, :n], np.asarray(h_alone)[0], atol=1e-5, rtol=0)
  # And against HF with the same mask.
  ref_states, _ = _torch_outputs(tiny_gpt2['torch'], padded, mask)
  for h, ref in zip(states, ref_states):
    real = mask.astype(bool)
    assert float(np.abs(np.asarray(h)[real] - ref[real]).max()) <= TOL


def test_truncated_run_is_bit_identical(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  ids = _ids(2, 16, seed=4)
  full = jax.jit(enc.hidden_states)(enc.params, ids)
  one_fn = jax.jit(enc.hidden_state, static_argnums=2)
  # -3 = 0 (embeddings), -2 = 1 (a raw block output), -1 = 2 (ln_f applied).
  for layer in (-3, -2, -1):
    one = one_fn(enc.params, ids, layer)
    assert one.shape == (2, 16, 64)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(full[layer]))


def test_truncated_run_skips_later_blocks(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  ids = _ids(1, 8)

  def count_matmuls(layer):
    jaxpr = jax.make_jaxpr(enc.hidden_state, static_argnums=2)(enc.params, ids, layer)
    text = str(jaxpr)
    return text.count('dot_general')

  # Index 1 runs one block, index 2 (= -1, with ln_f) runs both.
  assert 0 == count_matmuls(0) < count_matmuls(1) < count_matmuls(-1)
  assert count_matmuls(-1) == 2 * count_matmuls(1)


def test_params_are_program_inputs_not_constants(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  jaxpr = jax.make_jaxpr(enc.hidden_state, static_argnums=2)(enc.params, _ids(1, 8), -1)
  n_params = len(jax.tree_util.tree_leaves(enc.params))
  assert len(jaxpr.jaxpr.invars) == n_params + 1  # params + ids.
  assert all(np.size(c) < 1000 for c in jaxpr.consts)


@pytest.mark.slow
def test_bf16_compute_stays_close(tiny_gpt2):
  enc32 = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  enc16 = load_frozen_encoder('local', path=tiny_gpt2['safetensors'], dtype='bfloat16')
  ids = _ids(2, 16, seed=5)
  ref = jax.jit(enc32.hidden_states)(enc32.params, ids)
  got = jax.jit(enc16.hidden_states)(enc16.params, ids)
  assert all(h.dtype == jnp.float32 for h in got)
  rel = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, ref)]
  print(f'gpt2 bf16 relative max|diff| per index: {rel}')
  assert max(rel) <= BF16_REL_TOL
  assert max(rel[1:]) > 0  # bf16 really ran.
  logits16 = jax.jit(enc16.lm_logits)(enc16.params, ids)
  assert logits16.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits16)))


def test_layer_index_validation_and_embedding_table(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['safetensors'])
  assert enc.layer_index(-3) == 0 and enc.layer_index(-1) == 2 and enc.layer_index(2) == 2
  for bad in (3, -4, 1.0):
    with pytest.raises(ConfigError, match='encoder.layer'):
      enc.hidden_state(enc.params, _ids(1, 4), bad)
  table = enc.embedding_table(enc.params)
  np.testing.assert_array_equal(
      table, tiny_gpt2['torch'].transformer.wte.weight.detach().numpy())
  with pytest.raises(ValueError, match='n_positions'):
    enc.hidden_states(enc.params, _ids(1, 65))

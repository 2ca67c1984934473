"""model.remat and model.attention_query_chunk: the parameter tree and the numbers stay."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ldlm_jax.config import ConfigError, validate
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.models.ldlm import LDLM
from ldlm_testing import ToyEncoder, tiny_config, toy_tokens

POLICIES = ('none', 'block', 'dots_saveable', 'dots_no_batch')


def _model(remat, query_chunk=0, **latent_types):
  c = tiny_config()
  c.model.remat = remat
  c.model.attention_query_chunk = query_chunk
  c.loss.ce_stop_gradient = False
  # Raw latents: standardized with the first batch's own statistics, the diffusion target
  # sums to exactly 0 over the batch, so the output bias's true gradient is 0 and only
  # rounding remains, which no relative tolerance can compare.
  c.latent_norm.mode = 'none'
  for part, kind in latent_types.items():
    c.model[part].type = kind
  validate(c)
  return LDLM(c, ToyEncoder())


def _loss_and_grads(model, params):
  enc = ToyEncoder()
  frozen = model.frozen_inputs(enc.init_params(), np.zeros(enc.hidden_size),
                               np.ones(enc.hidden_size))
  sampler = timesteps_lib.init_state(int(model.config.timesteps.num_bins))
  fn = jax.value_and_grad(model.loss_fn, has_aux=True)
  return fn, (params, frozen, toy_tokens(4, model.config.data.seq_len), jax.random.PRNGKey(1),
              5, sampler)


def test_parameter_tree_does_not_depend_on_remat_and_checkpoints_restore(tmp_path):
  shapes = {r: jax.eval_shape(_model(r).init, jax.random.PRNGKey(0)) for r in POLICIES}
  for r in POLICIES:
    assert jax.tree_util.tree_structure(shapes[r]) == jax.tree_util.tree_structure(shapes['none'])
    assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, shapes[r],
                                        shapes['none'])) == [True] * len(jax.tree.leaves(shapes[r]))
  # Saved without remat, restored into the tree of a rematerialised model.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes['none'])
  path = tmp_path / 'params'
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, params)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(path, shapes['block'])
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize('remat', POLICIES)
def test_every_block_kind_is_rematerialised(remat):
  """The traced gradient of each module holds one remat region per block (none
  without remat): DiT blocks, Perceiver layers, self-attention blocks, token
  decoder blocks."""
  modules = {}
  for kinds in ({}, {'latent_encoder': 'self_attention', 'latent_decoder': 'self_attention'}):
    model = _model(remat, **kinds)
    tag = 'self_attention' if kinds else 'perceiver'
    modules[f'{tag} latent encoder'] = model.latent_encoder
    modules[f'{tag} latent decoder'] = model.latent_decoder
  modules['token decoder'] = model.token_decoder
  modules['denoiser'] = model.denoiser
  d = model.dims
  x = np.zeros((2, d.seq_len, d.feature_dim), np.float32)
  z = np.zeros((2, d.latent_len, d.latent_dim), np.float32)
  for name, module in modules.items():
    args = ((z, np.zeros((2,), np.float32), z) if name == 'denoiser'
            else (z,) if 'decoder' in name and 'token' not in name else (x,))
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
    grad = jax.grad(lambda p, *a: module.apply(p, *a).sum())
    jaxpr = str(jax.make_jaxpr(grad)(params, *args))
    expected = 0 if remat == 'none' else module.num_layers
    assert jaxpr.count('remat2[') == expected, name


@pytest.mark.slow
def test_remat_and_query_chunks_give_the_same_loss_and_gradients():
  # Query blocks of 8 (L = N = 16): every attention of the tiny model is split.
  ref_model, model = _model('none'), _model('block', query_chunk=8)
  assert jax.tree_util.tree_structure(jax.eval_shape(model.init, jax.random.PRNGKey(0))) == \
      jax.tree_util.tree_structure(jax.eval_shape(ref_model.init, jax.random.PRNGKey(0)))
  params = jax.jit(ref_model.init)(jax.random.PRNGKey(0))
  fn, args = _loss_and_grads(ref_model, params)
  (ref_loss, _), ref = jax.jit(fn, static_argnums=(4,))(*args)
  fn, args = _loss_and_grads(model, params)
  (loss, _), grads = jax.jit(fn, static_argnums=(4,))(*args)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  # Per-leaf relative error: the key/value gradients are summed over query
  # blocks in another order, so single tiny entries differ by float rounding.
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
    assert np.linalg.norm(g - r) <= 1e-5 * np.linalg.norm(r) + 1e-9


@pytest.mark.slow
def test_query_chunked_attention_is_plain_attention():
  from ldlm_jax.models import layers
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(k[0], (2, 8, 2, 4))
  kv = [jax.random.normal(key, (2, 12, 2, 4)) for key in k[1:]]
  run = lambda chunk: jax.jit(jax.value_and_grad(lambda *a: jax.numpy.sum(jax.numpy.sin(
      layers.query_chunked_attention(*a, None, chunk))), argnums=(0, 1, 2)))(q, *kv)
  (ref, ref_grads), (out, grads) = run(0), run(2)
  # A sum of 128 terms of size ~1 that cancel to ~1.4: float32 rounding of the summands
  # (XLA may order the reductions differently per compilation) reaches ~1e-6 absolute.
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_unknown_remat_is_a_config_error():
  c = tiny_config()
  c.model.remat = 'everything'
  with pytest.raises(ConfigError, match='model.remat'):
    validate(c)

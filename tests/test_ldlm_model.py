"""LDLM modules and the joint loss: shapes, gradients, ablation switches, sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldlm_jax.config import ConfigError, base_config, validate
from ldlm_jax.diffusion import latent_norm
from ldlm_jax.diffusion import timesteps as ts
from ldlm_jax.diffusion.warmup import encoder_warmup_lambda
from ldlm_jax.models.ldlm import LDLM, count_params

from ldlm_testing import ToyEncoder, set_fields, tiny_config, tiny_setup


_setup = tiny_setup


@pytest.mark.slow
def test_module_shapes_and_generate():
  c, model, params, frozen, tokens = _setup()
  d = model.dims
  h = model.features(frozen, params, tokens)
  assert h.shape == (4, d.seq_len, ToyEncoder.hidden_size)
  z = model.encode(params, h)
  assert z.shape == (4, d.latent_len, d.latent_dim)
  assert model.decode(params, z).shape == h.shape
  assert model.token_logits(params, h).shape == (4, d.seq_len, ToyEncoder.vocab_size)
  x0 = model.denoise(params, z, jnp.full((4,), 0.5), z)
  assert x0.shape == z.shape
  out = jax.jit(lambda p, r: model.generate(p, r, 3, 4))(params, jax.random.PRNGKey(1))
  assert out.shape == (3, d.seq_len) and out.dtype == jnp.int32


@pytest.mark.slow
def test_latent_len_differs_from_seq_len():
  c, model, params, frozen, tokens = _setup(**{'model.latent_len': 4})
  z = model.encode(params, model.features(frozen, params, tokens))
  assert z.shape == (4, 4, c.model.latent_dim)
  assert model.decode(params, z).shape == (4, c.data.seq_len, ToyEncoder.hidden_size)


@pytest.mark.slow
def test_self_attention_encoder_variant():
  c, model, params, frozen, tokens = _setup(**{'model.latent_encoder.type': 'self_attention'})
  z = model.encode(params, model.features(frozen, params, tokens))
  assert z.shape == (4, c.data.seq_len, c.model.latent_dim)
  assert 'block0' in params['latent_encoder'] and 'queries' not in params['latent_encoder']


def _loss_and_grads(model, params, frozen, tokens, step, rng=jax.random.PRNGKey(7), state=None):
  state = state if state is not None else ts.init_state(model.config.timesteps.num_bins)
  fn = jax.value_and_grad(model.loss_fn, has_aux=True)
  return fn(params, frozen, tokens, rng, step, state)


@pytest.mark.slow
def test_warmup_scales_only_the_encoder_gradient_from_diffusion():
  c, model, params, frozen, tokens = _setup(**{
      'loss.reconstruction_weight': 0.0, 'loss.ce_weight': 0.0, 'encoder_warmup.steps': 100,
      'diffusion.self_cond_prob': 0.0})
  step = 37
  lam = float(encoder_warmup_lambda(step, 100, c.encoder_warmup.center, c.encoder_warmup.sharpness))
  assert 0.0 < lam < 1.0
  (loss_w, aux_w), g_w = _loss_and_grads(model, params, frozen, tokens, step)
  (loss_f, aux_f), g_f = _loss_and_grads(model, params, frozen, tokens, 100)  # lam = 1
  assert float(aux_w['encoder_lambda']) == pytest.approx(lam)
  assert float(aux_f['encoder_lambda']) == 1.0
  # Forward values are unchanged by the warmup.
  assert float(loss_w) == float(loss_f)
  # The latent encoder's gradient is lam times the un-warmed one ...
  for a, b in zip(jax.tree.leaves(g_w['latent_encoder']), jax.tree.leaves(g_f['latent_encoder'])):
    np.testing.assert_allclose(a, lam * b, rtol=1e-4, atol=1e-7)
  assert optax.tree.norm(g_f['latent_encoder']) > 0
  # ... and the denoiser's is not scaled.
  for a, b in zip(jax.tree.leaves(g_w['denoiser']), jax.tree.leaves(g_f['denoiser'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # At step 0 the encoder gets nothing from L_diff.
  _, g_0 = _loss_and_grads(model, params, frozen, tokens, 0)
  assert float(optax.tree.norm(g_0['latent_encoder'])) == 0.0


def _reference_diffusion_loss(model, params, frozen, tokens, rng, self_cond):
  """The diffusion term built by hand from the modules (uniform t)."""
  rng_t, rng_eps, _, _ = jax.random.split(rng, 4)
  z = model.encode(params, model.features(frozen, params, tokens))
  if model.standardizes:   # the batch joins the running statistics, then z0 = (z - mu) / sd
    c = model.config.latent_norm
    stats = latent_norm.update(params[latent_norm.KEY], z, c.decay)
    np.testing.assert_allclose(stats['mean'], jnp.mean(z, 0), rtol=1e-5, atol=1e-6)  # first batch
    z = (z - stats['mean']) / jnp.sqrt(jnp.maximum(stats['var'], c.min_var))
  t = jnp.clip(jax.random.uniform(jax.random.split(rng_t)[1], (tokens.shape[0],)), 0.0, 1.0 - 1e-6)
  eps = jax.random.normal(rng_eps, z.shape)
  a = model.schedule.alpha(t)[:, None, None]
  s = model.schedule.sigma(t)[:, None, None]
  z_t = a * z + s * eps
  sc = jnp.zeros_like(z)
  if self_cond:
    sc = model.denoise(params, z_t, t, sc)
  x0 = model.denoise(params, z_t, t, sc)
  return jnp.mean((x0 - z) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['running', 'none'])
@pytest.mark.parametrize('prob', [0.0, 1.0])
def test_self_conditioning_matches_hand_built_reference(prob, mode):
  c, model, params, frozen, tokens = _setup(**{
      'diffusion.self_cond_prob': prob, 'timesteps.sampler': 'uniform', 'latent_norm.mode': mode})
  assert model.standardizes == (mode == 'running')
  # Train the denoiser a little so that the self-conditioning input matters.
  params = jax.tree.map(lambda x: x, params)
  params['denoiser'] = jax.tree.map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape), params['denoiser'])
  rng = jax.random.PRNGKey(11)
  (_, aux), _ = _loss_and_grads(model, params, frozen, tokens, 1000, rng=rng)
  ref = _reference_diffusion_loss(model, params, frozen, tokens, rng, self_cond=prob == 1.0)
  other = _reference_diffusion_loss(model, params, frozen, tokens, rng, self_cond=prob != 1.0)
  np.testing.assert_allclose(aux['diffusion_loss'], ref, rtol=1e-5)
  assert abs(float(ref) - float(other)) > 1e-4  # the two references are distinguishable


@pytest.mark.slow
def test_self_conditioning_pass_gets_no_gradient():
  """With p = 1 the first pass is stop-gradient: grads equal those with the
  first pass output held as a constant."""
  c, model, params, frozen, tokens = _setup(**{
      'diffusion.self_cond_prob': 1.0, 'loss.reconstruction_weight': 0.0, 'loss.ce_weight': 0.0})
  (_, aux), grads = _loss_and_grads(model, params, frozen, tokens, 1000)
  assert np.isfinite(float(optax.tree.norm(grads)))
  assert float(optax.tree.norm(grads['denoiser'])) > 0


@pytest.mark.slow
def test_ce_stop_gradient_switch():
  base = {'loss.diffusion_weight': 0.0, 'loss.reconstruction_weight': 0.0}
  _, model, params, frozen, tokens = _setup(**base)
  (_, aux), g = _loss_and_grads(model, params, frozen, tokens, 1000)
  assert float(aux['ce_loss']) > 0
  assert float(optax.tree.norm(g['latent_encoder'])) == 0.0
  assert float(optax.tree.norm(g['latent_decoder'])) == 0.0
  assert float(optax.tree.norm(g['token_decoder'])) > 0
  _, model, params, frozen, tokens = _setup(**base, **{'loss.ce_stop_gradient': False})
  (_, aux), g = _loss_and_grads(model, params, frozen, tokens, 1000)
  assert float(optax.tree.norm(g['latent_encoder'])) > 0


@pytest.mark.slow
def test_reconstruction_modes():
  _, model, params, frozen, tokens = _setup(**{'loss.reconstruction': 'ce', 'loss.ce_stop_gradient': False})
  (loss, aux), _ = _loss_and_grads(model, params, frozen, tokens, 1000)
  assert float(aux['reconstruction_loss']) == 0.0 and float(aux['ce_loss']) > 0
  np.testing.assert_allclose(loss, aux['diffusion_loss'] + aux['ce_loss'], rtol=1e-6)
  _, model, params, frozen, tokens = _setup(**{'loss.reconstruction': 'mse+ce'})
  (loss, aux), _ = _loss_and_grads(model, params, frozen, tokens, 1000)
  np.testing.assert_allclose(
      loss, aux['diffusion_loss'] + aux['reconstruction_loss'] + aux['ce_loss'], rtol=1e-6)
  # MSE without a token decoder: no CE term and no token decoder parameters.
  _, model, params, frozen, tokens = _setup(**{'loss.train_token_decoder': False})
  assert 'token_decoder' not in params
  (loss, aux), _ = _loss_and_grads(model, params, frozen, tokens, 1000)
  np.testing.assert_allclose(loss, aux['diffusion_loss'] + aux['reconstruction_loss'], rtol=1e-6)


@pytest.mark.slow
def test_reconstruction_loss_is_mse_to_normalized_features():
  c, model, params, frozen, tokens = _setup(**{'loss.decoder_noise_std': 0.0})
  frozen = frozen.replace(norm_mean=jnp.full((ToyEncoder.hidden_size,), 0.1),
                          norm_std=jnp.full((ToyEncoder.hidden_size,), 2.0))
  (_, aux), _ = _loss_and_grads(model, params, frozen, tokens, 1000)
  h = ToyEncoder().hidden_state(frozen.encoder_params, tokens, -3)
  h_n = (h - 0.1) / 2.0
  h_hat = model.decode(params, model.encode(params, h_n))
  np.testing.assert_allclose(aux['reconstruction_loss'], np.mean((h_hat - h_n) ** 2), rtol=1e-5)


@pytest.mark.slow
def test_encoder_input_variants():
  _, model, params, frozen, tokens = _setup(**{'encoder.input': 'embeddings'})
  emb = ToyEncoder().init_params()['embedding']
  np.testing.assert_allclose(model.features(frozen, params, tokens), np.asarray(emb)[tokens], rtol=1e-6)
  _, model, params, frozen, tokens = _setup(**{
      'encoder.input': 'scratch', 'loss.reconstruction': 'ce', 'loss.ce_stop_gradient': False})
  assert params['scratch_embedding'].shape == (ToyEncoder.vocab_size, ToyEncoder.hidden_size)
  (_, aux), g = _loss_and_grads(model, params, frozen, tokens, 1000)
  assert float(optax.tree.norm(g['scratch_embedding'])) > 0


@pytest.mark.parametrize('override, fragment', [
    ({'loss.reconstruction': 'ce'}, 'ce_stop_gradient=False'),
    ({'encoder.input': 'scratch'}, 'reconstruction=ce'),
    ({'loss.reconstruction': 'l1'}, 'loss.reconstruction'),
    ({'model.latent_encoder.type': 'self_attention', 'model.latent_len': 3}, 'latent_len'),
    ({'model.denoiser.num_heads': 5}, 'num_heads'),
    ({'train.batch_size': 0}, 'train.batch_size'),
    ({'sample.t_min': 0.0}, 't_min'),
])
def test_validate_rejects_bad_values(override, fragment):
  c = set_fields(tiny_config(), override)
  with pytest.raises(ConfigError, match=fragment.replace('.', r'\.')):
    validate(c)


class _PaperSizeEncoder:
  hidden_size = 768
  vocab_size = 50257


@pytest.mark.slow
@pytest.mark.parametrize('seq_len', [128, 1024])
def test_paper_sizes(seq_len):
  """Paper sizes (docs/method.md 1, 9): ~50M / ~50M / 132M / 66M (head 38M); actual counts in BUILD_NOTES.md."""
  c = base_config()
  c.data.seq_len = seq_len
  model = LDLM(c, _PaperSizeEncoder())
  counts = count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert 130e6 < counts['denoiser'] < 133e6
  assert 43e6 < counts['latent_encoder'] < 50e6
  assert 43e6 < counts['latent_decoder'] < 50e6
  assert 59e6 < counts['token_decoder'] < 67e6
  assert 38.5e6 < counts['token_decoder_vocab_head'] < 38.7e6

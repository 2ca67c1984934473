"""Latent standardization, rotary positions and the latent-health diagnostics: exact checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax import config as config_lib
from ldlm_jax.diffusion import latent_norm
from ldlm_jax.diffusion.processes import process_from_config
from ldlm_jax.models import layers
from ldlm_jax.training import checkpoint as ckpt_lib
from ldlm_jax.training import state as state_lib
from ldlm_jax.training import step as step_lib

from ldlm_testing import tiny_config, tiny_setup


def _batches(count=5, batch=6, shape=(3, 4), seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(2.0, 0.5, (batch, *shape)).astype(np.float32) + rng.normal(size=shape).astype(np.float32)
          for _ in range(count)]


def test_running_statistics_are_the_pooled_statistics_while_counting():
  batches = _batches()
  stats = latent_norm.init_stats(3, 4)
  for b in batches:
    stats = latent_norm.update(stats, jnp.asarray(b), decay=0.99)   # 5 < 1 / (1 - 0.99)
  every = np.concatenate(batches, axis=0)
  np.testing.assert_allclose(stats['mean'], every.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['var'], every.var(0), rtol=1e-4)
  assert float(stats['count']) == len(batches)


def test_running_statistics_become_an_ema_after_the_count():
  b1, b2 = (jnp.asarray(b) for b in _batches(2))
  stats = latent_norm.update(latent_norm.init_stats(3, 4), b1, decay=0.5)
  stats = latent_norm.update(stats, b2, decay=0.5)        # n / (n + 1) = 0.5 = decay
  stats = latent_norm.update(stats, b1, decay=0.5)        # capped at 0.5
  m1, m2 = b1.mean(0), b2.mean(0)
  np.testing.assert_allclose(stats['mean'], 0.5 * (0.5 * m1 + 0.5 * m2) + 0.5 * m1, rtol=1e-5)


def test_standardize_round_trip_and_unit_moments():
  (b,) = _batches(1, batch=64)
  stats = latent_norm.update(latent_norm.init_stats(3, 4), jnp.asarray(b), 0.99)
  z0 = latent_norm.standardize(stats, b, 1e-4)
  np.testing.assert_allclose(z0.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(z0.var(0), 1.0, rtol=1e-4)
  np.testing.assert_allclose(latent_norm.unstandardize(stats, z0, 1e-4), b, rtol=1e-5, atol=1e-5)


def _encoder_gradient(mode, z, stats, lam=1.0, min_var=1e-4):
  target = jnp.asarray(np.random.default_rng(3).normal(size=z.shape), jnp.float32)
  loss = lambda z: jnp.sum(jnp.square(
      latent_norm.standardize_for_loss(stats, z, mode, min_var, lam) - target))
  return jax.grad(loss)(z)


def test_encoder_gradient_modes():
  (b,) = _batches(1, batch=8)
  z = jnp.asarray(b)
  stats = latent_norm.update(latent_norm.init_stats(3, 4), z, 0.99)
  g_std = _encoder_gradient('standardized', z, stats)
  np.testing.assert_allclose(_encoder_gradient('raw', z, stats), stats['var'] * g_std, rtol=1e-5)
  np.testing.assert_allclose(_encoder_gradient('raw', z, stats, lam=0.3),
                             0.3 * stats['var'] * g_std, rtol=1e-5)
  assert float(jnp.abs(_encoder_gradient('none', z, stats)).max()) == 0.0
  # 'invariant': shifting or scaling an element's content across the batch leaves the
  # loss unchanged to first order, so the gradient is orthogonal to both directions
  # (exactly so as the variance floor goes to 0).
  g = _encoder_gradient('invariant', z, stats, min_var=1e-10)
  np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-4)
  np.testing.assert_allclose((g * (z - z.mean(0))).sum(0), 0.0, atol=1e-4)
  assert float(jnp.abs(g).max()) > 1e-3
  # The forward value is the same in every mode: standardize(stats, z).
  for mode in latent_norm.GRADIENT_MODES:
    np.testing.assert_allclose(latent_norm.standardize_for_loss(stats, z, mode, 1e-4, 1.0),
                               latent_norm.standardize(stats, z, 1e-4), rtol=1e-6)


def test_content_diagnostics():
  rng = np.random.default_rng(0)
  const = rng.normal(size=(1, 5, 8))
  z = jnp.asarray(const + 0.5 * rng.normal(size=(4096, 5, 8)), jnp.float32)
  expected = 0.25 / (0.25 + np.mean(const ** 2))
  assert float(latent_norm.content_fraction(z)) == pytest.approx(expected, rel=0.05)
  c = config_lib.base_config()
  process = process_from_config(c)
  d = float(c.diffusion.schedule_d)
  for var in (1.0, 0.1):   # a_t^2 v / s_t^2 = v / (d tan(pi t / 2))^2 = 1
    t = 2.0 / np.pi * np.arctan(np.sqrt(var) / d)
    assert float(latent_norm.content_snr_one_time(process, var, num=4096)) == pytest.approx(t, abs=1e-3)


def test_rotary_logits_depend_on_position_differences_only():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32)
  logit = lambda i, j: jnp.sum(layers.rotary(q, jnp.array([i])) * layers.rotary(k, jnp.array([j])), -1)
  np.testing.assert_allclose(logit(3, 1), logit(10, 8), rtol=1e-5)
  assert not np.allclose(logit(3, 1), logit(3, 2))
  np.testing.assert_allclose(layers.rotary(q, jnp.array([0])), q)   # position 0: identity


def test_new_runs_standardize_and_use_rope_old_runs_keep_their_model():
  _, model, params, _, _ = tiny_setup()
  assert model.standardizes and latent_norm.KEY in params
  assert 'pos' not in params['denoiser']
  saved = tiny_config().to_dict()
  del saved['latent_norm']
  del saved['model']['denoiser']['positions']
  old = config_lib.from_saved(saved)
  assert old.latent_norm.mode == 'none' and old.model.denoiser.positions == 'learned'
  overrides = {'latent_norm.mode': 'none', 'model.denoiser.positions': 'learned'}
  _, model, params, _, _ = tiny_setup(**overrides)
  assert not model.standardizes and latent_norm.KEY not in params
  assert 'pos' in params['denoiser']


@pytest.mark.slow
def test_train_step_sets_the_statistics_in_params_and_ema():
  c, model, params, frozen, tokens = tiny_setup()
  state = state_lib.create_train_state(model, c, jax.random.PRNGKey(0))
  metrics = step_lib.empty_train_metrics(model.extra_metrics)
  step = jax.jit(lambda s, b, m: step_lib.train_step(model, c, s, frozen, b, m))
  z_seen = []
  for i in range(3):
    batch = {'tokens': jnp.roll(tokens, i, axis=1)}
    p = model.with_frozen(state.params, frozen)
    z_seen.append(model.encode(p, model.features(frozen, p, batch['tokens'])))
    state, metrics = step(state, batch, metrics)
  stats = state.params[latent_norm.KEY]
  assert float(stats['count']) == 3.0
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(state.ema_params[latent_norm.KEY])):
    np.testing.assert_array_equal(a, b)
  # The pooled statistics of the latents each step saw (no optimizer step changed them).
  every = jnp.concatenate(z_seen, axis=0)
  np.testing.assert_allclose(stats['mean'], every.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats['var'], every.var(0), rtol=1e-3, atol=1e-5)
  computed = metrics.compute()
  assert 0.0 < float(computed['latent_content_fraction']) <= 1.0
  assert 0.0 < float(computed['content_snr1_t']) < 1.0


def test_samples_are_mapped_back_to_the_encoder_units():
  _, model, params, _, _ = tiny_setup()
  d = model.dims
  shifted = dict(params)
  shifted[latent_norm.KEY] = {'mean': jnp.full((d.latent_len, d.latent_dim), 3.0),
                              'var': jnp.full((d.latent_len, d.latent_dim), 4.0),
                              'count': jnp.ones(())}
  rng = jax.random.PRNGKey(0)
  sample = lambda p: model.sample_latents(p, rng, 2, 3)
  np.testing.assert_allclose(sample(shifted), 3.0 + 2.0 * sample(params), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_without_the_new_metrics_restores_with_a_fresh_accumulator(tmp_path):
  """Runs saved before the diagnostics existed resume (their partial log window is dropped)."""
  ocp = ckpt_lib.ocp
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  state = {'w': jnp.ones(3)}
  old = step_lib.empty_train_metrics(())
  new = step_lib.empty_train_metrics(('latent_content_fraction', 'content_snr1_t'))
  checkpointer.manager.save(1, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), train_metrics=ocp.args.StandardSave(old),
      meta=ocp.args.JsonSave({})))
  checkpointer.wait()
  restored = checkpointer.restore(1, ckpt_lib.ensure_abstract(state), ckpt_lib.ensure_abstract(new))
  assert 'train_metrics' not in restored
  np.testing.assert_array_equal(restored['state']['w'], np.ones(3))
  restored = checkpointer.restore(1, ckpt_lib.ensure_abstract(state), ckpt_lib.ensure_abstract(old))
  assert 'train_metrics' in restored
  checkpointer.close()

"""The baselines of the main comparison (ldlm_jax/methods): exact unit checks and toy learning checks.

Unit checks: MDLM's loss against a hand computation, the counts of one
sampler step, ReMDM with remasking off against the plain sampler, the
unchanged-step cache, the AR sampler's token distribution against its
softmax (chi-square), Duo's Gaussian-to-discrete map against Monte Carlo
and its NELBO's zero. Learning checks (slow): each method trains
configs/baselines.py:NAME_toy on the strict-order toy language and its
samples must keep the word order (tests/test_word_order.py does the same for LDLM).
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ldlm_testing import ToyEncoder, config_module, tiny_config, toy_order_run, toy_tokens
from scipy import stats

from ldlm_jax.config import ConfigError, validate
from ldlm_jax.methods import build_model, is_baseline
from ldlm_jax.methods import duo as duo_lib
from ldlm_jax.methods import mdlm as mdlm_lib


def make(name, **fields):
  c = tiny_config()
  c.method.name = name
  for key, value in fields.items():
    c.method[key] = value
  validate(c)
  model = build_model(c, ToyEncoder())
  params = model.init(jax.random.PRNGKey(0))
  frozen = model.frozen_inputs({}, np.zeros(24), np.ones(24))
  return c, model, params, frozen


def test_mdlm_loss_by_hand():
  # p = softmax(log [1, 2, 1]) = [1/4, 1/2, 1/4]; tokens 1 and 0, both masked, t = 1/2, eps = 0:
  # weight -alpha'/(1 - alpha) = 1/t = 2, so the terms are 2 ln 2 and 2 ln 4.
  logp = jax.nn.log_softmax(jnp.log(jnp.asarray([[[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]])), -1)
  terms = mdlm_lib.nelbo_per_token(logp, jnp.asarray([[1, 0]]), jnp.asarray([[True, True]]),
                                   jnp.asarray([0.5]), 0.0)
  np.testing.assert_allclose(np.asarray(terms), [[2 * math.log(2), 2 * math.log(4)]], rtol=1e-6)
  # An unmasked position contributes nothing; eps keeps the weight at 1/t (log-linear).
  terms = mdlm_lib.nelbo_per_token(logp, jnp.asarray([[1, 0]]), jnp.asarray([[False, True]]),
                                   jnp.asarray([0.25]), 1e-3)
  np.testing.assert_allclose(np.asarray(terms), [[0.0, 4 * math.log(4)]], rtol=1e-5)


def test_mdlm_loss_of_the_initial_model_is_log_v_per_masked_token():
  # The zero-initialised head gives uniform logits: every masked token costs log V / t.
  _, model, params, frozen = make('mdlm')
  tokens = toy_tokens(8, 16)
  rng = jax.random.PRNGKey(3)
  loss, aux = model.loss_fn(params, frozen, {'tokens': tokens}, rng, jnp.int32(0), None)
  rng_t, rng_m = jax.random.split(rng)
  t = model.draw_t(rng_t, 8)
  masked = jax.random.uniform(rng_m, tokens.shape) < ((1 - model.noise_eps) * t)[:, None]
  expected = np.mean(np.asarray(masked) / np.asarray(t)[:, None]) * math.log(ToyEncoder.vocab_size)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert set(aux) >= {'loss', 'diffusion_loss', 'timestep_bins', 'diffusion_per_example'}


def test_one_sampler_step_counts():
  mask = 50
  x = jnp.asarray([[mask, 3, mask, 7, mask, mask, 1, mask]] * 2)
  logits = jnp.zeros((2, 8, 50))
  key = jax.random.PRNGKey(0)
  # alpha_s = 1 (the last step): every mask is filled, nothing else changes.
  out = mdlm_lib.sampler_step(x, logits, 0.3, 1.0, key, mask)
  assert int(jnp.sum(out == mask)) == 0
  np.testing.assert_array_equal(np.asarray(out)[np.asarray(x) != mask], np.asarray(x)[np.asarray(x) != mask])
  # alpha_s = alpha_t: no token moves.
  np.testing.assert_array_equal(mdlm_lib.sampler_step(x, logits, 0.4, 0.4, key, mask), x)
  # ReMDM with sigma = 1 at alpha_t = alpha_s = 1/2: p_unmask = 1, so masks and tokens swap.
  out = mdlm_lib.sampler_step(x, logits, 0.5, 0.5, key, mask, remask_sigma=1.0)
  np.testing.assert_array_equal(np.asarray(out) == mask, np.asarray(x) != mask)
  # A long all-masked row: (alpha_s - alpha_t) / (1 - alpha_t) = 0.5 of it unmasked (4 sigma).
  n = 20_000
  out = mdlm_lib.sampler_step(jnp.full((1, n), mask), jnp.zeros((1, n, 50)), 0.2, 0.6, key, mask)
  assert abs(int(jnp.sum(out != mask)) - n / 2) < 4 * math.sqrt(n / 4)


def test_remdm_without_remasking_is_the_plain_sampler():
  mask = 50
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jnp.where(jax.random.bernoulli(keys[0], 0.6, (4, 16)), mask,
                jax.random.randint(keys[1], (4, 16), 0, 50))
  logits = jax.random.normal(keys[2], (4, 16, 50))
  for alpha_t, alpha_s in ((0.1, 0.3), (0.5, 0.9), (0.7, 1.0)):
    sigma = mdlm_lib.remdm_sigma(alpha_t, alpha_s, 0.0)
    np.testing.assert_array_equal(
        mdlm_lib.sampler_step(x, logits, alpha_t, alpha_s, keys[0], mask),
        mdlm_lib.sampler_step(x, logits, alpha_t, alpha_s, keys[0], mask, remask_sigma=sigma))
  # With remasking some tokens go back to the mask.
  out = mdlm_lib.sampler_step(x, logits, 0.5, 0.9, keys[0], mask, remask_sigma=0.5)
  assert bool(jnp.any((out == mask) & (x != mask)))


def test_mdlm_sampler_cache_is_exact_and_saves_calls():
  c, model, params, _ = make('mdlm')
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape), params)
  rng = jax.random.PRNGKey(7)
  cached, calls = model.generate(params, rng, 4, 64, return_calls=True)
  c.method.cache = False
  plain, all_calls = model.generate(params, rng, 4, 64, return_calls=True)
  np.testing.assert_array_equal(cached, plain)
  assert int(all_calls) == 64 and int(calls) < 64     # 16 tokens over 64 steps: most steps change nothing
  assert int(jnp.sum(cached == model.mask_id)) == 0
  # ReMDM through generate: valid tokens, no mask left.
  out = model.generate(params, rng, 4, 16, remdm_eta=0.05)
  assert int(jnp.max(out)) < 50 and int(jnp.min(out)) >= 0


def test_ar_samples_follow_the_softmax():
  _, model, params, _ = make('ar')
  # A random head so the softmax is far from uniform.
  head = params['denoiser']['vocab_head']
  params['denoiser']['vocab_head'] = {**head, 'kernel': 0.5 * jax.random.normal(
      jax.random.PRNGKey(1), head['kernel'].shape), 'bias': jax.random.normal(jax.random.PRNGKey(2), head['bias'].shape)}
  n = 4000
  tokens = jax.jit(lambda p, r: model.generate(p, r, n, 0))(params, jax.random.PRNGKey(3))
  # Position 0's context is BOS alone: its draws follow softmax(logits_0).
  probs = np.asarray(jax.nn.softmax(model.next_token_logits(params, model.inputs(tokens[:1]))[0, 0]))
  counts = np.bincount(np.asarray(tokens[:, 0]), minlength=50)
  chi2 = float(np.sum((counts - n * probs) ** 2 / (n * probs)))
  assert chi2 < stats.chi2.ppf(0.999, 49), chi2
  # Position 1 given a fixed first token: the rows that drew the most common one.
  first = int(np.argmax(counts))
  rows = np.asarray(tokens)[np.asarray(tokens[:, 0]) == first]
  probs1 = np.asarray(jax.nn.softmax(model.next_token_logits(params, model.inputs(jnp.asarray(rows[:1])))[0, 1]))
  counts1 = np.bincount(rows[:, 1], minlength=50)
  chi2 = float(np.sum((counts1 - len(rows) * probs1) ** 2 / (len(rows) * probs1)))
  assert chi2 < stats.chi2.ppf(0.999, 49), chi2


def test_ar_loss_is_causal():
  _, model, params, _ = make('ar')
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape), params)
  a = toy_tokens(2, 16, seed=0)
  b = a.copy()
  b[:, 10:] = (b[:, 10:] + 1) % 50
  la = model.next_token_logits(params, model.inputs(jnp.asarray(a)))
  lb = model.next_token_logits(params, model.inputs(jnp.asarray(b)))
  np.testing.assert_allclose(la[:, :11], lb[:, :11], atol=1e-5)    # inputs 0..10 are equal
  assert not np.allclose(la[:, 11:], lb[:, 11:])


def test_duo_gaussian_to_discrete_map():
  k = 50
  assert abs(float(duo_lib.gaussian_to_discrete_alpha(0.0, k)[0])) < 1e-6      # I(0) = 1/K
  rng = np.random.default_rng(0)
  n = 100_000
  for m in (0.5, 1.5, 3.0):
    w = rng.standard_normal((n, k))
    w[:, 0] += m
    p = np.mean(np.argmax(w, 1) == 0)
    alpha_mc = (k * p - 1) / (k - 1)
    se = k / (k - 1) * math.sqrt(p * (1 - p) / n)
    alpha = float(duo_lib.gaussian_to_discrete_alpha(m, k)[0])
    assert abs(alpha - alpha_mc) < 4 * se, (m, alpha, alpha_mc)
  # The inverse used in training: T(m(alpha)) = alpha, and argmax(a e_x + s eps) has that marginal.
  _, model, _, _ = make('duo')
  alphas = jnp.asarray([0.05, 0.3, 0.8])
  a, s = model.gaussian_scales(alphas)
  back = duo_lib.gaussian_to_discrete_alpha(np.asarray(a / s), k)
  np.testing.assert_allclose(back, alphas, atol=2e-3)
  for alpha, aa, ss in zip(alphas, a, s):
    w = float(aa) * np.eye(k)[0] + float(ss) * rng.standard_normal((n, k))
    q = np.mean(np.argmax(w, 1) == 0)
    assert abs(q - (float(alpha) + (1 - float(alpha)) / k)) < 4 * math.sqrt(q * (1 - q) / n) + 2e-3


def test_duo_nelbo_is_zero_at_the_truth_and_positive_elsewhere():
  k = 7
  key = jax.random.split(jax.random.PRNGKey(0), 3)
  x0 = jax.random.randint(key[0], (3, 5), 0, k)
  zt = jax.random.randint(key[1], (3, 5), 0, k)
  alpha, dalpha = jnp.asarray([0.1, 0.5, 0.9]), -jnp.ones(3)
  perfect = duo_lib.udlm_nelbo_per_token(jax.nn.one_hot(x0, k), x0, zt, alpha, dalpha)
  np.testing.assert_allclose(perfect, 0.0, atol=1e-5)
  probs = jax.nn.softmax(jax.random.normal(key[2], (3, 5, k)), -1)
  assert float(jnp.min(duo_lib.udlm_nelbo_per_token(probs, x0, zt, alpha, dalpha))) > 0.0
  # The ancestral posterior at alpha_s = 1 and a one-hot prediction is that token.
  post = jax.nn.softmax(duo_lib.posterior_logits(jax.nn.one_hot(x0, k), zt, 0.4, 1.0), -1)
  np.testing.assert_allclose(post, jax.nn.one_hot(x0, k), atol=1e-6)


def test_duo_curriculum_and_discrete_losses_run():
  _, model, params, frozen = make('duo', curriculum_steps=10)
  batch = {'tokens': toy_tokens(4, 16)}
  fn = jax.jit(model.loss_fn)
  for step in (0, 20):   # the Gaussian relaxation, then the discrete process
    loss, _ = fn(params, frozen, batch, jax.random.PRNGKey(1), jnp.int32(step), None)
    assert np.isfinite(float(loss)) and float(loss) > 0
  # A second jitted function of the same model (the trainer's eval step) reuses the Gaussian
  # table built inside the first trace's cond: it must not be a leaked tracer.
  loss_again, _ = jax.jit(lambda *a: model.loss_fn(*a))(params, frozen, batch, jax.random.PRNGKey(1), jnp.int32(0), None)
  np.testing.assert_allclose(float(loss_again), float(fn(params, frozen, batch, jax.random.PRNGKey(1),
                                                            jnp.int32(0), None)[0]), rtol=1e-6)
  out = model.generate(params, jax.random.PRNGKey(2), 2, 4)
  assert out.shape == (2, 16)


def test_baseline_config_checks():
  c = tiny_config()
  c.method.name = 'gpt'
  with pytest.raises(ConfigError, match='method.name'):
    validate(c)
  c.method.name = 'mdlm'
  c.method.remdm_eta = 2.0
  with pytest.raises(ConfigError, match='remdm_eta'):
    validate(c)
  module = config_module('baselines')
  for name in module.names():
    config = module.get_config(name)
    validate(config)
    assert config.method.name in ('mdlm', 'duo', 'ar')
  assert module.get_config('remdm_cpu').method.remdm_eta > 0
  assert is_baseline(make('ar')[1])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['ar', 'mdlm', 'duo'])
def test_baseline_learns_the_word_order(tmp_path, name):
  report = toy_order_run(tmp_path, f'baselines.py:{name}_toy')
  print(name, 'order report', {k: v for k, v in report.items() if k != 'texts'}, report['texts'][:3])
  assert report['known_words'] > 0.9, report
  assert report['legal_pairs'] >= 0.9, report
  assert report['shuffled_legal_pairs'] < 0.5, report


@pytest.mark.slow
def test_mdlm_trains_resumes_and_samples_through_the_project_paths(tmp_path):
  """configs/baselines.py through the trainer (4 steps, then resumed to 6), the restore path and
  the sampling library, as `python -m ldlm_jax.train` / `sample` run it."""
  from ldlm_jax import sampling
  from ldlm_jax.data import toy
  from ldlm_jax.training import loop, restore
  c = config_module('baselines').get_config('mdlm_toy')
  c.data.path = toy.write_corpus(str(tmp_path / 'corpus'), num_documents=20, sentences_per_document=10)
  c.encoder.path = os.path.join(c.data.path, toy.ENCODER_DIR)
  c.train.batch_size, c.train.log_every, c.train.checkpoint_every = 4, 2, 2
  c.train.num_steps, c.encoder.norm_num_chunks = 4, 8
  c.optim.decay_steps = 0   # the toy size decays over its last 300 steps; this run has 6
  workdir = str(tmp_path / 'run')
  first = loop.train(c, workdir)
  c.train.num_steps = 6
  resumed = loop.train(c, workdir)
  assert np.isfinite(first['loss']) and np.isfinite(resumed['loss'])
  run = restore.load_run(workdir)
  assert run.step == 6 and is_baseline(run.model)
  records = sampling.generate_samples(run, 3, 4, 0, 2, time_grid='uniform', t_min=0.05,
                                      solver=c.sample.solver, progress=False)
  assert len(records) == 3 and all(len(r['tokens']) == 16 for r in records)
  assert max(max(r['tokens']) for r in records) < run.model.vocab_size
  # ReMDM at sampling time: same call with remdm_eta (the sweep's remdm row, `sample --remdm_eta`).
  remasked = sampling.generate_samples(run, 3, 4, 0, 2, time_grid='uniform', t_min=0.05,
                                       solver=c.sample.solver, progress=False, remdm_eta=0.5)
  assert len(remasked) == 3 and all(r['remdm_eta'] == 0.5 for r in remasked)
  with pytest.raises(ConfigError, match=r'remdm_eta must be in \[0, 1\]'):
    sampling.generate_samples(run, 3, 4, 0, 2, time_grid='uniform', t_min=0.05,
                              solver=c.sample.solver, progress=False, remdm_eta=1.5)
  c.method.name = 'ar'
  with pytest.raises(ConfigError, match='method.name'):   # a checkpoint of another method
    loop.train(c, workdir)

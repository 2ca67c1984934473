"""Schedule, warmup, adaptive timestep sampler and solvers against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.diffusion import timesteps as ts
from ldlm_jax.diffusion.schedule import TangentSchedule
from ldlm_jax.diffusion.warmup import encoder_warmup_lambda, scale_gradient


# ------------------------------------------------------------- schedule ----
def np_alpha(t, d):
  return 1.0 / np.sqrt(1.0 + d ** 2 * np.tan(np.pi * t / 2) ** 2)


def np_beta(t, d, t_max=0.95):
  t = np.minimum(t, t_max)
  tan = np.tan(np.pi * t / 2)
  return np.pi * d ** 2 * tan * (1 + tan ** 2) / (1 + d ** 2 * tan ** 2)


@pytest.mark.parametrize('d', [5.0, 9.0])
def test_tangent_schedule_matches_numpy(d):
  sched = TangentSchedule(d=d)
  t = np.linspace(0.0, 0.999, 101)
  a = np_alpha(t, d)
  np.testing.assert_allclose(sched.alpha(t), a, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(sched.sigma(t), np.sqrt(1 - a ** 2), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(sched.beta(t), np_beta(t, d), rtol=1e-4)
  # beta is clipped at t = 0.95 only inside beta.
  assert float(sched.beta(0.99)) == pytest.approx(float(np_beta(0.95, d)), rel=1e-5)
  assert float(sched.alpha(0.99)) < float(sched.alpha(0.95))


def test_beta_is_minus_dlog_alpha_squared():
  sched = TangentSchedule(d=5.0, beta_t_max=1.0)
  t = np.linspace(0.05, 0.9, 18)
  h = 1e-4
  numeric = -(np.log(np_alpha(t + h, 5.0) ** 2) - np.log(np_alpha(t - h, 5.0) ** 2)) / (2 * h)
  np.testing.assert_allclose(sched.beta(t), numeric, rtol=1e-3)


def test_forward_process():
  sched = TangentSchedule(d=5.0)
  z0 = np.random.RandomState(0).randn(3, 4, 5).astype(np.float32)
  eps = np.random.RandomState(1).randn(3, 4, 5).astype(np.float32)
  t = np.array([0.0, 0.3, 0.9], np.float32)
  a = np_alpha(t, 5.0)[:, None, None]
  ref = a * z0 + np.sqrt(1 - a ** 2) * eps
  np.testing.assert_allclose(sched.add_noise(z0, t, eps), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sched.add_noise(z0, t, eps)[0], z0[0], atol=1e-7)


# --------------------------------------------------------------- warmup ----
def test_warmup_lambda_matches_formula():
  w, a, b = 1000, 0.5, 10.0
  sig = lambda x: 1 / (1 + np.exp(-x))
  g = lambda u: sig(b * (u - a))
  steps = np.array([0, 1, 100, 250, 500, 750, 999, 1000, 5000])
  u = np.clip(steps / w, 0, 1)
  ref = np.where(steps >= w, 1.0, (g(u) - g(0)) / (g(1) - g(0)))
  np.testing.assert_allclose(encoder_warmup_lambda(steps, w, a, b), ref, rtol=1e-5, atol=1e-6)
  assert float(encoder_warmup_lambda(0, w)) == 0.0
  assert float(encoder_warmup_lambda(500, w)) == pytest.approx(0.5, abs=1e-6)
  np.testing.assert_array_equal(encoder_warmup_lambda(steps, 0), np.ones(len(steps)))


def test_scale_gradient_forward_identity_and_scaled_grad():
  x = jnp.array([1.0, -2.0, 3.0])
  f = lambda x, lam: jnp.sum(scale_gradient(x, lam) ** 2)
  np.testing.assert_array_equal(scale_gradient(x, 0.3), x)
  np.testing.assert_allclose(jax.grad(f)(x, 0.3), 0.3 * 2 * x, rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(f)(x, 0.0), np.zeros(3))


# ------------------------------------------------------ timestep sampler ---
def test_probs_from_losses_formula():
  losses = jnp.array([0.1, 0.3, 0.25, 0.7])
  eps = 1e-3
  inc = np.maximum(np.diff(np.array(losses), prepend=0.0), eps)
  np.testing.assert_allclose(ts.probs_from_losses(losses, eps), inc / inc.sum(), rtol=1e-6)


@pytest.mark.slow
def test_adaptive_sampler_converges_to_dl_dt():
  """Fed L(t) = t^2, the sampled density converges to dL/dt = 2t."""
  num_bins, batch, steps = 20, 512, 400
  decay, every, eps = 0.9, 10, 1e-4

  @jax.jit
  def run(state, rng):
    def body(state, xs):
      step, key = xs
      t, bins = ts.sample(state, key, batch, adaptive=True)
      state = ts.train_update(state, step, bins, t ** 2, decay=decay, update_every=every,
                              min_increment=eps)
      return state, None
    keys = jax.random.split(rng, steps)
    state, _ = jax.lax.scan(body, state, (jnp.arange(steps), keys))
    return state

  state = run(ts.init_state(num_bins), jax.random.PRNGKey(0))
  # The probabilities approach the mass of 2t per bin: ((k+1)^2 - k^2) / K^2.
  k = np.arange(num_bins)
  target = ((k + 1) ** 2 - k ** 2) / num_bins ** 2
  assert np.max(np.abs(np.asarray(state.probs) - target)) < 0.01
  # The empirical density of sampled t follows 2t within 10% of the mean density.
  t, _ = ts.sample(state, jax.random.PRNGKey(1), 200_000, adaptive=True)
  hist, _ = np.histogram(np.asarray(t), bins=10, range=(0, 1), density=True)
  centers = (np.arange(10) + 0.5) / 10
  assert np.max(np.abs(hist - 2 * centers)) < 0.1
  # And the loss is linear in the warped time F(t): L(F^-1(u)) = u.
  u = np.linspace(0.05, 0.95, 10)
  t_of_u = np.asarray(ts.inverse_cdf(state.probs, u))
  np.testing.assert_allclose(t_of_u ** 2, u, atol=0.03)


def test_uniform_sampler_and_state_jit_round_trip():
  state = ts.init_state(8)
  t, bins = ts.sample(state, jax.random.PRNGKey(0), 4096, adaptive=False)
  assert 0.0 <= float(t.min()) and float(t.max()) < 1.0
  np.testing.assert_array_equal(bins, np.floor(np.asarray(t) * 8).astype(np.int32))
  state = ts.update_loss_ema(state, jnp.array([0, 0, 3]), jnp.array([1.0, 3.0, 5.0]), 0.5)
  np.testing.assert_allclose(state.bin_loss_ema[:4], [2.0, 0.0, 0.0, 5.0])
  state = ts.update_loss_ema(state, jnp.array([0]), jnp.array([4.0]), 0.5)
  assert float(state.bin_loss_ema[0]) == pytest.approx(3.0)
  back = jax.jit(lambda s: s)(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)
  # Probabilities stay uniform until every bin has been seen.
  np.testing.assert_allclose(ts.update_probs(state, 1e-4).probs, np.full(8, 1 / 8))


def test_cdf_inverse_cdf_round_trip():
  probs = jnp.array([0.1, 0.4, 0.2, 0.3])
  t = np.linspace(0, 1, 41)
  u = ts.cdf(probs, t)
  np.testing.assert_allclose(ts.inverse_cdf(probs, u), t, atol=1e-6)
  assert float(ts.cdf(probs, 0.25)) == pytest.approx(0.1)


# --------------------------------------------------------------- solvers ---
def _toy_denoiser(z, t, sc):
  return 0.5 * jnp.tanh(z) + 0.1 * sc + 0.01 * t[:, None, None]


def _python_loop_em(denoise, sched, rng, shape, grid, return_x0=False):
  rng_init, rng_steps = jax.random.split(rng)
  z = jax.random.normal(rng_init, shape)
  keys = jax.random.split(rng_steps, len(grid) - 1)
  x0_sc = jnp.zeros(shape)
  z_mean = z
  for i in range(len(grid) - 1):
    t, t_next = float(grid[i]), float(grid[i + 1])
    x0 = denoise(z, jnp.full((shape[0],), t), x0_sc)
    a, s, b = np_alpha(t, sched.d), np.sqrt(1 - np_alpha(t, sched.d) ** 2), np_beta(t, sched.d)
    score = -(z - a * x0) / s ** 2
    dt = t_next - t
    z_mean = z + (-0.5 * b * z - b * score) * dt
    z = z_mean + np.sqrt(b) * np.sqrt(-dt) * jax.random.normal(keys[i], shape)
    x0_sc = x0
  return (z_mean, x0_sc) if return_x0 else z_mean


def test_scan_sampler_equals_python_loop():
  sched = TangentSchedule(d=5.0)
  grid = solver_lib.time_grid(12, 0.05)
  rng = jax.random.PRNGKey(3)
  shape = (2, 5, 3)
  scan = jax.jit(lambda r: solver_lib.sample(_toy_denoiser, sched, r, shape, grid))(rng)
  ref = _python_loop_em(_toy_denoiser, sched, rng, shape, np.asarray(grid))
  np.testing.assert_allclose(scan, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_sampler_final_x0_is_the_last_clean_estimate():
  """final='x0' returns the last denoiser output, final='z' (the default) the last z_mean."""
  sched = TangentSchedule(d=5.0)
  grid = solver_lib.time_grid(7, 0.05)
  rng = jax.random.PRNGKey(4)
  shape = (2, 5, 3)
  run = lambda final: jax.jit(lambda r: solver_lib.sample(_toy_denoiser, sched, r, shape, grid, final=final))(rng)
  z_ref, x0_ref = _python_loop_em(_toy_denoiser, sched, rng, shape, np.asarray(grid), return_x0=True)
  np.testing.assert_allclose(run('x0'), x0_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(run('z'), jax.jit(lambda r: solver_lib.sample(_toy_denoiser, sched, r, shape, grid))(rng))
  np.testing.assert_allclose(run('z'), z_ref, rtol=1e-4, atol=1e-4)
  assert float(jnp.max(jnp.abs(run('x0') - run('z')))) > 1e-3
  # DDIM with an oracle: x0_hat is the target at every step, so final='x0' is exact too.
  target = jnp.ones((1, 3, 2)) * 0.7
  oracle = lambda z, t, sc: jnp.broadcast_to(target, z.shape)
  out = solver_lib.sample(oracle, sched, rng, (1, 3, 2), grid, solver='ddim', final='x0')
  np.testing.assert_array_equal(out, np.broadcast_to(np.float32(0.7), (1, 3, 2)))
  with pytest.raises(ValueError):
    solver_lib.sample(oracle, sched, rng, (1, 3, 2), grid, final='mean')


def test_time_grids():
  np.testing.assert_allclose(solver_lib.time_grid(4, 0.05), np.linspace(1, 0.05, 5), rtol=1e-6)
  probs = jnp.array([0.7, 0.1, 0.1, 0.1])  # most loss change near t = 0
  grid = np.asarray(solver_lib.time_grid(8, 0.05, 'adaptive', probs))
  assert grid[0] == 1.0 and grid[-1] == pytest.approx(0.05)
  assert np.all(np.diff(grid) < 0)
  assert np.sum(grid < 0.25) > np.sum(np.linspace(1, 0.05, 9) < 0.25)
  with pytest.raises(ValueError):
    solver_lib.time_grid(4, 0.05, 'cosine')


def test_ddim_recovers_data_with_oracle_denoiser():
  """With an oracle x0 predictor DDIM lands exactly on the data point."""
  sched = TangentSchedule(d=5.0)
  target = jnp.ones((1, 3, 2)) * 0.7
  oracle = lambda z, t, sc: jnp.broadcast_to(target, z.shape)
  grid = solver_lib.time_grid(10, 0.0)
  out = solver_lib.sample(oracle, sched, jax.random.PRNGKey(0), (1, 3, 2), grid, solver='ddim')
  np.testing.assert_allclose(out, target, atol=1e-5)

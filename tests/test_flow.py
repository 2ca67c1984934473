"""Diffusion processes, time samplers and the flow ODE solvers (docs/method.md Sections 5-6).

The rectified flow's corruption, target and x0 conversion against numpy; the
Euler and Heun scans on a Gaussian whose exact x0 predictor is known in closed
form; logit-normal moments; the default process is the old code path bit for
bit; config refusals and checkpoint signatures; a tiny flow model trains and
samples through the model API.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.config import ConfigError, base_config, from_saved, validate
from ldlm_jax.diffusion import ode, processes, solver as solver_lib, time_samplers
from ldlm_jax.diffusion import timesteps as ts
from ldlm_jax.diffusion.processes import RectifiedFlow
from ldlm_jax.training import checkpoint as ckpt_lib

from ldlm_testing import set_fields, tiny_setup, toy_tokens


# ------------------------------------------------------------ the process --
def test_rectified_flow_matches_numpy():
  rng = np.random.RandomState(0)
  z0, eps = rng.randn(2, 3, 4, 5).astype(np.float32)
  t = np.array([0.0, 0.3, 1.0], np.float32)
  tb = t[:, None, None]
  flow = RectifiedFlow()
  z_t = flow.corrupt(z0, t, eps)
  np.testing.assert_allclose(z_t, (1 - tb) * z0 + tb * eps, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(z_t[0], z0[0])       # t = 0 is data
  np.testing.assert_array_equal(z_t[2], eps[2])      # t = 1 is noise
  np.testing.assert_allclose(flow.target(z0, eps, t), eps - z0, rtol=1e-6)
  v_hat = rng.randn(3, 4, 5).astype(np.float32)
  np.testing.assert_allclose(flow.to_x0(z_t, t, v_hat), z_t - tb * v_hat, rtol=1e-6, atol=1e-6)
  # The exact velocity gives back z0.
  np.testing.assert_allclose(flow.to_x0(z_t, t, eps - z0), z0, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(flow.per_example_loss(v_hat, eps - z0),
                             np.mean((v_hat - (eps - z0)) ** 2, axis=(1, 2)), rtol=1e-6)
  assert flow.sampling_t_end(0.05) == 0.0


# ------------------------------------------------ ODE on a Gaussian's flow --
def _gaussian_x0(s):
  """E[z0 | z_t] for z0 ~ N(0, s^2 I), z_t = (1 - t) z0 + t eps: c(t) z_t with
  c(t) = (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) (jointly Gaussian, regression of z0 on z_t)."""
  def denoise(z, t, x0_sc):
    del x0_sc
    t = t[:, None, None]
    return (1 - t) * s * s / ((1 - t) ** 2 * s * s + t * t) * z
  return denoise


def _numpy_gain(s, num_steps, heun):
  """z_out / z_1 of the numpy Euler / Heun recursion on the same field (it is linear)."""
  c = lambda t: (1 - t) * s * s / ((1 - t) ** 2 * s * s + t * t)
  vel = lambda t: (1 - c(t)) / t
  g = 1.0
  grid = np.linspace(1.0, 0.0, num_steps + 1)
  for t, t_next in zip(grid[:-1], grid[1:]):
    g_euler = g * (1 + (t_next - t) * vel(t))
    g = g + (t_next - t) * 0.5 * (g * vel(t) + g_euler * vel(t_next)) if heun and t_next > 0 else g_euler
  return g


@pytest.mark.parametrize('s', [0.5, 2.0])
def test_ode_solvers_recover_a_gaussians_variance(s):
  shape = (64, 4, 64)
  rng = jax.random.PRNGKey(0)
  z1 = np.asarray(jax.random.normal(jax.random.split(rng)[0], shape))  # the scan's z_1
  flow = RectifiedFlow()
  errors = {}
  for solver, steps in [('euler', 8), ('heun', 8), ('euler', 200), ('heun', 32)]:
    grid = solver_lib.time_grid(steps, flow.sampling_t_end(0.05))
    run = jax.jit(lambda r, solver=solver, grid=grid: solver_lib.sample(
        _gaussian_x0(s), flow, r, shape, grid, solver))
    z0 = np.asarray(run(rng))
    gain = _numpy_gain(s, steps, solver == 'heun')
    # The scan runs the recursion (every element is z_1 times the same gain) ...
    np.testing.assert_allclose(z0, gain * z1, rtol=2e-4, atol=1e-5)
    errors[solver, steps] = abs(np.var(z0) - s * s) / (s * s)
  # ... and the exact velocity field carries N(0, I) to N(0, s^2 I): the
  # sampled variance approaches s^2, Heun faster than Euler.
  assert errors['heun', 8] < 0.5 * errors['euler', 8]
  assert errors['euler', 200] < 0.03 and errors['heun', 32] < 0.03
  assert errors['euler', 8] > 0.1   # few Euler steps are visibly off: the test can tell


def test_heun_final_step_is_euler_onto_x0():
  """The step into t = 0 makes no second call (v is undefined there) and lands on x0_hat."""
  calls = []
  def denoise(z, t, sc):
    calls.append(t)
    return 0.5 * z + 0.1 * sc
  z, sc = jnp.ones((2, 3, 4)), jnp.full((2, 3, 4), 2.0)
  z_next, _, x0 = ode.heun_step(denoise, None, z, sc, jnp.float32(0.25), jnp.float32(0.0), None)
  np.testing.assert_allclose(z_next, 0.5 * z + 0.1 * sc, rtol=1e-6)
  np.testing.assert_allclose(x0, z_next, rtol=1e-6)
  z_next, _, x0 = ode.heun_step(denoise, None, z, sc, jnp.float32(0.5), jnp.float32(0.25), None)
  # Reference: the corrector's call gets the first call's x0_hat as its self-condition.
  x0_1 = 0.5 * z + 0.1 * sc
  v1 = (z - x0_1) / 0.5
  ze = z - 0.25 * v1
  x0_2 = 0.5 * ze + 0.1 * x0_1
  np.testing.assert_allclose(z_next, z - 0.25 * 0.5 * (v1 + (ze - x0_2) / 0.25), rtol=1e-6)
  np.testing.assert_allclose(x0, x0_2, rtol=1e-6)


# ------------------------------------------------------------ time sampler --
def test_logit_normal_time_sampler_moments():
  c = base_config()
  c.timesteps.sampler = 'logit_normal'
  c.timesteps.logit_normal_mean, c.timesteps.logit_normal_std = 0.5, 0.8
  state = ts.init_state(10)
  t, bins = time_samplers.draw(c.timesteps, state, jax.random.PRNGKey(0), 200_000)
  t = np.asarray(t, np.float64)
  logit = np.log(t / (1 - t))
  assert abs(logit.mean() - 0.5) < 0.01 and abs(logit.std() - 0.8) < 0.01
  assert 0 < t.min() and t.max() < 1
  np.testing.assert_array_equal(bins, np.clip(np.floor(t * 10), 0, 9).astype(np.int32))
  # The default (0, 1) puts the median at t = 1/2.
  c.timesteps.logit_normal_mean, c.timesteps.logit_normal_std = 0.0, 1.0
  t, _ = time_samplers.draw(c.timesteps, state, jax.random.PRNGKey(1), 200_000)
  assert abs(float(jnp.median(t)) - 0.5) < 0.01


# --------------------------------------------- vp_tangent: the old code path --
def _old_diffusion_losses(model, params, frozen, tokens, rng, state):
  """LDLM.loss_fn's diffusion branch as it was before processes (self_cond_prob = 0, lam = 1)."""
  rng_t, rng_eps, _, _ = jax.random.split(rng, 4)
  z = model.encode(params, model.features(frozen, params, tokens), jax.random.fold_in(rng, 4))
  t, bins = ts.sample(state, rng_t, tokens.shape[0], True)
  eps = jax.random.normal(rng_eps, z.shape, z.dtype)
  z_t = model.schedule.add_noise(z, t, eps)
  x0 = model.denoiser.apply({'params': params['denoiser']}, z_t, t, jnp.zeros_like(z)).astype(jnp.float32)
  return jnp.mean(jnp.square(x0 - z), axis=(1, 2)), bins


def _old_sample(model, params, rng, shape, grid, solver):
  """solver.sample's scan body as it was before the registry (self-conditioning on)."""
  rng_init, rng_steps = jax.random.split(rng)
  z1 = jax.random.normal(rng_init, shape, jnp.float32)
  keys = jax.random.split(rng_steps, grid.shape[0] - 1)
  f = lambda z, t, sc: model.denoise(params, z, t, sc)
  def body(carry, xs):
    z, sc, _ = carry
    t, t_next, key = xs
    if solver == 'euler_maruyama':
      noise = jax.random.normal(key, shape, jnp.float32)
      z_next, z_mean, x0 = solver_lib.em_step(f, model.schedule, z, sc, t, t_next, noise)
      return (z_next, x0, z_mean), None
    z_next, x0 = solver_lib.ddim_step(f, model.schedule, z, sc, t, t_next)
    return (z_next, x0, z_next), None
  zeros = jnp.zeros(shape, jnp.float32)
  (_, _, z_out), _ = jax.lax.scan(body, (z1, zeros, z1), (grid[:-1], grid[1:], keys))
  return z_out


@pytest.mark.slow
def test_vp_tangent_is_bitwise_the_old_code_path():
  # The old code path diffused the raw latents.
  c, model, params, frozen, _ = tiny_setup(**{'diffusion.self_cond_prob': 0.0, 'encoder_warmup.steps': 0,
                                             'latent_norm.mode': 'none'})
  assert c.diffusion.process == 'vp_tangent' and model.process.kind == 'vp'
  tokens = toy_tokens(4, c.data.seq_len)
  probs = jnp.linspace(1.0, 3.0, 10)
  state = ts.init_state(10).replace(probs=probs / jnp.sum(probs))
  rng = jax.random.PRNGKey(3)
  new = jax.jit(lambda p: model.loss_fn(p, frozen, tokens, rng, 7, state)[1])(params)
  old, old_bins = jax.jit(lambda p: _old_diffusion_losses(model, p, frozen, tokens, rng, state))(params)
  np.testing.assert_array_equal(new['diffusion_per_example'], old)
  np.testing.assert_array_equal(new['timestep_bins'], old_bins)
  shape = (3, model.dims.latent_len, model.dims.latent_dim)
  grid = solver_lib.time_grid(5, 0.05)
  for solver in ('euler_maruyama', 'ddim'):
    new = jax.jit(lambda p, solver=solver: model.sample_latents(p, rng, 3, 5, t_min=0.05, solver=solver))(params)
    old = jax.jit(lambda p, solver=solver: _old_sample(model, p, rng, shape, grid, solver))(params)
    np.testing.assert_array_equal(new, old)


# ------------------------------------------------ config and checkpoints --
@pytest.mark.parametrize('overrides, fragment', [
    ({'diffusion.process': 'rectified_flow'}, "sample.solver='euler_maruyama' integrates a vp process"),
    ({'sample.solver': 'heun'}, "diffusion.process='vp_tangent' is a vp process"),
    ({'diffusion.process': 'rectified_flow', 'sample.solver': 'ddim'}, "one of ('euler', 'heun')"),
    ({'diffusion.process': 'flow'}, "diffusion.process='flow' is not one of"),
    ({'timesteps.sampler': 'beta'}, "timesteps.sampler='beta' is not one of"),
    ({'timesteps.logit_normal_std': 0.0}, 'timesteps.logit_normal_std must be > 0'),
])
def test_validate_refuses_with_one_sentence(overrides, fragment):
  c = set_fields(base_config(), overrides)
  with pytest.raises(ConfigError, match='^[^\n]*$') as err:
    validate(c)
  assert fragment in str(err.value)


def test_signature_includes_the_process_and_old_runs_keep_theirs():
  c = base_config()
  saved = c.to_dict()
  del saved['diffusion']['process']   # a run saved before the field existed
  del saved['timesteps']['logit_normal_mean'], saved['timesteps']['logit_normal_std']
  assert ckpt_lib.saved_signature({'config': saved}) == ckpt_lib.model_signature(c)
  assert from_saved(saved).diffusion.process == 'vp_tangent'
  ckpt_lib.check_signature({'config': saved}, c, 'old')        # the default fits it
  flow = base_config()
  flow.diffusion.process, flow.sample.solver = 'rectified_flow', 'euler'
  assert ckpt_lib.model_signature(flow)['diffusion.process'] == 'rectified_flow'
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match="diffusion.process='vp_tangent'"):
    ckpt_lib.check_signature({'config': saved}, flow, 'old')


# ----------------------------------------- a tiny flow model, end to end --
@pytest.mark.slow
def test_rectified_flow_loss_is_the_velocity_mse():
  c, model, params, frozen, _ = tiny_setup(**{
      'diffusion.process': 'rectified_flow', 'sample.solver': 'euler', 'timesteps.sampler': 'logit_normal',
      'diffusion.self_cond_prob': 0.0, 'encoder_warmup.steps': 0, 'latent_norm.mode': 'none'})
  tokens = toy_tokens(4, c.data.seq_len)
  state = ts.init_state(int(c.timesteps.num_bins))
  rng = jax.random.PRNGKey(2)
  aux = jax.jit(lambda p: model.loss_fn(p, frozen, tokens, rng, 5, state)[1])(params)
  rng_t, rng_eps, _, _ = jax.random.split(rng, 4)
  z = model.encode(params, model.features(frozen, params, tokens), jax.random.fold_in(rng, 4))
  t, bins = time_samplers.draw(c.timesteps, state, rng_t, 4)
  eps = jax.random.normal(rng_eps, z.shape)
  z_t = (1 - t[:, None, None]) * z + t[:, None, None] * eps
  v_hat = model.denoiser.apply({'params': params['denoiser']}, z_t, t, jnp.zeros_like(z))
  ref = np.mean((np.asarray(v_hat) - np.asarray(eps - z)) ** 2, axis=(1, 2))
  np.testing.assert_allclose(aux['diffusion_per_example'], ref, rtol=1e-5)
  np.testing.assert_array_equal(aux['timestep_bins'], bins)
  # denoise() is the x0 estimate z_t - t v_hat.
  np.testing.assert_allclose(model.denoise(params, z_t, t, jnp.zeros_like(z)),
                             z_t - t[:, None, None] * v_hat, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_tiny_rectified_flow_trains_and_samples_with_euler_and_heun():
  import optax
  c, model, params, frozen, _ = tiny_setup(**{
      'diffusion.process': 'rectified_flow', 'timesteps.sampler': 'logit_normal',
      'sample.solver': 'heun', 'encoder_warmup.steps': 0})
  assert isinstance(model.process, processes.RectifiedFlow)
  tokens = toy_tokens(8, c.data.seq_len)
  state = ts.init_state(int(c.timesteps.num_bins))
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, i):
    (_, aux), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(
        params, frozen, tokens, jax.random.PRNGKey(0), i, state)   # fixed draws: comparable losses
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux

  losses = []
  for i in range(30):
    params, opt_state, aux = step(params, opt_state, i)
    losses.append(float(aux['diffusion_loss']))
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
  z_e = jax.jit(lambda p: model.sample_latents(p, jax.random.PRNGKey(1), 3, 4, solver='euler'))(params)
  z_h = jax.jit(lambda p: model.sample_latents(p, jax.random.PRNGKey(1), 3, 4))(params)   # the config's heun
  assert np.all(np.isfinite(z_e)) and np.all(np.isfinite(z_h)) and not np.allclose(z_e, z_h)
  with pytest.raises(ConfigError, match='integrates a vp process'):
    model.sample_latents(params, jax.random.PRNGKey(1), 3, 4, solver='euler_maruyama')

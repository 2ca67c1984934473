"""Duo (Sahoo et al. 2025): uniform-state discrete diffusion trained through its Gaussian connection.

Uniform-state forward process over K = V tokens: z_t = x with probability
alpha_t, else a uniform draw over all K (so q(z_t | x) = alpha_t e_x + (1 - alpha_t) / K),
alpha_t = 1 - (1 - eps) t (log-linear, as MDLM; ours: Duo's code moves
linearly in the Gaussian log-SNR instead; any monotone schedule gives the
same NELBO form).

The Gaussian connection (Duo's "diffusion duality"): for the Gaussian latent
w = a e_x + s eps over R^K (a^2 + s^2 = 1, eps ~ N(0, I)), argmax(w) follows
exactly the uniform-state marginal with

  alpha = T(m) = (K I(m) - 1) / (K - 1),   I(m) = P(argmax w = x) = int phi(y) Phi(y + m)^(K-1) dy,

m = a / s. `DuoTable` tabulates T on a grid of m (quadrature in y) and inverts it.

Training (the NELBO of uniform-state diffusion, UDLM's continuous-time form;
x_bar = K alpha x + (1 - alpha) 1, x_bar_theta the same with x_theta, i = z_t):

  L = alpha' / (K alpha) [ K / x_bar_i - K / x_bar_theta_i
                           - sum_{j != i} (x_bar_j / x_bar_i) log(x_bar_theta_i x_bar_j / (x_bar_theta_j x_bar_i)) ]

It is 0 when x_theta = x and positive otherwise. Curriculum
(method.curriculum_steps): for that many first steps the backbone reads
softmax(w / tau) (the expected embedding under it), w the Gaussian latent
at the m with T(m) = alpha_t, while the loss uses z_t = argmax(w), which
has the discrete marginal above; tau moves log-linearly from tau_start to
tau_end. Afterwards z_t is drawn from the discrete marginal directly.

Sampler: ancestral, S steps on t_i = 1 - i / S ending at t = 0, with the
posterior of the uniform process at x = x_theta (Duo's mean
parameterisation): p(z_s = j | z_t = i) proportional to
(alpha_{t|s} 1[i = j] + (1 - alpha_{t|s}) / K) (alpha_s x_theta_j + (1 - alpha_s) / K),
alpha_{t|s} = alpha_t / alpha_s. Left out: Duo's few-step sampler comes from
discrete consistency distillation (a second training stage with a teacher
copy); BUILD_NOTES.md, "Baselines", says why.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from ldlm_jax.methods.backbone import DiscreteMethod, log_linear_alpha


def argmax_probability(m, num_classes: int, num_points: int = 4001):
  """I(m) = P(argmax(m e_x + eps) = x), eps ~ N(0, I_K), by the trapezoid rule on y in [-12, 12]."""
  y = np.linspace(-12.0, 12.0, num_points)
  m = np.atleast_1d(np.asarray(m, np.float64))
  log_phi = -0.5 * y ** 2 - 0.5 * np.log(2 * np.pi)
  log_cdf = special.log_ndtr(m[:, None] + y[None, :])
  integrand = np.exp(log_phi[None, :] + (num_classes - 1) * log_cdf)
  return np.trapezoid(integrand, y, axis=1)


def gaussian_to_discrete_alpha(m, num_classes: int):
  """Duo's map T: the uniform-state alpha of argmax(a e_x + s eps) at m = a / s."""
  return (num_classes * argmax_probability(m, num_classes) - 1.0) / (num_classes - 1.0)


@functools.lru_cache(maxsize=8)
def duo_table(num_classes: int, m_max: float = 16.0, num: int = 2048):
  """(m grid, T(m)) for the inverse map alpha -> m; T increases from 0 (m = 0) to ~1."""
  m = np.linspace(0.0, m_max, num)
  alpha = np.maximum.accumulate(np.clip(gaussian_to_discrete_alpha(m, num_classes), 0.0, 1.0))
  return m.astype(np.float32), alpha.astype(np.float32)


def udlm_nelbo_per_token(probs_BLV, x0_BL, zt_BL, alpha_B, dalpha_B):
  """The uniform-state NELBO term of each position (B, L); see the module docstring."""
  k = probs_BLV.shape[-1]
  a = alpha_B[:, None, None]
  onehot_x = jax.nn.one_hot(x0_BL, k, dtype=jnp.float32)
  x_bar = k * a * onehot_x + (1.0 - a)
  x_bar_theta = k * a * probs_BLV + (1.0 - a)
  pick = lambda v: jnp.take_along_axis(v, zt_BL[..., None], axis=-1)     # (B, L, 1)
  xb_i, xbt_i = pick(x_bar), pick(x_bar_theta)
  ratio = x_bar / xb_i
  logs = jnp.log(xbt_i) + jnp.log(x_bar) - jnp.log(x_bar_theta) - jnp.log(xb_i)
  not_i = 1.0 - jax.nn.one_hot(zt_BL, k, dtype=jnp.float32)
  bracket = (k / xb_i[..., 0] - k / xbt_i[..., 0]
             - jnp.sum(not_i * ratio * logs, axis=-1))
  return (dalpha_B / (k * alpha_B))[:, None] * bracket


def posterior_logits(probs_BLV, zt_BL, alpha_t, alpha_s):
  """log p(z_s | z_t) (unnormalised) of the uniform process at x = x_theta."""
  k = probs_BLV.shape[-1]
  a_ts = alpha_t / alpha_s
  from_t = a_ts * jax.nn.one_hot(zt_BL, k, dtype=jnp.float32) + (1.0 - a_ts) / k
  from_x = alpha_s * probs_BLV + (1.0 - alpha_s) / k
  return jnp.log(from_t) + jnp.log(from_x)


class Duo(DiscreteMethod):
  name = 'duo'

  def __init__(self, config, encoder):
    super().__init__(config, encoder)
    mt = config.method
    self.curriculum_steps = int(mt.curriculum_steps)
    self.tau_start, self.tau_end = float(mt.tau_start), float(mt.tau_end)
    self._table = None

  def table(self):
    # Host arrays: the table is first built inside a trace (the train step's lax.cond), and a
    # jax array created there would be that trace's tracer, leaking into the next jit (eval).
    if self._table is None:
      self._table = tuple(np.asarray(a, np.float32) for a in duo_table(self.vocab_size))
    return self._table

  def gaussian_scales(self, alpha_B):
    """(a, s) of the Gaussian latent whose argmax has the uniform-state marginal at alpha."""
    m_grid, t_grid = self.table()
    m = jnp.interp(alpha_B, t_grid, m_grid)
    return m / jnp.sqrt(1.0 + m ** 2), 1.0 / jnp.sqrt(1.0 + m ** 2)

  def tau(self, step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(self.curriculum_steps, 1), 0.0, 1.0)
    return jnp.exp(jnp.log(self.tau_start) + frac * (jnp.log(self.tau_end) - jnp.log(self.tau_start)))

  def loss_fn(self, params, frozen, batch, rng, step, sampler_state):
    del sampler_state
    params = self.with_frozen(params, frozen)
    x0 = self.tokens_of(batch)
    k = self.vocab_size
    rng_t, rng_n = jax.random.split(rng)
    t = self.draw_t(rng_t, x0.shape[0])
    alpha = log_linear_alpha(t, self.noise_eps)
    dalpha = -(1.0 - self.noise_eps) * jnp.ones_like(t)

    def curriculum():
      a, s = self.gaussian_scales(alpha)
      w = (a[:, None, None] * jax.nn.one_hot(x0, k, dtype=jnp.float32)
           + s[:, None, None] * jax.random.normal(rng_n, x0.shape + (k,)))
      return jnp.argmax(w, -1).astype(x0.dtype), jax.nn.softmax(w / self.tau(step), axis=-1)

    def discrete():
      key_keep, key_draw = jax.random.split(rng_n)
      keep = jax.random.uniform(key_keep, x0.shape) < alpha[:, None]
      z = jnp.where(keep, x0, jax.random.randint(key_draw, x0.shape, 0, k, x0.dtype))
      return z, jax.nn.one_hot(z, k, dtype=jnp.float32)

    if self.curriculum_steps > 0:
      z_t, inputs = jax.lax.cond(step < self.curriculum_steps, curriculum, discrete)
    else:
      z_t, inputs = discrete()
    logits = self.logits(params, inputs, t)
    per_token = udlm_nelbo_per_token(jax.nn.softmax(logits, -1), x0, z_t, alpha, dalpha)
    accuracy = jnp.mean((jnp.argmax(logits, -1) == x0).astype(jnp.float32))
    return self.aux(per_token, t, accuracy)

  def generate(self, params, rng, num_samples: int, num_steps: int, **ignored):
    """Tokens (B, L) from S = num_steps ancestral steps from the uniform prior (one lax.scan)."""
    del ignored
    length, k = self.dims.seq_len, self.vocab_size
    key0, rng = jax.random.split(rng)
    x = jax.random.randint(key0, (num_samples, length), 0, k, jnp.int32)
    ts = 1.0 - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps

    def body(x, inp):
      t, s, key = inp
      probs = jax.nn.softmax(self.logits(params, x, jnp.full((num_samples,), t)), -1)
      alpha_t = log_linear_alpha(t, self.noise_eps)
      alpha_s = jnp.where(s <= 0.0, 1.0, log_linear_alpha(s, self.noise_eps))
      logits = posterior_logits(probs, x, alpha_t, alpha_s)
      return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32), None

    x, _ = jax.lax.scan(body, x, (ts[:-1], ts[1:], jax.random.split(rng, num_steps)))
    return x

"""MDLM (Sahoo et al. 2024): absorbing-state masked diffusion, and ReMDM remasking (Wang et al. 2025).

Forward process: every token is replaced by the mask id M (= V, the
embedding table's extra row) independently with probability 1 - alpha_t,
alpha_t = 1 - (1 - eps) t (log-linear). SUBS parameterisation: the model's
distribution x_theta over the V real tokens never puts mass on M (the head
has no M output) and an unmasked input token is carried over unchanged.
Loss: the continuous-time NELBO per token,

  L = E_t [ sum_l 1[z_l = M] * (-alpha_t') / (1 - alpha_t) * (-log x_theta(x_l | z_t)) ] / L
    = E_t [ mean_l 1[z_l = M] * (1 / t) * CE_l ]          (log-linear: -alpha' / (1 - alpha) = 1 / t)

Sampler (ancestral, S steps on t_i = 1 - i / S; the last one lands on t = 0,
alpha = 1, so no mask is left): a masked token becomes a draw from
x_theta with probability (alpha_s - alpha_t) / (1 - alpha_t); an unmasked
one stays. With method.cache, a step whose input equals the previous
step's reuses that step's model output and its draws (exact without time
conditioning: the draws at positions that stayed masked were never used),
so such a step costs O(B L) instead of a backbone call and a V-way draw.

ReMDM ('rescale' schedule, method.remdm_eta = eta > 0): an unmasked token is
remasked with probability sigma_t = eta * min(1, (1 - alpha_s) / alpha_t), and
a masked one is unmasked with probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t).
The same uniform decides both, so eta = 0 is the plain sampler draw for draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.methods.backbone import DiscreteMethod, log_linear_alpha


def nelbo_per_token(log_probs_BLV, x0_BL, masked_BL, t_B, noise_eps: float):
  """MDLM's per-token NELBO term: 1[masked] * (-alpha_t') / (1 - alpha_t) * (-log p(x0)). (B, L)."""
  weight = (1.0 - noise_eps) / (1.0 - log_linear_alpha(t_B, noise_eps))          # = 1 / t
  nll = -jnp.take_along_axis(log_probs_BLV, x0_BL[..., None], axis=-1)[..., 0]
  return masked_BL.astype(jnp.float32) * weight[:, None] * nll


def sampler_step(x_BL, logits_BLV, alpha_t, alpha_s, key, mask_id: int, remask_sigma=None,
                 draw_BL=None):
  """One ancestral step from t to s < t; `remask_sigma` (ReMDM) None or 0 = plain MDLM.

  Returns the new tokens. Masked tokens are unmasked (to a draw from softmax(logits)) with
  probability (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t); unmasked ones are remasked with
  probability sigma. One uniform per position decides both. `draw_BL`: the draws from
  softmax(logits) to use (None: drawn here with the key)."""
  key_u, key_c = jax.random.split(key)
  u = jax.random.uniform(key_u, x_BL.shape)
  draw = (jax.random.categorical(key_c, logits_BLV, axis=-1).astype(x_BL.dtype)
          if draw_BL is None else draw_BL.astype(x_BL.dtype))
  masked = x_BL == mask_id
  sigma = 0.0 if remask_sigma is None else remask_sigma
  p_unmask = (alpha_s - (1.0 - sigma) * alpha_t) / (1.0 - alpha_t)
  out = jnp.where(masked & (u < p_unmask), draw, x_BL)
  if remask_sigma is not None:
    out = jnp.where(~masked & (u < sigma), jnp.asarray(mask_id, x_BL.dtype), out)
  return out


def remdm_sigma(alpha_t, alpha_s, eta: float):
  """ReMDM's 'rescale' schedule: eta * sigma_max, sigma_max = min(1, (1 - alpha_s) / alpha_t)."""
  return eta * jnp.minimum(1.0, (1.0 - alpha_s) / alpha_t)


class MDLM(DiscreteMethod):
  name = 'mdlm'
  extra_embeddings = 1     # the mask id M = V
  remasks = True           # generate() takes remdm_eta (ReMDM)

  def __init__(self, config, encoder):
    super().__init__(config, encoder)
    self.mask_id = self.vocab_size
    self.time_conditioning = bool(config.method.time_conditioning)

  def model_time(self, t_B):
    return t_B if self.time_conditioning else jnp.zeros_like(t_B)

  def loss_fn(self, params, frozen, batch, rng, step, sampler_state):
    del step, sampler_state
    params = self.with_frozen(params, frozen)
    x0 = self.tokens_of(batch)
    rng_t, rng_m = jax.random.split(rng)
    t = self.draw_t(rng_t, x0.shape[0])
    masked = jax.random.uniform(rng_m, x0.shape) < (1.0 - log_linear_alpha(t, self.noise_eps))[:, None]
    z_t = jnp.where(masked, self.mask_id, x0)
    logits = self.logits(params, z_t, self.model_time(t))
    per_token = nelbo_per_token(jax.nn.log_softmax(logits, axis=-1), x0, masked, t, self.noise_eps)
    hits = (jnp.argmax(logits, -1) == x0) & masked
    accuracy = jnp.sum(hits) / jnp.maximum(jnp.sum(masked), 1)
    return self.aux(per_token, t, accuracy)

  def generate(self, params, rng, num_samples: int, num_steps: int, *, remdm_eta=None,
               return_calls: bool = False, **ignored):
    """Tokens (B, L) from S = num_steps ancestral steps (one compiled lax.scan).

    `remdm_eta`: None = method.remdm_eta; > 0 remasks (ReMDM rescale). `return_calls` also
    returns the number of backbone calls made (the cache skips the others)."""
    del ignored
    eta = float(self.config.method.remdm_eta if remdm_eta is None else remdm_eta)
    # Without a time input and without remasking, a step whose input is unchanged has the same
    # model output: it is reused (method.cache) together with the unused draws from it.
    reuse = not self.time_conditioning and eta == 0.0
    cache = bool(self.config.method.cache) and reuse
    length = self.dims.seq_len
    x = jnp.full((num_samples, length), self.mask_id, jnp.int32)
    ts = 1.0 - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    keys = jax.random.split(rng, num_steps)

    def model(x, t):
      return self.logits(params, x, self.model_time(jnp.full((num_samples,), t)))

    def fresh_draws(x, t, key, calls):
      logits = model(x, t)
      return logits, jax.random.categorical(key, logits, axis=-1).astype(jnp.int32), calls + 1

    def body(carry, inp):
      x, logits, draws, unchanged, calls = carry
      t, s, key = inp
      key_step, key_draw = jax.random.split(key)
      if reuse:
        # The input is the last step's: same logits (no time input), and the last step's draws
        # at positions it left masked were never used, so they are still fresh draws from them.
        if cache:
          logits, draws, calls = jax.lax.cond(unchanged, lambda: (logits, draws, calls),
                                              lambda: fresh_draws(x, t, key_draw, calls))
        else:
          new_logits, new_draws, calls = fresh_draws(x, t, key_draw, calls)
          logits = new_logits
          draws = jnp.where(unchanged, draws, new_draws)
      else:
        logits, calls, draws = model(x, t), calls + 1, None
      alpha_t = log_linear_alpha(t, self.noise_eps)
      alpha_s = jnp.where(s <= 0.0, 1.0, log_linear_alpha(s, self.noise_eps))
      sigma = remdm_sigma(alpha_t, alpha_s, eta) if eta > 0 else None
      x_new = sampler_step(x, logits, alpha_t, alpha_s, key_step, self.mask_id, sigma, draws)
      carry_draws = draws if reuse else jnp.zeros_like(x)
      return (x_new, logits, carry_draws, jnp.all(x_new == x), calls), None

    init_logits = jnp.zeros((num_samples, length, self.vocab_size), jnp.float32)
    init = (x, init_logits, jnp.zeros_like(x), jnp.asarray(False), jnp.int32(0))
    (x, _, _, _, calls), _ = jax.lax.scan(body, init, (ts[:-1], ts[1:], keys))
    return (x, calls) if return_calls else x

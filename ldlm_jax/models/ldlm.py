"""The LDLM model: modules, the joint loss and generation (docs/method.md Sections 1-6).

`LDLM` is a plain class (t5x style) that owns the Flax modules and exposes
pure functions of explicit parameters:

  init(rng)                         -> trainable params (dict per component)
  features(frozen, params, tokens)  -> normalized token-encoder features h_n
  loss_fn(params, frozen, batch, rng, step, sampler_state) -> (loss, aux)
  generate(params, rng, ...)        -> tokens, via one compiled lax.scan

The batch is a dict (docs/architecture.md, "The batch"): 'tokens' (B, L), and 'prompt_mask'
(B, L) bool (True = given) when config.condition.enabled; a bare token array
is read as {'tokens': array}. A conditional model's denoiser reads the
condition `{'features', 'mask'}` (`condition()`); an all-False mask is the
null condition of classifier-free guidance.

What is diffused comes from the latent space (`config.latent_space.name`,
ldlm_jax/latent_spaces); the denoiser, token decoder and sampler are shared.
Trainable parameters and frozen weights (the token encoder, components taken
frozen from `train.init_from`) are kept apart by construction: the frozen
ones arrive in a separate `FrozenInputs` pytree that is never differentiated,
never in the optimizer or the EMA and never donated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.diffusion import latent_norm
from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.diffusion import time_samplers
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.diffusion.processes import process_from_config
from ldlm_jax.diffusion.warmup import encoder_warmup_lambda, scale_gradient
from ldlm_jax.errors import ConfigError
from ldlm_jax.latent_spaces import COMPONENTS, Dims, FrozenInputs, latent_space_class
from ldlm_jax.latent_spaces.base import component_keys
from ldlm_jax.models import layers, vocab_ce
from ldlm_jax.models.dit import DiT
from ldlm_jax.models.token_decoder import TokenDecoder

__all__ = ['COMPONENTS', 'Dims', 'FrozenInputs', 'LDLM', 'count_params', 'frozen_component_names']


# Latent-space health, logged every step for a space that trains a denoiser.
DIAGNOSTIC_METRICS = ('latent_content_fraction', 'content_snr1_t')
# Noise levels of the one-shot denoising curve logged at every evaluation.
DENOISE_CURVE_TS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
# The frozen component that holds the encoder's word-embedding table for a tied token decoder head.
TIED_TABLE = 'token_embedding'


def frozen_component_names(config) -> tuple[str, ...]:
  """Components taken frozen from `train.init_from` (kept outside the train state)."""
  fc = config.train.init_from
  if not fc.workdir or not fc.frozen:
    return ()
  return tuple(s for s in fc.components.split(',') if s)


class LDLM:
  """A latent space (ldlm_jax.latent_spaces) + token decoder + DiT denoiser."""

  def __init__(self, config, encoder):
    """`encoder` is the frozen token encoder (ldlm_jax.encoders.registry.FrozenEncoder)."""
    self.config = config
    self.encoder = encoder
    mc = config.model
    # The diffusion process (diffusion/processes): corruption, target, x0 conversion.
    self.process = process_from_config(config)
    self.input_kind = config.encoder.input
    self.encoder_layer = int(config.encoder.layer)
    self.latent_space = latent_space_class(config)(config, encoder, self)
    self.dims = self.latent_space.dims()
    # Loss terms of the latent space logged beside the fixed ones (the VAE's KL and REPA).
    self.extra_metrics = tuple(self.latent_space.extra_metrics)
    d = self.dims
    # A token decoder head tied to the frozen encoder's word embeddings reads that
    # table as a frozen component, taken from the encoder (not from train.init_from).
    self.tied_head = str(mc.token_decoder.head) == 'encoder'
    if self.tied_head and not self.use_ce:
      raise ConfigError(
          f'latent_space.name={config.latent_space.name!r} has no token decoder here, so '
          'model.token_decoder.head=encoder would do nothing; leave it at learned.')
    self.encoder_components = (TIED_TABLE,) if self.tied_head else ()
    self.frozen_names = tuple(sorted(set(frozen_component_names(config))
                                     | set(self.latent_space.frozen_components)
                                     | set(self.encoder_components)))

    self.token_decoder = self.make_token_decoder(
        num_layers=mc.token_decoder.num_layers, width=int(mc.token_decoder.width) or d.feature_dim,
        num_heads=mc.token_decoder.num_heads, mlp_ratio=mc.token_decoder.mlp_ratio)

    den = mc.denoiser
    cc = config.condition
    # '' = unconditional (the same denoiser parameter tree and outputs as without conditioning).
    self.condition_path = str(cc.path) if bool(cc.enabled) else ''
    self.denoiser = DiT(latent_dim=d.latent_dim, width=den.width, num_layers=den.num_layers,
                        num_heads=den.num_heads, mlp_ratio=den.mlp_ratio,
                        condition=self.condition_path, positions=str(den.positions),
                        **self.module_options())
    # Latent standardization (ldlm_jax/diffusion/latent_norm.py): params carry the
    # running statistics when the space trains a denoiser and latent_norm.mode='running'.
    ln = config.latent_norm
    self.standardizes = self.latent_space.trains_diffusion and ln.mode == 'running'
    self.latent_min_var = float(ln.min_var)
    # Diagnostics logged every step beside the losses (see loss_fn).
    if self.latent_space.trains_diffusion:
      self.extra_metrics += DIAGNOSTIC_METRICS

  # The autoencoder's modules and switches (LDLM / COSMOS spaces), for the benchmarks.
  latent_encoder = property(lambda self: self.latent_space.latent_encoder)
  latent_decoder = property(lambda self: self.latent_space.latent_decoder)
  use_ce = property(lambda self: 'token_decoder' in self.latent_space.components)

  def module_options(self) -> dict:
    """Compute dtype, attention implementation and q/k norm: the same for every trainable module."""
    mc = self.config.model
    return dict(dtype=layers.dtype_from_name(mc.dtype), attention_impl=mc.attention_impl or None,
                qk_norm=bool(mc.qk_norm), remat=mc.remat,
                attention_query_chunk=int(mc.attention_query_chunk))

  def make_token_decoder(self, num_layers, width, num_heads, mlp_ratio=4, tied=None):
    """tied: the vocab head through the encoder's frozen table (None: model.token_decoder.head)."""
    tied = self.tied_head if tied is None else tied
    return TokenDecoder(vocab_size=self.dims.vocab_size, width=width, num_layers=num_layers,
                        num_heads=num_heads, mlp_ratio=mlp_ratio,
                        tied_dim=self.dims.feature_dim if tied else 0,
                        **self.module_options())

  # ---------------------------------------------------------------- params --
  def init_components(self, rng) -> dict:
    """Every component's params, trainable and frozen (the frozen ones' shapes)."""
    d = self.dims
    keys = component_keys(rng)
    params = self.latent_space.init(keys)
    if self.latent_space.trains_diffusion:
      z = jnp.zeros((1, d.latent_len, d.latent_dim), jnp.float32)
      cond = (self.null_condition(1),) if self.condition_path else ()
      params['denoiser'] = self.denoiser.init(keys['denoiser'], z, jnp.zeros((1,)), z, *cond)['params']
    if self.standardizes:
      params[latent_norm.KEY] = latent_norm.init_stats(d.latent_len, d.latent_dim)
    if self.tied_head:   # its shape only: the value is the frozen encoder's (frozen_inputs)
      params[TIED_TABLE] = {'embedding': jnp.zeros((d.vocab_size, d.feature_dim), jnp.float32)}
    return params

  def init(self, rng) -> dict:
    """Trainable params (dict per component); frozen components come from train.init_from."""
    return {k: v for k, v in self.init_components(rng).items() if k not in self.frozen_names}

  @staticmethod
  def with_frozen(params, frozen: FrozenInputs) -> dict:
    """Trainable params with the frozen components added (what every forward reads)."""
    if not frozen.components:
      return params
    return {**frozen.components, **params}

  def frozen_inputs(self, encoder_params, norm_mean, norm_std, components=None) -> FrozenInputs:
    """Packs what the loss needs from the frozen encoder (only that) and frozen components
    (with a tied token decoder head, the encoder's word-embedding table among them)."""
    components = dict(components or {})
    if self.tied_head and TIED_TABLE not in components:
      table = jnp.asarray(self.encoder.embedding_table(encoder_params), jnp.float32)
      vocab, width = self.dims.vocab_size, self.dims.feature_dim
      if table.shape[0] < vocab or table.shape[1] != width:
        raise ConfigError(
            f'the frozen encoder\'s embedding table is {tuple(table.shape)}, which cannot '
            f'read {vocab} tokens of width {width}; set --config.model.token_decoder.head=learned.')
      components[TIED_TABLE] = {'embedding': table[:vocab]}
    return self.latent_space.frozen_inputs(encoder_params, norm_mean, norm_std, components)

  def tied_table(self, params):
    """The frozen (V, E) table a tied token decoder head reads (None for a learned head)."""
    return params[TIED_TABLE]['embedding'] if self.tied_head else None

  # --------------------------------------------------------------- pieces --
  def raw_features(self, encoder_params, tokens_BL):
    """Un-normalized features of the frozen encoder ('hidden' / 'embeddings')."""
    return self.latent_space.raw_features(encoder_params, tokens_BL)

  def features(self, frozen: FrozenInputs, params, tokens_BL):
    """h_n (B, L, H): normalized frozen features, or trainable scratch embeddings."""
    return self.latent_space.features(frozen, params, tokens_BL)

  def encode(self, params, h_n_BLH, rng=None):
    return self.latent_space.encode(params, h_n_BLH, rng)

  def decode(self, params, z_BND):
    return self.latent_space.decode(params, z_BND)

  def token_logits(self, params, h_hat_BLH, token_decoder=None, token_decoder_params=None):
    module = token_decoder or self.token_decoder
    p = token_decoder_params if token_decoder_params is not None else params['token_decoder']
    return module.apply({'params': p}, h_hat_BLH, table_VE=self.tied_table(params))

  def token_ce(self, params, h_hat_BLH, tokens_BL):
    """(CE, accuracy) of the shared token decoder on h_hat; loss.ce_vocab_chunk > 0 never
    materialises the float32 (B, L, V) logits (models/vocab_ce.py)."""
    return vocab_ce.token_decoder_ce(self.token_decoder, params['token_decoder'], h_hat_BLH,
                                     tokens_BL, int(self.config.loss.ce_vocab_chunk),
                                     self.tied_table(params))

  # VP processes' schedule (alpha, sigma, beta), for code that integrates the VP SDE itself.
  schedule = property(lambda self: getattr(self.process, 'schedule', None))

  def predict(self, params, z_t_BND, t_B, x0_sc_BND, cond=None):
    """The denoiser's raw output: the process's prediction target (x0, velocity, ...).

    `cond` (a conditional model only): the dict of `condition()`. None = nothing
    given: the denoiser skips its condition modules, which computes what an all-False mask
    computes (exactly, for cross-attention) at the unconditional cost."""
    if not self.condition_path and cond is not None:
      raise ValueError('this model was trained without conditions (condition.enabled=False)')
    extra = () if cond is None else (cond,)
    return self.denoiser.apply({'params': params['denoiser']}, z_t_BND, t_B, x0_sc_BND,
                               *extra).astype(jnp.float32)

  # ------------------------------------------------------------ condition --
  def null_condition(self, batch: int) -> dict:
    """Nothing given: the denoiser computes the unconditional path (classifier-free guidance)."""
    d = self.dims
    width = self.latent_space.condition_dim()
    return {'features': jnp.zeros((batch, d.seq_len, width), jnp.float32),
            'mask': jnp.zeros((batch, d.seq_len), bool)}

  def condition(self, frozen: FrozenInputs, params, tokens_BL, prompt_mask_BL) -> dict:
    """The denoiser's condition: the features of the given tokens (prompt_mask True) only.

    `params` must already hold the frozen components (`with_frozen`)."""
    mask = jnp.asarray(prompt_mask_BL).astype(bool)
    feats = self.latent_space.condition_features(frozen, params, tokens_BL, mask)
    return {'features': feats, 'mask': mask}

  def unpack_batch(self, batch):
    """(tokens_BL, prompt_mask_BL or None) from the batch dict (or a bare token array)."""
    if not isinstance(batch, dict):
      batch = {'tokens': batch}
    mask = batch.get('prompt_mask')
    if self.condition_path and mask is None:
      raise ValueError('a conditional model (condition.enabled) needs batch["prompt_mask"]')
    if not self.condition_path and mask is not None:
      raise ValueError('batch["prompt_mask"] given to a model trained without conditions')
    return batch['tokens'], mask

  def denoise(self, params, z_t_BND, t_B, x0_sc_BND, cond=None):
    """x0_hat: the denoiser's output converted by the process (what sampling, self-conditioning
    and guidance use)."""
    return self.process.to_x0(z_t_BND, t_B, self.predict(params, z_t_BND, t_B, x0_sc_BND, cond))

  # ----------------------------------------------------------------- loss --
  def loss_fn(self, params, frozen: FrozenInputs, batch_dict, rng, step,
              sampler_state: timesteps_lib.TimestepSamplerState):
    """The joint objective L = w_d L_diff + w_r L_rec + w_c L_ce (docs/method.md Section 4).

    Returns (loss, aux) where aux holds every term and the per-example
    diffusion losses with their timestep bins (for the adaptive sampler).
    With a condition, the denoiser (both self-conditioning passes) reads the
    given tokens' features; the diffusion loss is over all latents.
    """
    c = self.config
    tokens_BL, prompt_mask = self.unpack_batch(batch_dict)
    batch = tokens_BL.shape[0]
    rng_t, rng_eps, rng_dec, rng_sc = jax.random.split(rng, 4)
    params = self.with_frozen(params, frozen)
    space = self.latent_space

    h_n = self.features(frozen, params, tokens_BL)
    # A stochastic encoder (a VAE) draws from its own stream; the four above stay as they were.
    z = self.encode(params, h_n, jax.random.fold_in(rng, 4))       # (B, N, D)

    # Reconstruction branch (the latent space's own terms; noisy decoder input).
    terms = space.reconstruction(params, h_n, z, tokens_BL, rng_dec)
    rec_loss, ce_loss, token_acc = terms['reconstruction_loss'], terms['ce_loss'], terms['token_accuracy']

    # Diffusion branch: the encoder's gradient from L_diff is scaled by lam.
    lam = encoder_warmup_lambda(step, int(c.encoder_warmup.steps),
                                c.encoder_warmup.center, c.encoder_warmup.sharpness)
    stats = None
    if self.standardizes:
      # This batch's statistics join the running ones before use, so the first
      # step already standardizes; the train step stores the result.
      stats = latent_norm.update(params[latent_norm.KEY], z, float(c.latent_norm.decay))
      z0 = latent_norm.standardize_for_loss(stats, z, c.latent_norm.encoder_gradient,
                                            self.latent_min_var, lam)
    else:
      z0 = scale_gradient(z, lam)
    t, bins = time_samplers.draw(c.timesteps, sampler_state, rng_t, batch)
    if space.trains_diffusion:
      process = self.process
      eps = jax.random.normal(rng_eps, z0.shape, z0.dtype)
      z_t = process.corrupt(z0, t, eps)
      cond = (None if prompt_mask is None
              else self.condition(frozen, params, tokens_BL, prompt_mask))
      x0_sc = self._self_condition(params, z_t, t, rng_sc, cond)
      net_out = self.predict(params, z_t, t, x0_sc, cond)
      diff_per_example = process.per_example_loss(net_out, process.target(z0, eps, t))
    else:  # an autoencoder stage: no denoiser yet
      diff_per_example = jnp.zeros((batch,), jnp.float32)
    diff_loss = jnp.mean(diff_per_example)

    loss = (c.loss.diffusion_weight * diff_loss
            + c.loss.reconstruction_weight * rec_loss
            + c.loss.ce_weight * ce_loss)
    if 'extra_loss' in terms:
      loss = loss + terms['extra_loss']
    aux = {
        'loss': loss,
        'diffusion_loss': diff_loss,
        'reconstruction_loss': rec_loss,
        'ce_loss': ce_loss,
        'token_accuracy': token_acc,
        'encoder_lambda': lam,
        # mean ||z|| / sqrt(D) over latent vectors: 1 for unit-variance latents.
        'latent_norm': jnp.mean(jnp.linalg.norm(z, axis=-1)) / np.sqrt(self.dims.latent_dim),
        'diffusion_per_example': diff_per_example,
        'timestep_bins': bins,
    }
    # A space's own terms (e.g. the VAE's KL and REPA losses) ride along in aux;
    # those in `extra_metrics` are logged beside LOSS_METRICS.
    if space.trains_diffusion:
      aux.update(self.content_diagnostics(z, z0))
    if stats is not None:
      aux[latent_norm.KEY] = stats
    aux.update({k: v for k, v in terms.items() if k not in aux})
    return loss, aux

  # ----------------------------------------------- latent standardization --
  def to_diffusion_space(self, params, z_BND):
    """Encoder latents -> what the denoiser diffuses (standardized, or unchanged)."""
    if not self.standardizes:
      return z_BND
    return latent_norm.standardize(params[latent_norm.KEY], z_BND, self.latent_min_var)

  def from_diffusion_space(self, params, z0_BND):
    """What the denoiser produced -> latents the decoders read."""
    if not self.standardizes:
      return z0_BND
    return latent_norm.unstandardize(params[latent_norm.KEY], z0_BND, self.latent_min_var)

  def content_diagnostics(self, z_BND, z0_BND) -> dict:
    """Cheap per-batch health of the latent space (logged every step, no gradient).

    latent_content_fraction: share of the encoder latents' mean square that
      varies across examples (a constant vector carries no content);
    content_snr1_t: the t at which the diffused content's SNR a_t^2 v / s_t^2
      (v its mean variance across examples) falls to 1; below it each latent
      is mostly given by its own noisy value, above it by the others."""
    z, z0 = jax.lax.stop_gradient(z_BND), jax.lax.stop_gradient(z0_BND)
    _, var0 = latent_norm.batch_moments(z0)
    return {'latent_content_fraction': latent_norm.content_fraction(z),
            'content_snr1_t': latent_norm.content_snr_one_time(self.process, jnp.mean(var0))}

  def one_shot_denoising(self, params, frozen: FrozenInputs, tokens_BL, rng, ts):
    """Token accuracy of decode(x0_hat(z_t)) at each t in `ts`: (len(ts),).

    Encode the tokens, corrupt the (standardized) latents at t, predict x0 with
    one self-conditioned pass (a first pass from a zero self-condition, as in
    training), map back and decode without noise. High accuracy up to large t
    means the denoiser recovers content from context, not only from each
    latent's own noisy value. Unconditional; `params` without frozen components."""
    params = self.with_frozen(params, frozen)
    z = self.encode(params, self.features(frozen, params, tokens_BL))
    z0 = self.to_diffusion_space(params, z)
    sc = float(self.config.diffusion.self_cond_prob) > 0.0

    def accuracy(t, key):
      t_B = jnp.full((tokens_BL.shape[0],), t, jnp.float32)
      z_t = self.process.corrupt(z0, t_B, jax.random.normal(key, z0.shape, z0.dtype))
      x0 = self.denoise(params, z_t, t_B, jnp.zeros_like(z_t))
      if sc:
        x0 = self.denoise(params, z_t, t_B, x0)
      out = self.decode_tokens(params, self.from_diffusion_space(params, x0))
      return jnp.mean((out == tokens_BL).astype(jnp.float32))

    keys = jax.random.split(rng, len(ts))
    return jnp.stack([accuracy(float(t), k) for t, k in zip(ts, keys)])

  def _self_condition(self, params, z_t, t, rng, cond=None):
    """x0_sc: zeros, or a stop-gradient first pass (Chen et al.)."""
    c = self.config.diffusion
    zeros = jnp.zeros_like(z_t)
    p = float(c.self_cond_prob)
    if p <= 0.0:
      return zeros
    first_pass = lambda: jax.lax.stop_gradient(self.denoise(params, z_t, t, zeros, cond))
    if p >= 1.0:
      return first_pass()
    if c.self_cond_mode == 'cond':
      # One coin per batch; the extra forward pass is skipped when it is tails.
      coin = jax.random.bernoulli(rng, p)
      return jax.lax.cond(coin, first_pass, lambda: zeros)
    # 'per_example': always run the pass, keep it per example with probability p.
    keep = jax.random.bernoulli(rng, p, (z_t.shape[0],))
    return jnp.where(keep[:, None, None], first_pass(), zeros)

  # ------------------------------------------------------------ sampling --
  def sample_latents(self, params, rng, num_samples: int, num_steps: int, *,
                     t_min: float = 0.05, time_grid: str = 'uniform', solver: str | None = None,
                     timestep_probs=None, final: str = 'z', condition=None, guidance: float = 1.0):
    """z0 (B, N, D) from the reverse process (final: solver.FINALS); jit with the ints static.

    The result is in the encoder's units (mapped back from the standardized
    space the denoiser works in), ready for `decode_tokens`.

    solver=None: the config's sample.solver. The grid runs from 1 to the
    process's end time: t_min for VP processes, 0 for flows.

    `condition` (a conditional model): the dict of `condition()` for the
    num_samples rows, fixed over the chain, so the denoiser closure captures
    it and the solver's DenoiseFn stays f(z_t, t, x0_sc). `guidance` (a
    Python float) is the classifier-free guidance weight w, applied inside
    the compiled scan on the x0 prediction:
      x0 = x0_null + w (x0_cond - x0_null)
    At fixed z_t and t, eps_hat = (z_t - a_t x0) / s_t and a flow's velocity
    (z_t - x0) / t are affine in x0 with coefficients summing to one on the x0 terms, so this
    equals guidance on eps (Ho & Salimans) or on the velocity. w = 1 is the
    single conditional pass (no null pass is run). With self-conditioning the
    guided x0 is what the scan carries.
    """
    d = self.dims
    solver = solver or self.config.sample.solver
    wrong = solver_lib.mismatch(solver, self.process)
    if wrong:
      raise ConfigError(wrong)
    grid = solver_lib.time_grid(num_steps, self.process.sampling_t_end(t_min), time_grid, timestep_probs)
    if condition is not None and not self.condition_path:
      raise ValueError('this model was trained without conditions (condition.enabled=False)')
    guidance = float(guidance)
    if guidance == 1.0 or condition is None:
      denoise = lambda z, t, sc: self.denoise(params, z, t, sc, condition)
    else:
      null = self.null_condition(num_samples)
      both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), condition, null)

      def denoise(z, t, sc):
        # One call on 2B rows: the conditional and the null pass together.
        x0 = self.denoise(params, jnp.concatenate([z, z]), jnp.concatenate([t, t]),
                          jnp.concatenate([sc, sc]), both)
        x0_cond, x0_null = jnp.split(x0, 2, axis=0)
        return x0_null + guidance * (x0_cond - x0_null)
    # A run trained without self-conditioning never saw a non-zero x0 slot.
    self_condition = float(self.config.diffusion.self_cond_prob) > 0.0
    z0 = solver_lib.sample(denoise, self.process, rng,
                           (num_samples, d.latent_len, d.latent_dim), grid, solver,
                           self_condition=self_condition, final=final)
    return self.from_diffusion_space(params, z0)

  def decode_tokens(self, params, z_BND, token_decoder=None, token_decoder_params=None):
    """Latents -> tokens: Dec(z) without noise, then argmax of the token decoder."""
    h_hat = self.decode(params, z_BND)
    logits = self.token_logits(params, h_hat, token_decoder, token_decoder_params)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def generate(self, params, rng, num_samples: int, num_steps: int, **kwargs):
    """Tokens (B, L): the scan sampler, then the decoders once at the end.

    `prompt=(tokens_BL, mask_BL)` (a conditional model; `params` with the
    frozen components, and `frozen` given) conditions on the given tokens and
    writes them back at their positions, so they survive bit for bit."""
    token_decoder = kwargs.pop('token_decoder', None)
    token_decoder_params = kwargs.pop('token_decoder_params', None)
    prompt = kwargs.pop('prompt', None)
    frozen = kwargs.pop('frozen', None)
    if prompt is not None:
      kwargs['condition'] = self.condition(frozen, params, *prompt)
    z0 = self.sample_latents(params, rng, num_samples, num_steps, **kwargs)
    tokens = self.decode_tokens(params, z0, token_decoder, token_decoder_params)
    return tokens if prompt is None else force_prompt(tokens, *prompt)


def force_prompt(tokens_BL, prompt_tokens_BL, prompt_mask_BL):
  """The given tokens at their positions, the generated ones elsewhere."""
  return jnp.where(jnp.asarray(prompt_mask_BL).astype(bool),
                   jnp.asarray(prompt_tokens_BL).astype(tokens_BL.dtype), tokens_BL)


def count_params(params) -> dict[str, int]:
  """Parameter count per component (pass the trainable params, or init_components for all)."""
  counts = {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in params.items()}
  if 'token_decoder' in params:   # a tied head: its map into the table's space and its bias
    td = params['token_decoder']
    head = td['vocab_head'] if 'vocab_head' in td else (td['tied_proj'], td['vocab_bias'])
    counts['token_decoder_vocab_head'] = int(sum(np.prod(x.shape) for x in jax.tree.leaves(head)))
  counts['total'] = int(sum(v for k, v in counts.items() if k in COMPONENTS))
  return counts

"""The LDLM model: modules, the joint loss and generation (SPEC 3-6).

`LDLM` is a plain class (t5x style) that owns the Flax modules and exposes
pure functions of explicit parameters:

  init(rng)                         -> trainable params (dict per component)
  features(frozen, params, tokens)  -> normalized token-encoder features h_n
  loss_fn(params, frozen, tokens, rng, step, sampler_state) -> (loss, aux)
  generate(params, rng, ...)        -> tokens, via one compiled lax.scan

Trainable parameters and the frozen token encoder are kept apart by
construction: the frozen weights arrive in a separate `FrozenInputs` pytree
that is never differentiated, never in the optimizer and never donated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.diffusion.schedule import schedule_from_config
from ldlm_jax.diffusion.warmup import encoder_warmup_lambda, scale_gradient
from ldlm_jax.models import layers, vocab_ce
from ldlm_jax.models.dit import DiT
from ldlm_jax.models.perceiver import PerceiverResampler, SelfAttentionEncoder
from ldlm_jax.models.token_decoder import TokenDecoder

COMPONENTS = ('latent_encoder', 'latent_decoder', 'token_decoder', 'denoiser',
              'scratch_embedding')


@flax.struct.dataclass
class FrozenInputs:
  """Everything the loss needs that is not trained.

  encoder_params: the frozen token encoder's weights ('hidden'), only its
    embedding table ('embeddings'), or empty ('scratch').
  norm_mean / norm_std: (H,) per-dimension statistics of the features (SPEC 2).
  """
  encoder_params: Any
  norm_mean: jax.Array
  norm_std: jax.Array


@dataclasses.dataclass(frozen=True)
class Dims:
  seq_len: int        # L
  latent_len: int     # N
  latent_dim: int     # D
  feature_dim: int    # H: width of the features the autoencoder reconstructs
  vocab_size: int     # V


class LDLM:
  """Latent encoder + latent decoder + token decoder + DiT denoiser."""

  def __init__(self, config, encoder):
    """`encoder` is the frozen token encoder (ldlm_jax.encoders.registry.FrozenEncoder)."""
    self.config = config
    self.encoder = encoder
    mc = config.model
    seq_len = int(config.data.seq_len)
    self.dims = Dims(
        seq_len=seq_len,
        latent_len=int(mc.latent_len) or seq_len,
        latent_dim=int(mc.latent_dim),
        feature_dim=int(encoder.hidden_size),
        vocab_size=int(encoder.vocab_size))
    self.schedule = schedule_from_config(config)
    self.input_kind = config.encoder.input
    self.encoder_layer = int(config.encoder.layer)
    d = self.dims

    enc = mc.latent_encoder
    self.latent_encoder = self._latent_module(enc, 'latent encoder', num_queries=d.latent_len,
                                              out_dim=d.latent_dim, output_norm=enc.output_norm)
    self.latent_decoder = self._latent_module(mc.latent_decoder, 'latent decoder',
                                              num_queries=d.seq_len, out_dim=d.feature_dim,
                                              output_norm=False)

    self.token_decoder = self.make_token_decoder(
        num_layers=mc.token_decoder.num_layers, width=int(mc.token_decoder.width) or d.feature_dim,
        num_heads=mc.token_decoder.num_heads, mlp_ratio=mc.token_decoder.mlp_ratio)

    den = mc.denoiser
    self.denoiser = DiT(latent_dim=d.latent_dim, width=den.width, num_layers=den.num_layers,
                        num_heads=den.num_heads, mlp_ratio=den.mlp_ratio, **self._module_options())

    lc = config.loss
    self.use_mse = lc.reconstruction in ('mse', 'mse+ce')
    self.use_ce = lc.reconstruction in ('ce', 'mse+ce') or bool(lc.train_token_decoder)

  def _module_options(self) -> dict:
    """Compute dtype, attention implementation and q/k norm: the same for every trainable module."""
    mc = self.config.model
    return dict(dtype=layers.dtype_from_name(mc.dtype), attention_impl=mc.attention_impl or None,
                qk_norm=bool(mc.qk_norm), remat=mc.remat,
                attention_query_chunk=int(mc.attention_query_chunk))

  def _latent_module(self, part, what: str, num_queries: int, out_dim: int, output_norm: bool):
    """The latent encoder or hidden-state decoder of `part.type`: Perceiver or B.4 self-attention."""
    shape = dict(width=int(part.width) or self.dims.latent_dim, out_dim=out_dim,
                 num_layers=part.num_layers, num_heads=part.num_heads, mlp_ratio=part.mlp_ratio,
                 output_norm=output_norm, **self._module_options())
    if part.type == 'perceiver':
      return PerceiverResampler(num_queries=num_queries, **shape)
    if part.type == 'self_attention':
      return SelfAttentionEncoder(**shape)
    raise ValueError(f'unknown {what} type {part.type!r}')

  def make_token_decoder(self, num_layers, width, num_heads, mlp_ratio=4):
    return TokenDecoder(vocab_size=self.dims.vocab_size, width=width, num_layers=num_layers,
                        num_heads=num_heads, mlp_ratio=mlp_ratio, **self._module_options())

  # ---------------------------------------------------------------- params --
  def init(self, rng) -> dict:
    d = self.dims
    keys = dict(zip(COMPONENTS, jax.random.split(rng, len(COMPONENTS))))
    h = jnp.zeros((1, d.seq_len, d.feature_dim), jnp.float32)
    z = jnp.zeros((1, d.latent_len, d.latent_dim), jnp.float32)
    params = {
        'latent_encoder': self.latent_encoder.init(keys['latent_encoder'], h)['params'],
        'latent_decoder': self.latent_decoder.init(keys['latent_decoder'], z)['params'],
        'denoiser': self.denoiser.init(keys['denoiser'], z, jnp.zeros((1,)), z)['params'],
    }
    if self.use_ce:
      params['token_decoder'] = self.token_decoder.init(keys['token_decoder'], h)['params']
    if self.input_kind == 'scratch':
      params['scratch_embedding'] = layers.EMBED_INIT(
          keys['scratch_embedding'], (d.vocab_size, d.feature_dim), jnp.float32)
    return params

  def frozen_inputs(self, encoder_params, norm_mean, norm_std) -> FrozenInputs:
    """Packs what the loss needs from the frozen encoder (only that)."""
    if self.input_kind == 'hidden':
      enc = encoder_params
    elif self.input_kind == 'embeddings':
      enc = {'embedding': jnp.asarray(self.encoder.embedding_table(encoder_params), jnp.float32)}
    else:
      enc = {}
    return FrozenInputs(encoder_params=enc,
                        norm_mean=jnp.asarray(norm_mean, jnp.float32),
                        norm_std=jnp.asarray(norm_std, jnp.float32))

  # --------------------------------------------------------------- pieces --
  def raw_features(self, encoder_params, tokens_BL):
    """Un-normalized features of the frozen encoder ('hidden' / 'embeddings')."""
    if self.input_kind == 'hidden':
      h = self.encoder.hidden_state(encoder_params, tokens_BL, self.encoder_layer)
    elif self.input_kind == 'embeddings':
      h = jnp.take(encoder_params['embedding'], tokens_BL, axis=0)
    else:
      raise ValueError('scratch embeddings have no frozen features')
    return jax.lax.stop_gradient(h.astype(jnp.float32))

  def features(self, frozen: FrozenInputs, params, tokens_BL):
    """h_n (B, L, H): normalized frozen features, or trainable scratch embeddings."""
    if self.input_kind == 'scratch':
      return jnp.take(params['scratch_embedding'], tokens_BL, axis=0)
    h = self.raw_features(frozen.encoder_params, tokens_BL)
    return (h - frozen.norm_mean) / frozen.norm_std

  def encode(self, params, h_n_BLH):
    return self.latent_encoder.apply({'params': params['latent_encoder']}, h_n_BLH).astype(jnp.float32)

  def decode(self, params, z_BND):
    return self.latent_decoder.apply({'params': params['latent_decoder']}, z_BND).astype(jnp.float32)

  def token_logits(self, params, h_hat_BLH, token_decoder=None, token_decoder_params=None):
    module = token_decoder or self.token_decoder
    p = token_decoder_params if token_decoder_params is not None else params['token_decoder']
    return module.apply({'params': p}, h_hat_BLH)

  def denoise(self, params, z_t_BND, t_B, x0_sc_BND):
    return self.denoiser.apply({'params': params['denoiser']}, z_t_BND, t_B, x0_sc_BND).astype(jnp.float32)

  # ----------------------------------------------------------------- loss --
  def loss_fn(self, params, frozen: FrozenInputs, tokens_BL, rng, step,
              sampler_state: timesteps_lib.TimestepSamplerState):
    """The joint objective L = w_d L_diff + w_r L_rec + w_c L_ce (SPEC 5).

    Returns (loss, aux) where aux holds every term and the per-example
    diffusion losses with their timestep bins (for the adaptive sampler).
    """
    c = self.config
    batch = tokens_BL.shape[0]
    rng_t, rng_eps, rng_dec, rng_sc = jax.random.split(rng, 4)

    h_n = self.features(frozen, params, tokens_BL)
    z = self.encode(params, h_n)                                   # (B, N, D)

    # Reconstruction branch: noisy decoder input (training only).
    z_in = z + c.loss.decoder_noise_std * jax.random.normal(rng_dec, z.shape, z.dtype)
    h_hat = self.decode(params, z_in)                              # (B, L, H)
    zero = jnp.zeros((), jnp.float32)
    rec_loss = jnp.mean(jnp.square(h_hat - h_n)) if self.use_mse else zero
    if self.use_ce:
      dec_in = jax.lax.stop_gradient(h_hat) if c.loss.ce_stop_gradient else h_hat
      ce_loss, token_acc = vocab_ce.token_decoder_ce(
          self.token_decoder, params['token_decoder'], dec_in, tokens_BL,
          int(c.loss.ce_vocab_chunk))
    else:
      ce_loss, token_acc = zero, zero

    # Diffusion branch: the encoder's gradient from L_diff is scaled by lam.
    lam = encoder_warmup_lambda(step, int(c.encoder_warmup.steps),
                                c.encoder_warmup.center, c.encoder_warmup.sharpness)
    z0 = scale_gradient(z, lam)
    adaptive = c.timesteps.sampler == 'adaptive'
    t, bins = timesteps_lib.sample(sampler_state, rng_t, batch, adaptive)
    eps = jax.random.normal(rng_eps, z0.shape, z0.dtype)
    z_t = self.schedule.add_noise(z0, t, eps)
    x0_sc = self._self_condition(params, z_t, t, rng_sc)
    x0_hat = self.denoise(params, z_t, t, x0_sc)
    diff_per_example = jnp.mean(jnp.square(x0_hat - z0), axis=(1, 2))
    diff_loss = jnp.mean(diff_per_example)

    loss = (c.loss.diffusion_weight * diff_loss
            + c.loss.reconstruction_weight * rec_loss
            + c.loss.ce_weight * ce_loss)
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
    return loss, aux

  def _self_condition(self, params, z_t, t, rng):
    """x0_sc: zeros, or a stop-gradient first pass (Chen et al.)."""
    c = self.config.diffusion
    zeros = jnp.zeros_like(z_t)
    p = float(c.self_cond_prob)
    if p <= 0.0:
      return zeros
    first_pass = lambda: jax.lax.stop_gradient(self.denoise(params, z_t, t, zeros))
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
                     t_min: float = 0.05, time_grid: str = 'uniform', solver: str = 'euler_maruyama',
                     timestep_probs=None):
    """z0 (B, N, D) from the reverse process; jit with the ints static."""
    d = self.dims
    grid = solver_lib.time_grid(num_steps, t_min, time_grid, timestep_probs)
    denoise = lambda z, t, sc: self.denoise(params, z, t, sc)
    return solver_lib.sample(denoise, self.schedule, rng,
                             (num_samples, d.latent_len, d.latent_dim), grid, solver)

  def decode_tokens(self, params, z_BND, token_decoder=None, token_decoder_params=None):
    """Latents -> tokens: Dec(z) without noise, then argmax of the token decoder."""
    h_hat = self.decode(params, z_BND)
    logits = self.token_logits(params, h_hat, token_decoder, token_decoder_params)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def generate(self, params, rng, num_samples: int, num_steps: int, **kwargs):
    """Tokens (B, L): the scan sampler, then the decoders once at the end."""
    token_decoder = kwargs.pop('token_decoder', None)
    token_decoder_params = kwargs.pop('token_decoder_params', None)
    z0 = self.sample_latents(params, rng, num_samples, num_steps, **kwargs)
    return self.decode_tokens(params, z0, token_decoder, token_decoder_params)


def count_params(params) -> dict[str, int]:
  """Trainable parameter count per component (the frozen encoder excluded)."""
  counts = {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in params.items()}
  if 'token_decoder' in params:
    head = params['token_decoder']['vocab_head']
    counts['token_decoder_vocab_head'] = int(sum(np.prod(x.shape) for x in jax.tree.leaves(head)))
  counts['total'] = int(sum(v for k, v in counts.items() if k in COMPONENTS))
  return counts

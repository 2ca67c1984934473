"""Perceiver (or self-attention) autoencoders over frozen features: LDLM and COSMOS-like.

`ldlm` (paper Sec. 4, the default): latent encoder, latent decoder and token
decoder trained jointly with the diffusion model; the diffusion loss shapes
the latents (through the warmup lambda, paper A.2).

`cosmos` (COSMOS-like, Meshchaninov et al. 2025; paper Table 2): the same
three modules trained in two stages.
  stage 'autoencoder': reconstruction only, made robust by masking a fraction
    `latent_space.mask_prob` of the encoder's input positions and adding
    Gaussian noise `loss.decoder_noise_std` to the latents before decoding;
    no denoiser is built.
  stage 'diffusion': the autoencoder comes frozen from stage one
    (`train.init_from`); only the denoiser trains, on its clean latents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.errors import ConfigError
from ldlm_jax.latent_spaces.base import Dims, LatentSpace
from ldlm_jax.models import layers
from ldlm_jax.models.perceiver import PerceiverResampler, SelfAttentionEncoder


class JointAutoencoder(LatentSpace):
  """The LDLM latent space (encoder.input 'hidden' | 'embeddings' | 'scratch', Table 1)."""
  name = 'ldlm'

  def __init__(self, config, encoder, model):
    super().__init__(config, encoder, model)
    mc = config.model
    self._dims = Dims(seq_len=self.seq_len, latent_len=int(mc.latent_len) or self.seq_len,
                      latent_dim=int(mc.latent_dim), feature_dim=self.encoder_width,
                      vocab_size=self.vocab_size)
    d = self._dims
    enc = mc.latent_encoder
    self.latent_encoder = self._latent_module(enc, 'latent encoder', num_queries=d.latent_len,
                                              out_dim=d.latent_dim, output_norm=enc.output_norm)
    self.latent_decoder = self._latent_module(mc.latent_decoder, 'latent decoder',
                                              num_queries=d.seq_len, out_dim=d.feature_dim,
                                              output_norm=False)
    lc = config.loss
    self.use_mse = lc.reconstruction in ('mse', 'mse+ce')
    self.use_ce = lc.reconstruction in ('ce', 'mse+ce') or bool(lc.train_token_decoder)

  def _latent_module(self, part, what: str, num_queries: int, out_dim: int, output_norm: bool):
    """The latent encoder or hidden-state decoder of `part.type`: Perceiver or B.4 self-attention."""
    shape = dict(width=int(part.width) or self._dims.latent_dim, out_dim=out_dim,
                 num_layers=part.num_layers, num_heads=part.num_heads, mlp_ratio=part.mlp_ratio,
                 output_norm=output_norm, **self.model.module_options())
    if part.type == 'perceiver':
      return PerceiverResampler(num_queries=num_queries, **shape)
    if part.type == 'self_attention':
      return SelfAttentionEncoder(**shape)
    raise ValueError(f'unknown {what} type {part.type!r}')

  def dims(self) -> Dims:
    return self._dims

  @property
  def components(self):
    names = ['latent_encoder', 'latent_decoder']
    if self.use_ce:
      names.append('token_decoder')
    if self.feature_kind == 'scratch':
      names.append('scratch_embedding')
    return tuple(names)

  def init(self, keys):
    d = self._dims
    h = jnp.zeros((1, d.seq_len, d.feature_dim), jnp.float32)
    z = jnp.zeros((1, d.latent_len, d.latent_dim), jnp.float32)
    params = {
        'latent_encoder': self.latent_encoder.init(keys['latent_encoder'], h)['params'],
        'latent_decoder': self.latent_decoder.init(keys['latent_decoder'], z)['params'],
    }
    if self.use_ce:
      params['token_decoder'] = self.model.token_decoder.init(keys['token_decoder'], h)['params']
    if self.feature_kind == 'scratch':
      params['scratch_embedding'] = layers.EMBED_INIT(
          keys['scratch_embedding'], (d.vocab_size, d.feature_dim), jnp.float32)
    return params

  def encode(self, params, h_n_BLH, rng=None):
    del rng
    return self.latent_encoder.apply({'params': params['latent_encoder']}, h_n_BLH).astype(jnp.float32)

  def decode(self, params, z_BND):
    return self.latent_decoder.apply({'params': params['latent_decoder']}, z_BND).astype(jnp.float32)

  def reconstruction(self, params, h_n_BLH, z_BND, tokens_BL, rng):
    """MSE to the normalized features and/or CE of the token decoder, from Dec(z + sigma_dec eps)."""
    c = self.config
    z_in = z_BND + c.loss.decoder_noise_std * jax.random.normal(rng, z_BND.shape, z_BND.dtype)
    h_hat = self.decode(params, z_in)                              # (B, L, H)
    zero = jnp.zeros((), jnp.float32)
    rec_loss = jnp.mean(jnp.square(h_hat - h_n_BLH)) if self.use_mse else zero
    if self.use_ce:
      dec_in = jax.lax.stop_gradient(h_hat) if c.loss.ce_stop_gradient else h_hat
      ce_loss, token_acc = self.model.token_ce(params, dec_in, tokens_BL)
    else:
      ce_loss, token_acc = zero, zero
    return {'reconstruction_loss': rec_loss, 'ce_loss': ce_loss, 'token_accuracy': token_acc}


AUTOENCODER_COMPONENTS = ('latent_encoder', 'latent_decoder', 'token_decoder')
COSMOS_STAGES = ('autoencoder', 'diffusion')


class CosmosAutoencoder(JointAutoencoder):
  """COSMOS-like: a robust autoencoder trained first, then frozen under the diffusion model."""
  name = 'cosmos'

  def __init__(self, config, encoder, model):
    super().__init__(config, encoder, model)
    self.stage = config.latent_space.stage
    self.trains_diffusion = self.stage == 'diffusion'
    self.mask_prob = float(config.latent_space.mask_prob)

  @property
  def frozen_components(self):
    return AUTOENCODER_COMPONENTS if self.stage == 'diffusion' else ()

  def reconstruction(self, params, h_n_BLH, z_BND, tokens_BL, rng):
    if self.stage == 'diffusion':   # the frozen autoencoder gets no loss
      zero = jnp.zeros((), jnp.float32)
      return {'reconstruction_loss': zero, 'ce_loss': zero, 'token_accuracy': zero}
    # Robustness to the encoder input: masked positions read the features' mean
    # (0 after normalization); the target stays the unmasked h_n.
    rng_mask, rng_noise = jax.random.split(rng)
    keep_BL1 = jax.random.bernoulli(rng_mask, 1.0 - self.mask_prob, h_n_BLH.shape[:2])[..., None]
    z_masked = self.encode(params, jnp.where(keep_BL1, h_n_BLH, 0.0))
    return super().reconstruction(params, h_n_BLH, z_masked, tokens_BL, rng_noise)

  @classmethod
  def check_config(cls, config):
    if config.latent_space.stage not in COSMOS_STAGES:
      raise ConfigError(
          f"latent_space.name='cosmos' trains in two stages; set --config.latent_space.stage to "
          f"one of {COSMOS_STAGES} (got {config.latent_space.stage!r}).")
    if config.loss.reconstruction == 'ce' or not config.loss.train_token_decoder:
      raise ConfigError(
          "latent_space.name='cosmos' reconstructs features and tokens; keep "
          "loss.reconstruction in ('mse', 'mse+ce') and loss.train_token_decoder=True.")
    if not 0.0 <= config.latent_space.mask_prob < 1.0:
      raise ConfigError(f'latent_space.mask_prob must be in [0, 1) (got {config.latent_space.mask_prob!r}).')
    if config.latent_space.stage == 'diffusion':
      taken = [s for s in config.train.init_from.components.split(',') if s]
      if not config.train.init_from.workdir or not config.train.init_from.frozen or any(
          name not in taken for name in AUTOENCODER_COMPONENTS):
        raise ConfigError(
            "cosmos stage 'diffusion' trains only the denoiser on a frozen stage-one autoencoder; set "
            '--config.train.init_from.workdir=STAGE1_WORKDIR with train.init_from.components='
            f"{','.join(AUTOENCODER_COMPONENTS)} and train.init_from.frozen=True.")

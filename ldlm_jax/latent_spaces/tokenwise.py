"""Token-level latent spaces: one latent per token, no latent encoder or decoder (paper Table 2).

The latents are per-token vectors used directly (decode is the identity), and
the shared token decoder is trained with CE on latents corrupted by Gaussian
noise `loss.decoder_noise_std` (so it can read the denoiser's imperfect x0).

  scratch_emb  a token embedding table trained from scratch with the diffusion
               loss (Li et al. 2022; Dieleman et al. 2022). Rows are scaled to
               norm sqrt(D) before diffusion (CDCD's L2 normalization) so the
               joint optimization cannot collapse or blow up the embeddings.
               Width model.latent_dim.
  encoder_emb  the frozen encoder's token embedding table, normalized per
               dimension (Strudel et al. 2023). Width = the encoder's width.
  tencdm       the frozen encoder's normalized hidden states
               (hidden_states[encoder.layer]) used directly as latents
               (TEncDM, Shabalin et al. 2025). Width = the encoder's width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.errors import ConfigError
from ldlm_jax.latent_spaces.base import Dims, LatentSpace
from ldlm_jax.models import layers


class FrozenFeatureLatents(LatentSpace):
  """Normalized frozen features are the latents (TEncDM-like; 'encoder_emb' reads the table)."""
  name = 'tencdm'
  required_input = 'hidden'

  def __init__(self, config, encoder, model):
    super().__init__(config, encoder, model)
    width = self.table_width()
    self._dims = Dims(seq_len=self.seq_len, latent_len=self.seq_len, latent_dim=width,
                      feature_dim=width, vocab_size=self.vocab_size)

  def table_width(self) -> int:
    return self.encoder_width

  def dims(self):
    return self._dims

  @property
  def components(self):
    return ('token_decoder',)

  def init(self, keys):
    d = self._dims
    h = jnp.zeros((1, d.seq_len, d.feature_dim), jnp.float32)
    return {'token_decoder': self.model.token_decoder.init(keys['token_decoder'], h)['params']}

  def encode(self, params, h_n_BLH, rng=None):
    del params, rng
    return h_n_BLH

  def decode(self, params, z_BND):
    del params
    return z_BND

  def reconstruction(self, params, h_n_BLH, z_BND, tokens_BL, rng):
    z_in = z_BND + self.config.loss.decoder_noise_std * jax.random.normal(rng, z_BND.shape, z_BND.dtype)
    ce_loss, token_acc = self.model.token_ce(params, self.decode(params, z_in), tokens_BL)
    return {'reconstruction_loss': jnp.zeros((), jnp.float32), 'ce_loss': ce_loss,
            'token_accuracy': token_acc}

  @classmethod
  def check_config(cls, config):
    super().check_config(config)
    mc = config.model
    if int(mc.latent_len) not in (0, int(config.data.seq_len)):
      raise ConfigError(
          f'latent_space.name={cls.name!r} has one latent per token; set --config.model.latent_len=0.')
    if not config.loss.train_token_decoder:
      raise ConfigError(
          f'latent_space.name={cls.name!r} decodes only through the jointly trained token decoder; '
          'set --config.loss.train_token_decoder=True.')


class EncoderEmbeddingLatents(FrozenFeatureLatents):
  name = 'encoder_emb'
  required_input = 'embeddings'


class ScratchEmbeddingLatents(FrozenFeatureLatents):
  name = 'scratch_emb'
  required_input = 'scratch'

  def table_width(self):
    return int(self.config.model.latent_dim)

  @property
  def components(self):
    return ('scratch_embedding', 'token_decoder')

  def init(self, keys):
    params = super().init(keys)
    params['scratch_embedding'] = layers.EMBED_INIT(
        keys['scratch_embedding'], (self.vocab_size, self._dims.latent_dim), jnp.float32)
    return params

  def encode(self, params, h_n_BLH, rng=None):
    del params, rng
    # CDCD: every embedding row has norm sqrt(D), i.e. unit mean square per dimension.
    sq = jnp.mean(jnp.square(h_n_BLH), axis=-1, keepdims=True)
    return h_n_BLH * jax.lax.rsqrt(sq + 1e-12)


REGISTRY_ENTRIES = (ScratchEmbeddingLatents, EncoderEmbeddingLatents, FrozenFeatureLatents)

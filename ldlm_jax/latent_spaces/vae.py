"""TextLDM's latent space: a Transformer VAE over tokens with representation alignment.

TextLDM ("Language Modeling with Continuous Latent Diffusion", 2026; abstract
in ../shared/reference/textldm_abstract.txt) takes the visual latent diffusion
recipe to text: a Transformer VAE maps tokens to continuous latents, REPA
aligns its encoder features with a frozen pretrained LM, and a DiT is trained
on the frozen VAE's latents. Here:

  tokens -> trainable embedding table ('scratch_embedding', encoder.input='scratch')
         -> Transformer encoder ('latent_encoder': blocks, then mean and
            log-variance heads per position)
         -> z = mean + exp(logvar / 2) eps  (B, L, D): one latent per token
         -> non-autoregressive Transformer decoder ('latent_decoder')
         -> the shared token decoder's CE ('token_decoder', LDLM.token_ce).

One latent per token (N = L, width model.latent_dim) is our reading of
"minimal architectural modification" of the visual recipe, whose VAE keeps
the spatial grid and shrinks only the channels; the abstract states no
compression, so we do not add one.

Loss (stage 'vae'): loss.ce_weight * CE + kl_weight * KL + repa_weight * REPA,
  KL   = mean over latent elements of 0.5 (mean^2 + var - log var - 1)
         (per-dimension KL to N(0, I));
  REPA = - mean over tokens of cos(projector(f_k), teacher hidden state),
         f_k the output of VAE encoder block `repa_layer`, the projector a
         3-layer SiLU MLP ('repa_projector', REPA's shape, Yu et al. 2024),
         the teacher the run's frozen token encoder (config.encoder) at
         hidden state `encoder.layer`.
REPA's gradient reaches only the embedding table, the encoder's blocks up to
`repa_layer` and the projector; the teacher is in FrozenInputs (never
differentiated, never donated).

The teacher is the run's frozen encoder by construction: the data are
tokenized with config.encoder's tokenizer, so the teacher always sees the
VAE's tokens. Any registry encoder can teach (GPT-2 and BERT families,
MiniLM, 'smollm2-135m').

Latent scale: the mean head ends in an RMSNorm (model.latent_encoder.
output_norm, the project's COSMOS shape), so the latents start at unit scale,
and the KL term keeps the posterior near N(0, I); the logged `latent_norm`
(mean ||z|| / sqrt(D)) shows it. No further scale factor is applied.

Two stages (as TextLDM trains): `latent_space.stage='vae'` trains the VAE
(+ REPA) without a denoiser; stage 'diffusion' takes the VAE frozen from
stage one (train.init_from) and trains only the denoiser on posterior
samples z (the latent-diffusion convention); the diffusion process is
whatever `diffusion.*` selects (rectified flow in configs/textldm.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldlm_jax.errors import ConfigError
from ldlm_jax.latent_spaces.base import Dims, FrozenInputs, LatentSpace
from ldlm_jax.models import layers
from ldlm_jax.models.perceiver import SelfAttentionEncoder

VAE_COMPONENTS = ('scratch_embedding', 'latent_encoder', 'latent_decoder', 'token_decoder')
VAE_STAGES = ('vae', 'diffusion')
# Log-variance clip (the LDM / Stable Diffusion posterior's range): keeps exp() finite.
LOGVAR_RANGE = (-30.0, 20.0)


class VAEEncoder(nn.Module):
  """Self-attention blocks, then per-position mean and log-variance heads.

  Returns (mean, logvar, aligned): `aligned` is the output of block
  `align_layer` (1-based; 0 = None), the feature REPA projects.
  """
  width: int
  latent_dim: int
  num_layers: int
  num_heads: int
  align_layer: int = 0
  mlp_ratio: int = 4
  output_norm: bool = True
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0
  qk_norm: bool = True
  remat: str = 'none'

  @nn.compact
  def __call__(self, emb_BLC):
    x = layers.embed_sequence(self, emb_BLC, self.width, self.dtype)
    block = layers.rematerialized(layers.TransformerBlock, self.remat)
    aligned = None
    for i in range(self.num_layers):
      x = block(self.num_heads, self.mlp_ratio, dtype=self.dtype, attention_impl=self.attention_impl,
                attention_query_chunk=self.attention_query_chunk, qk_norm=self.qk_norm,
                name=f'block{i}')(x)
      if i + 1 == self.align_layer:
        aligned = x.astype(jnp.float32)
    h = nn.RMSNorm(dtype=self.dtype, name='final_norm')(x)
    mean = nn.Dense(self.latent_dim, dtype=self.dtype, name='mean_proj')(h)
    if self.output_norm:
      mean = nn.RMSNorm(dtype=self.dtype, name='mean_norm')(mean)
    logvar = nn.Dense(self.latent_dim, dtype=self.dtype, name='logvar_proj')(h)
    logvar = jnp.clip(logvar.astype(jnp.float32), *LOGVAR_RANGE)
    return mean.astype(jnp.float32), logvar, aligned


class RepaProjector(nn.Module):
  """REPA's projector: Dense-SiLU-Dense-SiLU-Dense, hidden and output width = the teacher's."""
  out_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.silu(nn.Dense(self.out_dim, dtype=self.dtype, name='fc1')(x))
    h = nn.silu(nn.Dense(self.out_dim, dtype=self.dtype, name='fc2')(h))
    return nn.Dense(self.out_dim, dtype=self.dtype, name='fc3')(h).astype(jnp.float32)


def gaussian_kl(mean, logvar):
  """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
  return jnp.mean(0.5 * (jnp.square(mean) + jnp.exp(logvar) - logvar - 1.0))


def negative_cosine(a_BLH, b_BLH, eps: float = 1e-8):
  """- mean over positions of cos(a, b) (REPA's per-token alignment loss)."""
  a = a_BLH * jax.lax.rsqrt(jnp.sum(jnp.square(a_BLH), -1, keepdims=True) + eps)
  b = b_BLH * jax.lax.rsqrt(jnp.sum(jnp.square(b_BLH), -1, keepdims=True) + eps)
  return -jnp.mean(jnp.sum(a * b, -1))


def repa_block(config) -> int:
  """The VAE encoder block (1-based) REPA aligns: latent_space.repa_layer, 0 = half, rounded up."""
  n = int(config.model.latent_encoder.num_layers)
  return int(config.latent_space.repa_layer) or (n + 1) // 2


class TextVAE(LatentSpace):
  """TextLDM's Transformer VAE (see the module docstring)."""
  name = 'textldm_vae'
  required_input = 'scratch'

  def __init__(self, config, encoder, model):
    super().__init__(config, encoder, model)
    mc, ls = config.model, config.latent_space
    self.stage = ls.stage
    self.trains_diffusion = self.stage == 'diffusion'
    self.kl_weight = float(ls.kl_weight)
    self.repa_weight = float(ls.repa_weight)
    # REPA only shapes stage one; stage two's VAE is frozen and needs no teacher.
    self.use_repa = self.stage == 'vae' and self.repa_weight > 0
    self.align_layer = repa_block(config) if self.use_repa else 0
    # Logged in stage one (stage two's VAE is frozen: its KL is not trained).
    self.extra_metrics = (('kl_loss',) + (('repa_loss',) if self.use_repa else ())
                          if self.stage == 'vae' else ())
    enc, dec = mc.latent_encoder, mc.latent_decoder
    self.embed_width = int(enc.width) or int(mc.latent_dim)
    dec_width = int(dec.width) or int(mc.latent_dim)
    self._dims = Dims(seq_len=self.seq_len, latent_len=self.seq_len, latent_dim=int(mc.latent_dim),
                      feature_dim=dec_width, vocab_size=self.vocab_size)
    opts = self.model.module_options()
    self.latent_encoder = VAEEncoder(
        width=self.embed_width, latent_dim=int(mc.latent_dim), num_layers=enc.num_layers,
        num_heads=enc.num_heads, align_layer=self.align_layer, mlp_ratio=enc.mlp_ratio,
        output_norm=bool(enc.output_norm), **opts)
    self.latent_decoder = SelfAttentionEncoder(
        width=dec_width, out_dim=dec_width, num_layers=dec.num_layers, num_heads=dec.num_heads,
        mlp_ratio=dec.mlp_ratio, **opts)
    self.projector = RepaProjector(out_dim=self.encoder_width, dtype=opts['dtype'])

  def dims(self):
    return self._dims

  @property
  def components(self):
    return VAE_COMPONENTS + (('repa_projector',) if self.use_repa else ())

  @property
  def frozen_components(self):
    return VAE_COMPONENTS if self.stage == 'diffusion' else ()

  def init(self, keys):
    d = self._dims
    emb = jnp.zeros((1, d.seq_len, self.embed_width), jnp.float32)
    z = jnp.zeros((1, d.latent_len, d.latent_dim), jnp.float32)
    h = jnp.zeros((1, d.seq_len, d.feature_dim), jnp.float32)
    params = {
        'scratch_embedding': layers.EMBED_INIT(keys['scratch_embedding'],
                                               (d.vocab_size, self.embed_width), jnp.float32),
        'latent_encoder': self.latent_encoder.init(keys['latent_encoder'], emb)['params'],
        'latent_decoder': self.latent_decoder.init(keys['latent_decoder'], z)['params'],
        'token_decoder': self.model.token_decoder.init(keys['token_decoder'], h)['params'],
    }
    if self.use_repa:
      f = jnp.zeros((1, d.seq_len, self.embed_width), jnp.float32)
      params['repa_projector'] = self.projector.init(keys['repa_projector'], f)['params']
    return params

  # ---- frozen inputs: the teacher ----
  def frozen_inputs(self, encoder_params, norm_mean, norm_std, components=None) -> FrozenInputs:
    """The teacher's weights when REPA is on (stage one), else none."""
    frozen = super().frozen_inputs(encoder_params, norm_mean, norm_std, components)
    return frozen.replace(encoder_params=encoder_params if self.use_repa else {})

  def features(self, frozen: FrozenInputs, params, tokens_BL):
    """{'embedding': (B, L, W) trainable rows, 'teacher': (B, L, H) frozen hidden states (REPA on)}."""
    out = {'embedding': jnp.take(params['scratch_embedding'], tokens_BL, axis=0)}
    if self.use_repa:
      h = self.encoder.hidden_state(frozen.encoder_params, tokens_BL, self.encoder_layer)
      out['teacher'] = jax.lax.stop_gradient(h.astype(jnp.float32))
    return out

  def condition_dim(self) -> int:
    return self.embed_width

  def condition_features(self, frozen, params, tokens_BL, mask_BL):
    """The VAE's own token embeddings of the given tokens (zero elsewhere): the condition of a
    conditional TextLDM. Per-token rows, so nothing of the tokens to generate leaks in; in
    stage two they are stage one's frozen rows."""
    del frozen
    h = jnp.take(params['scratch_embedding'], tokens_BL, axis=0)
    return jnp.where(jnp.asarray(mask_BL, bool)[..., None], h, 0.0)

  # ---- the VAE ----
  def posterior(self, params, h):
    """(mean, logvar, aligned feature) of the encoder."""
    return self.latent_encoder.apply({'params': params['latent_encoder']}, h['embedding'])

  def encode(self, params, h, rng=None):
    """A posterior sample z (training: `rng` given), or its mean (rng None)."""
    mean, logvar, _ = self.posterior(params, h)
    if rng is None:
      return mean
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)

  def decode(self, params, z_BND):
    return self.latent_decoder.apply({'params': params['latent_decoder']}, z_BND).astype(jnp.float32)

  def repa_loss(self, params, h, aligned_BLW):
    projected = self.projector.apply({'params': params['repa_projector']}, aligned_BLW)
    return negative_cosine(projected, h['teacher'])

  def reconstruction(self, params, h, z_BND, tokens_BL, rng):
    zero = jnp.zeros((), jnp.float32)
    if self.stage == 'diffusion':   # the frozen VAE gets no loss
      return {'reconstruction_loss': zero, 'ce_loss': zero, 'token_accuracy': zero,
              'kl_loss': zero, 'repa_loss': zero, 'extra_loss': zero}
    del z_BND   # a posterior sample drawn here, with the mean and variance the KL needs
    mean, logvar, aligned = self.posterior(params, h)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    ce_loss, token_acc = self.model.token_ce(params, self.decode(params, z), tokens_BL)
    kl = gaussian_kl(mean, logvar)
    repa = self.repa_loss(params, h, aligned) if self.use_repa else zero
    return {'reconstruction_loss': zero, 'ce_loss': ce_loss, 'token_accuracy': token_acc,
            'kl_loss': kl, 'repa_loss': repa,
            'extra_loss': self.kl_weight * kl + self.repa_weight * repa}

  @classmethod
  def check_config(cls, config):
    ls, mc = config.latent_space, config.model
    if config.encoder.input != 'scratch':
      raise ConfigError(
          "latent_space.name='textldm_vae' embeds tokens with its own trainable table (the frozen "
          'encoder is only the REPA teacher); set --config.encoder.input=scratch.')
    for part in ('latent_encoder', 'latent_decoder'):
      if mc[part].type != 'self_attention':
        raise ConfigError(
            f"latent_space.name='textldm_vae' builds its {part.replace('_', ' ')} from self-attention "
            f'blocks; set --config.model.{part}.type=self_attention.')
    if ls.stage not in VAE_STAGES:
      raise ConfigError(
          f"latent_space.name='textldm_vae' trains in two stages; set --config.latent_space.stage to "
          f'one of {VAE_STAGES} (got {ls.stage!r}).')
    if int(mc.latent_len) not in (0, int(config.data.seq_len)):
      raise ConfigError(
          "latent_space.name='textldm_vae' has one latent per token; set --config.model.latent_len=0.")
    if not config.loss.train_token_decoder:
      raise ConfigError(
          "latent_space.name='textldm_vae' decodes through the jointly trained token decoder; "
          'set --config.loss.train_token_decoder=True.')
    for key in ('kl_weight', 'repa_weight'):
      if not float(ls[key]) >= 0.0:
        raise ConfigError(f'latent_space.{key} must be >= 0 (got {ls[key]!r}).')
    n = int(mc.latent_encoder.num_layers)
    if float(ls.repa_weight) > 0 and not 1 <= repa_block(config) <= n:
      raise ConfigError(
          f'latent_space.repa_layer={ls.repa_layer!r} is not a block of the {n}-block VAE encoder; '
          f'use 1..{n} (0 = half, rounded up).')
    if ls.stage == 'diffusion':
      fc = config.train.init_from
      taken = [s for s in fc.components.split(',') if s]
      if not fc.workdir or not fc.frozen or any(name not in taken for name in VAE_COMPONENTS):
        raise ConfigError(
            "textldm_vae stage 'diffusion' trains only the denoiser on the frozen stage-one VAE; set "
            '--config.train.init_from.workdir=STAGE1_WORKDIR with train.init_from.components='
            f"{','.join(VAE_COMPONENTS)} and train.init_from.frozen=True.")

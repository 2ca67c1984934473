"""The latent-space interface `LDLM` composes (docs/architecture.md, "Adding a part").

A latent space decides what the diffusion model diffuses:

  features(frozen, params, tokens_BL) -> h_n_BLH   normalized frozen features (or a trained table)
  encode(params, h_n_BLH, rng=None)   -> z_BND     the clean latents x0 of the diffusion loss
  decode(params, z_BND)               -> h_hat     what the shared token decoder reads
  reconstruction(params, h_n, z, tokens, rng) -> named loss terms (and metrics)

and which of its components are trained and which must arrive frozen
(`frozen_components`, e.g. a stage-one autoencoder). The denoiser, the token
decoder family and the sampler belong to `LDLM` and are the same for every
latent space, so the latent space is the only thing a Table 2 row varies.

The frozen token encoder's features and their per-dimension normalization
(docs/method.md Section 1.1) live here too, next to the latent spaces that read them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from ldlm_jax.errors import ConfigError

# Every component name a latent space or LDLM may own. The first five are
# the original init RNG split, whose order and count never change (checkpoints
# and tests rely on it); names added later draw fold_in(rng, position), so
# adding one leaves every existing component's initial value unchanged.
COMPONENTS = ('latent_encoder', 'latent_decoder', 'token_decoder', 'denoiser',
              'scratch_embedding', 'repa_projector', 'token_embedding')
_SPLIT_COMPONENTS = 5


def component_keys(rng) -> dict:
  """{component: init key} for every name in COMPONENTS (see above)."""
  first = COMPONENTS[:_SPLIT_COMPONENTS]
  keys = dict(zip(first, jax.random.split(rng, len(first))))
  for position, name in enumerate(COMPONENTS[_SPLIT_COMPONENTS:], _SPLIT_COMPONENTS):
    keys[name] = jax.random.fold_in(rng, position)
  return keys


@flax.struct.dataclass
class FrozenInputs:
  """Everything the loss needs that is not trained.

  encoder_params: the frozen token encoder's weights ('hidden'), only its
    embedding table ('embeddings'), or empty ('scratch').
  norm_mean / norm_std: (H,) per-dimension statistics of the features (docs/method.md Section 1.1).
  components: frozen model components by name (e.g. a stage-one autoencoder
    from `train.init_from`): no optimizer slot, no weight decay, no EMA, never
    donated; merged under the trainable params by `LDLM.with_frozen`.
  """
  encoder_params: Any
  norm_mean: jax.Array
  norm_std: jax.Array
  components: Any = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Dims:
  seq_len: int        # L
  latent_len: int     # N
  latent_dim: int     # D: the width the denoiser diffuses (its own width is model.denoiser.width)
  feature_dim: int    # width of decode(z), the token decoder's input
  vocab_size: int     # V


class LatentSpace:
  """Base class; subclasses set `name`, `components` and the four functions.

  `model` is the owning LDLM: it provides the shared token decoder
  (`model.token_ce`, `model.token_logits`), module options and the frozen encoder.
  """
  name = ''
  # What the space reads from the frozen encoder: 'hidden' | 'embeddings' | 'scratch'.
  # None = whatever config.encoder.input says (the LDLM and COSMOS autoencoders).
  required_input: str | None = None
  trains_diffusion = True     # False: an autoencoder stage without the diffusion loss
  # The space's own loss terms (keys of reconstruction()'s dict) logged beside LOSS_METRICS.
  extra_metrics: tuple[str, ...] = ()

  def __init__(self, config, encoder, model):
    self.config = config
    self.encoder = encoder
    self.model = model
    self.feature_kind = config.encoder.input
    self.encoder_layer = int(config.encoder.layer)
    self.seq_len = int(config.data.seq_len)
    self.encoder_width = int(encoder.hidden_size)
    self.vocab_size = int(encoder.vocab_size)

  # ---- set by subclasses ----
  def dims(self) -> Dims:
    raise NotImplementedError

  @property
  def components(self) -> tuple[str, ...]:
    """Components this space owns (trainable or frozen), excluding the denoiser."""
    raise NotImplementedError

  @property
  def frozen_components(self) -> tuple[str, ...]:
    """Components that must come frozen from another run (train.init_from)."""
    return ()

  def init(self, keys: dict) -> dict:
    raise NotImplementedError

  def encode(self, params, h_n_BLH, rng=None):
    """`rng` is given in training only (e.g. a VAE's reparameterization); None = deterministic."""
    raise NotImplementedError

  def decode(self, params, z_BND):
    raise NotImplementedError

  def reconstruction(self, params, h_n_BLH, z_BND, tokens_BL, rng) -> dict:
    """{'reconstruction_loss', 'ce_loss', 'token_accuracy'}: the weighted sum uses
    loss.reconstruction_weight / loss.ce_weight; a space may add 'extra_loss'
    (already weighted) for terms of its own."""
    raise NotImplementedError

  @classmethod
  def check_config(cls, config) -> None:
    """ConfigError (one sentence naming the fix) for settings this space cannot use."""
    if cls.required_input is not None and config.encoder.input != cls.required_input:
      raise ConfigError(
          f'latent_space.name={cls.name!r} reads the frozen encoder\'s {cls.required_input!r} '
          f'features; set --config.encoder.input={cls.required_input}.')
    if config.latent_space.stage:
      raise ConfigError(
          f'latent_space.name={cls.name!r} has one training stage; leave latent_space.stage empty.')

  # ---- frozen features (docs/method.md 1.1), shared by every space ----
  def frozen_inputs(self, encoder_params, norm_mean, norm_std, components=None) -> FrozenInputs:
    """Packs what the loss needs from the frozen encoder (only that)."""
    if self.feature_kind == 'hidden':
      enc = encoder_params
    elif self.feature_kind == 'embeddings':
      enc = {'embedding': jnp.asarray(self.encoder.embedding_table(encoder_params), jnp.float32)}
    else:
      enc = {}
    return FrozenInputs(encoder_params=enc,
                        norm_mean=jnp.asarray(norm_mean, jnp.float32),
                        norm_std=jnp.asarray(norm_std, jnp.float32),
                        components=dict(components or {}))

  def raw_features(self, encoder_params, tokens_BL):
    """Un-normalized features of the frozen encoder ('hidden' / 'embeddings')."""
    if self.feature_kind == 'hidden':
      h = self.encoder.hidden_state(encoder_params, tokens_BL, self.encoder_layer)
    elif self.feature_kind == 'embeddings':
      h = jnp.take(encoder_params['embedding'], tokens_BL, axis=0)
    else:
      raise ValueError('scratch embeddings have no frozen features')
    return jax.lax.stop_gradient(h.astype(jnp.float32))

  def features(self, frozen: FrozenInputs, params, tokens_BL):
    """h_n (B, L, H): normalized frozen features, or trainable scratch embeddings."""
    if self.feature_kind == 'scratch':
      return jnp.take(params['scratch_embedding'], tokens_BL, axis=0)
    h = self.raw_features(frozen.encoder_params, tokens_BL)
    return (h - frozen.norm_mean) / frozen.norm_std

  def condition_dim(self) -> int:
    """Width of condition_features() (the denoiser's condition input; its null is zeros of it)."""
    return self.dims().feature_dim

  def condition_features(self, frozen: FrozenInputs, params, tokens_BL, mask_BL):
    """The condition of conditional generation (docs/method.md 6.6): h_n of the given tokens only.

    The frozen encoder attends over the given positions alone (its attention
    mask), so no feature carries anything of the tokens to be generated; a
    row with nothing given runs unmasked and is zeroed. Positions not given
    are zero (the denoiser masks them out anyway). Returns (B, L, H).
    """
    mask = mask_BL.astype(bool)
    if self.feature_kind == 'hidden':
      any_given = jnp.any(mask, axis=-1, keepdims=True)
      enc_mask = jnp.where(any_given, mask, True).astype(jnp.int32)
      h = self.encoder.hidden_state(frozen.encoder_params, tokens_BL, self.encoder_layer, enc_mask)
      h = jax.lax.stop_gradient(h.astype(jnp.float32))
      h = (h - frozen.norm_mean) / frozen.norm_std
    else:   # per-token tables: nothing to leak
      h = self.features(frozen, params, tokens_BL)
    return jnp.where(mask[..., None], h, 0.0)

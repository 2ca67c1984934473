"""What the discrete baselines share: the DiT backbone over tokens and the model plumbing.

`TokenDiT` is the denoiser's DiT (models/dit.py: the same `DiTBlock`s, time
embedding, adaLN-Zero and positions) with a token embedding in front and a
vocabulary head behind, so a baseline differs from LDLM's denoiser only
where its method needs it: the input is a token id (or, for Duo's
curriculum, a probability vector over the embedding rows) instead of a
latent, the output is logits over the vocabulary, and the autoregressive
baseline's self-attention is causal.

`DiscreteMethod` gives a baseline the interface the trainer, the restore
path and the sampling library read from `LDLM` (ldlm_jax/models/ldlm.py):

  init(rng) / init_components(rng)  -> {'denoiser': backbone params}
  frozen_inputs(...)                -> FrozenInputs without encoder weights
  loss_fn(params, frozen, batch, rng, step, sampler_state) -> (loss, aux)
  generate(params, rng, num_samples, num_steps, **ignored) -> tokens (B, L)

aux carries every name of training/step.py's LOSS_METRICS (the method's
loss is reported as 'diffusion_loss' and 'loss'; the latent-space terms are
0) and the per-example losses with their time bins, so the adaptive time
sampler's state updates as for LDLM (a baseline draws its times itself and
never reads it). The backbone's parameters sit under the component name
'denoiser', so parameter counts, checkpoints and `train.init_from` treat
them as LDLM's denoiser.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax.latent_spaces.base import Dims, FrozenInputs, component_keys
from ldlm_jax.models import layers
from ldlm_jax.models.dit import DiTBlock, modulate, timestep_embedding


class TokenDiT(nn.Module):
  """Tokens (B, L) int, or weights over the embedding rows (B, L, E) float, and t (B,) -> logits (B, L, V)."""
  vocab_size: int          # V: the head's outputs
  num_embeddings: int      # E: rows of the input table (V, or V + 1 with a mask / BOS id)
  width: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  time_embed_dim: int = 256
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0
  qk_norm: bool = True
  remat: str = 'none'
  positions: str = 'rope'
  causal: bool = False

  @nn.compact
  def __call__(self, tokens, t_B):
    table = self.param('embedding', layers.EMBED_INIT, (self.num_embeddings, self.width), jnp.float32)
    if jnp.issubdtype(tokens.dtype, jnp.integer):
      x = jnp.take(table, tokens, axis=0).astype(self.dtype)
    else:   # a distribution over the rows: its expected embedding
      x = jnp.einsum('ble,ew->blw', tokens.astype(self.dtype), table.astype(self.dtype))
    length = x.shape[1]
    if self.positions == 'learned':
      x = x + layers.position_table(self, 'pos', length, self.width).astype(self.dtype)
    elif self.positions != 'rope':
      raise ValueError(f"unknown backbone positions {self.positions!r}; use 'rope' or 'learned'")
    c = timestep_embedding(t_B, self.time_embed_dim)
    c = nn.Dense(self.width, dtype=self.dtype, name='time_fc1')(c)
    c = nn.Dense(self.width, dtype=self.dtype, name='time_fc2')(nn.silu(c))
    block = layers.rematerialized(DiTBlock, self.remat)
    for i in range(self.num_layers):
      x = block(self.num_heads, self.mlp_ratio, dtype=self.dtype, qk_norm=self.qk_norm,
                attention_impl=self.attention_impl,
                attention_query_chunk=self.attention_query_chunk,
                rope=self.positions == 'rope', causal=self.causal, name=f'block{i}')(x, c)
    shift, scale = jnp.split(nn.Dense(2 * self.width, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                                      name='final_adaln')(nn.silu(c)), 2, axis=-1)
    x = modulate(nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, dtype=self.dtype,
                              name='final_norm')(x), shift, scale)
    # Zero-initialised head (MDLM's DDiT): every method starts from uniform logits.
    x = nn.Dense(self.vocab_size, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                 name='vocab_head')(x)
    return x.astype(jnp.float32)


class TokenProcess:
  """What sampling code reads of LDLM's `process` for a discrete chain (which runs to t = 0)."""

  def __init__(self, name: str):
    self.name = name

  @staticmethod
  def sampling_t_end(t_min):
    del t_min
    return 0.0


def log_linear_alpha(t, noise_eps: float):
  """alpha_t = 1 - (1 - eps) t: the log-linear schedule (MDLM; sigma_t = -log alpha_t)."""
  return 1.0 - (1.0 - noise_eps) * t


class DiscreteMethod:
  """Base of the baselines: the backbone, the plumbing above, and times drawn as MDLM draws them."""
  name = ''
  extra_metrics: tuple = ()
  frozen_names: tuple = ()
  # The sampling library asks for tokens directly (no latent chain, no token decoder).
  generates_tokens = True
  # Rows of the embedding table beyond the vocabulary (a mask or BOS id at index V).
  extra_embeddings = 0
  causal = False

  def __init__(self, config, encoder):
    self.config = config
    self.encoder = encoder
    self.vocab_size = int(encoder.vocab_size)
    seq_len = int(config.data.seq_len)
    self.dims = Dims(seq_len=seq_len, latent_len=seq_len, latent_dim=0,
                     feature_dim=int(encoder.hidden_size), vocab_size=self.vocab_size)
    # What the loop and the restore path read of a latent space: a baseline samples
    # (trains_diffusion) and owns the one component 'denoiser'.
    self.latent_space = types.SimpleNamespace(trains_diffusion=True, name='none',
                                              components=('denoiser',), frozen_components=())
    self.process = TokenProcess(self.name)
    mc, den = config.model, config.model.denoiser
    self.backbone = TokenDiT(
        vocab_size=self.vocab_size, num_embeddings=self.vocab_size + self.extra_embeddings,
        width=int(den.width), num_layers=int(den.num_layers), num_heads=int(den.num_heads),
        mlp_ratio=int(den.mlp_ratio), dtype=layers.dtype_from_name(mc.dtype),
        attention_impl=mc.attention_impl or None,
        attention_query_chunk=int(mc.attention_query_chunk), qk_norm=bool(mc.qk_norm),
        remat=mc.remat, positions=str(den.positions), causal=self.causal)
    mt = config.method
    self.noise_eps = float(mt.noise_eps)
    self.sampling_eps = float(mt.sampling_eps)

  # ---------------------------------------------------------------- params --
  def init_components(self, rng) -> dict:
    tokens = jnp.zeros((1, self.dims.seq_len), jnp.int32)
    return {'denoiser': self.backbone.init(component_keys(rng)['denoiser'], tokens,
                                           jnp.zeros((1,)))['params']}

  def init(self, rng) -> dict:
    return self.init_components(rng)

  @staticmethod
  def with_frozen(params, frozen: FrozenInputs) -> dict:
    if frozen is None or not frozen.components:
      return params
    return {**frozen.components, **params}

  def frozen_inputs(self, encoder_params, norm_mean, norm_std, components=None) -> FrozenInputs:
    """No encoder weights: a baseline reads token ids only (the tokenizer defines the vocabulary)."""
    del encoder_params
    return FrozenInputs(encoder_params={}, norm_mean=jnp.asarray(norm_mean, jnp.float32),
                        norm_std=jnp.asarray(norm_std, jnp.float32), components=components or {})

  def logits(self, params, tokens, t_B):
    return self.backbone.apply({'params': params['denoiser']}, tokens, t_B)

  # ------------------------------------------------------------- training --
  def draw_t(self, rng, batch: int):
    """t ~ U[sampling_eps, 1]; low-discrepancy over the batch with method.antithetic_t (MDLM)."""
    u = jax.random.uniform(rng, (batch,))
    if bool(self.config.method.antithetic_t):
      u = jnp.mod(u[:1] + jnp.arange(batch) / batch, 1.0)
    return (1.0 - self.sampling_eps) * u + self.sampling_eps

  def aux(self, per_token_BL, t_B, accuracy):
    """(loss, aux): the mean per-token loss and every name the train step logs."""
    per_example = jnp.mean(per_token_BL, axis=1)
    loss = jnp.mean(per_example)
    bins = int(self.config.timesteps.num_bins)
    zero = jnp.zeros((), jnp.float32)
    return loss, {
        'loss': loss, 'diffusion_loss': loss, 'reconstruction_loss': zero, 'ce_loss': zero,
        'token_accuracy': accuracy, 'encoder_lambda': zero, 'latent_norm': zero,
        'diffusion_per_example': per_example,
        'timestep_bins': jnp.clip(jnp.floor(t_B * bins).astype(jnp.int32), 0, bins - 1),
    }

  @staticmethod
  def tokens_of(batch):
    return batch['tokens'] if isinstance(batch, dict) else batch


def count_backbone_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params['denoiser'])))

"""The denoiser: a Diffusion Transformer (Peebles & Xie) over latents (docs/method.md Section 1.5).

x0-prediction with self-conditioning: the input is concat(z_t, x0_sc) on the
feature axis, projected to the DiT width; time enters through adaLN-Zero
(every block's shift/scale/gate come from a zero-initialised projection of
the time embedding, so each block starts as the identity). No token
embedding and no vocabulary head: latents in, latents out.

Conditional generation (`condition` != ''; docs/method.md 6.6): the condition is a
dict {'features': (B, C, H) the frozen encoder's normalized features of the
given tokens, 'mask': (B, C) bool, True where a token is given}. Its tokens
are projected to the DiT width with their own learned positions and read
either by one masked cross-attention per block ('cross_attention', added to
the residual stream after self-attention and multiplied by 0 for an example
with nothing given, so a dropped condition computes exactly the
unconditional path) or as extra key-masked tokens of the DiT sequence
('in_context', dropped from the output). With condition='' the module is the
unconditional DiT: same parameter tree, same outputs.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from ldlm_jax.models import layers


def timestep_embedding(t_B, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
  """Sinusoidal embedding of t in [0, 1] (scaled to [0, 1000] as in DiT)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (scale * t_B.astype(jnp.float32))[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def modulate(x_BNW, shift_BW, scale_BW):
  return x_BNW * (1.0 + scale_BW[:, None]) + shift_BW[:, None]


# --- Condition paths (protocols.ConditionPath): how the blocks read the condition tokens ---


class CrossAttentionPath:
  """Each block cross-attends to the condition tokens; the sequence is unchanged."""
  name = 'cross_attention'
  cross_attention = True

  def join(self, x_BNW, cond_x_BMW, cond_mask_BM):
    del cond_x_BMW, cond_mask_BM
    return x_BNW, None


class InContextPath:
  """The condition tokens join the sequence as key-masked tokens (dropped from the output)."""
  name = 'in_context'
  cross_attention = False

  def join(self, x_BNW, cond_x_BMW, cond_mask_BM):
    key_mask_BK = jnp.concatenate([jnp.ones(x_BNW.shape[:2], bool), cond_mask_BM], axis=1)
    return jnp.concatenate([x_BNW, cond_x_BMW], axis=1), key_mask_BK


# config.condition.path -> path. Adding one: a class like the two above and one line here.
CONDITION_PATHS = {path.name: path for path in (CrossAttentionPath(), InContextPath())}


class DiTBlock(nn.Module):
  num_heads: int
  mlp_ratio: int = 4
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0    # layers.Attention: 0 = all queries at once
  qk_norm: bool = True
  cross_attention: bool = False   # one masked cross-attention over the condition tokens
  rope: bool = False              # rotary positions in the self-attention
  causal: bool = False            # causal self-attention (the autoregressive baseline)

  @nn.compact
  def __call__(self, x_BNW, c_BW, cond_BCW=None, cond_mask_BC=None, key_mask_BK=None,
               positions=None):
    width = x_BNW.shape[-1]
    mod = nn.Dense(6 * width, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                   name='adaln')(nn.silu(c_BW))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    norm = lambda name: nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6,
                                     dtype=self.dtype, name=name)
    h = modulate(norm('attn_norm')(x_BNW), shift_a, scale_a)
    h = layers.Attention(self.num_heads, qk_norm=self.qk_norm, dtype=self.dtype,
                         attention_impl=self.attention_impl,
                         query_chunk=self.attention_query_chunk, rope=self.rope,
                         causal=self.causal, name='attn')(h, h, key_mask_BK, positions, positions)
    x_BNW = x_BNW + gate_a[:, None] * h
    if self.cross_attention:
      h = norm('cross_norm')(x_BNW)
      h = layers.Attention(self.num_heads, qk_norm=self.qk_norm, dtype=self.dtype,
                           attention_impl=self.attention_impl,
                           query_chunk=self.attention_query_chunk,
                           name='cross_attn')(h, cond_BCW, cond_mask_BC)
      # Nothing given: the (finite) output over all-masked keys is multiplied by an exact 0.
      given = jnp.any(cond_mask_BC, axis=-1).astype(h.dtype)
      x_BNW = x_BNW + given[:, None, None] * h
    h = modulate(norm('mlp_norm')(x_BNW), shift_m, scale_m)
    h = layers.MLP(self.mlp_ratio, dtype=self.dtype, name='mlp')(h)
    return x_BNW + gate_m[:, None] * h


class DiT(nn.Module):
  latent_dim: int
  width: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  time_embed_dim: int = 256
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0    # layers.Attention: 0 = all queries at once
  qk_norm: bool = True
  remat: str = 'none'     # layers.REMAT_POLICIES
  condition: str = ''     # '' (unconditional) | 'cross_attention' | 'in_context'
  # 'learned': an absolute position table added to the input; 'rope': rotary
  # embeddings in every self-attention (no table).
  positions: str = 'learned'

  @nn.compact
  def __call__(self, z_t_BND, t_B, x0_sc_BND, cond=None):
    _, length, _ = z_t_BND.shape
    x = jnp.concatenate([z_t_BND, x0_sc_BND], axis=-1).astype(self.dtype)
    x = nn.Dense(self.width, dtype=self.dtype, name='input_proj')(x)
    if self.positions == 'learned':
      x = x + layers.position_table(self, 'pos', length, self.width).astype(self.dtype)
    elif self.positions != 'rope':
      raise ValueError(f"unknown denoiser positions {self.positions!r}; use 'rope' or 'learned'")
    rope = self.positions == 'rope'
    c = timestep_embedding(t_B, self.time_embed_dim)
    c = nn.Dense(self.width, dtype=self.dtype, name='time_fc1')(c)
    c = nn.Dense(self.width, dtype=self.dtype, name='time_fc2')(nn.silu(c))
    cond_x, cond_mask, key_mask, cross, positions = None, None, None, False, None
    # cond=None on a conditional denoiser: the unconditional path without the condition
    # modules (what an all-False mask computes; exactly so for cross-attention).
    path = self.condition if cond is not None else ''
    if path:
      if path not in CONDITION_PATHS:
        raise ValueError(f'unknown condition path {path!r}; use one of {tuple(CONDITION_PATHS)}')
      feats, cond_mask = cond['features'], cond['mask'].astype(bool)
      cond_x = nn.Dense(self.width, dtype=self.dtype, name='cond_proj')(feats.astype(self.dtype))
      cond_x = cond_x + layers.position_table(self, 'cond_pos', feats.shape[1],
                                              self.width).astype(self.dtype)
      x, key_mask = CONDITION_PATHS[path].join(x, cond_x, cond_mask)
      cross = CONDITION_PATHS[path].cross_attention
      if rope and x.shape[1] > length:   # appended condition token i sits at position i
        positions = jnp.concatenate([jnp.arange(length), jnp.arange(x.shape[1] - length)])
    block = layers.rematerialized(DiTBlock, self.remat)
    for i in range(self.num_layers):
      x = block(self.num_heads, self.mlp_ratio, dtype=self.dtype, qk_norm=self.qk_norm,
                attention_impl=self.attention_impl,
                attention_query_chunk=self.attention_query_chunk, cross_attention=cross,
                rope=rope, name=f'block{i}')(x, c, cond_x if cross else None,
                                             cond_mask if cross else None, key_mask,
                                             positions if rope else None)
    x = x[:, :length]
    shift, scale = jnp.split(
        nn.Dense(2 * self.width, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                 name='final_adaln')(nn.silu(c)), 2, axis=-1)
    x = modulate(nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6,
                              dtype=self.dtype, name='final_norm')(x), shift, scale)
    x = nn.Dense(self.latent_dim, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                 name='output_proj')(x)
    return x.astype(jnp.float32)

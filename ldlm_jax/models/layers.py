"""Building blocks shared by the Perceivers, the DiT and the token decoder.

Parameters are float32; `dtype` is the compute dtype (bfloat16 on
accelerators). Attention goes through `jax.nn.dot_product_attention`, which
lowers to cuDNN flash attention on GPU when asked (`attention_impl='cudnn'`,
bf16) and to XLA elsewhere.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Init of the learned queries / position tables (GPT-2 / ViT convention).
EMBED_INIT = nn.initializers.normal(stddev=0.02)


def dtype_from_name(name: str):
  try:
    return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}[name]
  except KeyError:
    raise ValueError(f'unknown dtype {name!r}; use float32 or bfloat16') from None


def resolve_attention_impl(requested: str | None, dtype) -> str | None:
  """'' picks cuDNN flash attention on GPU for 16-bit compute, else XLA.

  jax.nn.dot_product_attention never picks cuDNN by itself; on one H100 the
  OWT sampling preset took 18.9 s with XLA attention and 9.75 s with cuDNN
  (BUILD_NOTES.md, benchmarks).
  """
  if requested:
    return requested
  if jax.default_backend() == 'gpu' and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return 'cudnn'
  return None


def query_chunked_attention(q_BQHD, k_BKHD, v_BKHD, implementation, query_chunk: int,
                            key_mask_BK=None, is_causal: bool = False):
  """jax.nn.dot_product_attention, for XLA split into blocks of `query_chunk` queries.

  Each query's softmax is over all keys either way, so the blocks compute
  the same numbers; under a gradient each block is recomputed in the
  backward (jax.checkpoint inside lax.map), so only one block's scores are
  alive. Whole when query_chunk is 0, does not divide Q, or cuDNN runs.
  `key_mask_BK` (bool, True = attend) hides keys; None = every key.
  `is_causal`: query i sees keys 0..i only (whole, never chunked).
  """
  length = q_BQHD.shape[1]
  mask = None if key_mask_BK is None else key_mask_BK[:, None, None, :]
  attend = lambda q: jax.nn.dot_product_attention(q, k_BKHD, v_BKHD, mask=mask,
                                                  implementation=implementation,
                                                  is_causal=is_causal)
  if is_causal or implementation == 'cudnn' or query_chunk <= 0 or length <= query_chunk or length % query_chunk:
    return attend(q_BQHD)
  b, _, h, d = q_BQHD.shape
  blocks = q_BQHD.reshape(b, length // query_chunk, query_chunk, h, d).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(attend), blocks)
  return out.swapaxes(0, 1).reshape(b, length, h, out.shape[-1])


def rotary(x_BLHD, positions_L, base: float = 10_000.0):
  """Rotary position embedding (Su et al. 2021) of queries or keys at integer positions.

  Pairs (i, i + D/2) of each head's features are rotated by the angle
  position * base^(-2i/D), so q . k depends on the positions only through
  their difference. Needs an even head dimension."""
  dim = x_BLHD.shape[-1]
  if dim % 2:
    raise ValueError(f'rotary embeddings need an even head dimension (got {dim})')
  half = dim // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions_L.astype(jnp.float32)[:, None] * freqs[None]          # (L, D/2)
  cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
  x = x_BLHD.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x_BLHD.dtype)


class Attention(nn.Module):
  """Multi-head attention of queries x over a context, per-head q/k RMSNorm.

  With `rope`, rotary embeddings at `q_positions` / `k_positions` (default
  0..len-1) are applied to the (normalized) queries and keys."""

  num_heads: int
  qk_norm: bool = True
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  # > 0: XLA attention one block of this many queries at a time (a
  # rematerialised lax.map), so at most one block of float32 scores is alive,
  # forward or backward; cuDNN never materialises them and ignores it.
  query_chunk: int = 0
  rope: bool = False
  causal: bool = False    # query i attends to keys 0..i (the autoregressive baseline)

  @nn.compact
  def __call__(self, x_BQW, context_BKW, key_mask_BK=None, q_positions=None, k_positions=None):
    width = x_BQW.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by num_heads {self.num_heads}')
    head_dim = width // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name)
    q = dense('query')(x_BQW)
    k = dense('key')(context_BKW)
    v = dense('value')(context_BKW)
    if self.qk_norm:
      # COSMOS reference shape: RMSNorm per head on q and k (stabilises logits).
      q = nn.RMSNorm(dtype=self.dtype, name='query_norm')(q)
      k = nn.RMSNorm(dtype=self.dtype, name='key_norm')(k)
    if self.rope:
      q = rotary(q, jnp.arange(q.shape[1]) if q_positions is None else q_positions)
      k = rotary(k, jnp.arange(k.shape[1]) if k_positions is None else k_positions)
    impl = resolve_attention_impl(self.attention_impl, self.dtype)
    out = query_chunked_attention(q.astype(self.dtype), k.astype(self.dtype),
                                  v.astype(self.dtype), impl, self.query_chunk, key_mask_BK,
                                  is_causal=self.causal)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name='out')(out)


class MLP(nn.Module):
  """Residual-branch feed-forward: Dense(ratio * W) -> GELU -> Dense(W)."""

  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = nn.Dense(self.mlp_ratio * width, dtype=self.dtype, name='fc1')(x)
    h = nn.gelu(h)
    return nn.Dense(width, dtype=self.dtype, name='fc2')(h)


class TransformerBlock(nn.Module):
  """Pre-norm bidirectional self-attention block (token decoder, B.4 encoder)."""

  num_heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0
  qk_norm: bool = True

  @nn.compact
  def __call__(self, x):
    h = nn.RMSNorm(dtype=self.dtype, name='attn_norm')(x)
    x = x + Attention(self.num_heads, qk_norm=self.qk_norm, dtype=self.dtype,
                      attention_impl=self.attention_impl,
                      query_chunk=self.attention_query_chunk, name='attn')(h, h)
    h = nn.RMSNorm(dtype=self.dtype, name='mlp_norm')(x)
    return x + MLP(self.mlp_ratio, dtype=self.dtype, name='mlp')(h)


# model.remat: what the backward pass keeps of each transformer block's
# forward. 'none': everything autodiff saves (fastest, most memory); 'block':
# only the block's input, the rest recomputed (one more forward of the
# block); 'dots_saveable': the outputs of every matmul, attention scores
# included (jax.checkpoint_policies.dots_saveable); 'dots_no_batch': the
# projections' and MLP matmuls' outputs but not the attention scores and
# values (dots_with_no_batch_dims_saveable), so the L x L scores are
# recomputed.
REMAT_POLICIES = {
    'block': None,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def rematerialized(target, remat: str, static_argnums=()):
  """`target` (a Module class, or a function whose first argument is a Module)
  under nn.remat with the policy `remat` names; unchanged for 'none'. The
  parameter names do not change, so checkpoints restore across settings."""
  if remat in ('', 'none'):
    return target
  if remat not in REMAT_POLICIES:
    raise ValueError(f'unknown remat policy {remat!r}; use none or one of {sorted(REMAT_POLICIES)}')
  return nn.remat(target, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)


def position_table(module: nn.Module, name: str, length: int, width: int):
  """A learned (length, width) absolute position table."""
  return module.param(name, EMBED_INIT, (length, width), jnp.float32)


# Shared shape of the sequence modules (Perceiver, B.4 self-attention stack,
# token decoder): project the inputs to the model width and add learned
# positions; ... ; final RMSNorm and an output projection. Called from a
# module's compact __call__, so the parameters belong to that module.
def embed_sequence(module: nn.Module, inputs_BLC, width: int, dtype, pos_name: str = 'input_pos'):
  x = nn.Dense(width, dtype=dtype, name='input_proj')(inputs_BLC)
  return x + position_table(module, pos_name, inputs_BLC.shape[1], width).astype(dtype)


def transformer_blocks(x, num_layers: int, num_heads: int, mlp_ratio: int, dtype,
                       attention_impl: str | None, qk_norm: bool, remat: str = 'none',
                       attention_query_chunk: int = 0):
  block = rematerialized(TransformerBlock, remat)
  for i in range(num_layers):
    x = block(num_heads, mlp_ratio, dtype=dtype, attention_impl=attention_impl,
              attention_query_chunk=attention_query_chunk, qk_norm=qk_norm, name=f'block{i}')(x)
  return x


def project_out(x, out_dim: int, dtype, name: str = 'output_proj', output_norm: bool = False):
  out = nn.RMSNorm(dtype=dtype, name='final_norm')(x)
  out = nn.Dense(out_dim, dtype=dtype, name=name)(out)
  if output_norm:
    out = nn.RMSNorm(dtype=dtype, name='output_norm')(out)
  return out

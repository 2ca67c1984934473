"""A small Llama decoder in Flax (linen) for scoring samples (Gen. PPL, MAUVE).

Why our own: the offline scorer (SmolLM2-135M, shipped as a GGUF file) is a
Llama, and the project keeps every model it runs in JAX. The module follows the
Hugging Face `LlamaForCausalLM` computation exactly (pre-norm RMSNorm blocks,
rotary embeddings in the "rotate half" layout, grouped-query attention, SwiGLU
MLP, final RMSNorm, tied or separate output head) so that weights in the HF
layout load unchanged: `params_from_hf_tensors` maps an HF state dict (numpy
arrays) onto our parameter tree. GGUF files store Q/K in llama.cpp's
interleaved-RoPE order; `gguf_model.py` undoes that before calling it.

The layers run under `nn.scan` so a 30-layer model compiles in seconds on CPU;
their parameters carry a leading layer axis.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Additive attention bias for masked keys: finite so that a row with every key
# masked (a padding query) gives a uniform softmax instead of NaN.
_MASKED_BIAS = -1e30


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """The hyper-parameters of a Llama decoder (names follow HF `LlamaConfig`)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = True

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'num_heads ({self.num_heads}) must be a multiple of num_kv_heads '
          f'({self.num_kv_heads}) for grouped-query attention.')
    if self.head_dim % 2:
      raise ValueError(f'head_dim ({self.head_dim}) must be even for rotary embeddings.')


def rotary_cos_sin(positions_BL: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """HF default RoPE tables, each (B, L, head_dim): frequencies repeated over both halves."""
  inv_freq_F = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BLF = positions_BL.astype(jnp.float32)[..., None] * inv_freq_F
  angles_BLD = jnp.concatenate([angles_BLF, angles_BLF], axis=-1)
  return jnp.cos(angles_BLD), jnp.sin(angles_BLD)


def _rotate_half(x):
  first, second = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-second, first], axis=-1)


def apply_rotary(x_BLHD: jax.Array, cos_BLD: jax.Array, sin_BLD: jax.Array) -> jax.Array:
  cos, sin = cos_BLD[:, :, None, :], sin_BLD[:, :, None, :]
  return x_BLHD * cos + _rotate_half(x_BLHD) * sin


class RMSNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (scale * x32).astype(x.dtype)


def _dense(features: int, name: str) -> nn.Dense:
  """A bias-free projection whose kernel is the transposed HF weight (in, out)."""
  return nn.Dense(features, use_bias=False, name=name, kernel_init=nn.initializers.normal(0.02))


class LlamaBlock(nn.Module):
  """One pre-norm decoder layer; the scan carry is the residual stream."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x_BLH, cos_BLD, sin_BLD, bias_B1LL):
    c = self.config
    B, L, _ = x_BLH.shape
    kv_groups = c.num_heads // c.num_kv_heads

    h = RMSNorm(c.rms_norm_eps, name='input_norm')(x_BLH)
    q = _dense(c.num_heads * c.head_dim, name='q_proj')(h).reshape(B, L, c.num_heads, c.head_dim)
    k = _dense(c.num_kv_heads * c.head_dim, name='k_proj')(h).reshape(B, L, c.num_kv_heads, c.head_dim)
    v = _dense(c.num_kv_heads * c.head_dim, name='v_proj')(h).reshape(B, L, c.num_kv_heads, c.head_dim)
    q, k = apply_rotary(q, cos_BLD, sin_BLD), apply_rotary(k, cos_BLD, sin_BLD)
    # Grouped-query attention: query head h uses kv head h // kv_groups (HF's
    # repeat_kv order), so split the query heads as (kv head, group).
    q_BLKGD = q.reshape(B, L, c.num_kv_heads, kv_groups, c.head_dim)
    logits_BKGLL = jnp.einsum('bqkgd,bskd->bkgqs', q_BLKGD, k) / np.sqrt(c.head_dim)
    logits_BKGLL = logits_BKGLL.astype(jnp.float32) + bias_B1LL[:, :, None]
    probs = jax.nn.softmax(logits_BKGLL, axis=-1).astype(v.dtype)
    attn_BLKGD = jnp.einsum('bkgqs,bskd->bqkgd', probs, v)
    attn_BLH = _dense(c.hidden_size, name='o_proj')(attn_BLKGD.reshape(B, L, c.num_heads * c.head_dim))
    x_BLH = x_BLH + attn_BLH

    h = RMSNorm(c.rms_norm_eps, name='post_attention_norm')(x_BLH)
    gate = _dense(c.intermediate_size, name='gate_proj')(h)
    up = _dense(c.intermediate_size, name='up_proj')(h)
    x_BLH = x_BLH + _dense(c.hidden_size, name='down_proj')(nn.silu(gate) * up)
    return x_BLH, None


class Llama(nn.Module):
  """Llama decoder: token ids (B, L) -> logits (B, L, V), or final hidden states (B, L, H).

  `return_hidden` returns the final hidden states only; `with_hidden` returns
  (logits, hidden states) from the one pass.

  `mask_BL` marks real tokens (1) and padding (0); padded keys are never
  attended. Positions count from 0 at the first column, so pad on the right.
  """
  config: LlamaConfig

  @nn.compact
  def __call__(self, ids_BL, mask_BL=None, return_hidden: bool = False, with_hidden: bool = False):
    c = self.config
    B, L = ids_BL.shape
    if mask_BL is None:
      mask_BL = jnp.ones((B, L), jnp.int32)
    embed = nn.Embed(c.vocab_size, c.hidden_size, name='embed_tokens',
                     embedding_init=nn.initializers.normal(0.02))
    x_BLH = embed(ids_BL)
    positions_BL = jnp.broadcast_to(jnp.arange(L), (B, L))
    cos_BLD, sin_BLD = rotary_cos_sin(positions_BL, c.head_dim, c.rope_theta)
    causal_LL = jnp.tril(jnp.ones((L, L), bool))
    allowed_B1LL = causal_LL[None, None] & (mask_BL[:, None, None, :] > 0)
    bias_B1LL = jnp.where(allowed_B1LL, 0.0, _MASKED_BIAS).astype(jnp.float32)

    blocks = nn.scan(
        LlamaBlock,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        length=c.num_layers,
    )(c, name='layers')
    x_BLH, _ = blocks(x_BLH, cos_BLD, sin_BLD, bias_B1LL)
    hidden_BLH = RMSNorm(c.rms_norm_eps, name='final_norm')(x_BLH)
    if return_hidden:
      return hidden_BLH
    if c.tie_word_embeddings:
      logits_BLV = embed.attend(hidden_BLH)
    else:
      logits_BLV = nn.Dense(c.vocab_size, use_bias=False, name='lm_head',
                            kernel_init=nn.initializers.normal(0.02))(hidden_BLH)
    return (logits_BLV, hidden_BLH) if with_hidden else logits_BLV


def hf_tensor_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """Every tensor of an HF-layout Llama checkpoint (the names `params_from_hf_tensors`
  reads) with its shape, in a fixed order (random test weights draw in this order)."""
  c = config
  shapes = {'model.embed_tokens.weight': (c.vocab_size, c.hidden_size), 'model.norm.weight': (c.hidden_size,)}
  for i in range(c.num_layers):
    pre = f'model.layers.{i}.'
    shapes.update({
        pre + 'input_layernorm.weight': (c.hidden_size,),
        pre + 'post_attention_layernorm.weight': (c.hidden_size,),
        pre + 'self_attn.q_proj.weight': (c.num_heads * c.head_dim, c.hidden_size),
        pre + 'self_attn.k_proj.weight': (c.num_kv_heads * c.head_dim, c.hidden_size),
        pre + 'self_attn.v_proj.weight': (c.num_kv_heads * c.head_dim, c.hidden_size),
        pre + 'self_attn.o_proj.weight': (c.hidden_size, c.num_heads * c.head_dim),
        pre + 'mlp.gate_proj.weight': (c.intermediate_size, c.hidden_size),
        pre + 'mlp.up_proj.weight': (c.intermediate_size, c.hidden_size),
        pre + 'mlp.down_proj.weight': (c.hidden_size, c.intermediate_size),
    })
  return shapes


def params_from_hf_tensors(tensors: Mapping[str, np.ndarray], config: LlamaConfig) -> dict:
  """Our parameter tree from an HF `LlamaForCausalLM` state dict (numpy, HF layout).

  Names are HF's (`model.layers.{i}.self_attn.q_proj.weight`, ...); Linear
  weights are (out, in) and become (in, out) kernels stacked over layers.
  Q/K must already be in HF's rotate-half order.
  """
  def get(name):
    if name not in tensors:
      raise KeyError(f'The Llama weights lack the tensor {name!r}; the file is not a complete Llama checkpoint.')
    return np.asarray(tensors[name], np.float32)

  def stacked(fmt, transpose=True):
    arrays = [get(fmt.format(i)) for i in range(config.num_layers)]
    return np.stack([a.T if transpose else a for a in arrays])

  attn = 'model.layers.{}.self_attn.'
  mlp = 'model.layers.{}.mlp.'
  layers = {
      'input_norm': {'scale': stacked('model.layers.{}.input_layernorm.weight', False)},
      'post_attention_norm': {'scale': stacked('model.layers.{}.post_attention_layernorm.weight', False)},
      'q_proj': {'kernel': stacked(attn + 'q_proj.weight')},
      'k_proj': {'kernel': stacked(attn + 'k_proj.weight')},
      'v_proj': {'kernel': stacked(attn + 'v_proj.weight')},
      'o_proj': {'kernel': stacked(attn + 'o_proj.weight')},
      'gate_proj': {'kernel': stacked(mlp + 'gate_proj.weight')},
      'up_proj': {'kernel': stacked(mlp + 'up_proj.weight')},
      'down_proj': {'kernel': stacked(mlp + 'down_proj.weight')},
  }
  params = {
      'embed_tokens': {'embedding': get('model.embed_tokens.weight')},
      'layers': layers,
      'final_norm': {'scale': get('model.norm.weight')},
  }
  if not config.tie_word_embeddings:
    params['lm_head'] = {'kernel': get('lm_head.weight').T}
  _check_shapes(params, config)
  return params


def _check_shapes(params: dict, config: LlamaConfig) -> None:
  """Fails with the offending tensor's name when the weights do not fit the config."""
  expected = jax.eval_shape(
      lambda: Llama(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))['params']
  flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
  missing = set(flat_expected) - {path for path, _ in flat_params}
  if missing:
    raise ValueError(f'Llama weights lack {sorted(map(jax.tree_util.keystr, missing))}; '
                     'the weights do not match the config.')
  for path, value in flat_params:
    want = flat_expected.get(path)
    if want is None or tuple(want.shape) != tuple(value.shape):
      raise ValueError(
          f'Llama weight {jax.tree_util.keystr(path)} has shape {tuple(value.shape)}, '
          f'expected {None if want is None else tuple(want.shape)}; the weights do not match the config.')

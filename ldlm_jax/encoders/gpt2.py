"""GPT-2 (any size) as a frozen Flax linen module, numerically the HF model.

Why our own module: transformers 5 dropped its Flax classes, and we need what
they never offered: stopping after the block that produces the requested
hidden state (the training step only needs `hidden_states[-3]`), bf16 matmuls
over float32 weights, and parameters passed into `jax.jit` as arguments.

Conventions follow Hugging Face `GPT2Model` exactly:
  * hidden states are a tuple of num_layers + 1 arrays (B, L, H): index 0 is
    the embeddings output (wte + wpe), index i < num_layers the output of
    block i - 1, and the LAST entry is ln_f(output of the last block);
  * positions are 0..L-1 whatever the mask, so padding goes at the END of a
    row: with attention_mask = 0 there, real positions are unchanged;
  * GELU is the tanh approximation (`gelu_new`); the LM head is tied to wte.

Precision policy: Dense/attention matmuls run in `dtype` (float32 or bf16);
the residual stream, LayerNorms and the attention softmax stay float32, so
hidden states come back float32 either way. Weights are always float32.
Attention: cuDNN flash attention on GPU for bf16 compute without a padding
mask, XLA otherwise (`inputs.attention_impl`, also used by bert.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldlm_jax.encoders import inputs, loading


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """The architecture fields of a Hugging Face GPT-2 config.json."""
  vocab_size: int
  max_positions: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_size: int
  layer_norm_eps: float = 1e-5
  activation: str = 'gelu_new'
  scale_attn_weights: bool = True
  scale_attn_by_inverse_layer_idx: bool = False

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], model_dir: str = '.') -> 'GPT2Config':
    get = lambda keys, default=None: loading.hf_config_value(hf, keys, model_dir, default)
    hidden = int(get(('n_embd', 'hidden_size')))
    config = cls(
        vocab_size=int(get(('vocab_size',))),
        max_positions=int(get(('n_positions', 'max_position_embeddings'))),
        hidden_size=hidden,
        num_layers=int(get(('n_layer', 'num_hidden_layers'))),
        num_heads=int(get(('n_head', 'num_attention_heads'))),
        mlp_size=int(get(('n_inner',), 4 * hidden)),
        layer_norm_eps=float(get(('layer_norm_epsilon',), 1e-5)),
        activation=str(get(('activation_function',), 'gelu_new')),
        scale_attn_weights=bool(hf.get('scale_attn_weights', True)),
        scale_attn_by_inverse_layer_idx=bool(hf.get('scale_attn_by_inverse_layer_idx', False)),
    )
    source = f'{model_dir}/config.json'
    loading.hf_activation(config.activation, source)  # Fails early on unknown names.
    if config.hidden_size % config.num_heads:
      raise loading.EncoderLoadError(
          f'{source}: n_embd={config.hidden_size} is not divisible by '
          f'n_head={config.num_heads}; re-download the model directory.')
    if not hf.get('tie_word_embeddings', True):
      raise loading.EncoderLoadError(
          f'{source} sets tie_word_embeddings=false; only GPT-2 checkpoints '
          'whose LM head is the token embedding (all released sizes) are supported.')
    return config


def weight_specs(config: GPT2Config) -> list[loading.WeightSpec]:
  """Where each of our parameters lives in a HF GPT-2 checkpoint (wte first)."""
  c = config
  # Torch Conv1D already stores (in, out); transformers' FlaxConv1D stores (out, in).
  flax_rows = (loading.FLAX_LAYOUT,)
  spec = loading.WeightSpec
  specs = [
      spec(('wte',), 'wte', 'embed', (c.vocab_size, c.hidden_size)),
      spec(('wpe',), 'wpe', 'embed', (c.max_positions, c.hidden_size)),
  ]
  H, M = c.hidden_size, c.mlp_size
  for i in range(c.num_layers):
    b, hf = f'h_{i}', f'h.{i}'
    specs += [
        spec((b, 'ln_1'), f'{hf}.ln_1', 'norm', (H,)),
        spec((b, 'attn_qkv'), f'{hf}.attn.c_attn', 'dense', (H, 3 * H), flax_rows),
        spec((b, 'attn_out'), f'{hf}.attn.c_proj', 'dense', (H, H), flax_rows),
        spec((b, 'ln_2'), f'{hf}.ln_2', 'norm', (H,)),
        spec((b, 'mlp_in'), f'{hf}.mlp.c_fc', 'dense', (H, M), flax_rows),
        spec((b, 'mlp_out'), f'{hf}.mlp.c_proj', 'dense', (M, H), flax_rows),
    ]
  specs.append(spec(('ln_f',), 'ln_f', 'norm', (H,)))
  return specs


def _layer_norm(config: GPT2Config, name: str) -> nn.LayerNorm:
  # Two-pass variance like torch: GPT-2 residuals have huge outlier channels.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32,
                      param_dtype=jnp.float32, use_fast_variance=False, name=name)


class GPT2Block(nn.Module):
  """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
  config: GPT2Config
  layer_index: int
  dtype: Any = jnp.float32
  attention_impl: str | None = None   # inputs.attention_impl: None = cuDNN where it applies

  @nn.compact
  def __call__(self, x_BLH: jax.Array, key_mask_B11L: jax.Array | None) -> jax.Array:
    c = self.config
    B, L, H = x_BLH.shape
    N = c.num_heads
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, param_dtype=jnp.float32, name=name)

    qkv_BL3H = dense(3 * H, 'attn_qkv')(_layer_norm(c, 'ln_1')(x_BLH))
    q_BLNK, k_BLNK, v_BLNK = (
        t.reshape(B, L, N, H // N) for t in jnp.split(qkv_BL3H, 3, axis=-1))
    scale = 1.0 / math.sqrt(H // N) if c.scale_attn_weights else 1.0
    if c.scale_attn_by_inverse_layer_idx:
      scale /= float(self.layer_index + 1)
    # Logits and softmax are float32 inside dot_product_attention even for bf16.
    attn_BLNK = jax.nn.dot_product_attention(
        q_BLNK, k_BLNK, v_BLNK, mask=key_mask_B11L, scale=scale, is_causal=True,
        implementation=inputs.attention_impl(self.attention_impl, self.dtype, key_mask_B11L))
    x_BLH = x_BLH + dense(H, 'attn_out')(attn_BLNK.reshape(B, L, H))

    act = loading.hf_activation(c.activation, 'the GPT-2 config')
    h_BLM = act(dense(c.mlp_size, 'mlp_in')(_layer_norm(c, 'ln_2')(x_BLH)))
    return x_BLH + dense(H, 'mlp_out')(h_BLM)


class GPT2Model(nn.Module):
  """GPT-2 returning Hugging Face `hidden_states`, optionally stopping early."""
  config: GPT2Config
  dtype: Any = jnp.float32  # Matmul compute dtype; params are float32.
  attention_impl: str | None = None   # inputs.attention_impl: None = cuDNN where it applies

  def setup(self):
    c = self.config
    self.wte = nn.Embed(c.vocab_size, c.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32)
    self.wpe = nn.Embed(c.max_positions, c.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32)
    self.h = [GPT2Block(c, i, dtype=self.dtype, attention_impl=self.attention_impl)
              for i in range(c.num_layers)]  # h_0, h_1, ...
    self.ln_f = _layer_norm(c, None)

  def __call__(self, input_ids_BL: jax.Array, attention_mask_BL: jax.Array | None = None,
               max_layer: int | None = None) -> tuple[jax.Array, ...]:
    """Hidden states 0..max_layer (HF indices, all of them when None), each (B, L, H).

    Only the blocks needed for index `max_layer` run; entry i is bit-identical
    to entry i of the full run.
    """
    c = self.config
    L = input_ids_BL.shape[1]
    last, key_mask_B11L = inputs.layers_and_key_mask(max_layer, c.num_layers, L, c.max_positions,
                                                     'GPT-2', 'GPT-2 n_positions', attention_mask_BL)

    x_BLH = self.wte(input_ids_BL) + self.wpe(jnp.arange(L))[None]
    states = [x_BLH]
    for i in range(last):
      x_BLH = self.h[i](x_BLH, key_mask_B11L)
      # HF exposes the last block's output only after ln_f.
      states.append(self.ln_f(x_BLH) if i == c.num_layers - 1 else x_BLH)
    return tuple(states)

  def logits(self, input_ids_BL: jax.Array,
             attention_mask_BL: jax.Array | None = None) -> jax.Array:
    """Next-token logits (B, L, V) from the tied head, accumulated in float32."""
    h_BLH = self(input_ids_BL, attention_mask_BL)[-1]
    wte_VH = self.wte.embedding
    return jnp.einsum('blh,vh->blv', h_BLH.astype(self.dtype), wte_VH.astype(self.dtype),
                      preferred_element_type=jnp.float32)


def embedding_table(params: Mapping[str, Any]) -> jax.Array:
  """The token embedding table wte, (V, H)."""
  return params['wte']['embedding']

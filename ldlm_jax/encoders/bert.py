"""BERT-family encoders (BERT-base, all-MiniLM-L6-v2) as a frozen Flax module.

Same reasons as `gpt2.py` for owning the code (no Flax in transformers 5,
early stop at the requested layer, bf16 matmuls, params passed into jit).

Conventions follow Hugging Face `BertModel` exactly:
  * embeddings = LayerNorm(word + absolute position + token_type[0]); all
    token_type_ids are 0 (single-segment input);
  * post-LN layers: x = LN(x + attn(x)); x = LN(x + mlp(x));
  * hidden states are a tuple of num_layers + 1 arrays (B, L, H): index 0 is
    the embeddings output, index i the output of layer i - 1 (no final norm);
  * bidirectional attention with padded keys masked out; padding goes at the
    END of a row (positions are 0..L-1), real positions are then unchanged;
  * `hidden_act='gelu'` is the exact (erf) GELU.

Precision policy as in `gpt2.py`: matmuls in `dtype`, residual stream,
LayerNorms and softmax in float32, float32 weights and outputs.
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
class BertConfig:
  """The architecture fields of a Hugging Face BERT config.json."""
  vocab_size: int
  max_positions: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_size: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  activation: str = 'gelu'

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], model_dir: str = '.') -> 'BertConfig':
    get = lambda keys, default=None: loading.hf_config_value(hf, keys, model_dir, default)
    config = cls(
        vocab_size=int(get(('vocab_size',))),
        max_positions=int(get(('max_position_embeddings',))),
        hidden_size=int(get(('hidden_size',))),
        num_layers=int(get(('num_hidden_layers',))),
        num_heads=int(get(('num_attention_heads',))),
        mlp_size=int(get(('intermediate_size',))),
        type_vocab_size=int(get(('type_vocab_size',), 2)),
        layer_norm_eps=float(get(('layer_norm_eps',), 1e-12)),
        activation=str(get(('hidden_act',), 'gelu')),
    )
    source = f'{model_dir}/config.json'
    loading.hf_activation(config.activation, source)
    position_type = hf.get('position_embedding_type', 'absolute')
    if position_type != 'absolute':
      raise loading.EncoderLoadError(
          f'{source} uses position_embedding_type={position_type!r}; only '
          "'absolute' BERT models (BERT-base, MiniLM) are supported.")
    if config.hidden_size % config.num_heads:
      raise loading.EncoderLoadError(
          f'{source}: hidden_size={config.hidden_size} is not divisible by '
          f'num_attention_heads={config.num_heads}; re-download the model directory.')
    if config.type_vocab_size < 1:
      raise loading.EncoderLoadError(
          f'{source} has type_vocab_size=0; use a standard BERT checkpoint.')
    return config


def weight_specs(config: BertConfig) -> list[loading.WeightSpec]:
  """Where each of our parameters lives in a HF BERT checkpoint (word embeddings first)."""
  c = config
  torch_rows = (loading.TORCH_LAYOUT,)  # nn.Linear stores (out, in); Flax Dense (in, out).
  spec = loading.WeightSpec
  specs = [
      spec(('word_embeddings',), 'embeddings.word_embeddings', 'embed',
           (c.vocab_size, c.hidden_size)),
      spec(('position_embeddings',), 'embeddings.position_embeddings', 'embed',
           (c.max_positions, c.hidden_size)),
      spec(('token_type_embeddings',), 'embeddings.token_type_embeddings', 'embed',
           (c.type_vocab_size, c.hidden_size)),
      spec(('embeddings_norm',), 'embeddings.LayerNorm', 'norm', (c.hidden_size,)),
  ]
  H, M = c.hidden_size, c.mlp_size
  for i in range(c.num_layers):
    b, hf = f'layer_{i}', f'encoder.layer.{i}'
    specs += [
        spec((b, 'query'), f'{hf}.attention.self.query', 'dense', (H, H), torch_rows),
        spec((b, 'key'), f'{hf}.attention.self.key', 'dense', (H, H), torch_rows),
        spec((b, 'value'), f'{hf}.attention.self.value', 'dense', (H, H), torch_rows),
        spec((b, 'attn_out'), f'{hf}.attention.output.dense', 'dense', (H, H), torch_rows),
        spec((b, 'attn_norm'), f'{hf}.attention.output.LayerNorm', 'norm', (H,)),
        spec((b, 'mlp_in'), f'{hf}.intermediate.dense', 'dense', (H, M), torch_rows),
        spec((b, 'mlp_out'), f'{hf}.output.dense', 'dense', (M, H), torch_rows),
        spec((b, 'mlp_norm'), f'{hf}.output.LayerNorm', 'norm', (H,)),
    ]
  return specs


def _layer_norm(config: BertConfig, name: str | None) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32,
                      param_dtype=jnp.float32, use_fast_variance=False, name=name)


class BertLayer(nn.Module):
  """Post-LN encoder layer with bidirectional, key-masked attention."""
  config: BertConfig
  dtype: Any = jnp.float32
  attention_impl: str | None = None   # inputs.attention_impl: None = cuDNN where it applies

  @nn.compact
  def __call__(self, x_BLH: jax.Array, key_mask_B11L: jax.Array | None) -> jax.Array:
    c = self.config
    B, L, H = x_BLH.shape
    N = c.num_heads
    dense = lambda features, name: nn.Dense(
        features, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    heads = lambda t: t.reshape(B, L, N, H // N)

    attn_BLNK = jax.nn.dot_product_attention(
        heads(dense(H, 'query')(x_BLH)), heads(dense(H, 'key')(x_BLH)),
        heads(dense(H, 'value')(x_BLH)), mask=key_mask_B11L, scale=1.0 / math.sqrt(H // N),
        implementation=inputs.attention_impl(self.attention_impl, self.dtype, key_mask_B11L))
    x_BLH = _layer_norm(c, 'attn_norm')(x_BLH + dense(H, 'attn_out')(attn_BLNK.reshape(B, L, H)))

    act = loading.hf_activation(c.activation, 'the BERT config')
    h_BLM = act(dense(c.mlp_size, 'mlp_in')(x_BLH))
    return _layer_norm(c, 'mlp_norm')(x_BLH + dense(H, 'mlp_out')(h_BLM))


class BertModel(nn.Module):
  """BERT returning Hugging Face `hidden_states`, optionally stopping early."""
  config: BertConfig
  dtype: Any = jnp.float32  # Matmul compute dtype; params are float32.
  attention_impl: str | None = None   # inputs.attention_impl: None = cuDNN where it applies

  def setup(self):
    c = self.config
    embed = lambda n: nn.Embed(n, c.hidden_size, dtype=jnp.float32, param_dtype=jnp.float32)
    self.word_embeddings = embed(c.vocab_size)
    self.position_embeddings = embed(c.max_positions)
    self.token_type_embeddings = embed(c.type_vocab_size)
    self.embeddings_norm = _layer_norm(c, None)
    self.layer = [BertLayer(c, dtype=self.dtype, attention_impl=self.attention_impl)
                  for _ in range(c.num_layers)]  # layer_0, ...

  def __call__(self, input_ids_BL: jax.Array, attention_mask_BL: jax.Array | None = None,
               max_layer: int | None = None) -> tuple[jax.Array, ...]:
    """Hidden states 0..max_layer (HF indices, all of them when None), each (B, L, H)."""
    c = self.config
    L = input_ids_BL.shape[1]
    last, key_mask_B11L = inputs.layers_and_key_mask(max_layer, c.num_layers, L, c.max_positions,
                                                     'BERT', 'max_position_embeddings', attention_mask_BL)

    # token_type_ids are all 0: add row 0 of the token-type table.
    x_BLH = (self.word_embeddings(input_ids_BL) + self.position_embeddings(jnp.arange(L))[None]
             + self.token_type_embeddings.embedding[0])
    x_BLH = self.embeddings_norm(x_BLH)
    states = [x_BLH]
    for i in range(last):
      x_BLH = self.layer[i](x_BLH, key_mask_B11L)
      states.append(x_BLH)
    return tuple(states)


def embedding_table(params: Mapping[str, Any]) -> jax.Array:
  """The token (word) embedding table, (V, H)."""
  return params['word_embeddings']['embedding']

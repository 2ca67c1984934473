"""Latent encoder and latent decoder (docs/method.md Sections 1.2-1.3, paper 4.1 and B.4).

`PerceiverResampler` (Flamingo style) maps an input sequence (B, L_in, C) to
`num_queries` learned query vectors:

  x = Dense(W)(inputs) + pos                       (position embedding on inputs)
  for each layer:
    q  = norm(latents);  kv = concat(norm(x), q)   (latents attend to themselves too)
    latents += Attention(q, kv);  latents += FFN(norm(latents))
  out = Dense(C_out)(norm(latents))  [+ RMSNorm]

Used twice: the latent encoder (N latent queries over h_n, output D, final
RMSNorm as in COSMOS) and the latent decoder (L position queries over z_in,
output the encoder width H).

`SelfAttentionEncoder` is the B.4 ablation: transformer blocks whose
per-position outputs are the result (N = L), used as the latent encoder (over
h_n) and as the hidden-state decoder (over z_in).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ldlm_jax.models import layers


class PerceiverResampler(nn.Module):
  num_queries: int
  width: int
  out_dim: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  output_norm: bool = False
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0    # layers.Attention: 0 = all queries at once
  qk_norm: bool = True
  remat: str = 'none'     # layers.REMAT_POLICIES

  def layer(self, latents, x, i: int):
    """Cross-attention layer i. Its parameters sit directly under this module
    (layer{i}_*), so it is a method, not a submodule."""
    q = nn.RMSNorm(dtype=self.dtype, name=f'layer{i}_latent_norm')(latents)
    ctx = nn.RMSNorm(dtype=self.dtype, name=f'layer{i}_input_norm')(x)
    kv = jnp.concatenate([ctx, q], axis=1)
    latents = latents + layers.Attention(
        self.num_heads, qk_norm=self.qk_norm, dtype=self.dtype, attention_impl=self.attention_impl,
        query_chunk=self.attention_query_chunk,
        name=f'layer{i}_attn')(q, kv)
    h = nn.RMSNorm(dtype=self.dtype, name=f'layer{i}_mlp_norm')(latents)
    return latents + layers.MLP(self.mlp_ratio, dtype=self.dtype, name=f'layer{i}_mlp')(h)

  @nn.compact
  def __call__(self, inputs_BLC):
    batch = inputs_BLC.shape[0]
    x = layers.embed_sequence(self, inputs_BLC, self.width, self.dtype)
    queries = self.param('queries', layers.EMBED_INIT, (self.num_queries, self.width), jnp.float32)
    latents = jnp.broadcast_to(queries.astype(self.dtype), (batch, self.num_queries, self.width))
    layer = layers.rematerialized(type(self).layer, self.remat, static_argnums=(3,))
    for i in range(self.num_layers):
      latents = layer(self, latents, x, i)
    return layers.project_out(latents, self.out_dim, self.dtype, output_norm=self.output_norm)


class SelfAttentionEncoder(nn.Module):
  """Paper B.4: self-attention blocks, one output per input position.

  Unlike the Perceiver, position i's output has a residual path from input
  i, so no attention routing has to be learned before information flows;
  in short runs it learns to reconstruct far faster (BUILD_NOTES.md).
  """

  width: int
  out_dim: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  output_norm: bool = False
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0    # layers.Attention: 0 = all queries at once
  qk_norm: bool = True
  remat: str = 'none'     # layers.REMAT_POLICIES

  @nn.compact
  def __call__(self, inputs_BLC):
    x = layers.embed_sequence(self, inputs_BLC, self.width, self.dtype)
    x = layers.transformer_blocks(x, self.num_layers, self.num_heads, self.mlp_ratio, self.dtype,
                                  self.attention_impl, self.qk_norm, self.remat,
                                  self.attention_query_chunk)
    return layers.project_out(x, self.out_dim, self.dtype, output_norm=self.output_norm)

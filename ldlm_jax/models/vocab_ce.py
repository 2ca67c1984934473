"""Cross-entropy and accuracy over the vocabulary without the full logits.

The token decoder's head maps T = B x L hidden states (width W) to V = 50257
(GPT-2) logits. Written densely, the float32 (T, V) logits, their softmax
and their gradient are each materialised (LM1B at 128 examples: 3.1 GiB per
copy) and read again for the accuracy argmax. `vocab_cross_entropy` walks
the vocabulary in chunks of at most `vocab_chunk` entries inside a
`lax.scan`:

  forward:  per chunk, logits_TC = hidden_TW @ kernel_WC (compute dtype
            operands, float32 accumulation) + bias; an online log-sum-exp
            (running max and rescaled sum), the label's logit, and a running
            argmax (ties go to the lower index, as jnp.argmax does);
  backward: a custom VJP that recomputes each chunk's logits from the saved
            hidden states and log-sum-exp, forms (softmax - onehot) * g / T
            and accumulates d hidden and emits the chunk's d kernel, d bias.

So no more than one (T, chunk) float32 block is alive at a time, forward or
backward. It costs one extra head matmul in the backward (the recompute).
Chunking is over the vocabulary, not over tokens, because the token axis is
the one the batch is sharded along: a scan over it would serialise across
devices. Hand-written (no maintained JAX library offers a fused vocabulary
CE with accuracy; optax's works on materialised logits): BUILD_NOTES.md.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax

from ldlm_jax.models.token_decoder import tied_kernel

LANE = 128     # chunk widths are rounded to this (TPU lanes / GPU tiles)


def chunk_width(vocab_size: int, vocab_chunk: int) -> tuple[int, int]:
  """(chunk width, number of chunks): the fewest chunks of at most `vocab_chunk`
  entries, split evenly (widths of 128 or more rounded up to a multiple of
  128), so the padding is small (GPT-2, 8192: 7 chunks of 7296 = 51072
  columns, 1.6% padding)."""
  num = max(1, math.ceil(vocab_size / vocab_chunk))
  width = math.ceil(vocab_size / num)
  if vocab_chunk >= LANE:
    width = LANE * math.ceil(width / LANE)
  return width, math.ceil(vocab_size / width)


def _chunked_head(kernel_WV, bias_V, vocab_chunk: int, dtype):
  """kernel as (n, W, C) in the compute dtype and bias as (n, C) float32, zero-padded."""
  width, vocab = kernel_WV.shape
  c, n = chunk_width(vocab, vocab_chunk)
  pad = n * c - vocab
  k = jnp.pad(kernel_WV.astype(dtype), ((0, 0), (0, pad))).reshape(width, n, c)
  b = jnp.pad(bias_V.astype(jnp.float32), (0, pad)).reshape(n, c)
  return jnp.transpose(k, (1, 0, 2)), b, c, n


def _chunk_logits(x_TW, k_WC, b_C, offset, vocab: int):
  logits = jnp.dot(x_TW, k_WC, preferred_element_type=jnp.float32) + b_C
  col_C = offset + jnp.arange(k_WC.shape[-1])
  return jnp.where(col_C < vocab, logits, -jnp.inf), col_C


def _forward(hidden_TW, kernel_WV, bias_V, labels_T, vocab_chunk: int, dtype):
  """(per-token loss, argmax, log-sum-exp) for every token."""
  vocab = kernel_WV.shape[1]
  k, b, c, n = _chunked_head(kernel_WV, bias_V, vocab_chunk, dtype)
  x = hidden_TW.astype(dtype)
  tokens = x.shape[0]

  def body(carry, chunk):
    run_max, run_sum, label_logit, best_val, best_idx = carry
    k_WC, b_C, offset = chunk
    logits, _ = _chunk_logits(x, k_WC, b_C, offset, vocab)
    chunk_max = jnp.max(logits, axis=-1)
    new_max = jnp.maximum(run_max, chunk_max)
    run_sum = (run_sum * jnp.exp(run_max - new_max)
               + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=-1))
    local = labels_T - offset
    hit = (local >= 0) & (local < c)
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, c - 1)[:, None], axis=-1)[:, 0]
    label_logit = label_logit + jnp.where(hit, picked, 0.0)
    better = chunk_max > best_val          # strict: an earlier chunk keeps a tie
    best_idx = jnp.where(better, offset + jnp.argmax(logits, axis=-1), best_idx)
    best_val = jnp.where(better, chunk_max, best_val)
    return (new_max, run_sum, label_logit, best_val, best_idx), None

  neg_inf = jnp.full((tokens,), -jnp.inf, jnp.float32)
  zeros = jnp.zeros((tokens,), jnp.float32)
  init = (neg_inf, zeros, zeros, neg_inf, jnp.zeros((tokens,), jnp.int32))
  offsets = jnp.arange(n, dtype=jnp.int32) * c
  (run_max, run_sum, label_logit, _, best_idx), _ = jax.lax.scan(body, init, (k, b, offsets))
  lse = run_max + jnp.log(run_sum)
  return lse - label_logit, best_idx, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _mean_ce(hidden_TW, kernel_WV, bias_V, labels_T, vocab_chunk, dtype):
  loss_T, argmax_T, _ = _forward(hidden_TW, kernel_WV, bias_V, labels_T, vocab_chunk, dtype)
  return jnp.mean(loss_T), jnp.mean((argmax_T == labels_T).astype(jnp.float32))


def _mean_ce_fwd(hidden_TW, kernel_WV, bias_V, labels_T, vocab_chunk, dtype):
  loss_T, argmax_T, lse_T = _forward(hidden_TW, kernel_WV, bias_V, labels_T, vocab_chunk, dtype)
  out = (jnp.mean(loss_T), jnp.mean((argmax_T == labels_T).astype(jnp.float32)))
  return out, (hidden_TW, kernel_WV, bias_V, labels_T, lse_T)


def _mean_ce_bwd(vocab_chunk, dtype, residuals, cotangents):
  hidden_TW, kernel_WV, bias_V, labels_T, lse_T = residuals
  g_loss, _ = cotangents               # accuracy has no gradient
  width, vocab = kernel_WV.shape
  k, b, c, n = _chunked_head(kernel_WV, bias_V, vocab_chunk, dtype)
  x = hidden_TW.astype(dtype)
  scale = g_loss.astype(jnp.float32) / hidden_TW.shape[0]

  def body(d_x_TW, chunk):
    k_WC, b_C, offset = chunk
    logits, col_C = _chunk_logits(x, k_WC, b_C, offset, vocab)
    probs = jnp.exp(logits - lse_T[:, None])                  # 0 on padded columns
    onehot = (col_C[None, :] == labels_T[:, None]).astype(jnp.float32)
    d_logits = ((probs - onehot) * scale).astype(dtype)
    d_x_TW = d_x_TW + jnp.dot(d_logits, k_WC.T, preferred_element_type=jnp.float32)
    d_k_WC = jnp.dot(x.T, d_logits, preferred_element_type=jnp.float32)
    d_b_C = jnp.sum(d_logits.astype(jnp.float32), axis=0)
    return d_x_TW, (d_k_WC, d_b_C)

  offsets = jnp.arange(n, dtype=jnp.int32) * c
  d_x, (d_k, d_b) = jax.lax.scan(body, jnp.zeros(hidden_TW.shape, jnp.float32), (k, b, offsets))
  d_kernel = jnp.transpose(d_k, (1, 0, 2)).reshape(width, n * c)[:, :vocab]
  d_bias = d_b.reshape(n * c)[:vocab]
  return (d_x.astype(hidden_TW.dtype), d_kernel.astype(kernel_WV.dtype),
          d_bias.astype(bias_V.dtype), None)


_mean_ce.defvjp(_mean_ce_fwd, _mean_ce_bwd)


def vocab_cross_entropy(hidden_BLW, kernel_WV, bias_V, labels_BL, *, vocab_chunk: int,
                        dtype=jnp.float32):
  """(mean cross-entropy, mean argmax accuracy) of the head `hidden @ kernel + bias`.

  Equal to optax.softmax_cross_entropy_with_integer_labels on the dense
  logits (and to their argmax) up to float rounding; differentiable in
  hidden, kernel and bias. `dtype` is the matmul operand dtype (float32
  accumulation either way).
  """
  if vocab_chunk <= 0:
    raise ValueError(f'vocab_chunk must be > 0 (got {vocab_chunk}); 0 means the dense path.')
  width = hidden_BLW.shape[-1]
  return _mean_ce(hidden_BLW.reshape(-1, width), kernel_WV, bias_V,
                  labels_BL.reshape(-1).astype(jnp.int32), int(vocab_chunk), jnp.dtype(dtype))


def dense_cross_entropy(logits_BLV, labels_BL):
  """The dense reference that `vocab_cross_entropy` must equal: materialised float32 logits."""
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BLV, labels_BL))
  acc = jnp.mean((jnp.argmax(logits_BLV, -1) == labels_BL).astype(jnp.float32))
  return ce, acc


def token_decoder_ce(module, params, h_hat_BLH, labels_BL, vocab_chunk: int, table_VE=None):
  """(CE, accuracy) of the token decoder `module` (a TokenDecoder) on h_hat.

  vocab_chunk = 0: today's dense logits; > 0: the chunked head above on the
  decoder's pre-head hidden states, with its vocab_head parameters (a tied
  head: the kernel tied_proj @ table_VE^T and its vocab_bias).
  """
  if vocab_chunk <= 0:
    return dense_cross_entropy(module.apply({'params': params}, h_hat_BLH, table_VE=table_VE),
                               labels_BL)
  hidden = module.apply({'params': params}, h_hat_BLH, head=False)
  if module.tied_dim:
    kernel, bias = tied_kernel(params['tied_proj'], table_VE), params['vocab_bias']
  else:
    kernel, bias = params['vocab_head']['kernel'], params['vocab_head']['bias']
  return vocab_cross_entropy(hidden, kernel, bias, labels_BL, vocab_chunk=vocab_chunk,
                             dtype=module.dtype)

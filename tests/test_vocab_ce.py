"""The chunked vocabulary cross-entropy equals the dense one.

At float32 on CPU, loss, accuracy and the gradients w.r.t. the hidden
states and the head's kernel and bias agree with
optax.softmax_cross_entropy_with_integer_labels on materialised logits to
1e-5 relative, for chunk widths that split the vocabulary evenly, unevenly
(padding) and not at all, and through LDLM.loss_fn (the token decoder's
pre-head hidden states and vocab_head parameters).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.models import vocab_ce

RTOL = 1e-5


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _problem(batch=3, length=5, width=16, vocab=300, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  hidden = jax.random.normal(k[0], (batch, length, width))
  kernel = 0.5 * jax.random.normal(k[1], (width, vocab))
  bias = 0.1 * jax.random.normal(k[2], (vocab,))
  labels = jax.random.randint(k[3], (batch, length), 0, vocab)
  return hidden, kernel, bias, labels


def _dense(hidden, kernel, bias, labels):
  return vocab_ce.dense_cross_entropy(hidden @ kernel + bias, labels)


def test_chunk_width_splits_evenly_with_little_padding():
  assert vocab_ce.chunk_width(50257, 8192) == (7296, 7)        # 51072 columns, 1.6% padding
  assert vocab_ce.chunk_width(300, 1000) == (384, 1)
  assert vocab_ce.chunk_width(256, 128) == (128, 2)
  assert vocab_ce.chunk_width(50, 16) == (13, 4)                # small chunks: not rounded


# 3 chunks of 100; 3 of 128 (84 columns padded); one of 384 (padded).
@pytest.mark.slow
@pytest.mark.parametrize('vocab_chunk', [100, 128, 4096])
def test_loss_accuracy_and_gradients_match_dense(vocab_chunk):
  hidden, kernel, bias, labels = _problem()
  # Make some predictions right, so accuracy is not trivially 0.
  labels = labels.at[0].set(jnp.argmax(hidden[0] @ kernel + bias, -1))
  loss_fn = lambda h, k, b: vocab_ce.vocab_cross_entropy(h, k, b, labels,
                                                        vocab_chunk=vocab_chunk)
  dense_fn = lambda h, k, b: _dense(h, k, b, labels)
  # Value and gradients in one compiled program each (eager scans are slow).
  both = lambda fn: jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True))
  ((loss, acc), grads) = both(loss_fn)(hidden, kernel, bias)
  ((ref_loss, ref_acc), ref) = both(dense_fn)(hidden, kernel, bias)
  assert _rel(loss, ref_loss) <= RTOL
  assert float(acc) == float(ref_acc) and float(ref_acc) >= 5 / 15
  for name, g, r in zip(('hidden', 'kernel', 'bias'), grads, ref):
    assert g.shape == r.shape and g.dtype == r.dtype
    assert _rel(g, r) <= RTOL, name
  # Without differentiation the primal (not the VJP's forward) runs: same numbers.
  plain_loss, plain_acc = jax.jit(loss_fn)(hidden, kernel, bias)
  assert float(plain_loss) == float(loss) and float(plain_acc) == float(acc)


def test_argmax_ties_go_to_the_lower_index_across_chunks():
  # Zero hidden states: every logit is its bias; columns 10 and 200 tie (chunks 0 and 1).
  hidden = jnp.zeros((1, 2, 4))
  bias = jnp.zeros((300,)).at[10].set(1.0).at[200].set(1.0)
  kernel = jnp.zeros((4, 300))
  labels = jnp.array([[10, 200]])
  _, acc = jax.jit(lambda *a: vocab_ce.vocab_cross_entropy(*a, vocab_chunk=128))(
      hidden, kernel, bias, labels)
  assert float(acc) == 0.5 == float(_dense(hidden, kernel, bias, labels)[1])


@pytest.mark.slow
def test_bfloat16_operands_accumulate_in_float32():
  hidden, kernel, bias, labels = _problem(vocab=1000, width=64)
  fn = lambda h: vocab_ce.vocab_cross_entropy(h, kernel, bias, labels, vocab_chunk=256,
                                             dtype=jnp.bfloat16)[0]
  loss, g = jax.jit(jax.value_and_grad(fn))(hidden.astype(jnp.bfloat16))
  ref, _ = _dense(hidden.astype(jnp.bfloat16).astype(jnp.float32),
                  kernel.astype(jnp.bfloat16).astype(jnp.float32), bias, labels)
  assert _rel(loss, ref) <= 1e-5        # only the operands are rounded, not the sums
  assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


@pytest.mark.slow
def test_ldlm_loss_is_the_same_with_the_chunked_head():
  """LDLM.loss_fn's CE term and its gradients: chunked (4 chunks) == dense at float32."""
  from ldlm_jax.models.ldlm import LDLM
  from ldlm_jax.diffusion import timesteps as timesteps_lib
  from ldlm_testing import ToyEncoder, tiny_config, toy_tokens
  c = tiny_config()
  c.loss.ce_stop_gradient = False        # the CE gradient reaches every module
  enc = ToyEncoder()
  sampler = timesteps_lib.init_state(int(c.timesteps.num_bins))
  frozen = None
  results = []
  for chunk in (0, 16):
    c.loss.ce_vocab_chunk = chunk
    model = LDLM(c, enc)
    params = jax.jit(model.init)(jax.random.PRNGKey(0))
    frozen = model.frozen_inputs(enc.init_params(), np.zeros(enc.hidden_size),
                                 np.ones(enc.hidden_size))
    fn = jax.jit(jax.value_and_grad(model.loss_fn, has_aux=True))
    results.append(fn(params, frozen, toy_tokens(4, c.data.seq_len), jax.random.PRNGKey(1), 5,
                      sampler))
  ((_, aux), grads), ((_, ref_aux), ref) = results[1], results[0]
  assert _rel(aux['ce_loss'], ref_aux['ce_loss']) <= RTOL
  assert float(aux['token_accuracy']) == float(ref_aux['token_accuracy'])
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
    assert _rel(g, r) <= RTOL

"""The frozen encoders pick cuDNN attention where it applies.

No GPU here: the backend query is patched to say 'gpu' and
jax.nn.dot_product_attention is wrapped to record the implementation each
block asks for (then run with XLA), so the choice is tested on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.encoders import bert, gpt2

GPT2 = gpt2.GPT2Config(vocab_size=32, max_positions=16, hidden_size=16, num_layers=2,
                       num_heads=2, mlp_size=32)
BERT = bert.BertConfig(vocab_size=32, max_positions=16, hidden_size=16, num_layers=2,
                       num_heads=2, mlp_size=32)


def _run(module, mask=None, calls=None):
  """Hidden states; `calls` (the recorder) keeps only the forward's own attention calls."""
  ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 32
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids)
  params = jax.tree.map(lambda s: jnp.full(s.shape, 0.05, s.dtype), params)
  if calls is not None:
    del calls[-2:]                 # the two blocks' calls while tracing init
  return module.apply(params, ids, mask)


@pytest.fixture
def recorded(monkeypatch):
  calls = []
  original = jax.nn.dot_product_attention

  def record(*args, implementation=None, **kwargs):
    calls.append(implementation)
    return original(*args, implementation=None, **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  return calls


@pytest.mark.slow
@pytest.mark.parametrize('family', ['gpt2', 'bert'])
def test_cudnn_on_gpu_for_16_bit_unmasked_xla_otherwise(family, recorded, monkeypatch):
  make = ((lambda **kw: gpt2.GPT2Model(GPT2, **kw)) if family == 'gpt2'
          else (lambda **kw: bert.BertModel(BERT, **kw)))
  mask = jnp.ones((2, 6), jnp.int32).at[1, 4:].set(0)
  _run(make(dtype=jnp.bfloat16), calls=recorded)
  assert recorded == [None, None]                   # CPU: XLA
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  recorded.clear()
  _run(make(dtype=jnp.bfloat16), calls=recorded)
  assert recorded == ['cudnn', 'cudnn']
  recorded.clear()
  _run(make(dtype=jnp.bfloat16), mask, calls=recorded)   # padded keys: XLA applies the mask
  _run(make(dtype=jnp.float32), calls=recorded)          # no float32 cuDNN kernel
  _run(make(dtype=jnp.bfloat16, attention_impl='xla'), calls=recorded)
  assert recorded == [None] * 4 + ['xla'] * 2


@pytest.mark.slow
def test_explicit_xla_matches_the_default_on_cpu():
  for module in (gpt2.GPT2Model(GPT2), bert.BertModel(BERT)):
    default = _run(module)[-1]
    forced = _run(module.clone(attention_impl='xla'))[-1]
    np.testing.assert_array_equal(np.asarray(default), np.asarray(forced))

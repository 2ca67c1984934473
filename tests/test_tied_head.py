"""The token decoder's vocab head tied to the frozen encoder's word embeddings
(`model.token_decoder.head='encoder'`).

The head is RMSNorm -> logits = x @ P @ table^T + bias, with a trained (W, E)
map P and the encoder's own (V, E) table frozen: it is a frozen component ('token_embedding')
that never enters the optimizer, is saved with the checkpoint (so sampling
needs no encoder weights) and gives the same CE through the chunked head as
through dense logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax import api
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_jax.errors import ConfigError
from ldlm_jax.models.ldlm import TIED_TABLE, count_params

from ldlm_testing import ToyEncoder, run_module, subprocess_env, tiny_setup, train_command


def test_tied_head_reads_the_frozen_encoder_table():
  c, model, params, frozen, tokens = tiny_setup(**{'model.token_decoder.head': 'encoder'})
  enc = ToyEncoder()
  table = np.asarray(enc.embedding_table(enc.init_params()))
  assert TIED_TABLE not in params                    # never trained
  assert TIED_TABLE in model.frozen_names
  np.testing.assert_array_equal(np.asarray(frozen.components[TIED_TABLE]['embedding']), table)
  td = params['token_decoder']
  assert 'vocab_head' not in td and td['tied_proj'].shape == (c.model.token_decoder.width, enc.hidden_size)
  assert td['vocab_bias'].shape == (enc.vocab_size,)
  # The logits are the decoder's output mapped into the table's space, against the table, plus the bias.
  full = model.with_frozen(params, frozen)
  h = jax.random.normal(jax.random.PRNGKey(3), (2, c.data.seq_len, enc.hidden_size))
  bias = 0.1 * jnp.arange(enc.vocab_size, dtype=jnp.float32)
  full['token_decoder'] = {**td, 'vocab_bias': bias}
  x = model.token_decoder.apply({'params': full['token_decoder']}, h, head=False)
  np.testing.assert_allclose(np.asarray(model.token_logits(full, h)),
                             np.asarray(x @ td['tied_proj'] @ table.T + bias), rtol=1e-5, atol=1e-5)
  # Only the bias is per token: the head has W x E + V parameters, not W x V + V.
  assert count_params(params)['token_decoder_vocab_head'] == td['tied_proj'].size + enc.vocab_size


@pytest.mark.slow
def test_tied_head_chunked_ce_equals_dense_and_no_gradient_reaches_the_table():
  results = []
  for chunk in (0, 16):
    c, model, params, frozen, tokens = tiny_setup(**{'model.token_decoder.head': 'encoder',
                                                     'loss.ce_vocab_chunk': chunk})
    sampler = timesteps_lib.init_state(int(c.timesteps.num_bins))
    fn = jax.jit(jax.value_and_grad(model.loss_fn, has_aux=True))
    results.append(fn(params, frozen, tokens, jax.random.PRNGKey(1), 5, sampler))
  ((_, ref_aux), ref), ((_, aux), grads) = results
  np.testing.assert_allclose(float(aux['ce_loss']), float(ref_aux['ce_loss']), rtol=1e-5)
  assert float(aux['token_accuracy']) == float(ref_aux['token_accuracy'])
  assert TIED_TABLE not in grads
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(grads['token_decoder']['tied_proj']).sum()) > 0


def test_tied_head_without_a_token_decoder_is_refused():
  with pytest.raises(ConfigError, match='would do nothing'):
    tiny_setup(**{'model.token_decoder.head': 'encoder', 'loss.reconstruction': 'mse',
                  'loss.train_token_decoder': False})


@pytest.mark.slow
def test_tied_head_run_resumes_and_samples_from_its_checkpoint(tmp_path):
  """Train 8 steps, resume to 12 (the table comes back from the checkpoint's frozen item),
  then sample through the API and from an export, which read the table from the checkpoint."""
  import subprocess
  workdir = tmp_path / 'run'
  args = ('--config.model.token_decoder.head=encoder', '--config.train.checkpoint_every=4')
  for steps in (8, 12):
    proc = subprocess.run(train_command(workdir, f'--config.train.num_steps={steps}', *args),
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resumed from step 8' in proc.stdout
  result = api.load(str(workdir)).generate(3, steps=4, seed=2)
  assert result.tokens.shape == (3, 16)
  # An export carries the table too: the same samples from it. (The API and the sample CLI
  # give the same samples: tests/test_api_export.py.)
  exported = tmp_path / 'model'
  proc = run_module('ldlm_jax.export', '--workdir', workdir, '--out', exported)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert api.load(str(exported)).generate(3, steps=4, seed=2).tokens.tolist() == result.tokens.tolist()
  from ldlm_jax.encoders.registry import load_frozen_encoder
  from ldlm_jax.training import restore
  run = restore.load_run(str(workdir))
  config = run.config
  encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype)
  table = np.asarray(encoder.embedding_table(encoder.params))[:run.model.dims.vocab_size]
  np.testing.assert_array_equal(np.asarray(run.state.ema_params[TIED_TABLE]['embedding']), table)

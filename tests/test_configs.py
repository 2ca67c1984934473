"""Every config file loads, validates, and builds a model of the stated size."""

import glob
import os

import jax
import pytest

from ldlm_jax.config import validate
from ldlm_jax.methods import build_model
from ldlm_jax.models.ldlm import count_params

from ldlm_testing import REPO, config_module, load_config_file

CONFIG_NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py')))


class _Dims:
  def __init__(self, hidden_size, vocab_size):
    self.hidden_size, self.vocab_size = hidden_size, vocab_size


ENCODER_DIMS = {'gpt2': _Dims(768, 50257), 'bert-base': _Dims(768, 30522), 'minilm-l6': _Dims(384, 30522),
                'local': _Dims(64, 26)}   # 'local': the toy language's encoder (configs/toy_order.py)


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_validates_and_builds(name):
  config = load_config_file(name)
  validate(config)
  model = build_model(config, ENCODER_DIMS[config.encoder.name])   # LDLM or a baseline (method.name)
  counts = count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert counts['total'] > 0


def test_toy_order_encoders():
  module = config_module('toy_order')
  toy, minilm = module.get_config(), module.get_config('minilm')
  assert (toy.encoder.name, toy.encoder.path, toy.encoder.layer) == ('local', '', -1)
  assert (minilm.encoder.name, minilm.encoder.layer) == ('minilm-l6', -3)
  for config in (toy, minilm):
    validate(config)
    model = build_model(config, ENCODER_DIMS[config.encoder.name])
    assert count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))['total'] > 0
  with pytest.raises(ValueError, match='no encoder'):
    module.get_config('gpt2')


def test_every_ablation_variant_validates():
  module = config_module('ablations')
  added = []
  module.sweep(lambda **kw: added.append(kw))
  assert len(added) == len(module.VARIANTS) - 1
  for variant in module.VARIANTS:
    validate(module.get_config(variant))
  assert module.get_config('warmup_25k').encoder_warmup.steps == 25_000
  assert module.get_config('warmup_25k').timesteps.sampler == 'uniform'
  with pytest.raises(ValueError, match='unknown ablation'):
    module.get_config('nope')


# The device count each paper-size variant is laid out for (the docstrings' bench commands).
HARDWARE_VARIANTS = {'owt': {'': 8, 'tpu_v4_64': 32, 'gpu64': 64},
                     'lm1b': {'': 8, 'tpu_v4_64': 32, 'gpu64': 64}}


@pytest.mark.parametrize('name', sorted(HARDWARE_VARIANTS))
def test_paper_configs_hardware_variants(name):
  """Each variant validates, trains the same model at the same global batch, and its mesh
  divides the batch over the devices it names; the default is laid out for one 8-device host."""
  module = config_module(name)
  assert set(module.VARIANTS) == set(HARDWARE_VARIANTS[name])
  base = module.get_config()
  model_keys = ('model.latent_dim', 'model.denoiser.num_layers', 'model.denoiser.width', 'data.seq_len')
  for variant, devices in HARDWARE_VARIANTS[name].items():
    config = module.get_config(variant)
    validate(config)
    for key in model_keys:
      a, b = config, base
      for part in key.split('.'):
        a, b = a[part], b[part]
      assert a == b, (variant, key)
    assert config.train.batch_size == 512
    assert devices % config.mesh.fsdp == 0 and config.train.batch_size % devices == 0
    assert f'{name}.py{":" + variant if variant else ""} --devices {devices}' in module.__doc__
  with pytest.raises(ValueError, match='unknown'):
    module.get_config('nope')

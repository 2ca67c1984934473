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


ENCODER_DIMS = {'gpt2': _Dims(768, 50257), 'bert-base': _Dims(768, 30522), 'minilm-l6': _Dims(384, 30522)}


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_validates_and_builds(name):
  config = load_config_file(name)
  validate(config)
  model = build_model(config, ENCODER_DIMS[config.encoder.name])   # LDLM or a baseline (method.name)
  counts = count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
  assert counts['total'] > 0


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

"""Methods by name (`config.method.name`): LDLM, or a baseline of the paper's main comparison.

Every method is a class built as `cls(config, encoder)` (`encoder`: the
frozen token encoder, or anything with `vocab_size` and `hidden_size`, as
the restore path passes) exposing LDLM's interface (backbone.py says which
parts); the trainer, the restore path and the sampling library build the
model with `build_model` and need no other branching.

Adding one: a module with a `DiscreteMethod` subclass, one line in
METHOD_MODULES, a config in configs/baselines.py and tests.
"""

from __future__ import annotations

import importlib

from ldlm_jax.config import ConfigError

# name -> 'module:Class' (imported on use).
METHOD_MODULES = {
    'ldlm': 'ldlm_jax.models.ldlm:LDLM',
    'mdlm': 'ldlm_jax.methods.mdlm:MDLM',
    'duo': 'ldlm_jax.methods.duo:Duo',
    'ar': 'ldlm_jax.methods.ar:Autoregressive',
}


def method_name(config) -> str:
  """config.method.name; 'ldlm' for a config without a method section (runs saved before it)."""
  method = config.get('method') if hasattr(config, 'get') else None
  return str(method.get('name', 'ldlm')) if method is not None else 'ldlm'


def method_class(config):
  name = method_name(config)
  if name not in METHOD_MODULES:
    raise ConfigError(f'method.name={name!r} is not one of {tuple(METHOD_MODULES)}; '
                      'set --config.method.name to one of them.')
  module, _, cls = METHOD_MODULES[name].partition(':')
  return getattr(importlib.import_module(module), cls)


def build_model(config, encoder):
  """The model `config.method.name` names, over `encoder`."""
  return method_class(config)(config, encoder)


def is_baseline(model) -> bool:
  """True for a discrete baseline (it samples tokens directly; no latent chain, no token decoder)."""
  return bool(getattr(model, 'generates_tokens', False))


__all__ = ['METHOD_MODULES', 'build_model', 'is_baseline', 'method_class', 'method_name']

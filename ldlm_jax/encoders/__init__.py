"""Frozen token encoders (docs/method.md Section 1.1): tokenizers, GPT-2/BERT in Flax, normalization.

The public names below are imported lazily, so `ldlm_jax.encoders.tokenizers`
(used by data-preparation workers) does not pull in JAX and Flax.
"""

import importlib

_EXPORTS = {
    'FrozenEncoder': 'registry',
    'load_frozen_encoder': 'registry',
    'load_encoder_tokenizer': 'registry',
    'resolve_model_dir': 'registry',
    'EncoderLoadError': 'loading',
    'NormStats': 'normalization',
    'TextTokenizer': 'tokenizers',
    'load_tokenizer': 'tokenizers',
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605  (a list; ruff wants a literal)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

"""Data (docs/method.md Section 1.0): sources, MDLM chunking, grain pipelines, prepare, the Brown corpus.

Modules: `sources` (local files, TFDS), `chunking` (the EOS-concatenate-cut
protocol), `prepare` (ArrayRecord shards + manifest, and its CLI),
`pipeline` (what the trainer and evaluation call), `brown` (the embedded
default corpus), `bench` (throughput). The public names below are imported
lazily so that `python -m ldlm_jax.data.brown` does not import grain.
"""

import importlib

_EXPORTS = {
    'DataError': 'errors',
    'make_train_iterator': 'pipeline',
    'get_iterator_state': 'pipeline',
    'set_iterator_state': 'pipeline',
    'make_eval_batches': 'pipeline',
    'iter_train_chunks': 'pipeline',
    'load_reference_texts': 'pipeline',
    'decode_chunk': 'pipeline',
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605  (a list; ruff wants a literal)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'ldlm_jax.data.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

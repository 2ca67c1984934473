"""Checks the offline SmolLM2 scorer against independent references; prints the numbers.

  python -m ldlm_jax.evaluation.verify_smollm2

1. Weights: transformers' own GGUF reader (`load_gguf_checkpoint`, with its
   own Q/K reverse permutation and dequantization) feeds a PyTorch
   `LlamaForCausalLM`; its logits are compared with our Flax model's on the
   same tokens.
2. Tokenizer: transformers' GGUF tokenizer conversion vs ours on a few texts.
3. Sense: Gen. PPL of prose vs the same words shuffled, and the log-prob of
   each candidate EOS after a finished paragraph (why we score with the
   model's declared EOS).

Needs the test extras (torch, transformers); takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import random
import sys
import time

import jax
import numpy as np

from ldlm_jax import cli
from ldlm_jax.evaluation.genppl import generative_perplexity_of_texts
from ldlm_jax.evaluation.gguf_model import load_gguf_llama
from ldlm_jax.evaluation.llama import Llama
from ldlm_jax.evaluation.scorers import llama_scorer, smollm2_gguf_path

PROSE = [
    'The old lighthouse stood at the edge of the cliff for more than a century. Every night the keeper '
    'climbed the narrow stairs to light the lamp, and every morning he wrote a short note in the logbook '
    'about the weather and the ships that had passed.',
    'Scientists have long been interested in how birds find their way across thousands of miles during '
    'migration. Some species appear to use the position of the sun, while others rely on the stars or on '
    'the magnetic field of the Earth.',
    'When the city council met on Tuesday, the main topic was the plan to build a new public library '
    'downtown. Several residents spoke in favor of the project, but others worried about the cost and '
    'asked for a detailed budget.',
    'She opened the window and let the cool air fill the room. Outside, the children were playing in the '
    'street, and somewhere in the distance a dog was barking at a passing car.',
]
TOKENIZER_TEXTS = [
    "The year 2024 was good, isn't it? Prices rose 3.5% in 12 months.",
    '  Multiple   spaces\tand tabs\nnewlines\n\n and unicode: café, naïve, 東京, emoji 🙂.',
    'def f(x):\n    return x**2  # comment',
]


def shuffled_words(texts: list[str], seed: int = 0) -> list[str]:
  """Each text with its whitespace words in a random order (same words, no syntax)."""
  rng = random.Random(seed)
  shuffled = []
  for text in texts:
    words = text.split()
    rng.shuffle(words)
    shuffled.append(' '.join(words))
  return shuffled


@cli.user_errors_exit_2
def main() -> int:
  import torch
  import transformers
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

  path = smollm2_gguf_path()
  start = time.time()
  config, params, tokenizer = load_gguf_llama(path)
  scorer = llama_scorer('smollm2', config, params, tokenizer)
  print(f'loaded {path} in {time.time() - start:.1f}s; eos = {scorer.tokenizer.decode([scorer.tokenizer.eos_id])!r}')

  hf_tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
  for text in TOKENIZER_TEXTS:
    same = scorer.tokenizer.encode(text) == hf_tok(text, add_special_tokens=False).input_ids
    print(f'tokenizer matches transformers: {same} ({text[:30]!r}...)')

  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, rope_theta=config.rope_theta,
      rms_norm_eps=config.rms_norm_eps, max_position_embeddings=config.max_position_embeddings,
      tie_word_embeddings=config.tie_word_embeddings)
  model = transformers.LlamaForCausalLM(hf_config).eval()
  checkpoint = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)
  model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in checkpoint['tensors'].items()},
                        strict=False)
  model.tie_weights()
  ids = np.array([tokenizer.encode(PROSE[0])[:48]])
  with torch.no_grad():
    expected = model(torch.tensor(ids)).logits.numpy()
  logits = np.asarray(jax.jit(Llama(config).apply)({'params': params}, ids))
  print(f'logits vs transformers GGUF loader: max |diff| = {np.abs(logits - expected).max():.2e} '
        f'(max |logit| {np.abs(expected).max():.1f}); argmax agreement '
        f'{(logits.argmax(-1) == expected.argmax(-1)).mean():.3f}')

  real = generative_perplexity_of_texts(scorer, PROSE, batch_size=4)
  mixed = generative_perplexity_of_texts(scorer, shuffled_words(PROSE), batch_size=4)
  print(f'Gen. PPL prose {real.gen_ppl:.2f} ({real.num_tokens} tokens), '
        f'shuffled words {mixed.gen_ppl:.2f} ({mixed.num_tokens} tokens)')

  vocab = scorer.tokenizer.tokenizer
  seqs = [scorer.tokenizer.encode(text) for text in PROSE]
  length = max(len(s) for s in seqs) + 1
  for candidate in ('<|endoftext|>', '<|im_end|>'):
    cid = vocab.token_to_id(candidate)
    ids_BL = np.zeros((len(seqs), length), np.int32)
    mask_BL = np.zeros_like(ids_BL)
    for b, seq in enumerate(seqs):
      ids_BL[b, :len(seq) + 1] = seq + [cid]
      mask_BL[b, :len(seq) + 1] = 1
    logprobs = scorer.token_logprobs(ids_BL, mask_BL)
    after_text = [float(logprobs[b, len(seq) - 1]) for b, seq in enumerate(seqs)]
    print(f'log p({candidate} | finished paragraph) = {np.round(after_text, 2).tolist()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

"""What a sweep and a study evaluate with: one scorer, the MAUVE references, the machine's description.

jax and the scorer load on first use, not at import.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from ldlm_jax.experiments.spec import ExperimentError, Scale


def tiny_random_scorer(out_dir: str) -> str:
  """A 2-layer random Llama GGUF with a byte-level tokenizer: smoke scale only (its numbers mean nothing)."""
  from tokenizers import pre_tokenizers

  from ldlm_jax.evaluation import gguf_model
  from ldlm_jax.evaluation.llama import LlamaConfig, hf_tensor_shapes
  path = os.path.join(out_dir, 'tiny_random_scorer.gguf')
  if os.path.isfile(path):
    return path
  merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r']
  tokens = ['<|endoftext|>'] + sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(' ', '') for m in merges]
  c = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, max_position_embeddings=512)
  rng = np.random.RandomState(0)
  shapes = hf_tensor_shapes(c)
  tensors = {k: (np.ones(s) if len(s) == 1 else 0.3 * rng.normal(size=s)).astype(np.float32)
             for k, s in shapes.items()}
  os.makedirs(out_dir, exist_ok=True)
  tmp = path + f'.{os.getpid()}.tmp'
  gguf_model.write_llama_gguf(tmp, c, tensors, tokens, merges, eos_id=0)
  os.replace(tmp, path)
  return path


class Evaluator:
  """One scorer and one set of MAUVE reference features for the whole table (loaded on first use)."""

  def __init__(self, scale: Scale, out_dir: str, references: list[str]):
    self.scale, self.out_dir, self.references = scale, out_dir, references
    self._scorer = self._ref_features = None

  def _load(self):
    if self._scorer is None:
      from ldlm_jax.evaluation.scorers import load_scorer
      if self.scale.scorer == 'tiny-random':
        self._scorer = load_scorer('gguf', tiny_random_scorer(self.out_dir))
      else:
        self._scorer = load_scorer(self.scale.scorer)
      self._ref_features = self._scorer.features(self.references, batch_size=self.scale.score_batch)
    return self._scorer

  def evaluate(self, path: str, records: list[dict], mauve: bool = True) -> dict:
    """`evaluate.evaluate_file` of one sample set (MAUVE against the references unless mauve=False), JSON-safe."""
    from ldlm_jax import evaluate
    scorer = self._load()
    return evaluate._json_safe(evaluate.evaluate_file(
        scorer, path, records, self._ref_features if mauve else None, self.scale.score_batch, 'scorer'))


def reference_texts(config, num_references: int, num_held_out: int) -> tuple[list[str], list[str]]:
  """(MAUVE references, held-out row): the first chunks of the reference split, then the next ones."""
  from ldlm_jax.data import pipeline
  from ldlm_jax.encoders.registry import load_encoder_tokenizer
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  texts = pipeline.load_reference_texts(config, tokenizer, num_references + num_held_out)
  if len(texts) < num_references + 2:
    raise ExperimentError(f'The reference split has {len(texts)} chunks, fewer than {num_references} MAUVE '
                          'references plus a held-out row; lower the number of references.')
  return texts[:num_references], texts[num_references:]


def machine_description() -> str:
  """'PLATFORM xN (KIND); host: CPU, N cores; jax VERSION', written into a report's header."""
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  devices = jax.devices()
  return (f'{devices[0].platform} x{len(devices)} ({getattr(devices[0], "device_kind", "")}); host: {cpu}, '
          f'{os.cpu_count()} cores; jax {jax.__version__}')

"""The autoencoder's ceiling as a samples file: held-out text -> encode -> decode, no noise, no denoiser.

  python -m scripts.analysis.reconstruction_row WORKDIR OUT.jsonl [NUM_TEXTS] [REFERENCES.jsonl]
  python -m ldlm_jax.evaluate --samples OUT.jsonl --references REFERENCES.jsonl --scorer smollm2

The texts are the held-out row's of `evaluate --ngram_baselines WORKDIR` (the reference split's
chunks that are not among the MAUVE references in REFERENCES.jsonl, the first NUM_TEXTS, 64 by
default), each decoded from its own clean latents by the run's EMA parameters. A sampler that
denoised perfectly would write these texts, so their Gen. PPL is what the latent space allows: a
run whose reconstructions score far above the bigram row cannot reach it by a better denoiser.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  if len(argv) < 2 or argv[0] in ('-h', '--help'):
    print(__doc__)
    return {}
  import numpy as np

  from ldlm_jax import api
  from ldlm_jax.data import pipeline
  from ldlm_jax.sampling import write_jsonl
  workdir, out = argv[0], argv[1]
  num = int(argv[2]) if len(argv) > 2 else 64
  taken = set()
  if len(argv) > 3:
    with open(argv[3], encoding='utf-8') as f:
      taken = {json.loads(line)['text'] for line in f if line.strip()}
  model = api.load(workdir)
  texts = [t for t in pipeline.load_reference_texts(model.config, model.tokenizer, len(taken) + num)
           if t not in taken][:num]
  rows = model.tokenize(texts, truncate=True)
  decoded = model.decode_tokens(model.encode(rows))
  records = [{'index': i, 'text': text, 'tokens': tokens.tolist(), 'generator': 'reconstruction',
              'eos_token': model.eos_token}
             for i, (text, tokens) in enumerate(zip(model.tokenizer.decode_batch(decoded), decoded))]
  write_jsonl(out, records)
  summary = {'workdir': workdir, 'step': model.step, 'num_texts': len(records),
             'token_accuracy': float(np.mean(decoded == rows)), 'out': out}
  print(json.dumps(summary))
  return summary


if __name__ == '__main__':
  main()

"""Writes held-out reference texts for evaluation (Gen. PPL and MAUVE references).

  python -m ldlm_jax.data.references --workdir runs/demo --num_texts 256 --out runs/demo/references.jsonl

The texts come from the run's own data settings (its `config.json`): chunks
of L tokens of the held-out split ('reference' for the Brown corpus, else
data.eval_split), decoded with the run's tokenizer, so they pass through the
same tokenization as the samples they are compared with. JSONL (one
{"text": ...} per line), because a text can span several lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ldlm_jax import cli, fileio
from ldlm_jax.config import from_saved
from ldlm_jax.data import pipeline
from ldlm_jax.encoders.registry import load_encoder_tokenizer


@cli.user_errors_exit_2
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='A run directory (holds config.json).')
  parser.add_argument('--num_texts', type=int, default=256, help='How many texts (fewer if the split is short).')
  parser.add_argument('--out', required=True, help='Output .jsonl file.')
  args = parser.parse_args(argv)

  if args.num_texts < 1:
    cli.fail(f'--num_texts must be >= 1 (got {args.num_texts}).')
  cli.check_output_file(args.out, '--out')
  config_path = os.path.join(args.workdir, 'config.json')
  if not os.path.isfile(config_path):
    print(f'error: {config_path} does not exist; pass the work directory of a training run.',
          file=sys.stderr)
    return 2
  with open(config_path, encoding='utf-8') as f:
    config = from_saved(json.load(f))
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  texts = pipeline.load_reference_texts(config, tokenizer, args.num_texts)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fileio.write_jsonl(args.out, ({'text': text} for text in texts))
  print(f'wrote {len(texts)} reference texts to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

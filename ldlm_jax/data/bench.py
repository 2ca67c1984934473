"""Input-pipeline throughput on this machine: chunks/s and tokens/s.

    python -m ldlm_jax.data.bench [--tokenizer minilm-l6] [--seq_lens 128,1024]
        [--batch_size 64] [--seconds 10] [--read_threads 2]

Measures, on the Brown corpus (fetched and cached on first use), for each L:
  * prepare: tokenizing the text splits into ArrayRecord (one pass);
  * prepared: the training iterator over the prepared ArrayRecord chunks;
  * files: the training iterator tokenizing the cleaned JSONL on the fly.
The training iterators are timed after two warm-up batches, for --seconds
each, exactly as the trainer would consume them (shuffled, batched).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

from ldlm_jax import cli
from ldlm_jax.config import base_config
from ldlm_jax.data import brown, pipeline, prepare, sources
from ldlm_jax.errors import ConfigError


def _time_iterator(config, tokenizer, batch_size: int, seconds: float) -> tuple[float, int]:
  it = pipeline.make_train_iterator(config, tokenizer, batch_size=batch_size)
  try:
    for _ in range(2):
      next(it)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      next(it)
      batches += 1
    elapsed = time.perf_counter() - start
  finally:
    it.close()
  return batches * batch_size / elapsed, batches


@cli.user_errors_exit_2
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ldlm_jax.data.bench',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--tokenizer', default='minilm-l6',
                      help='Encoder name or tokenizer directory (as for prepare).')
  parser.add_argument('--seq_lens', default='128,1024', help='Comma-separated L values.')
  parser.add_argument('--batch_size', type=int, default=64, help='Chunks per batch.')
  parser.add_argument('--seconds', type=float, default=10.0, help='Timed seconds per case.')
  parser.add_argument('--read_threads', type=int, default=pipeline.DEFAULT_READ_THREADS,
                      help='grain reader threads (data.read_threads).')
  parser.add_argument('--num_workers', type=int, default=0, help='grain worker processes.')
  parser.add_argument('--root', default='', help='Brown cache root (default $LDLM_DATA_DIR/brown).')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  for name in ('batch_size', 'seconds'):
    if not getattr(args, name) > 0:
      raise ConfigError(f'--{name} must be > 0 (got {getattr(args, name)}).')
  if not all(v.strip().isdigit() and int(v) > 0 for v in args.seq_lens.split(',')):
    raise ConfigError(f'--seq_lens must be comma-separated positive integers (got {args.seq_lens!r}).')
  for name in ('read_threads', 'num_workers'):
    if getattr(args, name) < 0:
      raise ConfigError(f'--{name} must be >= 0 (got {getattr(args, name)}).')
  tokenizer = prepare.load_tokenizer_by_name(args.tokenizer)
  root = args.root or brown.default_root()
  text_dir = brown.ensure_text(root)
  print(f'tokenizer {tokenizer.source} (vocab {tokenizer.vocab_size}); cpu cores '
        f'{os.cpu_count()}; batch {args.batch_size}; read_threads {args.read_threads}; '
        f'num_workers {args.num_workers}')
  print(f'{"case":<10} {"L":>5} {"chunks/s":>10} {"tokens/s":>12}')
  for seq_len in [int(s) for s in args.seq_lens.split(',')]:
    # Prepare: one timed pass into a temporary directory (the cache is left alone).
    docs = {s: sources.FileDocuments([os.path.join(text_dir, f'{s}.jsonl')], 'text')
            for s in brown.SPLITS}
    with tempfile.TemporaryDirectory() as tmp:
      start = time.perf_counter()
      manifest = prepare.prepare_dataset(docs, tokenizer, seq_len, os.path.join(tmp, 'out'),
                                         source={'kind': 'bench'})
      elapsed = time.perf_counter() - start
    chunks = sum(s['num_chunks'] for s in manifest['splits'].values())
    print(f'{"prepare":<10} {seq_len:>5} {chunks / elapsed:>10.0f} '
          f'{chunks * seq_len / elapsed:>12.0f}')
    for case in ('prepared', 'files'):
      config = base_config()
      config.data.seq_len = seq_len
      config.data.num_workers = args.num_workers
      config.data.read_threads = args.read_threads
      if case == 'prepared':
        config.data.source, config.data.path = 'brown', root
      else:
        config.data.source, config.data.path = 'files', text_dir
      rate, _ = _time_iterator(config, tokenizer, args.batch_size, args.seconds)
      print(f'{case:<10} {seq_len:>5} {rate:>10.0f} {rate * seq_len:>12.0f}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())

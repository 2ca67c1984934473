"""`python -m ldlm_jax.evaluate --task continuation`: does a conditional run continue prompts?

Held-out chunks of the run's reference split (the texts `data.references`
writes) are cut after `--prompt_tokens` tokens; the run continues each
prompt (one row per `--guidance` weight) and, for comparison, samples
unconditionally (the same model with the null condition, the last L - P
tokens of each sample read as a "continuation" that ignores the prompt).
Every row is decoded like the references (`pipeline.decode_chunk`: EOS
becomes a line break) and scored with the scorer's tokenization:

  mauve        the continuations against the true continuations (MAUVE)
  gen_ppl      Gen. PPL of the continuation with its prompt as the scorer's
               context (only continuation tokens scored)
  gen_ppl_no_context  the plain protocol on the continuation alone
  entropy      mean unigram entropy of the continuations' scorer tokens
  prompt_gain  nats per token by which the continuation is more likely after
               its own prompt than after another one (prompts rotated by one):
               > 0 means the continuation uses its prompt

The held-out continuations themselves are the reference row
('true_continuation'; no MAUVE against themselves).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ldlm_jax import sampling
from ldlm_jax.data import pipeline
from ldlm_jax.errors import ConfigError
from ldlm_jax.evaluation import genppl, mauve_score, metrics
from ldlm_jax.evaluation.mauve_score import require_mauve
from ldlm_jax.evaluation.scorers import load_scorer
from ldlm_jax.training import restore


def _join_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
  """Scorer ids of the prompt and of the continuation, a space between them (as they read)."""
  sep = '' if (not prompt or not continuation or continuation[0].isspace()) else ' '
  return tokenizer.encode(prompt), tokenizer.encode(sep + continuation)


def score_row(scorer, prompts: list[str], continuations: list[str], reference_features=None,
              batch_size: int = 8) -> dict:
  """The metrics of one row of continuations (see the module docstring)."""
  pairs = [_join_ids(scorer.tokenizer, p, c) for p, c in zip(prompts, continuations)]
  ctx = [a for a, _ in pairs]
  cont = [b for _, b in pairs]
  own = genppl.continuation_perplexity(scorer, ctx, cont, batch_size)
  other = genppl.continuation_perplexity(scorer, ctx[1:] + ctx[:1], cont, batch_size)
  plain = genppl.generative_perplexity(scorer, cont, batch_size)
  gain = (other.nll_sum - own.nll_sum) / own.num_tokens if own.num_tokens else float('nan')
  result = {'gen_ppl': own.gen_ppl, 'gen_ppl_no_context': plain.gen_ppl,
            'prompt_gain': gain, 'scored_tokens': own.num_tokens,
            'entropy': metrics.unigram_entropy(cont), 'mauve': None}
  if reference_features is not None:
    nonempty = [ids for ids in cont if ids]
    if len(nonempty) >= 2:
      result['mauve'] = mauve_score.mauve_from_features(
          reference_features, scorer.features_from_ids(nonempty, batch_size=batch_size))
  return result


def evaluate_continuation(args) -> dict:
  """Generates and scores every row; returns the JSON payload (see evaluate.py for the flags)."""
  if not args.workdir:
    raise ConfigError('--task continuation needs --workdir (a run trained with conditions).')
  if args.num_texts < 2:
    raise ConfigError(f'--num_texts must be >= 2 (got {args.num_texts}).')
  if any(w < 0 for w in args.guidance):
    raise ConfigError(f'--guidance weights must be >= 0 (got {args.guidance}; 1 = no guidance).')
  require_mauve()
  run = restore.load_run(args.workdir, args.checkpoint_step)
  sampling.check_conditional(run)
  c = run.config
  length = int(c.data.seq_len)
  p = args.prompt_tokens or length // 4
  if not 1 <= p < length:
    raise ConfigError(f'--prompt_tokens must be in [1, {length - 1}] for this run (data.seq_len='
                      f'{length}); got {p}.')
  steps = args.steps or int(c.sample.num_steps)
  batch_size = args.sample_batch_size or int(c.sample.batch_size)
  start = time.time()
  chunks = pipeline.load_reference_chunks(c, run.tokenizer, args.num_texts)
  mask = np.zeros(chunks.shape, bool)
  mask[:, :p] = True
  tok = run.tokenizer
  decode = lambda row: pipeline.decode_chunk(tok, np.asarray(row))
  prompts = [decode(r[:p]) for r in chunks]
  rows = {'true_continuation': [decode(r[p:]) for r in chunks]}
  settings = dict(time_grid=c.sample.time_grid, t_min=float(c.sample.t_min), solver=c.sample.solver,
                  final=c.sample.get('final', 'z'), progress=False)
  if not args.no_unconditional:
    records = sampling.generate_samples(run, len(chunks), steps, args.seed, batch_size, **settings)
    rows['unconditional'] = [decode(np.asarray(r['tokens'])[p:]) for r in records]
  for w in args.guidance:
    out = sampling.generate_prompted_tokens(run, chunks, mask, steps, args.seed, batch_size,
                                            guidance=float(w), **settings)
    assert np.array_equal(out[:, :p], chunks[:, :p])   # the prompts survive bit for bit
    rows[f'guidance_{float(w):g}'] = [decode(r[p:]) for r in out]
  generation_seconds = time.time() - start

  scorer = load_scorer(args.scorer, args.scorer_path)
  ref_ids = [ids for ids in (_join_ids(scorer.tokenizer, a, b)[1]
                             for a, b in zip(prompts, rows['true_continuation'])) if ids]
  reference_features = scorer.features_from_ids(ref_ids, batch_size=args.batch_size)
  results = {}
  for name, texts in rows.items():
    results[name] = score_row(scorer, prompts, texts,
                              None if name == 'true_continuation' else reference_features,
                              args.batch_size)
    results[name]['examples'] = [{'prompt': a, 'continuation': b} for a, b in
                                 zip(prompts[:3], texts[:3])]
  return {'task': 'continuation', 'workdir': run.workdir, 'checkpoint_step': run.step,
          'prompt_tokens': p, 'seq_len': length, 'num_texts': len(chunks), 'steps': steps,
          'seed': args.seed, 'guidance': [float(w) for w in args.guidance],
          'scorer': {'name': args.scorer, 'path': args.scorer_path or None},
          'rows': results, 'generation_seconds': round(generation_seconds, 1),
          'seconds': round(time.time() - start, 1)}


def table(payload: dict) -> str:
  """The rows side by side (printed to stderr)."""
  def f(v, digits):
    return 'n/a' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{digits}f}'
  lines = ['row                | MAUVE | Gen. PPL (prompt ctx) | Gen. PPL (no ctx) | entropy | prompt gain',
           '-------------------|-------|-----------------------|-------------------|---------|------------']
  for name, r in payload['rows'].items():
    lines.append(f'{name:<18} | {f(r["mauve"], 3):>5} | {f(r["gen_ppl"], 1):>21} | '
                 f'{f(r["gen_ppl_no_context"], 1):>17} | {f(r["entropy"], 2):>7} | {f(r["prompt_gain"], 3):>10}')
  return '\n'.join(lines)

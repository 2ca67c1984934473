"""Evaluates generated samples: Gen. PPL, unigram entropy, n-gram diversity, MAUVE (docs/method.md Section 8).

  python -m ldlm_jax.evaluate --samples seed0.jsonl seed1.jsonl ... --out metrics.json \
      [--references refs.txt|refs.jsonl] [--scorer smollm2|gguf|gpt2|gpt2-large|...] \
      [--scorer_path PATH] [--batch_size 8] [--max_samples N] [--metric_tokens scorer|generator] \
      [--ngram_baselines RUN_WORKDIR]

Each samples file is one seed: JSONL, one object per line with at least
"text" (also "tokens", "seed", "steps", "checkpoint_step", and "eos_token", the
generator's EOS marker string inside "text"). References are a .jsonl file
with "text" or any other file with one text per line; without them MAUVE is
skipped. The output holds the metrics of every file and their mean and std
(numpy's, ddof=0) over files; it is written atomically to --out, and a table of
it is printed (the JSON itself too, to stdout, with --json; the table then goes
to stderr).

Entropy and diversity are computed on `--metric_tokens`: 'scorer' (default)
the scorer's retokenization of the whole text, generator EOS markers mapped to
the scorer's EOS id (one tokenization for every model compared); 'generator'
the record's own "tokens".

`--ngram_baselines WORKDIR` adds the reference rows of that run
(`evaluation/ngram.py`): unigram, bigram and trigram samples fitted to the
run's training split in its tokenizer (one set per samples file, as many
samples of data.seq_len tokens as the first file has), and the run's held-out
text (reference-split chunks other than the MAUVE references), evaluated the
same way; they go into the output's "baselines" and a table of them beside
the samples is printed.

`word_ppl` is the same scored NLL divided by whitespace words instead of
scorer tokens (exp(nll / words)): Gen. PPL per token rewards text that the
scorer's tokenizer splits into many predictable pieces (rare or invented
words), so when models with different vocabularies or an untrained model are
compared, read both.

The default scorer is the offline SmolLM2-135M (the paper's is GPT-2 Large,
`--scorer gpt2-large --scorer_path DIR` where its weights exist). Argparse
rather than ml_collections flags: the command takes a list of files and no
config.

`--task continuation` evaluates a run trained with conditions on
prompt continuation instead of a samples file:

  python -m ldlm_jax.evaluate --task continuation --workdir runs/demo_cond \
      --prompt_tokens 8 --num_texts 64 --guidance 1 1.5 2 --out cont.json [--scorer ...]

held-out chunks cut after --prompt_tokens tokens, continued at each guidance
weight, beside the same model's unconditional samples and the true
continuations: MAUVE against the true continuations, Gen. PPL with the prompt
as the scorer's context, entropy, and the prompt gain (how much more likely a
continuation is after its own prompt than after another one); see
ldlm_jax/evaluation/continuation.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from ldlm_jax import cli, fileio
from ldlm_jax.errors import UserError

# The scorers, MAUVE and the n-gram rows (jax, flax) are imported where they are used, after the
# flags are parsed: --help and a bad flag answer at once (ruff.toml exempts the entry points from PLC0415).


class EvaluationError(UserError, ValueError):
  """Bad input to the evaluation; the message names the fix."""


METRICS = ('gen_ppl', 'word_ppl', 'entropy', 'diversity', 'mauve')


def scored_word_count(text: str, eos_marker: str | None) -> int:
  """Whitespace words of the part of `text` that Gen. PPL scores, the first EOS counting as one word."""
  if eos_marker and eos_marker in text:
    return len(text.split(eos_marker, 1)[0].split()) + 1
  return len(text.split())


def read_samples(path: str, max_samples: int = 0) -> list[dict]:
  """The records of one samples file (JSONL, each with a string "text"); at most `max_samples` if > 0."""
  if not os.path.isfile(path):
    raise EvaluationError(f'Samples file {path!r} does not exist; pass JSONL files written by the sampler.')
  records = []
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvaluationError(
            f'{path} line {line_number} is not JSON ({e.msg}); a samples file must be JSONL, one object per line.') from e
      if not isinstance(record, dict) or not isinstance(record.get('text'), str):
        raise EvaluationError(f'{path} line {line_number} is not a JSON object with a string "text" field.')
      marker = record.get('eos_token')
      if marker is not None and not isinstance(marker, str):
        raise EvaluationError(f'{path} line {line_number}: "eos_token" must be a string, got {marker!r}.')
      records.append(record)
      if max_samples and len(records) >= max_samples:
        break
  if not records:
    raise EvaluationError(f'Samples file {path!r} has no samples; pass a non-empty JSONL file.')
  if not any(r['text'].strip() for r in records):
    raise EvaluationError(f'Every one of the {len(records)} texts in {path!r} is empty, so there is '
                          'nothing to score; check the sampler (its token decoder, --steps).')
  return records


def read_references(path: str, max_references: int = 0) -> list[str]:
  """Reference texts: "text" of each JSONL line for a .jsonl file, else one text per non-blank line."""
  if not os.path.isfile(path):
    raise EvaluationError(f'References file {path!r} does not exist; pass a .txt (one text per line) or .jsonl file.')
  texts = []
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      if path.endswith('.jsonl'):
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise EvaluationError(f'{path} line {line_number} is not JSON ({e.msg}); use one JSON object per line.') from e
        if not isinstance(record, dict) or not isinstance(record.get('text'), str):
          raise EvaluationError(f'{path} line {line_number} is not a JSON object with a string "text" field.')
        text = record['text']
      else:
        text = line.rstrip('\n')
      if text.strip():
        texts.append(text)
      if max_references and len(texts) >= max_references:
        break
  if len(texts) < 2:
    raise EvaluationError(f'References file {path!r} has {len(texts)} non-empty texts; MAUVE needs at least 2.')
  return texts


def _metric_tokens(records: list[dict], scorer_ids: list[list[int]], source: str, path: str) -> list[list[int]]:
  if source == 'scorer':
    return scorer_ids
  tokens = []
  for i, record in enumerate(records):
    ids = record.get('tokens')
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
      raise EvaluationError(f'{path} record {i + 1} has no integer "tokens" list; use --metric_tokens scorer.')
    tokens.append(ids)
  return tokens


def _single_or_list(values):
  unique = sorted({json.dumps(v) for v in values if v is not None})
  if not unique:
    return None
  parsed = [json.loads(v) for v in unique]
  return parsed[0] if len(parsed) == 1 else parsed


def evaluate_file(scorer, path: str, records: list[dict], reference_features=None, batch_size: int = 8,
                  metric_tokens: str = 'scorer') -> dict[str, Any]:
  """All metrics of one samples file."""
  from ldlm_jax.evaluation import genppl, metrics, mauve_score
  scorer_ids = [genppl.encode_with_eos_marker(scorer.tokenizer, r['text'], r.get('eos_token'))
                for r in records]
  if reference_features is not None:
    # MAUVE drops empty texts (as mauve-text's own featurization does).
    num_nonempty = sum(1 for ids in scorer_ids if ids)
    if num_nonempty < 2:
      raise EvaluationError(f'{path} has {num_nonempty} non-empty samples; MAUVE needs at least 2.')
    ppl, sample_features = genppl.perplexity_and_features(scorer, scorer_ids, batch_size=batch_size)
  else:
    ppl = genppl.generative_perplexity(scorer, scorer_ids, batch_size=batch_size)
  num_words = sum(scored_word_count(r['text'], r.get('eos_token'))
                  for r, ids in zip(records, scorer_ids) if len(ids) >= 2)
  tokens = _metric_tokens(records, scorer_ids, metric_tokens, path)
  result = {
      'path': path,
      'seed': _single_or_list(r.get('seed') for r in records),
      'steps': _single_or_list(r.get('steps') for r in records),
      'checkpoint_step': _single_or_list(r.get('checkpoint_step') for r in records),
      'num_samples': len(records),
      'gen_ppl': ppl.gen_ppl,
      'gen_ppl_scored_tokens': ppl.num_tokens,
      'word_ppl': math.exp(ppl.nll_sum / num_words) if num_words else float('nan'),
      'gen_ppl_scored_words': num_words,
      'entropy': metrics.unigram_entropy(tokens),
      'diversity': metrics.ngram_diversity(tokens),
      'mauve': None,
  }
  if reference_features is not None:
    result['mauve'] = mauve_score.mauve_from_features(reference_features, sample_features)
  return result


def evaluate_texts(texts, references=None, *, scorer: str = 'smollm2', scorer_path: str = '',
                   batch_size: int = 8, metric_tokens: str = 'scorer', eos_token: str | None = None,
                   name: str = 'texts') -> dict[str, Any]:
  """The metrics of one list of texts, by `evaluate_file` (what the command line computes for one
  samples file); `references` (texts) add MAUVE; `eos_token` is the generator's EOS marker."""
  from ldlm_jax.evaluation.scorers import SCORERS, load_scorer
  if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
    raise EvaluationError('texts must be a non-empty list of strings.')
  if not any(t.strip() for t in texts):
    raise EvaluationError(f'Every one of the {len(texts)} texts is empty, so there is nothing to score.')
  if scorer not in SCORERS:
    raise EvaluationError(f'scorer {scorer!r} is not one of {tuple(SCORERS)}.')
  if metric_tokens != 'scorer':
    raise EvaluationError("metric_tokens must be 'scorer' for texts (there are no generator tokens).")
  if batch_size < 1:
    raise EvaluationError(f'batch_size must be >= 1, got {batch_size}.')
  if references is not None:
    references = [r for r in references if isinstance(r, str) and r.strip()]
    if len(references) < 2:
      raise EvaluationError(f'references has {len(references)} non-empty texts; MAUVE needs at least 2.')
    from ldlm_jax.evaluation.mauve_score import require_mauve
    require_mauve()
  records = [{'text': t, **({'eos_token': eos_token} if eos_token else {})} for t in texts]
  loaded = load_scorer(scorer, scorer_path)
  features = loaded.features(references, batch_size=batch_size) if references is not None else None
  return _json_safe(evaluate_file(loaded, name, records, features, batch_size, metric_tokens))


def summarize(file_results: list[dict]) -> tuple[dict, dict]:
  """Mean and std (ddof=0) of each metric over files; None where a metric is missing."""
  mean, std = {}, {}
  for name in METRICS:
    values = [r[name] for r in file_results]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
      mean[name] = std[name] = None
    else:
      mean[name], std[name] = float(np.mean(values)), float(np.std(values))
  return mean, std


def _json_safe(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_safe(v) for v in value]
  return value


def write_json_atomic(path: str, payload: dict) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it into place."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_text(path, json.dumps(payload, indent=2, allow_nan=False) + '\n')


def run(args: argparse.Namespace) -> dict:
  """Reads and checks every input, loads the scorer, computes and writes the metrics."""
  from ldlm_jax.evaluation.scorers import load_scorer
  if args.batch_size < 1:
    raise EvaluationError(f'--batch_size must be >= 1, got {args.batch_size}.')
  if args.task == 'continuation':
    from ldlm_jax import cli
    from ldlm_jax.evaluation import continuation
    if args.samples:
      raise EvaluationError('--task continuation generates its own samples; leave out --samples.')
    cli.check_output_file(args.out, '--out')
    payload = _json_safe(continuation.evaluate_continuation(args))
    write_json_atomic(args.out, payload)
    return payload
  if not args.samples:
    raise EvaluationError('--samples is required (JSONL files written by the sampler).')
  if args.max_samples < 0:
    raise EvaluationError(f'--max_samples must be >= 0 (0 = all), got {args.max_samples}.')
  if args.max_references < 0:
    raise EvaluationError(f'--max_references must be >= 0 (0 = all), got {args.max_references}.')
  if os.path.isdir(args.out):
    raise EvaluationError(f'--out {args.out!r} is a directory; pass a file name such as metrics.json.')
  from ldlm_jax import cli
  cli.check_output_file(args.out, '--out')  # a file on the way is refused before the scorer loads
  # Every input is read before the (slow) scorer load, so bad input fails fast.
  samples = [(path, read_samples(path, args.max_samples)) for path in args.samples]
  references = read_references(args.references, args.max_references) if args.references else None
  baseline_sets = {}
  if args.ngram_baselines:
    from ldlm_jax.evaluation import ngram
    baseline_sets = ngram.baseline_sample_sets(args.ngram_baselines, len(samples), len(samples[0][1]),
                                               references=references or ())
  if references is not None:
    from ldlm_jax.evaluation.mauve_score import require_mauve
    require_mauve()

  start = time.time()
  scorer = load_scorer(args.scorer, args.scorer_path)
  reference_features = None
  if references is not None:
    reference_features = scorer.features(references, batch_size=args.batch_size)
  file_results = [evaluate_file(scorer, path, records, reference_features, args.batch_size, args.metric_tokens)
                  for path, records in samples]
  mean, std = summarize(file_results)
  baselines = {}
  for name, sets in baseline_sets.items():
    # The tempered rows trace the unigram frontier (Gen. PPL against entropy): no MAUVE for them.
    features = None if ngram.split_row_name(name)[1] is not None else reference_features
    results = [evaluate_file(scorer, f'{name}:seed{i}', records, features, args.batch_size,
                             args.metric_tokens) for i, records in enumerate(sets)]
    b_mean, b_std = summarize(results)
    baselines[name] = {'files': results, 'mean': b_mean, 'std': b_std}
  payload = _json_safe({
      'scorer': {'name': args.scorer, 'path': args.scorer_path or None, 'context_length': scorer.max_len,
                 'eos_id': scorer.tokenizer.eos_id,
                 'eos_token': scorer.tokenizer.decode([scorer.tokenizer.eos_id])},
      'metric_tokens': args.metric_tokens,
      'references': args.references or None,
      'num_references': len(references) if references is not None else 0,
      'files': file_results,
      'mean': mean,
      'std': std,
      **({'baselines': baselines, 'ngram_baselines': args.ngram_baselines} if args.ngram_baselines else {}),
      'seconds': round(time.time() - start, 2),
  })
  write_json_atomic(args.out, payload)
  return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  from ldlm_jax import cli
  from ldlm_jax.evaluation.scorers import SCORERS
  parser = cli.ArgumentParser(prog='python -m ldlm_jax.evaluate', description=__doc__.split('\n')[0])
  parser.add_argument('--task', default='samples', choices=('samples', 'continuation'),
                      help="'samples': score --samples files; 'continuation': continue held-out prompts "
                           '(a run trained with conditions, --workdir)')
  parser.add_argument('--samples', nargs='+', default=[], help='samples JSONL files, one per seed')
  parser.add_argument('--out', required=True, help='metrics JSON file to write (every number)')
  parser.add_argument('--json', action='store_true',
                      help='also print the JSON payload to stdout (default: a table only)')
  parser.add_argument('--references', default='', help='reference texts (.txt lines or .jsonl "text") for MAUVE')
  parser.add_argument('--max_references', type=int, default=0, help='use at most this many references (0 = all)')
  parser.add_argument('--scorer', default='smollm2', choices=SCORERS, help='causal LM for Gen. PPL and MAUVE')
  parser.add_argument('--scorer_path', default='', help='scorer weights: a .gguf file or a GPT-2 directory')
  parser.add_argument('--batch_size', type=int, default=8, help='samples per scorer batch')
  parser.add_argument('--max_samples', type=int, default=0, help='use the first N samples per file (0 = all)')
  parser.add_argument('--ngram_baselines', default='', metavar='RUN_WORKDIR',
                      help='also evaluate unigram/bigram/trigram samples fitted to this run\'s training split, '
                           'and its held-out text (the reference rows)')
  parser.add_argument('--metric_tokens', default='scorer', choices=('scorer', 'generator'),
                      help='token ids for entropy and diversity')
  cont = parser.add_argument_group('--task continuation')
  cont.add_argument('--workdir', default='', help='a run trained with conditions')
  cont.add_argument('--checkpoint_step', type=int, default=None, help='checkpoint step (default: latest)')
  cont.add_argument('--prompt_tokens', type=int, default=0,
                    help='prompt length in the run\'s tokens (0 = a quarter of data.seq_len)')
  cont.add_argument('--num_texts', type=int, default=64, help='held-out texts to continue')
  cont.add_argument('--guidance', type=float, nargs='+', default=[1.0],
                    help='classifier-free guidance weights, one row each (1 = none)')
  cont.add_argument('--steps', type=int, default=0, help='denoising steps (0 = the run\'s sample.num_steps)')
  cont.add_argument('--seed', type=int, default=0, help='sampling seed')
  cont.add_argument('--sample_batch_size', type=int, default=0,
                    help='samples per compiled call (0 = the run\'s sample.batch_size)')
  cont.add_argument('--no_unconditional', action='store_true',
                    help='skip the row of the same model\'s unconditional samples')
  return parser.parse_args(argv)


@cli.user_errors_exit_2
def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  cli.hide_expected_warnings()
  payload = run(args)
  if args.json:
    print(json.dumps(payload, indent=2))
  # The table goes to stdout unless the JSON does (then stdout stays one JSON document).
  print(summary_table(payload), file=sys.stderr if args.json else sys.stdout)
  print(f'wrote {args.out}', file=sys.stderr if args.json else sys.stdout)
  return 0


def _cell(value, digits: int, std=None) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return 'n/a'
  return f'{value:.{digits}f}' + ('' if std is None else f' +- {std:.{digits}f}')


def summary_table(payload: dict) -> str:
  """The evaluation as a terminal table: one row per samples file and their mean +- std,
  then the reference rows when there are baselines (or the continuation rows)."""
  if payload.get('task') == 'continuation':
    from ldlm_jax.evaluation.continuation import table
    return table(payload)
  scorer = payload.get('scorer') or {}
  lines = [f'scorer {scorer.get("name")}, metric tokens {payload.get("metric_tokens")}, '
           f'{payload.get("num_references", 0)} references, {payload.get("seconds", 0)} s',
           f'{"file":<28} | {"n":>4} | {"Gen. PPL":>9} | {"word PPL":>9} | {"entropy":>7} | '
           f'{"diversity":>9} | {"MAUVE":>6}',
           '-' * 28 + '-|------|-----------|-----------|---------|-----------|-------']
  for r in payload.get('files', []):
    name = os.path.basename(str(r['path']))
    name = name if len(name) <= 28 else '...' + name[-25:]
    lines.append(f'{name:<28} | {r["num_samples"]:>4} | {_cell(r["gen_ppl"], 1):>9} | '
                 f'{_cell(r["word_ppl"], 1):>9} | {_cell(r["entropy"], 2):>7} | '
                 f'{_cell(r["diversity"], 3):>9} | {_cell(r["mauve"], 3):>6}')
  mean, std = payload.get('mean') or {}, payload.get('std') or {}
  if len(payload.get('files', [])) > 1:
    lines.append('mean +- std over files: ' + ', '.join(
        f'{label} {_cell(mean.get(k), d, std.get(k))}' for k, label, d in
        (('gen_ppl', 'Gen. PPL', 1), ('word_ppl', 'word PPL', 1), ('entropy', 'entropy', 2),
         ('diversity', 'diversity', 3), ('mauve', 'MAUVE', 3)) if mean.get(k) is not None))
  if 'baselines' in payload:
    lines += ['', baselines_table(payload)]
  return '\n'.join(lines)


def baselines_table(payload: dict) -> str:
  """The samples beside the reference rows: mean (+- std over files) of the main metrics."""
  def cell(mean, std, name, digits):
    value = mean.get(name)
    return 'n/a' if value is None else f'{value:.{digits}f} +- {std[name]:.{digits}f}'
  from ldlm_jax.evaluation import ngram
  lines = ['rows            | Gen. PPL             | entropy       | MAUVE          | ÷ unigram frontier',
           '----------------|----------------------|---------------|----------------|-------------------']
  rows = [('samples', payload['mean'], payload['std'])]
  rows += [(name, b['mean'], b['std']) for name, b in payload['baselines'].items()]
  points = ngram.frontier({name: (mean.get('entropy'), mean.get('gen_ppl')) for name, mean, _ in rows}, 'unigram')
  for name, mean, std in rows:
    ratio = ('' if ngram.split_row_name(name)[0] == 'unigram' else
             ngram.format_frontier_ratio(mean.get('entropy'), mean.get('gen_ppl'), points))
    lines.append(f'{name:<15} | {cell(mean, std, "gen_ppl", 1):<20} | {cell(mean, std, "entropy", 2):<13} | '
                 f'{cell(mean, std, "mauve", 3):<14} | {ratio}')
  if len(points) > 1:
    lines.append('÷ unigram frontier: Gen. PPL over that of (tempered) unigram samples at the same entropy '
                 '("≤ r" above the untempered row\'s entropy: an upper bound; below 1: some word order learned; '
                 'about 1: word frequencies only).')
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())

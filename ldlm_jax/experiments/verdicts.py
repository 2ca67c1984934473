"""Verdicts on the paper's orderings, computed from a table's numbers (never written by hand).

`data` is the report's {'rows': {row: {'seeds': n, 'steps': {steps: {metric: (mean, std)}}}},
'reference': {...}}; `plan` needs only 'sample_steps' (the last is the headline). Pure Python.
"""

from __future__ import annotations

import math

# A sample set whose mean unigram entropy is this far (nats) below held-out text's is called
# collapsed: repeated function words, a low Gen. PPL for the wrong reason. Our threshold.
COLLAPSE_NATS = 0.5

RULE = (f'Rule: at the headline step count, a difference of mean Gen. PPL within sqrt(std_a^2 + std_b^2) '
        f'(std over seeds, ddof=0) is "inside the error bars"; beyond it the lower Gen. PPL wins unless it '
        f'collapsed (mean unigram entropy more than {COLLAPSE_NATS} nats below held-out text) and the other did '
        'not, in which case the other wins; "reproduced" when the paper\'s better row wins. With one seed '
        'there are no error bars. "A large sigma_dec collapses" compares entropies the same way.')


def headline(data: dict, row: str, plan: dict):
  """The row's metrics at the headline step count, or None when it has no finished run."""
  steps = str(plan['sample_steps'][-1])
  entry = data['rows'].get(row)
  return entry['steps'][steps] if entry else None


def collapsed(metrics: dict, data: dict) -> bool:
  held = data['reference'].get('held_out')
  return bool(held and metrics['entropy'][0] is not None and held['entropy'][0] is not None
              and metrics['entropy'][0] < held['entropy'][0] - COLLAPSE_NATS)


def beats(data: dict, plan: dict, better: str, worse: str) -> tuple[str, str]:
  """(verdict, numbers) for 'better has lower Gen. PPL than worse' at the headline step count.

  Rule: the difference of the means against the combined spread sqrt(std_a^2 + std_b^2)
  (std over seeds): within it -> 'inside the error bars'; beyond it, the lower Gen. PPL wins
  unless it collapsed (COLLAPSE_NATS) and the other did not, in which case the other wins;
  'reproduced' when `better` wins, else 'not reproduced'.
  """
  a, b = headline(data, better, plan), headline(data, worse, plan)
  if a is None or b is None:
    return 'not measured', f'{better} or {worse} has no finished run'
  (pa, sa), (pb, sb) = a['gen_ppl'], b['gen_ppl']
  if pa is None or pb is None:
    return 'not measured', 'Gen. PPL missing'
  spread = math.hypot(sa, sb)
  numbers = (f'Gen. PPL {better} {pa:.1f} ± {sa:.1f} vs {worse} {pb:.1f} ± {sb:.1f} (entropy '
             f'{a["entropy"][0]:.2f} vs {b["entropy"][0]:.2f})')
  if min(data['rows'][better]['seeds'], data['rows'][worse]['seeds']) < 2:
    numbers += '; one seed, so no error bars'
  if abs(pa - pb) <= spread:
    return 'inside the error bars', numbers
  if pa < pb and not (collapsed(a, data) and not collapsed(b, data)):
    return 'reproduced', numbers
  if pa < pb:
    return 'not reproduced (lower Gen. PPL with collapsed entropy)', numbers
  if collapsed(b, data) and not collapsed(a, data):
    return f'reproduced ({worse}\'s lower Gen. PPL comes with collapsed entropy)', numbers
  return 'not reproduced', numbers


def intermediate_best(data: dict, plan: dict, grid: list[str]) -> tuple[str, str]:
  """The lowest Gen. PPL among non-collapsed grid rows is neither end of the grid, by more than the spread."""
  rows = [(r, headline(data, r, plan)) for r in grid]
  rows = [(r, m) for r, m in rows if m is not None and m['gen_ppl'][0] is not None]
  if len(rows) < 3:
    return 'not measured', 'fewer than 3 grid rows finished'
  ok = [(r, m) for r, m in rows if not collapsed(m, data)]
  numbers = ', '.join(f'{r} {m["gen_ppl"][0]:.1f}{" (collapsed)" if collapsed(m, data) else ""}' for r, m in rows)
  if not ok:
    return 'not reproduced (every row collapsed)', numbers
  best_name, best = min(ok, key=lambda rm: rm[1]['gen_ppl'][0])
  if best_name in (grid[0], grid[-1]):
    return f'not reproduced (best: {best_name})', numbers
  ends = [m for r, m in ok if r in (grid[0], grid[-1])]
  clear = all(m['gen_ppl'][0] - best['gen_ppl'][0] > math.hypot(m['gen_ppl'][1], best['gen_ppl'][1]) for m in ends)
  return ('reproduced' if clear else 'inside the error bars') + f' (best: {best_name})', numbers


def collapses(data: dict, plan: dict, large: str, default: str) -> tuple[str, str]:
  """The large-sigma row's entropy is collapsed and below the default's by more than the spread."""
  a, b = headline(data, large, plan), headline(data, default, plan)
  if a is None or b is None:
    return 'not measured', f'{large} or {default} has no finished run'
  (ea, sa), (eb, sb) = a['entropy'], b['entropy']
  numbers = (f'entropy {large} {ea:.2f} ± {sa:.2f} vs {default} {eb:.2f} ± {sb:.2f} '
             f'(Gen. PPL {a["gen_ppl"][0]:.1f} vs {b["gen_ppl"][0]:.1f})')
  if abs(ea - eb) <= math.hypot(sa, sb):
    return 'inside the error bars', numbers
  return ('reproduced' if ea < eb and collapsed(a, data) else 'not reproduced'), numbers


def faster(data: dict, plan: dict, better: str, worse: str) -> tuple[str, str]:
  """(verdict, numbers) for 'better samples faster than worse': seconds per sampling batch at the
  headline budget, compared with the rule above (a difference within sqrt(std_a^2 + std_b^2) is
  inside the error bars); the quality at that budget is quoted beside it.

  The times are Table 3's when the sweep measured its rows side by side in one process
  (data['side_by_side']['sample']: median and std over the alternating rounds), else the sweep's own
  (mean and std over seeds, runs measured hours apart)."""
  steps = str(plan['sample_steps'][-1])
  side = data.get('side_by_side', {}).get('sample', {})
  if better in side.get('rows', {}) and worse in side['rows']:
    (ta, sa), (tb, sb) = ((side['rows'][r]['seconds_per_batch']['median'], side['rows'][r]['seconds_per_batch']['std'])
                          for r in (better, worse))
    source = f'side by side in one process, median of {side["repeats"]} rounds'
  else:
    timing = [data['rows'].get(r, {}).get('timing') for r in (better, worse)]
    if any(t is None or t['sample_seconds_per_batch'][steps][0] is None for t in timing):
      return 'not measured', f'{better} or {worse} has no timed sampling run'
    (ta, sa), (tb, sb) = (t['sample_seconds_per_batch'][steps] for t in timing)
    source = 'as the sweep drew the samples, run by run'
  qa, qb = headline(data, better, plan), headline(data, worse, plan)
  if qa is None or qb is None:
    return 'not measured', f'{better} or {worse} has no finished run'
  numbers = (f'{ta:.3f} ± {sa:.3f} vs {tb:.3f} ± {sb:.3f} s per batch at {steps} steps, {source} '
             f'(Gen. PPL {qa["gen_ppl"][0]:.1f} vs {qb["gen_ppl"][0]:.1f})')
  if abs(ta - tb) <= math.hypot(sa, sb):
    return 'inside the error bars', numbers
  return ('reproduced' if ta < tb else 'not reproduced'), numbers

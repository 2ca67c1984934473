"""Mean +- std over sampling seeds of `evaluate --task continuation` outputs, as a markdown table.

  python -m scripts.analysis.continuation_table cont_seed0.json cont_seed1.json

One JSON per `--seed`; rows and metrics as `evaluate` writes them; std with ddof=0, as
`evaluate` and the experiments tables report it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np

METRICS = (('mauve', 'MAUVE', 3), ('gen_ppl', 'Gen. PPL (prompt ctx)', 1),
           ('gen_ppl_no_context', 'Gen. PPL (no ctx)', 1), ('entropy', 'entropy', 2),
           ('prompt_gain', 'prompt gain', 3))


def render(runs: list[dict]) -> str:
  """The header line and the table (one row per `evaluate` row; 'n/a' where no seed has the metric)."""
  first = runs[0]
  lines = [(f'{len(runs)} seed(s) {[r["seed"] for r in runs]}; checkpoint step {first["checkpoint_step"]}; '
            f'{first["num_texts"]} texts; prompt {first["prompt_tokens"]} tokens; {first["steps"]} steps'),
           '| row | ' + ' | '.join(label for _, label, _ in METRICS) + ' |',
           '|---|' + '---|' * len(METRICS)]
  for row in first['rows']:
    cells = []
    for key, _, digits in METRICS:
      values = [v for v in (r['rows'][row].get(key) for r in runs) if v is not None]
      cells.append(f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}' if values else 'n/a')
    lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> str:
  paths = sys.argv[1:] if argv is None else list(argv)
  if not paths or paths[0] in ('-h', '--help'):
    print(__doc__)
    return ''
  runs = []
  for path in paths:
    with open(path, encoding='utf-8') as f:
      runs.append(json.load(f))
  text = render(runs)
  print(text)
  return text


if __name__ == '__main__':
  main()

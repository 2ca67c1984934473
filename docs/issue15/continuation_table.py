"""Mean +- std over sampling seeds of `evaluate --task continuation` outputs (BUILD_NOTES, issue 15).

  python docs/issue15/continuation_table.py cont_seed0.json cont_seed1.json

One JSON per `--seed`; rows and metrics as `evaluate` writes them; std with
ddof=0, as `evaluate` and the experiments tables report it.
"""
import json
import sys

import numpy as np

METRICS = (('mauve', 'MAUVE', 3), ('gen_ppl', 'Gen. PPL (prompt ctx)', 1),
           ('gen_ppl_no_context', 'Gen. PPL (no ctx)', 1), ('entropy', 'entropy', 2),
           ('prompt_gain', 'prompt gain', 3))


def main(paths):
  runs = [json.load(open(p, encoding='utf-8')) for p in paths]
  print(f'{len(runs)} seed(s) {[r["seed"] for r in runs]}; checkpoint step {runs[0]["checkpoint_step"]}; '
        f'{runs[0]["num_texts"]} texts; prompt {runs[0]["prompt_tokens"]} tokens; {runs[0]["steps"]} steps')
  print('| row | ' + ' | '.join(label for _, label, _ in METRICS) + ' |')
  print('|---|' + '---|' * len(METRICS))
  for row in runs[0]['rows']:
    cells = []
    for key, _, digits in METRICS:
      values = [r['rows'][row].get(key) for r in runs]
      values = [v for v in values if v is not None]
      cells.append(f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}' if values else 'n/a')
    print(f'| {row} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main(sys.argv[1:])

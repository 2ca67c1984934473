"""One row's sampling batch alone and after the other rows' samplers, in one process.

  python -m scripts.analysis.sampler_order SWEEP_DIR [--seed 0] [--first ldlm] [--others mdlm,duo,ar]

On a finished main-table sweep (`python -m ldlm_jax.experiments run main ...`), restores the seed's
runs and times the FIRST row's sampler at the headline budget: three batches, then the OTHERS'
samplers at the smallest budget (one batch each), then three FIRST batches more, then one FIRST
batch after each of the others. Every sampler is compiled ahead and uses the row's own sampler
options, through Table 3's own `ldlm_jax.experiments.side_by_side.compiled_sampler`. Prints one
JSON line of seconds per batch. It is the check behind "Table 3, seed 0, measured side by side" in BUILD_NOTES (run there
once with glibc, once with `LD_PRELOAD` set to tcmalloc).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog='python -m scripts.analysis.sampler_order',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('sweep_dir')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--first', default='ldlm')
  parser.add_argument('--others', default='mdlm,duo,ar')
  args = parser.parse_args(argv)
  out_dir, seed, first, others_names = args.sweep_dir, args.seed, args.first, args.others.split(',')
  import jax

  from ldlm_jax.experiments import tables
  from ldlm_jax.experiments.records import PLAN_FILE, read_json
  from ldlm_jax.experiments.side_by_side import compiled_sampler, run_dirs
  from ldlm_jax.experiments.spec import SCALES
  from ldlm_jax.training import restore
  plan = read_json(os.path.join(out_dir, PLAN_FILE))
  module = tables.get('main')
  scale = module.adjust_scale(SCALES[plan['scale']])
  rows = {r.name: r for r in module.rows(scale)}

  def sampler(name: str, steps: int):
    run = restore.load_run(run_dirs(out_dir, name, seed)[1])   # the weights it samples (ReMDM: MDLM's)
    return compiled_sampler(run, scale, rows[name], seed, steps)[:3]

  def batches(case, n: int) -> list[float]:
    compiled, params, key = case
    seconds = []
    for i in range(n):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(params, jax.random.fold_in(key, i)))
      seconds.append(round(time.perf_counter() - t0, 3))
    return seconds

  case = sampler(first, int(scale.sample_steps[-1]))
  result = {f'{first}_alone': batches(case, 3)}
  others = {name: sampler(name, int(scale.sample_steps[0])) for name in others_names}
  for name, other in others.items():
    result[f'{name}_{scale.sample_steps[0]}_steps'] = batches(other, 1)
  result[f'{first}_after_others'] = batches(case, 3)
  for name, other in others.items():
    batches(other, 1)
    result[f'{first}_after_{name}'] = batches(case, 1)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()

"""The paper's main comparison: LDLM against MDLM (+ ReMDM), Duo and an autoregressive reference.

Every row is the scale's LDLM config (same data, tokenizer, DiT size, batch,
optimizer, seeds and evaluation) with the method switched by
configs/baselines.py's `method_overrides`; the baselines share LDLM's DiT
blocks with a token embedding and a vocabulary head (ldlm_jax/methods).

Three training budgets per baseline:
  NAME          the LDLM row's steps (equal data: the same batches);
  NAME_flops    equal training FLOPs: steps x LDLM's training FLOPs per token
                / the row's (ldlm_jax/methods/flops.py says how they are counted);
  NAME_clock    equal wall clock: as many steps as LDLM's training took
                seconds, at the row's own measured seconds per step (from
                NAME's run of the same seed). ReMDM trains nothing: its row
                samples MDLM's run of the same seed with remasking (Row.samples_of),
                so the two rows differ by the sampler alone.
Sampling budgets: NFE grid BUDGETS (the AR row always takes L calls: its rows
repeat one budget's cost). Every row and budget gets Gen. PPL, entropy,
MAUVE (headline budget), n-gram diversity, the unigram-frontier ratio and
seconds per sampling batch; every run its seconds per train step. After the
runs, Table 3 (SIDE_BY_SIDE): the rows' train step and sampling times measured
again side by side in one process, which the "samples faster" verdicts read.
"""

from __future__ import annotations

import dataclasses

from ldlm_jax.experiments import verdicts
from ldlm_jax.experiments.row_configs import config_module, spec_config
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Main comparison: LDLM against MDLM (+ ReMDM), Duo and AR on the same backbone'
BASELINES_FILE = 'configs/baselines.py'
# Sampling budgets (denoising steps = NFE for the diffusion rows), the last the headline.
BUDGETS = {'smoke': (2, 4, 8, 16), 'cpu': (16, 32, 64, 128), 'gpu': (16, 32, 64, 128, 256)}
# Samples per sampling batch: at least two batches per budget, so one is timed after compiling.
SAMPLE_BATCH = {'smoke': 2, 'cpu': 32, 'gpu': 128}
BUDGET_ROWS = ('mdlm', 'duo', 'ar')
# Table 3's rows, timed side by side in one process after the sweep (experiments/side_by_side.py):
# one per method and sampler. The _flops and _clock rows run the same step and sampler as their
# base row (their configs differ in train.num_steps only).
SIDE_BY_SIDE = ('ldlm', 'mdlm', 'remdm', 'duo', 'ar')


def adjust_scale(scale: Scale) -> Scale:
  return dataclasses.replace(
      scale, sample_steps=BUDGETS.get(scale.name, scale.sample_steps),
      overrides={**scale.overrides, 'sample.batch_size': SAMPLE_BATCH.get(scale.name, 32)})


def rows(scale: Scale) -> list[Row]:
  from ldlm_jax.methods import flops  # (no jax)
  module = config_module(BASELINES_FILE)
  ldlm = spec_config(scale, '', {})
  steps = int(ldlm.train.num_steps)
  out = [Row('ldlm')]
  for method in module.METHODS:
    # ReMDM is a sampler: it samples MDLM's trained run of the same seed with remasking.
    out.append(Row(method, overrides=module.method_overrides(method, steps),
                   samples_of='mdlm' if method == 'remdm' else ''))
  for method in BUDGET_ROWS:
    overrides = module.method_overrides(method, steps)
    matched = flops.matched_steps(ldlm, spec_config(scale, '', overrides))
    out.append(Row(f'{method}_flops', overrides={**module.method_overrides(method, matched),
                                                   'train.num_steps': matched}))
  for method in BUDGET_ROWS:
    out.append(Row(f'{method}_clock', overrides=module.method_overrides(method, steps),
                   match_clock=('ldlm', method)))
  return out


def orderings(data: dict, plan: dict) -> list[tuple[str, str, str]]:
  return [
      ('LDLM beats MDLM at equal compute', *verdicts.beats(data, plan, 'ldlm', 'mdlm_flops')),
      ('LDLM beats MDLM with ReMDM sampling at equal steps', *verdicts.beats(data, plan, 'ldlm', 'remdm')),
      ('LDLM beats Duo at equal compute', *verdicts.beats(data, plan, 'ldlm', 'duo_flops')),
      ('LDLM beats MDLM at equal wall clock', *verdicts.beats(data, plan, 'ldlm', 'mdlm_clock')),
      ('LDLM beats Duo at equal wall clock', *verdicts.beats(data, plan, 'ldlm', 'duo_clock')),
      ('LDLM samples faster than MDLM', *verdicts.faster(data, plan, 'ldlm', 'mdlm')),
      ('LDLM samples faster than Duo', *verdicts.faster(data, plan, 'ldlm', 'duo')),
  ]

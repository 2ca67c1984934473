"""TextLDM with and without REPA next to LDLM at the same scale and DiT; rows from configs/textldm.py.

LDLM is the scale's base config (the demo LDLM at cpu scale); each TextLDM row trains its VAE
(stage one) first, then the DiT on it (stage two, sampled), as Table 2's cosmos.
"""

from __future__ import annotations

from ldlm_jax.experiments import verdicts
from ldlm_jax.experiments.row_configs import config_module
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'TextLDM (VAE + REPA, flow matching) vs LDLM, same scale and DiT'
TEXTLDM_FILE = 'configs/textldm.py'


def rows(scale: Scale) -> list[Row]:
  del scale
  module = config_module(TEXTLDM_FILE)
  return [Row('ldlm')] + [Row(name, config=f'{TEXTLDM_FILE}:{module.TWO_STAGE[name]}',
                              stage_one=f'{TEXTLDM_FILE}:{name}') for name in module.ROWS]


def orderings(data: dict, plan: dict) -> list[tuple[str, str, str]]:
  # TextLDM's abstract: REPA is critical for generation quality.
  return [('REPA beats no REPA', *verdicts.beats(data, plan, 'textldm', 'textldm_norepa'))]

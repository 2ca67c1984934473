"""Table 2: the same diffusion model on five latent spaces, rows and order from configs/latent_spaces.py.

A two-stage row (its TWO_STAGE: row -> stage-two variant; cosmos) is sampled from its second
stage; the row's own variant is stage one, trained first in its own run directory.
"""

from __future__ import annotations

import itertools

from ldlm_jax.experiments import verdicts
from ldlm_jax.experiments.row_configs import config_module
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Table 2: latent spaces'
LATENT_SPACES_FILE = 'configs/latent_spaces.py'
# The paper's ordering, best first, and the names its claims use.
CHAIN = ('ldlm', 'cosmos', 'tencdm', 'encoder_emb')
LABELS = {'ldlm': 'LDLM', 'cosmos': 'COSMOS', 'tencdm': 'TEncDM', 'encoder_emb': 'embeddings'}


def rows(scale: Scale) -> list[Row]:
  del scale
  module = config_module(LATENT_SPACES_FILE)
  two_stage = getattr(module, 'TWO_STAGE', {})
  out = []
  for name in module.ROWS:
    if name in two_stage:
      out.append(Row(name, config=f'{LATENT_SPACES_FILE}:{two_stage[name]}',
                     stage_one=f'{LATENT_SPACES_FILE}:{name}'))
    else:
      out.append(Row(name, config=f'{LATENT_SPACES_FILE}:{name}'))
  return out


def orderings(data: dict, plan: dict) -> list[tuple[str, str, str]]:
  out = [(f'{LABELS[better]} beats {LABELS[worse]}', *verdicts.beats(data, plan, better, worse))
         for better, worse in itertools.pairwise(CHAIN)]
  out.append(('TEncDM beats embeddings trained from scratch', *verdicts.beats(data, plan, 'tencdm', 'scratch_emb')))
  return out

"""Table 6: which frozen encoder (third-to-last layer each); BERT's overrides are configs/ablations.py's."""

from __future__ import annotations

from ldlm_jax.experiments.row_configs import ablation_variants
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Table 6: frozen-encoder family'


def rows(scale: Scale) -> list[Row]:
  del scale
  return [Row('minilm_l6', {'encoder.name': 'minilm-l6', 'encoder.layer': -3}),
          Row('bert_base', ablation_variants()['encoder_bert_base'], needs='bert-base'),
          Row('gpt2', {'encoder.name': 'gpt2', 'encoder.layer': -3}, needs='gpt2')]

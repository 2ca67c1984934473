"""Table 7: Perceiver vs self-attention latent encoder and decoder (the latter: configs/ablations.py's)."""

from __future__ import annotations

from ldlm_jax.experiments.row_configs import ablation_variants
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Table 7: Perceiver vs self-attention latent encoder/decoder'


def rows(scale: Scale) -> list[Row]:
  del scale
  return [Row('perceiver', {'model.latent_encoder.type': 'perceiver', 'model.latent_decoder.type': 'perceiver'}),
          Row('self_attention', ablation_variants()['latent_encoder_self_attention'])]

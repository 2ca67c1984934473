"""Table 4: which hidden state of the frozen encoder the latents are built from."""

from __future__ import annotations

from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Table 4: frozen-encoder layer'
# MiniLM-L6 (the embedded encoder) has 6 layers: hidden states 2..6 span the paper's
# GPT-2 grid 4..12 of 12 in proportion; 4 is -3, the default.
LAYERS = (2, 3, 4, 5, 6)


def rows(scale: Scale) -> list[Row]:
  del scale
  return [Row(f'layer_{k}', {'encoder.layer': k}) for k in LAYERS]

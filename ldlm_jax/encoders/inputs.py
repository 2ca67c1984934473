"""Argument checks shared by the frozen encoders' forward passes (GPT-2, BERT)."""

from __future__ import annotations

import jax


def layers_and_key_mask(max_layer: int | None, num_layers: int, seq_len: int, max_positions: int,
                        model: str, positions_field: str,
                        attention_mask_BL: jax.Array | None) -> tuple[int, jax.Array | None]:
  """The last hidden-state index to compute and the (B, 1, 1, L) boolean key mask (None: no padding).

  Raises ValueError, naming the fix, for a layer index outside 0..num_layers or
  a sequence longer than the model's position table.
  """
  last = num_layers if max_layer is None else int(max_layer)
  if not 0 <= last <= num_layers:
    raise ValueError(f'max_layer={max_layer} is outside 0..{num_layers} for this {model}.')
  if seq_len > max_positions:
    raise ValueError(f'Sequence length {seq_len} exceeds {positions_field}={max_positions}; '
                     'use shorter chunks (data.seq_len).')
  if attention_mask_BL is None:
    return last, None
  return last, attention_mask_BL.astype(bool)[:, None, None, :]

"""Argument checks shared by the frozen encoders' forward passes (GPT-2, BERT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_impl(requested: str | None, dtype, key_mask_B11L) -> str | None:
  """The jax.nn.dot_product_attention implementation of a frozen encoder block.

  `requested` None/'' = automatic: cuDNN flash attention on GPU for 16-bit
  compute without a key mask (the training step's fixed-length chunks; the
  frozen GPT-2 was the one XLA attention left in the LM1B step), XLA
  otherwise: on CPU, for float32 (cuDNN has no float32 kernel) and for
  padded batches, whose (B, 1, 1, L) key mask XLA applies exactly.
  """
  if requested:
    return requested
  if (jax.default_backend() == 'gpu' and key_mask_B11L is None
      and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))):
    return 'cudnn'
  return None


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

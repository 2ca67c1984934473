"""Training FLOPs per token of LDLM and of the baselines, from the config alone (no jax).

What the main comparison's "equal training FLOPs" rows are matched on.
Counted as ldlm_jax/benchmarks/flops.py counts (matmuls only; a Dense of
k -> n features is 2 k n per token forward; attention over L keys at width
W is 4 L W per token forward; a trained matmul costs 3x its forward in
training, a frozen one 1x), per token of the batch:

  DiT block of width W, MLP ratio r:   8 W^2 + 4 r W^2 + 4 L W
  baseline: N blocks + the vocabulary head 2 W V (Duo: + its input, a
    dense (K -> W) product with the one-hot or relaxed token, 2 V W), x3;
  LDLM: denoiser (N blocks + input 2 (2D) W + output 2 W D), x3, plus the
    self-conditioning forward pass (probability p in expectation); latent
    encoder and decoder (self-attention stacks; a Perceiver is counted as
    one, an approximation), token decoder (blocks + head 2 w V), x3 each;
    the frozen encoder's blocks up to the used hidden state, forward only.

The per-block adaLN and time MLP work once per example and is left out.
The encoder's sizes come from ENCODER_SIZES (its config is not read here).
"""

from __future__ import annotations

# name -> (hidden size, blocks, vocabulary); the published model configs.
ENCODER_SIZES = {
    'minilm-l6': (384, 6, 30522),
    'bert-base': (768, 12, 30522),
    'gpt2': (768, 12, 50257),
    'gpt2-large': (1280, 36, 50257),
}


def block(width: int, length: int, ratio: int = 4) -> float:
  return 8.0 * width ** 2 + 4.0 * ratio * width ** 2 + 4.0 * length * width


def _encoder(config):
  name = config.encoder.name
  if name not in ENCODER_SIZES:
    raise ValueError(f'no sizes for encoder {name!r} in ENCODER_SIZES; add them to count its FLOPs')
  return ENCODER_SIZES[name]


def train_flops_per_token(config) -> float:
  """Training FLOPs per token of one optimizer step (see the module docstring)."""
  hidden, blocks, vocab = _encoder(config)
  length = int(config.data.seq_len)
  mc = config.model
  den = mc.denoiser
  width, ratio = int(den.width), int(den.mlp_ratio)
  stack = int(den.num_layers) * block(width, length, ratio)
  method = config.get('method', {}).get('name', 'ldlm')
  if method != 'ldlm':
    forward = stack + 2.0 * width * vocab + (2.0 * vocab * width if method == 'duo' else 0.0)
    return 3.0 * forward
  dim = int(mc.latent_dim)
  denoiser = stack + 2.0 * (2 * dim) * width + 2.0 * width * dim
  p = float(config.diffusion.self_cond_prob)
  total = (3.0 + p) * denoiser
  for part, n_in, n_out in (('latent_encoder', hidden, dim), ('latent_decoder', dim, hidden)):
    w = int(mc[part].width) or dim
    total += 3.0 * (int(mc[part].num_layers) * block(w, length, int(mc[part].mlp_ratio))
                    + 2.0 * n_in * w + 2.0 * w * n_out)
  td = mc.token_decoder
  w = int(td.width) or hidden
  total += 3.0 * (int(td.num_layers) * block(w, length, int(td.mlp_ratio)) + 2.0 * hidden * w
                  + 2.0 * w * vocab)
  layer = int(config.encoder.layer)
  used = blocks + 1 + layer if layer < 0 else layer
  if config.encoder.input == 'hidden':
    total += used * block(hidden, length, 4)
  return total


def matched_steps(reference_config, config) -> int:
  """Steps of `config` that spend the training FLOPs of `reference_config`'s run (same batch and length)."""
  ratio = train_flops_per_token(reference_config) / train_flops_per_token(config)
  return max(1, round(int(reference_config.train.num_steps) * ratio))

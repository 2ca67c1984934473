"""Analytic model FLOPs of one LDLM train step and of one sampling step.

Counted from the modules' own hyper-parameters (the resolved widths of an
`LDLM` instance), matmuls only: a Dense of m tokens from k to n features is
2 m k n forward; attention of Q queries over K keys at width W is 4 B Q K W
forward (scores and values). Backward costs 2x the forward of a trained
matmul (the weight gradient and the input gradient), except that no input
gradient is computed where nothing upstream needs one: the latent
encoder's input projection (its input h_n is a stop-gradient of the frozen
encoder), the token decoder's input projection (stop_gradient(h_hat) in the
paper's recipe) and the DiT's time MLP input (t has no gradient).
Element-wise work (norms, softmax, GELU, the optimizer) is left out, so XLA's
`cost_analysis()` of the same program is a few percent higher at useful
sizes and much higher at toy sizes.

One train step is:
  frozen encoder forward (only the blocks up to the used hidden state; full
    L x L attention, which is what XLA computes under the causal mask)
  latent encoder, latent decoder, token decoder: forward + backward
  denoiser: forward + backward of the trained pass, plus the
    self-conditioning forward pass: with probability p in expectation
    (diffusion.self_cond_mode='cond'), always when 'per_example' (0 < p < 1).
One sampling step is one denoiser forward; the latent decoder and the
token decoder run once per sampler call.
"""

from __future__ import annotations

import dataclasses

from ldlm_jax.latent_spaces.vae import RepaProjector, VAEEncoder
from ldlm_jax.models.dit import DiT
from ldlm_jax.models.perceiver import PerceiverResampler, SelfAttentionEncoder
from ldlm_jax.models.token_decoder import TokenDecoder


@dataclasses.dataclass
class Cost:
  """Forward and backward FLOPs of one component."""
  forward: float = 0.0
  backward: float = 0.0

  @property
  def total(self) -> float:
    return self.forward + self.backward

  def __add__(self, other: 'Cost') -> 'Cost':
    return Cost(self.forward + other.forward, self.backward + other.backward)


def dense(tokens: int, n_in: int, n_out: int, *, trained: bool = True,
          input_grad: bool = True) -> Cost:
  fwd = 2.0 * tokens * n_in * n_out
  bwd = (fwd if trained else 0.0) + (fwd if trained and input_grad else 0.0)
  return Cost(fwd, bwd)


def attention(batch: int, q_len: int, k_len: int, width: int, *, trained: bool = True) -> Cost:
  """Scores (q k^T) and values (p v) over all heads; backward: dq, dk, dp, dv."""
  fwd = 4.0 * batch * q_len * k_len * width
  return Cost(fwd, 2.0 * fwd if trained else 0.0)


def mlp(tokens: int, width: int, ratio: int, trained: bool = True) -> Cost:
  return (dense(tokens, width, ratio * width, trained=trained)
          + dense(tokens, ratio * width, width, trained=trained))


def self_attention_block(batch: int, length: int, width: int, ratio: int,
                         trained: bool = True) -> Cost:
  """layers.TransformerBlock (and the DiT block without its adaLN projection)."""
  t = batch * length
  qkvo = dense(t, width, width, trained=trained)
  return (qkvo + qkvo + qkvo + qkvo + attention(batch, length, length, width, trained=trained)
          + mlp(t, width, ratio, trained))


def perceiver(module: PerceiverResampler, batch: int, in_len: int, in_dim: int, *,
              input_grad: bool) -> Cost:
  """PerceiverResampler: queries attend over concat(inputs, queries)."""
  w, n = module.width, module.num_queries
  cost = dense(batch * in_len, in_dim, w, input_grad=input_grad)
  for _ in range(module.num_layers):
    cost += dense(batch * n, w, w)                       # query
    cost += dense(batch * (in_len + n), w, w)            # key
    cost += dense(batch * (in_len + n), w, w)            # value
    cost += attention(batch, n, in_len + n, w)
    cost += dense(batch * n, w, w)                       # out
    cost += mlp(batch * n, w, module.mlp_ratio)
  return cost + dense(batch * n, w, module.out_dim)


def self_attention_encoder(module: SelfAttentionEncoder, batch: int, length: int,
                           in_dim: int, *, input_grad: bool) -> Cost:
  w = module.width
  cost = dense(batch * length, in_dim, w, input_grad=input_grad)
  for _ in range(module.num_layers):
    cost += self_attention_block(batch, length, w, module.mlp_ratio)
  return cost + dense(batch * length, w, module.out_dim)


def vae_encoder(module: VAEEncoder, batch: int, length: int, in_dim: int, *, input_grad: bool) -> Cost:
  """TextLDM's VAE encoder: self-attention blocks, then the mean and log-variance heads."""
  w = module.width
  cost = dense(batch * length, in_dim, w, input_grad=input_grad)
  for _ in range(module.num_layers):
    cost += self_attention_block(batch, length, w, module.mlp_ratio)
  return cost + dense(batch * length, w, 2 * module.latent_dim)


def repa_projector(module: RepaProjector, batch: int, length: int, in_dim: int) -> Cost:
  t, h = batch * length, module.out_dim
  return dense(t, in_dim, h) + dense(t, h, h) + dense(t, h, h)


def latent_module(module, batch: int, in_len: int, in_dim: int, *, input_grad: bool,
                  trained: bool = True) -> Cost:
  """The latent encoder or hidden-state decoder, whichever type the config chose."""
  if isinstance(module, VAEEncoder):
    cost = vae_encoder(module, batch, in_len, in_dim, input_grad=input_grad)
  elif isinstance(module, PerceiverResampler):
    cost = perceiver(module, batch, in_len, in_dim, input_grad=input_grad)
  elif isinstance(module, SelfAttentionEncoder):
    cost = self_attention_encoder(module, batch, in_len, in_dim, input_grad=input_grad)
  else:
    raise TypeError(f'no FLOP count for a latent module of type {type(module).__name__}')
  return cost if trained else Cost(cost.forward, 0.0)


def token_decoder(module: TokenDecoder, batch: int, length: int, in_dim: int, *,
                  trained: bool = True, input_grad: bool = False) -> Cost:
  w = module.width
  cost = dense(batch * length, in_dim, w, trained=trained, input_grad=input_grad)
  for _ in range(module.num_layers):
    cost += self_attention_block(batch, length, w, module.mlp_ratio, trained)
  cost += dense(batch * length, w, module.vocab_size, trained=trained)
  if module.tied_dim:   # the (W, V) kernel P @ table^T, formed once a step (and P's gradient)
    kernel = 2.0 * w * module.tied_dim * module.vocab_size
    cost += Cost(kernel, kernel if trained else 0.0)
  return cost


def denoiser(module: DiT, batch: int, length: int, *, trained: bool = True) -> Cost:
  w, d = module.width, module.latent_dim
  t = batch * length
  cost = dense(t, 2 * d, w, trained=trained)                       # concat(z_t, x0_sc)
  cost += dense(batch, module.time_embed_dim, w, trained=trained, input_grad=False)
  cost += dense(batch, w, w, trained=trained)
  for _ in range(module.num_layers):
    cost += dense(batch, w, 6 * w, trained=trained)                # adaLN-Zero
    cost += self_attention_block(batch, length, w, module.mlp_ratio, trained)
  cost += dense(batch, w, 2 * w, trained=trained)                  # final adaLN
  return cost + dense(t, w, d, trained=trained)


def frozen_encoder(encoder, layer: int, batch: int, length: int) -> Cost:
  """Forward of the GPT-2 / BERT / Llama blocks that produce hidden_states[layer]."""
  c = encoder.module.config
  blocks = encoder.layer_index(layer)
  t, h = batch * length, c.hidden_size
  if encoder.family == 'llama':   # grouped-query attention, gated MLP
    kv = 2 * c.num_kv_heads * c.head_dim
    per_block = (dense(t, h, c.num_heads * c.head_dim + kv, trained=False)
                 + dense(t, c.num_heads * c.head_dim, h, trained=False)
                 + attention(batch, length, length, c.num_heads * c.head_dim, trained=False)
                 + dense(t, h, 2 * c.intermediate_size, trained=False)
                 + dense(t, c.intermediate_size, h, trained=False))
    return Cost(blocks * per_block.forward, 0.0)
  per_block = (dense(t, h, 3 * h, trained=False) + dense(t, h, h, trained=False)
               + attention(batch, length, length, h, trained=False)
               + dense(t, h, c.mlp_size, trained=False) + dense(t, c.mlp_size, h, trained=False))
  return Cost(blocks * per_block.forward, 0.0)


def self_cond_passes(config, xla_view: bool = False) -> float:
  """Expected denoiser forward passes spent on self-conditioning per train step.

  xla_view=True: what XLA's cost analysis counts (it charges a lax.cond the
  cost of its dearer branch, so 'cond' counts as a full pass).
  """
  p = float(config.diffusion.self_cond_prob)
  if p <= 0.0:
    return 0.0
  if p >= 1.0 or config.diffusion.self_cond_mode == 'per_example' or xla_view:
    return 1.0
  return p


def train_step_flops(model, batch: int, *, xla_view: bool = False) -> dict[str, float]:
  """Per-component FLOPs of one train step of `model` (an LDLM) at global batch `batch`.

  Keys: frozen_encoder, latent_encoder, latent_decoder, token_decoder,
  denoiser (trained pass, fwd + bwd), self_condition (its forward pass),
  total.
  """
  d = model.dims
  config = model.config
  out = {}
  space = model.latent_space
  repa = getattr(space, 'use_repa', False)   # TextLDM's VAE: the frozen encoder is REPA's teacher
  if model.input_kind == 'hidden' or repa:
    out['frozen_encoder'] = frozen_encoder(model.encoder, model.encoder_layer, batch,
                                           d.seq_len).total
  else:
    out['frozen_encoder'] = 0.0                       # a table lookup (or trained table)
  scratch = model.input_kind == 'scratch'
  frozen = set(model.frozen_names)        # train.init_from components: forward only
  # Token-level latent spaces (scratch_emb, encoder_emb, tencdm) have no latent
  # encoder/decoder: the features are the latents and the token decoder reads them.
  enc = getattr(space, 'latent_encoder', None)
  dec = getattr(space, 'latent_decoder', None)
  enc_in = getattr(space, 'embed_width', d.feature_dim)   # the VAE reads its own embedding rows
  out['latent_encoder'] = 0.0 if enc is None else latent_module(
      enc, batch, d.seq_len, enc_in, input_grad=scratch,
      trained='latent_encoder' not in frozen).total
  if repa:   # REPA's projector is counted with the encoder it reads
    out['latent_encoder'] += repa_projector(space.projector, batch, d.seq_len, enc.width).total
  out['latent_decoder'] = 0.0 if dec is None else latent_module(
      dec, batch, d.latent_len, d.latent_dim, input_grad=True,
      trained='latent_decoder' not in frozen).total
  if model.use_ce:
    if enc is None:   # the token decoder reads the (noisy) latents themselves
      input_grad = scratch
    else:
      input_grad = not config.loss.ce_stop_gradient
    out['token_decoder'] = token_decoder(
        model.token_decoder, batch, d.seq_len, d.feature_dim,
        trained='token_decoder' not in frozen, input_grad=input_grad).total
  else:
    out['token_decoder'] = 0.0
  if space.trains_diffusion:
    out['denoiser'] = denoiser(model.denoiser, batch, d.latent_len).total
    out['self_condition'] = (self_cond_passes(config, xla_view)
                             * denoiser(model.denoiser, batch, d.latent_len, trained=False).forward)
  else:               # an autoencoder stage (cosmos stage one): no diffusion loss
    out['denoiser'] = out['self_condition'] = 0.0
  out['total'] = sum(out.values())
  return out


def sampling_flops(model, batch: int, num_steps: int, with_decode: bool = True) -> dict[str, float]:
  """FLOPs of one sampler call: num_steps denoiser forwards, then the decoders once."""
  d = model.dims
  per_step = denoiser(model.denoiser, batch, d.latent_len, trained=False).forward
  decode = 0.0
  if with_decode:
    dec = getattr(model.latent_space, 'latent_decoder', None)
    if dec is not None:
      decode = latent_module(dec, batch, d.latent_len, d.latent_dim,
                             input_grad=False, trained=False).forward
    decode += token_decoder(model.token_decoder, batch, d.seq_len, d.feature_dim,
                            trained=False).forward
  return {'per_step': per_step, 'decode': decode, 'total': num_steps * per_step + decode}

r"""TextLDM (2026; docs/method.md section 2) as a second recipe, two stages.

Stage one trains a Transformer VAE over tokens with REPA (latent_space.name
'textldm_vae', stage 'vae'; ldlm_jax/latent_spaces/vae.py); stage two trains
the DiT with flow matching on the frozen VAE's latents (stage 'diffusion',
train.init_from). Pick a NAME after a colon:

  NAME                     what
  textldm                  stage one: VAE + REPA (the frozen encoder is the teacher)
  textldm_stage2           stage two: rectified flow, logit-normal time, Heun sampler
  textldm_norepa           stage one without REPA (the abstract's ablation)
  textldm_norepa_stage2    stage two on it

each at OWT scale (configs/owt.py: GPT-2 tokens and teacher, L = 1024, the
LDLM OWT DiT) or with `_cpu` (configs/demo.py's scale: the embedded Brown
corpus, MiniLM tokens and teacher, the demo's DiT), e.g.

  python -m ldlm_jax.train --config configs/textldm.py:textldm_cpu --workdir runs/textldm/vae
  python -m ldlm_jax.train --config configs/textldm.py:textldm_stage2_cpu \
      --workdir runs/textldm/dit --config.train.init_from.workdir=runs/textldm/vae

  LDLM_GPT2_PATH=/path/to/gpt2 python -m ldlm_jax.train --config configs/textldm.py:textldm \
      --workdir runs/textldm_owt/vae --config.data.path=/data/owt_gpt2_1024
  LDLM_GPT2_PATH=/path/to/gpt2 python -m ldlm_jax.train --config configs/textldm.py:textldm_stage2 \
      --workdir runs/textldm_owt/dit --config.data.path=/data/owt_gpt2_1024 \
      --config.train.init_from.workdir=runs/textldm_owt/vae

Everything not listed in VARIANTS is the LDLM config of the same scale, so
the two recipes differ only where the methods differ (same data, tokenizer,
DiT, optimizer, batch, step count, self-conditioning). Origins: the abstract
gives the recipe (Transformer VAE, REPA to a frozen LM, DiT, flow matching);
every number below is ours (marked), BUILD_NOTES.md "TextLDM VAE and REPA"
has the reasons.

The stage-two keys diffusion.process, timesteps.sampler='logit_normal' and
sample.solver='heun' need the diffusion-process seam (part A:
ldlm_jax/diffusion/processes, docs/method.md Section 5); a config schema without
those keys refuses the stage-two names with one sentence saying so.

Hardware: OWT scale as configs/owt.py (not measured). CPU scale: stage one
half of the demo's 1400 steps, stage two the demo's 1400 steps.
"""

from ldlm_jax.config import ConfigError, set_dotted, sibling, unknown_keys

ROWS = ('textldm', 'textldm_norepa')
TWO_STAGE = {'textldm': 'textldm_stage2', 'textldm_norepa': 'textldm_norepa_stage2'}
# Stage one's length as a share of the run's train.num_steps (ours, as
# configs/latent_spaces.py's cosmos); OWT scale: 200k steps (ours).
STAGE_ONE_FRACTION = 0.5
OWT_STAGE_ONE_STEPS = 200_000
VAE = 'scratch_embedding,latent_encoder,latent_decoder,token_decoder'

_STAGE_ONE = {
    'latent_space.name': 'textldm_vae',
    'latent_space.stage': 'vae',
    'encoder.input': 'scratch',            # the VAE embeds tokens itself; the encoder teaches
    'latent_space.kl_weight': 1e-3,        # ours
    'latent_space.repa_weight': 0.5,       # REPA's lambda (Yu et al. 2024); ours for text
    'latent_space.repa_layer': 0,          # half the VAE encoder's blocks (ours)
    'model.latent_len': 0,                 # one latent per token (ours; see vae.py)
    # The VAE's encoder and decoder are self-attention stacks (sizes: the scale's LDLM ones).
    'model.latent_encoder.type': 'self_attention',
    'model.latent_decoder.type': 'self_attention',
}
_STAGE_TWO = {
    'latent_space.name': 'textldm_vae',
    'latent_space.stage': 'diffusion',
    'encoder.input': 'scratch',
    'train.init_from.components': VAE,
    'train.init_from.frozen': True,
    # Flow matching (abstract), logit-normal time (as TextLDM trains its flow;
    # mean 0, std 1 are ours, SD3's default), Heun (ours).
    'diffusion.process': 'rectified_flow',
    'timesteps.sampler': 'logit_normal',
    'timesteps.logit_normal_mean': 0.0,
    'timesteps.logit_normal_std': 1.0,
    'sample.solver': 'heun',
}
# Stage two's VAE-shaping keys equal stage one's (the frozen VAE's shapes must match).
VARIANTS = {
    'textldm': dict(_STAGE_ONE),
    'textldm_stage2': {**_STAGE_ONE, **_STAGE_TWO},
    'textldm_norepa': {**_STAGE_ONE, 'latent_space.repa_weight': 0.0},
    'textldm_norepa_stage2': {**_STAGE_ONE, **_STAGE_TWO, 'latent_space.repa_weight': 0.0},
}


def missing_keys(variant: str) -> list[str]:
  """Keys a variant sets that this tree's config schema lacks (part A's, before it is merged)."""
  return unknown_keys(VARIANTS[variant])


def get_config(variant: str = 'textldm'):
  name, cpu = (variant[:-4], True) if variant.endswith('_cpu') else (variant, False)
  if name not in VARIANTS:
    raise ValueError(f'unknown textldm variant {variant!r}; choose one of '
                     f'{sorted(VARIANTS)}, each optionally with _cpu')
  missing = missing_keys(name)
  if missing:
    raise ConfigError(
        f'configs/textldm.py:{variant} sets {missing}, which this tree does not have yet (the '
        'rectified-flow process, part A of the TextLDM work); merge that work first or train stage one.')
  if cpu:
    c = sibling(__file__, 'demo').get_config()            # the LDLM demo: Brown, MiniLM, its DiT
    stage_one_steps = int(c.train.num_steps * STAGE_ONE_FRACTION)
  else:
    c = sibling(__file__, 'owt').get_config()             # the LDLM OWT config: GPT-2, L = 1024, its DiT
    stage_one_steps = OWT_STAGE_ONE_STEPS
  for key, value in VARIANTS[name].items():
    set_dotted(c, key, value)
  if name in TWO_STAGE:
    c.train.num_steps = stage_one_steps
    c.train.sample_every = 0                     # no denoiser to sample with
  return c

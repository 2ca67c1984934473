r"""The paper's Table 2: the same diffusion model on five latent spaces.

Pick `NAME` (paper size: OWT-128, GPT-2 encoder, the recipe of
configs/ablations.py) or `NAME_cpu` (CPU size: the embedded Brown corpus and
the MiniLM encoder at configs/demo.py's sizes) after a colon:

  NAME         latent space (ldlm_jax/latent_spaces)
  ldlm         the jointly trained autoencoder (the paper's method; default)
  scratch_emb  token embeddings trained from scratch with diffusion (Li et al. 2022)
  encoder_emb  the frozen encoder's token embeddings (Strudel et al. 2023)
  tencdm       the frozen encoder's normalized hidden states (TEncDM-like)
  cosmos       stage one of the COSMOS-like autoencoder (masking + latent noise)
  cosmos_stage2  stage two: the diffusion model on the frozen stage-one autoencoder

One command per row; cosmos needs two, the second naming the first's workdir:

  python -m ldlm_jax.train --config configs/latent_spaces.py:tencdm \
      --workdir runs/table2/tencdm --config.data.path=/data/owt_gpt2_128
  python -m ldlm_jax.train --config configs/latent_spaces.py:cosmos \
      --workdir runs/table2/cosmos_ae --config.data.path=/data/owt_gpt2_128
  python -m ldlm_jax.train --config configs/latent_spaces.py:cosmos_stage2 \
      --workdir runs/table2/cosmos --config.data.path=/data/owt_gpt2_128 \
      --config.train.init_from.workdir=runs/table2/cosmos_ae

and on a CPU (Brown corpus, MiniLM; minutes per stage):

  python -m ldlm_jax.train --config configs/latent_spaces.py:cosmos_cpu --workdir runs/t2/cosmos_ae
  python -m ldlm_jax.train --config configs/latent_spaces.py:cosmos_stage2_cpu \
      --workdir runs/t2/cosmos --config.train.init_from.workdir=runs/t2/cosmos_ae

`TWO_STAGE` maps a row to its stage-two variant, for harnesses. The stage-one
length (200k steps at paper size, half the run on CPU) is ours; the paper
does not state it. Every other setting is the row's base, so the latent space
is the only thing that varies (paper Sec. 7). Each variant's choices and
their origins: BUILD_NOTES.md, "Latent spaces".

Hardware: paper size as configs/ablations.py (500k steps at batch 512 on
A100s in the paper; ours not measured). CPU size: configs/demo.py's scale.
"""

from ldlm_jax.config import set_dotted, sibling

ROWS = ('scratch_emb', 'encoder_emb', 'tencdm', 'cosmos', 'ldlm')   # Table 2 order
TWO_STAGE = {'cosmos': 'cosmos_stage2'}
# Stage one's length as a share of the run's train.num_steps (ours; the paper
# does not state it): the CPU size and the experiments harness use it.
STAGE_ONE_FRACTION = 0.5
AUTOENCODER = 'latent_encoder,latent_decoder,token_decoder'

VARIANTS = {
    'ldlm': {},
    # Li et al. 2022: embeddings learn with the diffusion loss from the start (no warmup).
    'scratch_emb': {'latent_space.name': 'scratch_emb', 'encoder.input': 'scratch',
                    'encoder_warmup.steps': 0},
    'encoder_emb': {'latent_space.name': 'encoder_emb', 'encoder.input': 'embeddings'},
    'tencdm': {'latent_space.name': 'tencdm', 'encoder.input': 'hidden'},
    'cosmos': {'latent_space.name': 'cosmos', 'latent_space.stage': 'autoencoder'},
    'cosmos_stage2': {'latent_space.name': 'cosmos', 'latent_space.stage': 'diffusion',
                      'train.init_from.components': AUTOENCODER, 'train.init_from.frozen': True},
}


def _paper_base():
  """OWT-128 with GPT-2 (paper Sec. 6-7, App. C): configs/ablations.py's base."""
  return sibling(__file__, 'ablations').owt128_base(), 200_000   # stage-one steps for cosmos (ours)


def _cpu_base():
  """configs/demo.py: MiniLM on the embedded Brown corpus, CPU-sized."""
  c = sibling(__file__, 'demo').get_config()
  return c, int(c.train.num_steps * STAGE_ONE_FRACTION)


def get_config(variant: str = 'ldlm'):
  name, cpu = (variant[:-4], True) if variant.endswith('_cpu') else (variant, False)
  if name not in VARIANTS:
    raise ValueError(f'unknown latent space variant {variant!r}; choose one of '
                     f'{sorted(VARIANTS)}, each optionally with _cpu')
  c, stage_one_steps = _cpu_base() if cpu else _paper_base()
  for key, value in VARIANTS[name].items():
    set_dotted(c, key, value)
  if name == 'cosmos':
    c.train.num_steps = stage_one_steps
  return c

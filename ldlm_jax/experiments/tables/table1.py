"""Table 1: reconstruction loss, diffusion-to-encoder warmup, uniform vs adaptive timesteps, the sigma_dec grid.

Overrides come from configs/ablations.py's VARIANTS (row names = variant names, the sigma_dec
grid = its decoder_noise_* variants in their order); only the warmup lengths are this table's
own, as fractions of the scale's run.
"""

from __future__ import annotations

from ldlm_jax.experiments import verdicts
from ldlm_jax.experiments.row_configs import ablation_variants, load_config_file
from ldlm_jax.experiments.spec import Row, Scale

TITLE = 'Table 1: reconstruction loss, warmup, timestep sampling, sigma_dec'
RECONSTRUCTION = ('recon_mse', 'recon_ce', 'recon_mse_ce')
TIMESTEPS = ('timesteps_uniform', 'timesteps_adaptive')
# none / short / long = 0, 5% and 50% of the run (the paper: 0 .. 100k of 500k steps).
WARMUP = (('none', 0.0), ('short', 0.05), ('long', 0.5))
DECODER_NOISE = 'decoder_noise_'   # configs/ablations.py's prefix of the sigma_dec grid's variants
DEFAULT_SIGMA = 'sigma_dec_0.5'


def sigma_rows() -> list[str]:
  """The sigma_dec grid's row names, smallest first: sigma_dec_S per configs/ablations.py decoder_noise_S."""
  return ['sigma_dec_' + k[len(DECODER_NOISE):] for k in ablation_variants() if k.startswith(DECODER_NOISE)]


def rows(scale: Scale) -> list[Row]:
  v = ablation_variants()
  steps = int(scale.overrides.get('train.num_steps', load_config_file(scale.base_config).train.num_steps))
  out = [Row(name, v[name]) for name in RECONSTRUCTION]
  # Warmup rows use uniform timesteps, as configs/ablations.py's warmup_* variants.
  for label, fraction in WARMUP:
    out.append(Row(f'warmup_{label}', {'encoder_warmup.steps': round(fraction * steps),
                                       'timesteps.sampler': 'uniform'}))
  out += [Row(name, v[name]) for name in TIMESTEPS]
  out += [Row(name, v[DECODER_NOISE + name[len('sigma_dec_'):]]) for name in sigma_rows()]
  return out


def orderings(data: dict, plan: dict) -> list[tuple[str, str, str]]:
  grid = sigma_rows()
  return [('MSE beats CE', *verdicts.beats(data, plan, 'recon_mse', 'recon_ce')),
          ('enough warmup beats none', *verdicts.beats(data, plan, 'warmup_long', 'warmup_none')),
          ('adaptive beats uniform timesteps', *verdicts.beats(data, plan, 'timesteps_adaptive', 'timesteps_uniform')),
          ('an intermediate sigma_dec is best', *verdicts.intermediate_best(data, plan, grid)),
          ('a large sigma_dec collapses', *verdicts.collapses(data, plan, grid[-1], DEFAULT_SIGMA))]

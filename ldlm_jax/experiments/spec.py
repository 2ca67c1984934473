"""What a sweep is made of: the scales, a table's rows, the reference rows, and the error a sweep raises.

Plain data: importing this module imports no jax and no config code.
"""

from __future__ import annotations

import dataclasses

from ldlm_jax.errors import UserError
from ldlm_jax.evaluation import ngram as ngram_lib

# The reference rows every table carries, evaluated like the runs: n-gram samples fitted to the
# training split, held-out text, and tempered n-gram samples (the unigram frontier).
BASE_REFERENCES = ('unigram', 'bigram', 'trigram', 'held_out')
REFERENCE_ROWS = BASE_REFERENCES + tuple(ngram_lib.tempered_name(n, t) for n, ts in ngram_lib.TEMPERED.items()
                                         for t in ts)


class ExperimentError(UserError, ValueError):
  """A sweep that cannot run as asked; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Scale:
  name: str
  base_config: str             # config file every row starts from
  overrides: dict              # dotted key -> value, on top of the base config
  sample_steps: tuple          # denoising step counts; the last is the headline
  num_samples: int             # per run, per step count
  num_references: int          # held-out texts for MAUVE (another as many are the held-out row)
  scorer: str                  # 'smollm2' or 'tiny-random' (smoke: meaningless numbers)
  score_batch: int = 8
  minutes_per_run: str = ''    # expected wall time per run, written into the report


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of a table: the scale's base config with `overrides`, or another config file's variant."""
  name: str
  overrides: dict = dataclasses.field(default_factory=dict)
  config: str = ''       # a config 'file.py:NAME' instead of the scale's base config
  needs: str = ''        # encoder name whose weights the row needs ('' = none beyond the installed)
  # A first stage trained before the row's run, as a config 'file.py:NAME' (cosmos: the
  # autoencoder); the row's run starts from it through train.init_from.workdir.
  stage_one: str = ''
  # Equal wall clock: (reference row, timing row). The row trains for as many steps as the
  # reference row's training took seconds, at the timing row's measured seconds per step (both
  # rows of the same sweep and seed, trained before it; the sweep sets train.num_steps).
  match_clock: tuple = ()
  # A row that trains nothing: it samples the same seed's finished run of row `samples_of` with
  # its own config's sampler fields (ReMDM samples MDLM's checkpoint with remasking), so the two
  # rows differ by the sampler alone. Its record carries that run's training time.
  samples_of: str = ''


_COMMON = {
    # Without the warm-up, a 1400-step run's EMA (decay 0.99 at cpu scale) would still be
    # close to the initialisation early on.
    'optim.ema_warmup': True,
    'train.sample_every': 0,
    'train.num_log_samples': 0,
}

SCALES = {
    'smoke': Scale(
        'smoke', 'configs/tiny.py',
        dict(_COMMON, **{'train.num_steps': 2, 'train.batch_size': 4, 'train.log_every': 1,
                         'train.checkpoint_every': 2, 'train.eval_every': 0, 'encoder.norm_num_chunks': 8,
                         'encoder_warmup.steps': 2, 'optim.warmup_steps': 1, 'timesteps.update_every': 1,
                         'sample.batch_size': 4,
                         # Fewer ops to compile (every row compiles its own train step): the
                         # encoder's first layer, one denoiser block, no self-conditioning pass.
                         'encoder.layer': 1, 'model.denoiser.num_layers': 1,
                         'diffusion.self_cond_prob': 0.0, 'model.qk_norm': False}),
        sample_steps=(2, 4, 8), num_samples=4, num_references=8, scorer='tiny-random', score_batch=4,
        minutes_per_run='a fraction of a'),
    'cpu': Scale(
        'cpu', 'configs/demo.py',
        dict(_COMMON, **{'train.checkpoint_every': 175}),
        sample_steps=(25, 50, 100), num_samples=64, num_references=256, scorer='smollm2',
        minutes_per_run='about 11 (9-10 training, 1-2 sampling and evaluation) on 2 quiet cores'),
    'gpu': Scale(
        'gpu', 'configs/demo.py',
        dict(_COMMON, **{'train.num_steps': 20_000, 'train.batch_size': 64, 'train.log_every': 200,
                         'train.checkpoint_every': 2000, 'train.eval_every': 2000,
                         'encoder_warmup.steps': 10_000, 'optim.ema_decay': 0.999,
                         'timesteps.update_every': 100, 'sample.batch_size': 128,
                         # 57x the cpu run's tokens, a DiT twice as deep and wide.
                         'model.denoiser.num_layers': 8, 'model.denoiser.width': 384,
                         'model.denoiser.num_heads': 6}),
        sample_steps=(50, 100, 200), num_samples=256, num_references=512, scorer='smollm2', score_batch=32,
        minutes_per_run='not measured (no accelerator was lent while this was built)'),
}

r"""Samples text from a trained run (or a model directory written by `python -m ldlm_jax.export`).

  python -m ldlm_jax.sample --workdir runs/demo --num_samples 64 --steps 200 \
      --out samples.jsonl [--seed 0] [--batch_size 32] [--checkpoint_step STEP] \
      [--time_grid uniform|adaptive] [--t_min 0.05] [--solver euler_maruyama|ddim|euler|heun] \
      [--token_decoder runs/demo/token_decoder_k2] [--final z|x0]

  # Several seeds, one file each, the sampler compiled once (each file is the one --seed S writes;
  # with --prompts each seed compiles its own):
  python -m ldlm_jax.sample --workdir runs/demo --seeds 0,1,2 --out 'samples/seed{seed}.jsonl'

  # A run trained with conditions (config.condition.enabled):
  python -m ldlm_jax.sample --workdir runs/demo_cond --prompts prompts.jsonl --guidance 1.5 \
      --out continuations.jsonl [--samples_per_prompt 1] [...the options above]

Restores the EMA parameters, runs the reverse SDE (or a flow's ODE) as one compiled lax.scan
(self-conditioning carried inside the scan), then the latent decoder and the
token decoder once at the end. The batch is sharded over all devices.
The flags are the arguments of `ldlm_jax.api.Model.generate`, which does the work,
so the Python API gives the same samples for the same seed and settings.
Writes one JSON object per sample: text, tokens, seed, steps, checkpoint_step,
eos_token, and the sampler settings.

With --prompts, each line of the JSONL file is {"prompt": "..."} (a text to
continue) or {"text": "... [[...]] ... [[6]] ..."} (gaps to fill: [[...]]
is 4 tokens, [[n]] n tokens); see ldlm_jax/conditioning.py. The given
tokens are placed at their positions and forced in the output, so they
survive bit for bit; --guidance w is classifier-free guidance on the
denoiser's x0 estimate inside the compiled scan (1 = none). Each record
keeps the prompt verbatim and marks the generated text: a continuation has
prompt, continuation, text and generated_from (the char offset in text where
generated text begins); an infill has text, spans ([start, end] char offsets
of the fills) and tail (generated after the last given piece, not in text).
"""

from __future__ import annotations

import os
import time

from absl import flags

from ldlm_jax import cli
from ldlm_jax.errors import ConfigError

# jax, the run restorer and the sampler are imported inside functions, after the flags are
# checked: --help and a bad flag answer at once (ruff.toml exempts the entry points from PLC0415).

_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory of a trained run, or a directory '
                                'written by python -m ldlm_jax.export.')
_NUM = flags.DEFINE_integer('num_samples', 64, 'Number of samples.')
_STEPS = flags.DEFINE_integer('steps', None, 'Denoising steps (default: the run\'s sample.num_steps).')
_OUT = flags.DEFINE_string('out', None, 'Output JSONL file.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_SEEDS = flags.DEFINE_list('seeds', None, 'Several sampling seeds (comma-separated), one output file '
                           'each: --out must contain {seed}. The unconditional sampler is compiled once.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Samples per compiled call (default: sample.batch_size).')
_STEP = flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint step (default: latest).')
_GRID = flags.DEFINE_enum('time_grid', None, ['uniform', 'adaptive'], 'Time grid (default: the run\'s).')
_TMIN = flags.DEFINE_float('t_min', None, 'Last time of the grid (default: the run\'s sample.t_min).')
_SOLVER = flags.DEFINE_string('solver', None, 'Solver: euler_maruyama or ddim for VP runs, euler or heun '
                               'for flow runs (default: the run\'s).')
_TOKEN_DECODER = flags.DEFINE_string('token_decoder', '', 'A post-trained token decoder directory.')
_FINAL = flags.DEFINE_enum('final', None, ['z', 'x0'],
                           'Latent decoded: the last z, or the last clean estimate x0_hat '
                           '(default: the run\'s sample.final).')
_NO_EMA = flags.DEFINE_bool('no_ema', False, 'Use the raw parameters instead of the EMA.')
_PROMPTS = flags.DEFINE_string('prompts', None, 'JSONL file of prompts to continue or texts with '
                               '[[...]] gaps to fill (a run trained with conditions).')
_GUIDANCE = flags.DEFINE_float('guidance', 1.0, 'Classifier-free guidance weight (1 = none); '
                               'with --prompts.')
_PER_PROMPT = flags.DEFINE_integer('samples_per_prompt', 1, 'Samples per prompt (with --prompts).')
_REMDM = flags.DEFINE_float('remdm_eta', None, 'An MDLM run: sample with ReMDM remasking at this '
                           'eta (rescale schedule; 0 = plain MDLM; default: the run\'s method.remdm_eta).')


def seeds_and_outputs() -> list[tuple[int, str]]:
  """[(seed, absolute output path)]: --seed and --out, or each of --seeds with its --out path."""
  if _SEEDS.value is None:
    if '{seed}' in _OUT.value:
      raise ConfigError('--out contains {seed}, which only --seeds fills in; pass --seeds or name one file.')
    return [(_SEED.value, cli.check_output_file(_OUT.value, '--out'))]
  if flags.FLAGS['seed'].present:
    raise ConfigError('Pass either --seed or --seeds, not both.')
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise ConfigError(f'--seeds must be comma-separated integers (got {",".join(_SEEDS.value)!r}).') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ConfigError(f'--seeds must name one or more different seeds (got {",".join(_SEEDS.value)!r}).')
  if '{seed}' not in _OUT.value:
    raise ConfigError('With --seeds, --out must contain {seed} (one file per seed), e.g. '
                      "--out 'samples/seed{seed}.jsonl'.")
  return [(seed, cli.check_output_file(_OUT.value.replace('{seed}', str(seed)), '--out')) for seed in seeds]


def check_flags() -> list[tuple[int, str]]:
  """Every flag checked before the run is restored; returns [(seed, absolute --out path)]."""
  if not _WORKDIR.value or not _OUT.value:
    raise ConfigError('--workdir and --out are required.')
  outputs = seeds_and_outputs()
  cli.check_positive(num_samples=_NUM.value, steps=_STEPS.value, batch_size=_BATCH.value)
  if _STEP.value is not None and _STEP.value < 0:
    raise ConfigError(f'--checkpoint_step must be >= 0 (got {_STEP.value}).')
  from ldlm_jax.diffusion.solver import SOLVERS
  if _SOLVER.value is not None and _SOLVER.value not in SOLVERS:
    raise ConfigError(f'--solver {_SOLVER.value!r} is not one of {tuple(SOLVERS)}.')
  if _TMIN.value is not None and not 0.0 < _TMIN.value < 1.0:
    raise ConfigError(f'--t_min must be in (0, 1) (got {_TMIN.value}).')
  if _TOKEN_DECODER.value and not os.path.isdir(_TOKEN_DECODER.value):
    raise ConfigError(f'--token_decoder {_TOKEN_DECODER.value} is not a directory; pass the '
                      'folder post_train_decoder wrote.')
  if _REMDM.value is not None and not 0.0 <= _REMDM.value <= 1.0:
    raise ConfigError(f'--remdm_eta must be in [0, 1] (got {_REMDM.value}; 0 = no remasking).')
  if _PROMPTS.value is None:
    if _GUIDANCE.value != 1.0 or flags.FLAGS['samples_per_prompt'].present:
      raise ConfigError('--guidance and --samples_per_prompt apply to prompted sampling; '
                        'pass --prompts FILE.jsonl too.')
  else:
    if flags.FLAGS['num_samples'].present:
      raise ConfigError('--num_samples is for unconditional sampling; with --prompts use '
                        '--samples_per_prompt.')
    if _TOKEN_DECODER.value:
      raise ConfigError('--token_decoder is not supported with --prompts; leave it out.')
    if _REMDM.value is not None:
      raise ConfigError('--remdm_eta applies to unconditional sampling of an MDLM run; '
                        'leave it out with --prompts.')
    if _GUIDANCE.value < 0:
      raise ConfigError(f'--guidance must be >= 0 (got {_GUIDANCE.value}; 1 = no guidance).')
    cli.check_positive(samples_per_prompt=_PER_PROMPT.value)
    if not os.path.isfile(_PROMPTS.value):
      raise ConfigError(f'--prompts {_PROMPTS.value} is not a file; pass a JSONL file of '
                        '{"prompt": ...} or {"text": ...} records.')
  return outputs


def main(argv):
  del argv
  outputs = check_flags()
  from ldlm_jax import api
  from ldlm_jax.sampling import write_jsonl
  prompts = None
  if _PROMPTS.value:
    from ldlm_jax import conditioning
    prompts = conditioning.read_prompts(_PROMPTS.value)   # empty or malformed: stop before restoring
  model = api.load(_WORKDIR.value, _STEP.value, use_ema=not _NO_EMA.value)
  # One code path with the Python API: the flags are Model.generate's arguments (the model keeps
  # the compiled sampler between seeds).
  options = dict(steps=_STEPS.value, batch_size=_BATCH.value, time_grid=_GRID.value,
                 t_min=_TMIN.value, solver=_SOLVER.value, final=_FINAL.value, progress=True)
  for seed, out in outputs:
    t0 = time.time()
    if prompts is not None:
      result = model.generate(prompts=prompts, samples_per_prompt=_PER_PROMPT.value,
                              guidance=_GUIDANCE.value, seed=seed, **options)
      what = f'prompted samples (guidance {_GUIDANCE.value})'
    else:
      result = model.generate(_NUM.value, token_decoder=_TOKEN_DECODER.value,
                              remdm_eta=_REMDM.value, seed=seed, **options)
      what = 'samples'
    write_jsonl(out, result.records)
    compiled = prompts is not None or seed == outputs[0][0]   # the unconditional sampler is kept
    print(f'wrote {len(result.records)} {what} (seed {seed}) from step {model.step} to {out} '
          f'({time.time() - t0:.1f}s{" including compilation" if compiled else ""})')
    for text in result.texts[:3]:
      print('  ' + text[:300])

if __name__ == '__main__':
  cli.run_absl(main)

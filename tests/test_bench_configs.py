"""Every benchmark works on every config in configs/ (a regression test).

configs/demo.py (the self-attention latent modules the FLOP count used to
miss) runs each subcommand's real code path for one step in this process
(train: the compiled donated step; sample: the scan sampler; compile: the
AOT plan), one layer per module to keep the compiles short;
configs/tiny.py has the CLI tests in tests/test_bench.py. Every config and every configs/ablations.py variant
gets the cheap part that differs between configs: the abstract model, the
analytic FLOP counts of a train step and a sampler call, and the traced
(never compiled) train loss.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ldlm_jax.benchmarks import aot, flops, gpu_report, runs, timing
from ldlm_jax.diffusion import timesteps as timesteps_lib
from ldlm_testing import REPO, config_module, load_config_file


ABLATIONS = config_module('ablations')
LATENT_SPACE_CONFIGS = config_module('latent_spaces')
LATENT_SPACES = [f'{v}{size}' for v in ('ldlm', 'scratch_emb', 'encoder_emb', 'tencdm', 'cosmos',
                                        'cosmos_stage2') for size in ('', '_cpu')]
TEXTLDM_CONFIGS = config_module('textldm')
# Stage two needs the diffusion-process keys; a schema without them covers stage one only.
TEXTLDM = [f'{v}{size}' for v in TEXTLDM_CONFIGS.VARIANTS if not TEXTLDM_CONFIGS.missing_keys(v)
           for size in ('', '_cpu')]
ALL_CONFIGS = ([(name, None) for name in ('tiny', 'demo', 'lm1b', 'owt')]
               + [('ablations', v) for v in ABLATIONS.VARIANTS]
               + [('latent_spaces', v) for v in LATENT_SPACES]
               + [('textldm', v) for v in TEXTLDM])


def _config(name, variant):
  if name == 'ablations':
    return ABLATIONS.get_config(variant)
  if name == 'latent_spaces':
    config = LATENT_SPACE_CONFIGS.get_config(variant)
    if variant.startswith('cosmos_stage2'):   # needs a stage-one run; only its name is read here
      config.train.init_from.workdir = '/stage_one_run'
    return config
  if name == 'textldm':
    config = TEXTLDM_CONFIGS.get_config(variant)
    if 'stage2' in variant:   # needs a stage-one run; only its name is read here
      config.train.init_from.workdir = '/stage_one_run'
    return config
  return load_config_file(name)


def _quiet(_):
  pass


@pytest.mark.parametrize('name,variant', ALL_CONFIGS,
                         ids=[f'{n}:{v}' if v is not None else n for n, v in ALL_CONFIGS])
@pytest.mark.slow
def test_flop_counts_and_abstract_model_on_every_config(name, variant):
  config = _config(name, variant)
  model, _ = runs.build_model(config, _quiet, abstract=True)
  train = flops.train_step_flops(model, int(config.train.batch_size))
  assert train['total'] == pytest.approx(sum(v for k, v in train.items() if k != 'total'))
  assert all(v >= 0 for v in train.values())
  if model.latent_space.trains_diffusion:
    assert train['denoiser'] > 0
  else:   # cosmos stage one: the autoencoder alone
    assert train['denoiser'] == 0 and train['latent_encoder'] > 0
  sample = flops.sampling_flops(model, int(config.sample.batch_size), 3)
  assert sample['total'] == pytest.approx(3 * sample['per_step'] + sample['decode'])
  assert sample['decode'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('name', ['ablations:latent_encoder_self_attention', 'textldm:textldm_cpu'])
def test_train_loss_traces_on_distinct_architectures(name):
  """The loss of each distinct model shape traces (eval_shape: nothing compiled)."""
  base, _, variant = name.partition(':')
  config = _config(base, variant if base in ('ablations', 'textldm') else None)
  config.train.batch_size = 2
  model, choice = runs.build_model(config, _quiet, abstract=True)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  hidden = model.dims.feature_dim
  frozen = jax.eval_shape(lambda p: model.frozen_inputs(p, np.zeros(hidden, np.float32),
                                                        np.ones(hidden, np.float32)),
                          choice.encoder.params)
  sampler = timesteps_lib.init_state(int(config.timesteps.num_bins))
  tokens = jax.ShapeDtypeStruct((2, model.dims.seq_len), np.int32)
  grad_fn = jax.grad(model.loss_fn, has_aux=True)
  grads, aux = jax.eval_shape(functools.partial(grad_fn, step=0, sampler_state=sampler),
                              params, frozen, tokens, jax.random.PRNGKey(0))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert aux['ce_loss'].shape == ()


PEAK = timing.Peak(1e12, 'test')
ONE_STEP = runs.Options(warmup=0, iters=1, repeats=1)


def _small(name):
  config = load_config_file(name)
  for part in ('latent_encoder', 'latent_decoder', 'denoiser'):
    config.model[part].num_layers = 1
  config.train.batch_size = 2
  config.sample.batch_size = 2
  config.sample.num_steps = 2
  return config


@pytest.mark.slow
@pytest.mark.parametrize('name', ['demo'])
def test_every_subcommand_runs_one_step_on_cpu_configs(name, tmp_path):
  train = runs.train_benchmark(_small(name), ONE_STEP, PEAK, log=_quiet)
  assert np.isfinite(train['metrics_over_timed_steps']['loss'])
  assert train['flops']['analytic_per_step']['latent_decoder'] > 0
  sample = runs.sample_benchmark(_small(name), ONE_STEP, PEAK, log=_quiet)
  assert sample['flops']['analytic_per_call']['decode'] > 0 and sample['per_step_s'] >= 0
  plan = aot.aot_train_step(_small(name), jax.devices()[:1], log=_quiet)
  p = plan['plan_per_device']
  assert p['activations_and_temporaries'] > 0
  assert p['total'] == sum(v for k, v in p.items() if k != 'total')   # the parts add up

  # scripts/bench_gpu.sh's summary of these three results (and a failed step).
  steps = {'train_ce': train, 'sample_owt': sample, 'compile_owt': plan}
  with open(tmp_path / 'steps.tsv', 'w') as f:
    for step_name, result in steps.items():
      (tmp_path / f'{step_name}.json').write_text(json.dumps({'results': [result]}))
      f.write(f'{step_name}\t0\t12\tpython -m ldlm_jax.bench ...\n')
    f.write('train_noflags\t124\t90\tpython -m ldlm_jax.bench ...\n')
  summary, markdown = gpu_report.summarize(str(tmp_path))
  rows = markdown.splitlines()
  assert [s['name'] for s in summary['steps']] == list(steps) + ['train_noflags']
  assert rows[2].startswith('| train_ce (CE chunk 8192, remat none) |') and 'ms/step' in rows[2]
  assert 'per 2 x 2 steps' in rows[3] and rows[4].startswith('| compile_owt |')
  assert rows[5] == '| train_noflags | timed out | | | |'


def test_bench_gpu_script_without_a_gpu_says_so_and_writes_nothing(tmp_path):
  out = tmp_path / 'out'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHON=sys.executable)
  proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'bench_gpu.sh'), str(out)],
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 3, proc.stdout + proc.stderr
  assert proc.stdout == '' and len(proc.stderr.strip().splitlines()) == 1
  assert 'no GPU visible to JAX (backend: cpu)' in proc.stderr
  assert not out.exists()
  usage = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'bench_gpu.sh')],
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and 'usage' in usage.stderr

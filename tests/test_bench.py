"""Benchmarks: analytic FLOPs against XLA's count, the random encoder, and the
three `python -m ldlm_jax.bench` subcommands end to end on configs/tiny.py.

FLOPs tolerance: the analytic count is matmuls only, so XLA's count of the
same program is a little higher (norms, softmax, GELU, the optimizer) and,
for the latent decoder, a little lower (XLA computes the first layer's
projections of the batch-independent learned queries once, not per
example). At widths >= 128 both effects stay under 5% per component; the
whole tiny train step (widths 32, dominated by the frozen encoder and the
vocab head) under 10%.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax.benchmarks import encoders, flops, memory
from ldlm_jax.models.ldlm import LDLM
from ldlm_testing import REPO, tiny_config

COMPONENT_TOLERANCE = 0.05
STEP_TOLERANCE = 0.10


def _xla_flops(fn, *args):
  return jax.jit(fn).lower(*args).compile().cost_analysis()['flops']


@pytest.fixture(scope='module')
def wide_model():
  """configs/tiny.py with every trained module 128 wide (matmuls dominate) and the
  MiniLM architecture as frozen encoder, parameters abstract (nothing allocated)."""
  c = tiny_config()
  for name in ('latent_encoder', 'latent_decoder', 'token_decoder', 'denoiser'):
    c.model[name].width = 128
    c.model[name].num_heads = 4
  c.model.latent_dim = 32
  enc = encoders.random_encoder('minilm-l6', abstract=True)
  model = LDLM(c, enc)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  return model, enc, params


@pytest.mark.slow
def test_component_flops_match_xla(wide_model):
  model, enc, params = wide_model
  d = model.dims
  B = 4
  S = jax.ShapeDtypeStruct
  z = S((B, d.latent_len, d.latent_dim), jnp.float32)
  t = S((B,), jnp.float32)
  h = S((B, d.seq_len, d.feature_dim), jnp.float32)
  ids = S((B, d.seq_len), jnp.int32)
  # (program, its arguments, analytic count): forward-only and forward+backward.
  denoise_grad = jax.grad(
      lambda p, z_, t_: jnp.sum(model.denoise(p, z_, t_, jax.lax.stop_gradient(z_))),
      argnums=(0, 1))
  decode_grad = jax.grad(lambda p, z_: jnp.sum(model.decode(p, z_)), argnums=(0, 1))
  cases = {
      'denoiser fwd+bwd': (denoise_grad, (params, z, t),
                           flops.denoiser(model.denoiser, B, d.latent_len).total),
      'latent decoder fwd+bwd': (decode_grad, (params, z), flops.perceiver(
          model.latent_decoder, B, d.latent_len, d.latent_dim, input_grad=True).total),
      'latent encoder fwd': (model.encode, (params, h), flops.perceiver(
          model.latent_encoder, B, d.seq_len, d.feature_dim, input_grad=False).forward),
      'token decoder fwd': (model.token_logits, (params, h), flops.token_decoder(
          model.token_decoder, B, d.seq_len, d.feature_dim, trained=False).forward),
      'frozen encoder fwd (4 of 6 blocks)': (model.raw_features, (enc.params, ids),
                                             flops.frozen_encoder(enc, -3, B, d.seq_len).forward),
  }
  for name, (fn, args, analytic) in cases.items():
    xla = _xla_flops(fn, *args)
    assert abs(xla / analytic - 1) < COMPONENT_TOLERANCE, (name, xla, analytic)
  # The self-conditioning pass is exactly one more denoiser forward.
  fwd = flops.denoiser(model.denoiser, B, d.latent_len, trained=False)
  assert fwd.backward == 0 and fwd.forward == pytest.approx(
      flops.denoiser(model.denoiser, B, d.latent_len).forward)


def test_self_cond_accounting(wide_model):
  model, _, _ = wide_model
  c = model.config
  den_fwd = flops.denoiser(model.denoiser, 8, model.dims.latent_len, trained=False).forward
  expected = {('cond', 0.5): (0.5, 1.0), ('per_example', 0.5): (1.0, 1.0),
              ('cond', 0.0): (0.0, 0.0), ('cond', 1.0): (1.0, 1.0)}
  for (mode, p), (passes, xla_passes) in expected.items():
    c.diffusion.self_cond_mode, c.diffusion.self_cond_prob = mode, p
    assert flops.self_cond_passes(c) == passes
    assert flops.self_cond_passes(c, xla_view=True) == xla_passes
    assert flops.train_step_flops(model, 8)['self_condition'] == pytest.approx(passes * den_fwd)


def test_random_encoder_has_the_released_architecture(monkeypatch):
  enc = encoders.random_encoder('gpt2', abstract=True)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(enc.params))
  assert n_params == 124_439_808            # GPT-2 small, HF's count (tied LM head)
  assert enc.params['wte']['embedding'].shape == (50257, 768)
  assert (enc.num_layers, enc.hidden_size, enc.max_positions) == (12, 768, 1024)
  bert = encoders.random_encoder('bert-base', abstract=True)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(bert.params)) == 108_891_648
  # Without weights on the machine the benchmark falls back and says so.
  monkeypatch.delenv('LDLM_GPT2_PATH', raising=False)
  c = tiny_config()
  c.encoder.name = 'gpt2'
  choice = encoders.benchmark_encoder(c, abstract=True)
  assert choice.random_weights and 'RANDOMLY INITIALISED' in choice.note
  assert isinstance(choice.encoder.params['wte']['embedding'], jax.ShapeDtypeStruct)


def test_sharded_bytes_per_device():
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1), ('x',))
  tree = {'a': jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, P('x'))),
          'b': jax.ShapeDtypeStruct((3,), jnp.bfloat16)}
  assert memory.sharded_bytes_per_device(tree) == 8 * 4 * 4 + 3 * 2


def test_preset_expansion_keeps_user_overrides_last():
  from ldlm_jax import bench
  argv = ['bench', 'sample', '--preset', 'owt_sample', '--config.sample.num_steps=2']
  out = bench.expand_preset(argv)
  assert out[1] == f'--config={os.path.join(REPO, "configs", "owt.py")}'
  assert '--config.sample.num_steps=1024' in out
  assert out.index('--config.sample.num_steps=1024') < out.index('--config.sample.num_steps=2')


def _bench(tmp_path, *args, timeout=400):
  out = tmp_path / 'result.json'
  cmd = [sys.executable, '-m', 'ldlm_jax.bench', *args, f'--json_out={out}']
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_train_cli_end_to_end(tmp_path):
  # Dense CE: XLA's cost analysis counts the chunked CE's lax.scan body once.
  payload, stdout = _bench(tmp_path, 'train', '--config', 'configs/tiny.py', '--warmup=1',
                           '--iters=2', '--repeats=2', '--peak_tflops=0.5',
                           '--config.loss.ce_vocab_chunk=0')
  (r,) = payload['results']
  t = r['step_time']
  assert 0 < t['min_s'] <= t['median_s'] <= t['max_s'] and (t['iters'], t['repeats']) == (2, 2)
  assert r['tokens_per_s'] == pytest.approx(8 * 16 / t['median_s'])
  fl = r['flops']
  assert fl['analytic_per_step']['total'] == pytest.approx(sum(
      v for k, v in fl['analytic_per_step'].items() if k != 'total'))
  assert abs(fl['xla_cost_analysis_per_step'] / fl['analytic_per_step_as_xla_counts'] - 1) \
      < STEP_TOLERANCE
  assert r['utilization'] == pytest.approx(
      fl['analytic_per_step']['total'] / t['median_s'] / 0.5e12)
  mem = r['memory']['compiled']
  assert mem['argument'] > 0 and mem['temp'] > 0 and mem['alias'] > 0   # the state is donated
  assert np.isfinite(r['metrics_over_timed_steps']['loss'])
  assert r['metrics_over_timed_steps']['nonfinite'] == 0.0
  assert 'step time:' in stdout and 'utilization' in stdout


@pytest.mark.slow
def test_sample_cli_end_to_end_with_python_loop(tmp_path):
  payload, stdout = _bench(tmp_path, 'sample', '--config', 'configs/tiny.py',
                           '--config.sample.num_steps=6', '--compare_python_loop', '--warmup=1',
                           '--iters=2', '--repeats=2', '--peak_tflops=0.5')
  (r,) = payload['results']
  assert r['num_steps'] == 6 and r['batch_size'] == 4
  assert r['tokens_per_s'] == pytest.approx(4 * 16 / r['sampler_call']['median_s'])
  assert r['flops']['analytic_per_call']['total'] == pytest.approx(
      6 * r['flops']['analytic_per_call']['per_step'] + r['flops']['analytic_per_call']['decode'])
  loop = r['python_loop']
  # Same keys, same grid, same update: the two samplers compute the same latents.
  assert loop['relative_difference'] < 1e-5
  assert loop['speedup'] > 1.0
  assert 'faster' in stdout


@pytest.mark.slow
def test_compile_cli_two_devices(tmp_path):
  payload, stdout = _bench(tmp_path, 'compile', '--config', 'configs/tiny.py', '--devices=2',
                           '--fsdp=2')
  (r,) = payload['results']
  assert r['num_devices'] == 2 and r['mesh'] == {'data': 1, 'fsdp': 2}
  assert r['per_device_batch'] == 4
  s = r['sharded_arguments_per_device']
  assert s['ema_params'] == s['params']                      # same shapes, same shardings
  assert s['opt_state'] >= 2 * s['params']                   # AdamW mu and nu
  # fsdp=2 splits the large arrays: less than all params, at least half of them.
  c = tiny_config()
  full = sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(
      jax.eval_shape(LDLM(c, encoders.random_encoder('minilm-l6', abstract=True)).init,
                     jax.random.PRNGKey(0))))
  assert full / 2 <= s['params'] < full
  assert r['compiled_per_device']['temp'] > 0
  assert 'fits' in stdout


@pytest.mark.slow
def test_out_and_json_flags(tmp_path):
  """--out is the JSON file; --json also prints the payload to stdout, after the readable report."""
  out = tmp_path / 'r.json'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run([sys.executable, '-m', 'ldlm_jax.bench', 'compile', '--config', 'configs/tiny.py',
                         '--devices=1', f'--out={out}', '--json'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report, _, printed = proc.stdout.partition(f'wrote {out}\n')
  assert 'compile  train step' in report and 'plan per device' in report
  assert json.loads(printed) == json.loads(out.read_text())

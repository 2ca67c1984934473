"""Diagnostic plots from a synthetic work directory: files, PNG validity, the numbers behind them."""

import json
import math
import os

import numpy as np
import pytest

from ldlm_jax import plots as plots_cli
from ldlm_jax.evaluation import plots

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
ALL_PLOTS = ['losses.png', 'reconstruction.png', 'schedules.png', 'loss_vs_t.png', 'adaptive_cdf.png',
             'latent_health.png']


def _write_jsonl(path, records):
  with open(path, 'w', encoding='utf-8') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def _train_record(step):
  decay = math.exp(-step / 50)
  return {'step': step, 'loss': 3 * decay + 1, 'diffusion_loss': decay, 'reconstruction_loss': decay + 0.5,
          'ce_loss': 10 * decay + 0.01, 'token_accuracy': 1 - decay, 'encoder_lambda': min(step / 60, 1.0),
          'latent_norm': 1 - 0.01 * step / 100, 'learning_rate': 1e-3 * min(step / 30, 1.0),
          'grad_norm': 2 * decay + 0.1, 'nonfinite': 0.0, 'steps_per_sec': 10.0, 'tokens_per_sec': 1e3}


def _eval_record(step):
  decay = math.exp(-step / 50)
  return {'step': step, 'eval_loss': 3 * decay + 1.1, 'eval_diffusion_loss': decay,
          'eval_reconstruction_loss': decay + 0.6, 'eval_ce_loss': 10 * decay + 0.1,
          'eval_token_accuracy': 0.9 * (1 - decay), 'eval_latent_norm': 0.99,
          'eval_latent_content_fraction': 0.2 + 0.5 * decay, 'eval_content_snr1_t': 0.12,
          **{f'eval_denoise_acc_t{t:.2f}': (1 - decay) * (1 - t) for t in (0.05, 0.2, 0.5, 0.9)}}


def _timesteps_record(step, num_bins=5):
  # A loss increasing in t; the sampler's probabilities as the adaptive rule sets them.
  t = (np.arange(num_bins) + 0.5) / num_bins
  bin_loss = (1 + 100 / step) * np.sqrt(t)
  increments = np.diff(bin_loss, prepend=0.0)
  return {'step': step, 'bin_loss': bin_loss.tolist(), 'probs': (increments / increments.sum()).tolist()}


@pytest.fixture
def run_dir(tmp_path):
  """A work directory as the trainer leaves it, with a resumed (duplicated) step and a NaN."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  records = []
  for step in range(10, 110, 10):
    records.append(_train_record(step))
    if step % 50 == 0:
      records.append(_eval_record(step))
  bad = _train_record(60)
  bad['grad_norm'] = 'nan'   # how training/logging.py writes a non-finite value
  records.insert(6, bad)     # step 60 logged twice: the later line wins
  _write_jsonl(workdir / 'metrics.jsonl', records)
  _write_jsonl(workdir / 'timesteps.jsonl',
               [_timesteps_record(s) for s in (20, 40, 60, 80, 100, 100)])
  (workdir / 'config.json').write_text(json.dumps({'timesteps': {'sampler': 'uniform', 'num_bins': 5}}))
  return str(workdir)


def _assert_png(path):
  from matplotlib import image
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  assert os.path.getsize(path) > 10_000   # a drawn figure, not an empty canvas
  pixels = image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] >= 400 and pixels.shape[1] >= 400
  assert pixels[..., :3].std() > 0.05      # not a blank image


@pytest.mark.slow
def test_write_plots_draws_every_png(run_dir):
  report = plots.write_plots(run_dir)
  assert report.skipped == []
  assert [os.path.basename(p) for p in report.written] == ALL_PLOTS
  for path in report.written:
    assert os.path.dirname(path) == os.path.join(run_dir, 'plots')
    _assert_png(path)
  # No temporary file is left next to the pictures.
  assert sorted(os.listdir(os.path.join(run_dir, 'plots'))) == sorted(ALL_PLOTS)


@pytest.mark.slow
def test_cli_prints_written_paths(run_dir, tmp_path, capsys):
  out_dir = str(tmp_path / 'pictures')
  assert plots_cli.main(['--workdir', run_dir, '--out_dir', out_dir, '--num_curves', '2']) == 0
  printed = capsys.readouterr().out.split()
  assert printed == [os.path.join(out_dir, name) for name in ALL_PLOTS]


def test_missing_metrics_is_one_sentence_and_exit_2(tmp_path, capsys):
  empty = tmp_path / 'not_a_run'
  empty.mkdir()
  assert plots_cli.main(['--workdir', str(empty)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and 'metrics.jsonl' in err and '\n' not in err
  assert not (empty / 'plots').exists()


def test_metrics_without_timesteps_skips_the_per_t_plots(run_dir):
  os.remove(os.path.join(run_dir, 'timesteps.jsonl'))
  report = plots.write_plots(run_dir)
  assert [os.path.basename(p) for p in report.written] == ALL_PLOTS[:3] + ALL_PLOTS[5:]
  assert [s.split(' ')[0] for s in report.skipped] == ['loss_vs_t.png', 'adaptive_cdf.png']
  assert all('timesteps.jsonl' in s for s in report.skipped)


def test_load_run_logs_splits_dedupes_and_reads_nan(run_dir):
  logs = plots.load_run_logs(run_dir)
  assert [r['step'] for r in logs.train] == list(range(10, 110, 10))
  assert [r['step'] for r in logs.eval] == [50, 100]
  assert [r['step'] for r in logs.timesteps] == [20, 40, 60, 80, 100]
  assert logs.sampler == 'uniform'
  steps, grad_norm = plots.series(logs.train, 'grad_norm')
  assert steps.tolist() == list(range(10, 110, 10))
  # Step 60 was logged twice; the first copy had 'nan', the second (kept) a number.
  assert np.isfinite(grad_norm).all()
  logs.train[0]['grad_norm'] = 'nan'
  assert np.isnan(plots.series(logs.train, 'grad_norm')[1][0])


def test_torn_last_line_is_ignored_but_a_bad_middle_line_is_an_error(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  good = json.dumps(_train_record(10))
  path.write_text(good + '\n' + '{"step": 20, "lo')
  assert [r['step'] for r in plots.load_run_logs(str(tmp_path)).train] == [10]
  path.write_text('{"step": 20, "lo\n' + good + '\n')
  with pytest.raises(plots.PlotsError, match='line 1'):
    plots.load_run_logs(str(tmp_path))
  path.write_text(good + '\n')
  assert plots.load_run_logs(str(tmp_path)).sampler is None   # no config.json


def test_warped_bin_centers_follow_the_piecewise_linear_cdf():
  # F(k/K) = sum_{j<k} p_j; the center of bin k sits at F(k/K) + p_k / 2.
  probs = [0.1, 0.2, 0.3, 0.4]
  np.testing.assert_allclose(plots.warped_bin_centers(probs), [0.05, 0.2, 0.45, 0.8], atol=1e-6)
  np.testing.assert_allclose(plots.warped_bin_centers([0.25] * 4), plots.bin_centers(4), atol=1e-6)


def test_pick_checkpoints_spreads_and_keeps_the_last():
  assert plots.pick_checkpoints(10, 4) == [0, 3, 6, 9]
  assert plots.pick_checkpoints(3, 4) == [0, 1, 2]
  assert plots.pick_checkpoints(5, 1) == [4]
  assert plots.pick_checkpoints(0, 4) == []


def test_denoise_curve_is_read_from_an_evaluation_record():
  t, acc = plots.denoise_curve({'step': 3, 'eval_denoise_acc_t0.50': 0.25,
                                'eval_denoise_acc_t0.05': 0.9, 'eval_loss': 1.0})
  assert t.tolist() == [0.05, 0.5] and acc.tolist() == [0.9, 0.25]

"""Diagnostic plots of a training run, drawn from its work directory.

Reads what the trainer writes (metrics.jsonl, timesteps.jsonl) and draws the
curves the paper uses to judge a run (docs/method.md Section 8): the three losses, token
reconstruction accuracy, the latent norm, the warmup lambda and learning rate,
the diffusion loss against t and against the adaptive sampler's warped time
F(t) (paper Fig. 5: with adaptive sampling the loss is close to linear in
F(t)), and the learned CDF F(t) with its density.

Matplotlib's object API with the Agg canvas is used, never pyplot: no GUI
backend is touched, no global figure state is kept, and it works on headless
hosts. Each PNG is written under a temporary name and renamed, so an
interrupted run never leaves a half-written picture.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from ldlm_jax import fileio
from ldlm_jax.errors import UserError

# A training line has 'loss'; an evaluation line has 'eval_loss' (training/logging.py).
_TRAIN_MARKER = 'loss'
_EVAL_MARKER = 'eval_loss'


class PlotsError(UserError):
  """The work directory lacks, or holds a garbled copy of, what the plots are drawn from."""


@dataclasses.dataclass
class RunLogs:
  """The logged series of one run, each sorted by step with one record per step."""
  train: list[dict]
  eval: list[dict]
  timesteps: list[dict]   # {'step', 'bin_loss': (K,), 'probs': (K,)}
  sampler: str | None = None   # config.json's timesteps.sampler ('adaptive', 'uniform'), if known


@dataclasses.dataclass
class PlotReport:
  written: list[str]      # paths of the PNG files written
  skipped: list[str]      # one sentence per plot left out, and why


def _read_jsonl(path: str) -> list[dict]:
  with open(path, encoding='utf-8') as f:
    lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
  records = []
  for index, (number, line) in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if index == len(lines) - 1:
        break  # a torn last line from a run killed mid-write: the lines before it stand
      raise PlotsError(f'{path} line {number} is not JSON ({e.msg}); '
                       'repair or delete that line and run again.') from e
  return records


def _last_per_step(records: list[dict]) -> list[dict]:
  """One record per step (the last one logged wins, as after a resume), sorted by step."""
  by_step = {}
  for r in records:
    if 'step' in r:
      by_step[int(r['step'])] = r
  return [by_step[s] for s in sorted(by_step)]


def load_run_logs(workdir: str) -> RunLogs:
  """Reads metrics.jsonl (required) and timesteps.jsonl (optional) of a work directory."""
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(metrics_path):
    raise PlotsError(f'{workdir} has no metrics.jsonl; pass the --workdir of a training run '
                     '(python -m ldlm_jax.train ... --workdir DIR) that has logged at least once.')
  records = _read_jsonl(metrics_path)
  train = _last_per_step([r for r in records if _TRAIN_MARKER in r])
  evals = _last_per_step([r for r in records if _EVAL_MARKER in r])
  timesteps_path = os.path.join(workdir, 'timesteps.jsonl')
  timesteps = []
  if os.path.isfile(timesteps_path):
    timesteps = [r for r in _last_per_step(_read_jsonl(timesteps_path))
                 if r.get('bin_loss') and r.get('probs')]
  return RunLogs(train=train, eval=evals, timesteps=timesteps, sampler=_read_sampler(workdir))


def _read_sampler(workdir: str) -> str | None:
  """The run's timestep sampler from config.json; None when that file is absent or unreadable."""
  try:
    with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
      return json.load(f)['timesteps']['sampler']
  except (OSError, ValueError, KeyError, TypeError):
    return None


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of `key`; non-finite values logged as strings ('nan') become NaN."""
  steps, values = [], []
  for r in records:
    if key in r:
      steps.append(int(r['step']))
      try:
        values.append(float(r[key]))
      except (TypeError, ValueError):
        values.append(math.nan)
  return np.asarray(steps, np.int64), np.asarray(values, np.float64)


def pick_checkpoints(num_records: int, num_curves: int) -> list[int]:
  """Indices of up to `num_curves` records spread evenly over the run, the last always included."""
  if num_records <= 0:
    return []
  if num_records <= num_curves:
    return list(range(num_records))
  if num_curves == 1:
    return [num_records - 1]
  picked = np.round(np.linspace(0, num_records - 1, num_curves)).astype(int)
  return sorted(set(picked.tolist()))


def bin_centers(num_bins: int) -> np.ndarray:
  return (np.arange(num_bins, dtype=np.float64) + 0.5) / num_bins


def warped_bin_centers(probs_K) -> np.ndarray:
  """F(t) at the bin centers: the warped time at which each bin's loss was measured.

  F is linear inside a bin and t is uniform there, so the bin's mean loss
  belongs to the bin's mean F, which is F at the bin center.
  """
  from ldlm_jax.diffusion import timesteps  # noqa: PLC0415  (jax/flax load only for the per-t plots)
  probs_K = np.asarray(probs_K, np.float32)
  return np.asarray(timesteps.cdf(probs_K, bin_centers(probs_K.shape[0])), np.float64)


# --------------------------------------------------------------------------- drawing


def _figure(num_panels: int, title: str):
  from matplotlib.figure import Figure
  fig = Figure(figsize=(5.0 * num_panels, 4.0), layout='constrained')
  axes = fig.subplots(1, num_panels, squeeze=False)[0]
  fig.suptitle(title)
  return fig, axes


def _save(fig, path: str) -> str:
  with fileio.atomic_open(path, binary=True) as f:
    fig.savefig(f, format='png', dpi=110)
  return path


def _use_log_scale(values: np.ndarray) -> bool:
  """Log y when a positive curve spans more than a decade (CE falls from ~log V towards 0)."""
  finite = values[np.isfinite(values)]
  return finite.size > 1 and finite.min() > 0 and finite.max() / finite.min() > 10


def _train_eval_panel(ax, logs: RunLogs, key: str, title: str, log_scale_ok: bool = True) -> bool:
  """Draws the training and evaluation series of `key`; False if neither was logged."""
  train_steps, train_values = series(logs.train, key)
  eval_steps, eval_values = series(logs.eval, 'eval_' + key)
  if train_steps.size == 0 and eval_steps.size == 0:
    ax.set_visible(False)
    return False
  if train_steps.size:
    ax.plot(train_steps, train_values, label='train', color='tab:blue', lw=1.2)
  if eval_steps.size:
    ax.plot(eval_steps, eval_values, label='eval', color='tab:orange', lw=1.5, marker='o', ms=3)
  if log_scale_ok and _use_log_scale(np.concatenate([train_values, eval_values])):
    ax.set_yscale('log')
  ax.set_title(title)
  ax.set_xlabel('step')
  ax.grid(alpha=0.3)
  ax.legend()
  return True


def plot_losses(logs: RunLogs, path: str) -> str | None:
  fig, axes = _figure(4, 'Losses (train and eval)')
  drawn = [_train_eval_panel(ax, logs, key, title) for ax, (key, title) in zip(axes, (
      ('loss', 'total loss'), ('diffusion_loss', 'diffusion loss (x0 MSE)'),
      ('reconstruction_loss', 'reconstruction loss (MSE to h_n)'),
      ('ce_loss', 'token decoder CE')))]
  return _save(fig, path) if any(drawn) else None


def plot_reconstruction(logs: RunLogs, path: str) -> str | None:
  fig, axes = _figure(2, 'Latent autoencoder')
  drawn = [_train_eval_panel(axes[0], logs, 'token_accuracy', 'token reconstruction accuracy',
                             log_scale_ok=False),
           _train_eval_panel(axes[1], logs, 'latent_norm', 'latent norm (mean |z| / sqrt(D))',
                             log_scale_ok=False)]
  if drawn[0]:
    axes[0].set_ylim(-0.02, 1.02)
  return _save(fig, path) if any(drawn) else None


def plot_schedules(logs: RunLogs, path: str) -> str | None:
  fig, axes = _figure(3, 'Schedules and optimisation')
  drawn = []
  for ax, key, title in ((axes[0], 'encoder_lambda', 'diffusion-to-encoder lambda'),
                         (axes[1], 'learning_rate', 'learning rate'),
                         (axes[2], 'grad_norm', 'gradient norm (before clipping)')):
    steps, values = series(logs.train, key)
    if steps.size == 0:
      ax.set_visible(False)
      drawn.append(False)
      continue
    ax.plot(steps, values, color='tab:green', lw=1.2)
    if key == 'grad_norm' and _use_log_scale(values):
      ax.set_yscale('log')
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    drawn.append(True)
  return _save(fig, path) if any(drawn) else None


def _finish_unit_interval_axes(axes) -> None:
  """x from 0 to 1 (t or F(t)), a light grid and a small legend on every panel."""
  for ax in axes:
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')


def _checkpoint_colors(count: int):
  from matplotlib import colormaps
  cmap = colormaps['viridis']
  return [cmap(x) for x in np.linspace(0.0, 0.85, max(count, 1))]


def plot_loss_vs_time(logs: RunLogs, path: str, num_curves: int = 4) -> str | None:
  """Per-bin diffusion loss against t and against the warped time F(t) (paper Fig. 5)."""
  picked = [logs.timesteps[i] for i in pick_checkpoints(len(logs.timesteps), num_curves)]
  if not picked:
    return None
  sampler = f' (sampler: {logs.sampler})' if logs.sampler else ''
  fig, axes = _figure(2, f'Diffusion loss per timestep bin (EMA){sampler}')
  last_loss, last_step = None, None
  for record, color in zip(picked, _checkpoint_colors(len(picked))):
    bin_loss = np.asarray(record['bin_loss'], np.float64)
    label = f'step {int(record["step"])}'
    axes[0].plot(bin_centers(bin_loss.shape[0]), bin_loss, color=color, marker='.', label=label)
    axes[1].plot(warped_bin_centers(record['probs']), bin_loss, color=color, marker='.', label=label)
    last_loss, last_step = bin_loss, int(record['step'])
  # The adaptive sampler makes dF/dt proportional to dL/dt with L = 0 at t = 0, so the
  # ideal curve is the straight line from (0, 0) to (1, loss of the last bin).
  axes[1].plot([0.0, 1.0], [0.0, float(last_loss[-1])], color='gray', ls='--', lw=1,
               label=f'linear in F (ideal, step {last_step})')
  axes[0].set_title('against t (uniform axis)')
  axes[0].set_xlabel('t')
  axes[1].set_title('against warped time F(t)')
  axes[1].set_xlabel('F(t)')
  for ax in axes:
    ax.set_ylabel('diffusion loss')
  _finish_unit_interval_axes(axes)
  return _save(fig, path)


def plot_adaptive_cdf(logs: RunLogs, path: str, num_curves: int = 4) -> str | None:
  """The learned CDF F(t) and its density K * p_k, per checkpoint."""
  from ldlm_jax.diffusion import timesteps  # noqa: PLC0415  (jax/flax load only for the per-t plots)
  picked = [logs.timesteps[i] for i in pick_checkpoints(len(logs.timesteps), num_curves)]
  if not picked:
    return None
  # With uniform sampling the state still tracks the adaptive rule's probabilities,
  # but t was never drawn from them: say so rather than let the picture mislead.
  title = ('Adaptive timestep sampler' if logs.sampler in (None, 'adaptive') else
           f'CDF the adaptive rule would use (this run drew t from {logs.sampler!r})')
  fig, axes = _figure(2, title)
  t_grid = np.linspace(0.0, 1.0, 401)
  for record, color in zip(picked, _checkpoint_colors(len(picked))):
    probs = np.asarray(record['probs'], np.float32)
    num_bins = probs.shape[0]
    label = f'step {int(record["step"])}'
    axes[0].plot(t_grid, np.asarray(timesteps.cdf(probs, t_grid)), color=color, label=label)
    edges = np.arange(num_bins + 1) / num_bins
    axes[1].stairs(probs * num_bins, edges, baseline=None, color=color, label=label, lw=1.3)
  axes[0].plot([0, 1], [0, 1], color='gray', ls='--', lw=1, label='uniform')
  axes[1].axhline(1.0, color='gray', ls='--', lw=1, label='uniform')
  axes[0].set_title('CDF F(t)')
  axes[0].set_ylabel('F(t)')
  axes[0].set_ylim(0.0, 1.0)
  axes[1].set_title('density dF/dt = K p_k')
  axes[1].set_ylabel('density')
  if _use_log_scale(np.concatenate([np.asarray(r['probs'], np.float64) for r in picked])):
    axes[1].set_yscale('log')
  for ax in axes:
    ax.set_xlabel('t')
  _finish_unit_interval_axes(axes)
  return _save(fig, path)


# Evaluation keys of the one-shot denoising curve: 'eval_denoise_acc_t0.20' -> t = 0.2.
_CURVE_PREFIX = 'eval_denoise_acc_t'


def denoise_curve(record: dict) -> tuple[np.ndarray, np.ndarray]:
  """(t, token accuracy) of the one-shot denoising curve logged in one evaluation record."""
  points = sorted((float(k[len(_CURVE_PREFIX):]), float(v)) for k, v in record.items()
                  if k.startswith(_CURVE_PREFIX))
  return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def plot_latent_health(logs: RunLogs, path: str, num_curves: int = 4) -> str | None:
  """What the latents carry and what the denoiser recovers from them.

  Left: the share of the latents' energy that varies across examples (a
  latent space that drifts to one constant vector falls towards 0). Middle:
  the t at which the diffused content's SNR falls to 1. Right: token accuracy
  of decode(x0_hat(z_t)) against t at up to `num_curves` evaluations: a
  denoiser that uses context keeps accuracy above chance at large t."""
  with_curve = [r for r in logs.eval if denoise_curve(r)[0].size]
  fig, axes = _figure(3, 'Latent space health')
  drawn = []
  for ax, key, title in ((axes[0], 'latent_content_fraction',
                          'content fraction (variance across examples / mean square)'),
                         (axes[1], 'content_snr1_t', 't where the content SNR falls to 1')):
    drawn.append(_train_eval_panel(ax, logs, key, title, log_scale_ok=False))
    if drawn[-1]:
      ax.set_ylim(0.0, 1.02)
  if with_curve:
    picked = [with_curve[i] for i in pick_checkpoints(len(with_curve), num_curves)]
    for record, color in zip(picked, _checkpoint_colors(len(picked))):
      t, acc = denoise_curve(record)
      axes[2].plot(t, acc, color=color, marker='o', ms=3, label=f'step {int(record["step"])}')
    axes[2].set_title('one-shot denoising: token accuracy of decode(x0_hat(z_t))')
    axes[2].set_xlabel('t')
    axes[2].set_ylim(-0.02, 1.02)
    _finish_unit_interval_axes([axes[2]])
    drawn.append(True)
  else:
    axes[2].set_visible(False)
  return _save(fig, path) if any(drawn) else None


# (file name, what it shows, the log it is drawn from, whether it takes num_curves, function)
PLOTS = (
    ('losses.png', 'losses', 'metrics.jsonl', False, plot_losses),
    ('reconstruction.png', 'token accuracy and latent norm', 'metrics.jsonl', False,
     plot_reconstruction),
    ('schedules.png', 'encoder lambda, learning rate, gradient norm', 'metrics.jsonl', False,
     plot_schedules),
    ('loss_vs_t.png', 'diffusion loss against t and F(t)', 'timesteps.jsonl', True,
     plot_loss_vs_time),
    ('adaptive_cdf.png', 'adaptive CDF and density', 'timesteps.jsonl', True, plot_adaptive_cdf),
    ('latent_health.png', 'content fraction, content SNR and one-shot denoising',
     'metrics.jsonl', True, plot_latent_health),
)


def write_plots(workdir: str, out_dir: str | None = None, num_curves: int = 4) -> PlotReport:
  """Draws every diagnostic of the run in `workdir` into `out_dir` (default WORKDIR/plots).

  Raises PlotsError when `workdir` has no metrics.jsonl. A plot whose data
  was never logged (no timesteps.jsonl, no evaluation yet) is skipped and
  named in the report rather than drawn empty.
  """
  if num_curves < 1:
    raise ValueError(f'num_curves must be at least 1, got {num_curves}.')
  logs = load_run_logs(workdir)
  out_dir = out_dir or os.path.join(workdir, 'plots')
  os.makedirs(out_dir, exist_ok=True)
  report = PlotReport(written=[], skipped=[])
  for file_name, description, source, takes_curves, plot_fn in PLOTS:
    path = os.path.join(out_dir, file_name)
    written = plot_fn(logs, path, num_curves) if takes_curves else plot_fn(logs, path)
    if written:
      report.written.append(written)
    else:
      report.skipped.append(f'{file_name} ({description}): nothing logged for it in {source}.')
  return report

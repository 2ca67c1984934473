"""The training run: ties the frozen encoder, the data, the model and the step together.

Sections, in order (the resume order matters):
  1. config and work directory checks (a checkpoint that does not fit stops here)
  2. frozen encoder, tokenizer and device mesh
  3. normalization statistics (from the checkpoint, the run directory, or computed)
  4. data iterator
  5. train state: restored from the latest checkpoint (state, metric
     accumulator, data iterator), or created
  6. compiled steps, then the loop: log every `log_every`, evaluate every
     `eval_every`, sample every `sample_every`, checkpoint every
     `checkpoint_every` and at the end; SIGTERM checkpoints and exits.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ldlm_jax import conditioning, fileio
from ldlm_jax.config import validate
from ldlm_jax.data import pipeline as data_lib
from ldlm_jax.encoders import normalization as norm_lib
from ldlm_jax.encoders.registry import load_encoder_tokenizer, load_frozen_encoder
from ldlm_jax.errors import ConfigError
from ldlm_jax.methods import build_model, is_baseline
from ldlm_jax.models.ldlm import DENOISE_CURVE_TS, count_params
from ldlm_jax.training import checkpoint as ckpt_lib
from ldlm_jax.training import init_from as init_from_lib
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib
from ldlm_jax.training import step as step_lib
from ldlm_jax.training.logging import Progress, RunLogger

NORM_FILE = 'normalization.npz'


def denoise_curve_key(t: float) -> str:
  """The metrics.jsonl key of the one-shot denoising accuracy at noise level t."""
  return f'eval_denoise_acc_t{t:.2f}'


class NonFiniteLossError(RuntimeError):
  pass


class _Preemption:
  """Records SIGTERM or SIGINT (Ctrl-C) so the loop can checkpoint at the current step and exit.

  A second Ctrl-C while that checkpoint is written interrupts at once.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.name = ''
    self._previous = {}

  def __enter__(self):
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    self.name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def norm_signature(config, encoder) -> dict:
  return {'encoder': config.encoder.name, 'model_dir': os.path.basename(encoder.model_dir.rstrip('/')),
          'layer': int(config.encoder.layer), 'input': config.encoder.input,
          'seq_len': int(config.data.seq_len), 'num_chunks': int(config.encoder.norm_num_chunks),
          'min_var': float(config.encoder.norm_min_var)}


def compute_normalization(config, model, encoder, tokenizer) -> norm_lib.NormStats:
  """Per-dimension mean/sd of the frozen features over a sample of training chunks."""
  hidden = encoder.hidden_size
  if config.encoder.input == 'scratch' or is_baseline(model):   # no features read
    return norm_lib.NormStats(mean_H=np.zeros(hidden, np.float32), std_H=np.ones(hidden, np.float32))
  frozen = model.frozen_inputs(encoder.params, np.zeros(hidden), np.ones(hidden))
  feature_fn = jax.jit(lambda ids: model.raw_features(frozen.encoder_params, ids))
  chunks = data_lib.iter_train_chunks(config, tokenizer, int(config.encoder.norm_num_chunks))
  batch = 32
  batches = (chunks[i:i + batch] for i in range(0, len(chunks), batch))
  return norm_lib.compute_stats(feature_fn, batches, min_var=float(config.encoder.norm_min_var))


def load_or_compute_normalization(config, workdir, model, encoder, tokenizer, meta):
  """Checkpoint meta first (the run's own), then workdir/normalization.npz, else compute."""
  if meta is not None and 'norm_mean' in meta:
    return norm_lib.NormStats(mean_H=np.asarray(meta['norm_mean'], np.float32),
                              std_H=np.asarray(meta['norm_std'], np.float32))
  path = os.path.join(workdir, NORM_FILE)
  signature = norm_signature(config, encoder)
  if os.path.exists(path):
    stats, saved = norm_lib.load_with_metadata(path)
    if saved.get('signature') == signature:
      return stats
    _log(f'{path} was computed for {saved.get("signature")}; recomputing for this config.')
  t0 = time.time()
  stats = compute_normalization(config, model, encoder, tokenizer)
  _log(f'normalization statistics over {config.encoder.norm_num_chunks} chunks: '
       f'{time.time() - t0:.1f}s')
  if jax.process_index() == 0:
    norm_lib.save(stats, path, {'signature': signature})
  return stats


def _write_config(workdir: str, config) -> None:
  if jax.process_index() != 0:
    return
  fileio.write_text(os.path.join(workdir, 'config.json'),
                    config.to_json_best_effort(indent=2, sort_keys=True))


def decode_samples(tokenizer, tokens_BL, **extra) -> list[dict]:
  eos_token = tokenizer.tokenizer.id_to_token(tokenizer.eos_id)
  out = []
  for row in np.asarray(tokens_BL):
    out.append({'text': tokenizer.decode(row), 'tokens': row.tolist(), 'eos_token': eos_token,
                **extra})
  return out


def make_generate_fn(model, config, num_samples: int):
  """Compiled: EMA params + sampler probs -> tokens (num_samples, L)."""
  sc = config.sample

  def generate(params, rng, probs):
    return model.generate(params, rng, num_samples, int(sc.num_steps), t_min=float(sc.t_min),
                          time_grid=sc.time_grid, solver=sc.solver, timestep_probs=probs,
                          final=sc.get('final', 'z'))
  return jax.jit(generate)


def train(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns the last logged scalars."""
  # 1. Config and work directory. ----------------------------------------------
  validate(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  process_index, process_count = jax.process_index(), jax.process_count()
  is_primary = process_index == 0
  tc = config.train
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(tc.keep_checkpoints))
  latest, meta = None, None
  if checkpointer.latest_step() is not None:
    # A damaged newest step is set aside with a warning; the newest intact one is used.
    latest, meta = ckpt_lib.restore_latest_intact(checkpointer, checkpointer.read_meta, _log,
                                                  set_aside=True)
    ckpt_lib.check_signature(meta, config, workdir)

  # 2. Frozen encoder, tokenizer, mesh. -------------------------------------------
  encoder = load_frozen_encoder(config.encoder.name, config.encoder.path, config.encoder.dtype)
  encoder.check_config(config)
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  if tokenizer.vocab_size > encoder.vocab_size:
    raise ConfigError(
        f'The tokenizer has {tokenizer.vocab_size} tokens but encoder {config.encoder.name!r} '
        f'embeds only {encoder.vocab_size}; use the tokenizer that belongs to the encoder.')
  mesh = sharding_lib.make_mesh(config)
  sharding_lib.check_batch_size(int(tc.batch_size), mesh, process_count)
  replicated = sharding_lib.replicated(mesh)
  encoder = encoder.on_device(replicated)
  model = build_model(config, encoder)   # LDLM, or a baseline (config.method.name)

  # 3. Normalization statistics. -------------------------------------------------
  norm_meta = meta
  if norm_meta is None and config.train.init_from.workdir:
    norm_meta = init_from_lib.source_meta(config)   # the statistics the taken components saw
  stats = load_or_compute_normalization(config, workdir, model, encoder, tokenizer, norm_meta)
  frozen = jax.device_put(model.frozen_inputs(encoder.params, stats.mean_H, stats.std_H), replicated)

  # 4. Data. -------------------------------------------------------------------------
  local_batch = int(tc.batch_size) // process_count
  train_iter = data_lib.make_train_iterator(
      config, tokenizer, process_index=process_index, process_count=process_count,
      batch_size=local_batch)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  global_shape = (int(tc.batch_size), int(config.data.seq_len))

  # 5. State: restore or create. -------------------------------------------------------
  rng = jax.random.PRNGKey(int(tc.seed))
  init = lambda r: state_lib.create_train_state(model, config, r)
  state_shapes = jax.eval_shape(init, rng)
  state_sh = sharding_lib.state_shardings(mesh, state_shapes)
  # The accumulator is donated to the step, so every window starts from a fresh copy.
  # Built inside jit so it is a proper global array on multi-host meshes too.
  fresh_metrics = jax.jit(functools.partial(step_lib.empty_train_metrics, model.extra_metrics),
                          out_shardings=replicated)
  logger = RunLogger(workdir, enabled=is_primary)
  # Components frozen from train.init_from: restored with the checkpoint, else from that run.
  frozen_shapes = {k: v for k, v in jax.eval_shape(model.init_components, rng).items()
                   if k in model.frozen_names}
  if latest is not None:
    latest, restored = ckpt_lib.restore_latest_intact(
        checkpointer, lambda s: checkpointer.restore(
            s, ckpt_lib.abstract_with_shardings(state_shapes, state_sh),
            ckpt_lib.ensure_abstract(fresh_metrics()), train_iter,
            abstract_frozen=jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), frozen_shapes)),
        _log, steps=[s for s in checkpointer.all_steps() if s <= latest], set_aside=True)
    state = restored['state']
    # A run saved before a metric existed has no accumulator to restore.
    metrics_acc = (restored['train_metrics'] if 'train_metrics' in restored
                   else fresh_metrics())
    frozen = frozen.replace(components=restored['frozen'] if frozen_shapes else {})
    logger.resume_from(latest)
    _log(f'resumed from step {latest} in {checkpointer.directory}')
  else:
    state = jax.jit(init, out_shardings=state_sh)(rng)
    if config.train.init_from.workdir:
      state, components = init_from_lib.apply(config, model, state, mesh, state_sh)
      frozen = frozen.replace(components={**frozen.components, **components})
      _log(f'train.init_from: {config.train.init_from.components} from '
           f'{config.train.init_from.workdir} (frozen: {sorted(components) or "none"})')
    metrics_acc = fresh_metrics()
    _write_config(workdir, config)
  start_step = int(state.step)
  if is_primary and start_step == 0:
    counts = count_params(state.params)
    _log('trainable parameters: ' + ', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items()))
  run_meta = {'model': ckpt_lib.model_signature(config), 'encoder_dir': encoder.model_dir,
              'feature_dim': int(encoder.hidden_size), 'vocab_size': int(model.dims.vocab_size),
              'tokenizer': tokenizer.fingerprint, 'norm_mean': np.asarray(stats.mean_H).tolist(),
              'norm_std': np.asarray(stats.std_H).tolist(),
              'config': json.loads(config.to_json_best_effort())}

  # 6. Compiled steps and the loop. ------------------------------------------------------
  step_fn = step_lib.compile_train_step(model, config, mesh, state_shapes, frozen)
  eval_batches = []
  if int(tc.eval_every) > 0:
    eval_batches = data_lib.make_eval_batches(config, tokenizer, int(tc.eval_batches), int(tc.batch_size))
    eval_fn = step_lib.compile_eval_step(model, mesh, state_shapes.params, frozen)
  # The one-shot denoising curve on the first evaluation batch (a space with a denoiser).
  curve_fn = None
  if (eval_batches and model.latent_space.trains_diffusion and not config.condition.enabled
      and not is_baseline(model)):
    curve_fn = jax.jit(functools.partial(model.one_shot_denoising, ts=DENOISE_CURVE_TS))
  num_samples = int(tc.num_log_samples)
  # An autoencoder stage (cosmos stage one) has no denoiser to sample with.
  can_sample = num_samples > 0 and model.latent_space.trains_diffusion
  generate_fn = make_generate_fn(model, config, num_samples) if can_sample else None

  conditional = bool(config.condition.enabled)

  def make_batch(tokens, mask_rng) -> dict:
    """The batch dict (docs/architecture.md, "The batch"): tokens, and per-example prompt masks when conditioning."""
    batch = {'tokens': np.asarray(tokens)}
    if conditional:
      batch['prompt_mask'] = conditioning.draw_prompt_masks(config, mask_rng, *batch['tokens'].shape)
    return batch

  def evaluate(step: int) -> dict:
    total = None
    for i, tokens in enumerate(eval_batches):
      # The same masks at every evaluation (seeded by the batch index).
      batch = jax.device_put(make_batch(tokens, conditioning.mask_rng(10_000, i)), batch_sharding)
      m = eval_fn(state.params, frozen, batch, jax.random.PRNGKey(10_000 + i), jnp.int32(step),
                  state.timesteps)
      total = m if total is None else total.merge(m)
    out = {f'eval_{k}': float(v) for k, v in total.compute().items()}
    if curve_fn is not None:
      tokens = jax.device_put(np.asarray(eval_batches[0]), batch_sharding)
      acc = np.asarray(curve_fn(state.params, frozen, tokens, jax.random.PRNGKey(20_000)))
      out.update({denoise_curve_key(t): float(a) for t, a in zip(DENOISE_CURVE_TS, acc)})
    return out

  def write_samples(step: int) -> None:
    if generate_fn is None:
      return
    t0 = time.time()
    tokens = generate_fn(model.with_frozen(state.ema_params, frozen),
                         jax.random.PRNGKey(int(tc.seed) + step), state.timesteps.probs)
    tokens = multihost_utils.process_allgather(tokens, tiled=True)
    records = decode_samples(tokenizer, tokens, step=step, steps=int(config.sample.num_steps))
    path = logger.write_samples(step, records)
    _log(f'samples at step {step} ({time.time() - t0:.1f}s) -> {path}: {records[0]["text"][:200]!r}')

  def save(step: int) -> None:
    checkpointer.save(step, state, metrics_acc, train_iter, run_meta, frozen=frozen.components)

  def check_finite(values: dict, step: int) -> None:
    if values.get('nonfinite', 0.0) > 0 or not np.isfinite(values.get('loss', 0.0)):
      last = checkpointer.latest_step()
      raise NonFiniteLossError(
          f'The loss became NaN/Inf before step {step}; the run stopped and the last good '
          f'checkpoint (step {last}) is kept. Lower optim.learning_rate or check the data.')

  num_steps = int(tc.num_steps)
  log_every, ckpt_every = int(tc.log_every), int(tc.checkpoint_every)
  progress = Progress(num_steps, int(tc.batch_size) * int(config.data.seq_len), enabled=is_primary)
  progress.start(start_step)
  last_scalars: dict = {}
  step = start_step
  if step >= num_steps:
    _log(f'nothing to do: the checkpoint is at step {step} >= train.num_steps={num_steps}')
  with _Preemption() as preemption:
    while step < num_steps:
      local = make_batch(next(train_iter)['tokens'],
                         conditioning.mask_rng(int(tc.seed), step, process_index))
      batch = {k: jax.make_array_from_process_local_data(batch_sharding, v, global_shape)
               for k, v in local.items()}
      state, metrics_acc = step_fn(state, frozen, batch, metrics_acc)
      step += 1

      if step % log_every == 0:
        values = {k: float(v) for k, v in metrics_acc.compute().items()}
        check_finite(values, step)
        sps, tps = progress.rates(step)
        last_scalars = dict(values, steps_per_sec=sps, tokens_per_sec=tps)
        logger.write_scalars(step, last_scalars)
        progress.line(step, sps, values)
        metrics_acc = fresh_metrics()
      if eval_batches and step % int(tc.eval_every) == 0:
        with progress.paused():
          scalars = evaluate(step)
        logger.write_scalars(step, scalars)
        logger.write_timesteps(step, np.asarray(state.timesteps.bin_loss_ema),
                               np.asarray(state.timesteps.probs))
        _log(f'eval at step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()))
      if int(tc.sample_every) > 0 and step % int(tc.sample_every) == 0 and step < num_steps:
        with progress.paused():
          write_samples(step)

      stop = preemption.requested
      if process_count > 1 and step % log_every == 0:
        stop = bool(np.max(multihost_utils.process_allgather(np.int32(stop))))
      elif process_count > 1:
        stop = False  # multi-host: agree on preemption at log steps only.
      if step % ckpt_every == 0 or step == num_steps or stop:
        with progress.paused():
          check_finite({k: float(v) for k, v in metrics_acc.compute().items()}
                       if step % log_every else {}, step)
          save(step)
      if stop:
        checkpointer.wait()  # the line below is the last one: the checkpoint is on disk
        _log(f'{preemption.name or "SIGTERM"}: checkpoint at step {step} written; exiting.')
        break

  if step >= num_steps and not preemption.requested:
    logger.write_timesteps(step, np.asarray(state.timesteps.bin_loss_ema),
                           np.asarray(state.timesteps.probs))
    write_samples(step)
  checkpointer.close()
  logger.close()
  if hasattr(train_iter, 'close'):
    train_iter.close()
  return last_scalars

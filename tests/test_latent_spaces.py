"""Latent spaces as parts (paper Table 2): every variant trains, frozen components
stay bitwise frozen, the cosmos two-stage run equals one frozen by hand, a
checkpoint refuses another latent space, and sampling honours self_cond_prob=0."""

import json
import os

import jax
import numpy as np
import pytest

from ldlm_jax.config import ConfigError, validate
from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import checkpoint as ckpt_lib
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib
from ldlm_jax.training import step as step_lib

from ldlm_testing import ToyEncoder, config_module, tiny_config, toy_tokens


VARIANTS = config_module('latent_spaces').VARIANTS
AUTOENCODER = ('latent_encoder', 'latent_decoder', 'token_decoder')


def _tiny(variant, **overrides):
  """configs/tiny.py with a latent-space variant's settings (and the given overrides)."""
  c = tiny_config()
  for key, value in {**VARIANTS[variant], **overrides}.items():
    node = c
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  c.optim.warmup_steps = 0
  return c


def _np(tree):
  return jax.tree.map(np.array, tree)


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Both cosmos stages train end to end in test_cosmos_two_stages_equal_an_autoencoder_frozen_by_hand;
# LDLM_TEST_ALL_VARIANTS=1 runs them here too (toy encoder, stage-one weights given by hand).
# 'ldlm' is configs/tiny.py itself, trained in tests/test_train_step.py and test_train_loop.py.
SINGLE_STAGE = ('scratch_emb', 'encoder_emb', 'tencdm')
ROWS = sorted(VARIANTS) if os.environ.get('LDLM_TEST_ALL_VARIANTS') else SINGLE_STAGE


@pytest.mark.slow
@pytest.mark.parametrize('variant', ROWS)
def test_every_variant_trains_a_few_steps(variant):
  """Four compiled steps on a toy encoder: the loss terms the space owns are finite and
  move, every trainable component moves, and frozen components (cosmos stage two,
  given by hand) are bitwise unchanged, with no optimizer slot or EMA."""
  enc = ToyEncoder()
  overrides = {'train.init_from.workdir': '/stage_one'} if variant == 'cosmos_stage2' else {}
  # One denoiser layer and no self-conditioning pass: a cheaper compile (both tested elsewhere).
  c = _tiny(variant, **overrides, **{'model.denoiser.num_layers': 1, 'diffusion.self_cond_prob': 0.0})
  validate(c)
  model = LDLM(c, enc)
  rng = jax.random.PRNGKey(1)
  components = {k: v for k, v in model.init_components(rng).items() if k in model.frozen_names}
  frozen = model.frozen_inputs(enc.init_params(), np.zeros(enc.hidden_size), np.ones(enc.hidden_size),
                               components=components)
  frozen_before = _np(frozen)
  mesh = sharding_lib.make_mesh(c)
  state, _ = state_lib.create_sharded_train_state(model, c, mesh, jax.random.PRNGKey(0))
  before = _np(state)
  assert not set(state.params) & set(model.frozen_names)
  assert set(state.params) | set(model.frozen_names) == set(model.init_components(rng))
  step_fn = step_lib.compile_train_step(model, c, mesh, jax.eval_shape(lambda: state), frozen)
  tokens = toy_tokens(8, c.data.seq_len)
  history = []
  for _ in range(4):
    metrics = step_lib.empty_train_metrics(model.extra_metrics)
    state, metrics = step_fn(state, frozen, tokens, metrics)
    history.append({k: float(v) for k, v in metrics.compute().items()})
  assert all(np.isfinite(h['loss']) and h['nonfinite'] == 0 for h in history)
  space = model.latent_space
  assert (history[-1]['diffusion_loss'] > 0) == space.trains_diffusion
  assert (history[-1]['ce_loss'] > 0) == ('token_decoder' not in model.frozen_names)
  assert history[-1]['loss'] != history[0]['loss']
  for name in state.params:
    moved = any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params[name]),
                                                          jax.tree.leaves(_np(state.params[name]))))
    assert moved, name
  _assert_tree_equal(frozen, frozen_before)
  # Latents have the space's own width; the denoiser keeps its configured width.
  d = model.dims
  if space.trains_diffusion:
    # (z_t, x0_sc) concatenated -> the DiT width.
    assert state.params['denoiser']['input_proj']['kernel'].shape == (2 * d.latent_dim, c.model.denoiser.width)
  if variant in ('tencdm', 'encoder_emb'):
    assert d.latent_dim == enc.hidden_size and d.latent_len == c.data.seq_len
  # Sampling reads the trainable EMA params with the frozen components added.
  if variant == 'cosmos_stage2':
    out = model.generate(model.with_frozen(state.ema_params, frozen), jax.random.PRNGKey(2), 2, 2)
    assert out.shape == (2, c.data.seq_len)


@pytest.mark.slow
def test_self_condition_off_at_sampling_when_trained_without():
  enc = ToyEncoder()
  c = tiny_config()
  c.diffusion.self_cond_prob = 0.0
  c.model.denoiser.num_layers = 1
  model = LDLM(c, enc)
  params = model.init(jax.random.PRNGKey(0))
  # Perturb every weight: the zero-initialized adaLN / output layers would ignore x0_sc.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  d = model.dims
  rng = jax.random.PRNGKey(3)
  denoise = lambda z, t, sc: model.denoise(params, z, t, sc)
  grid = solver_lib.time_grid(4, 0.05)
  shape = (2, d.latent_len, d.latent_dim)
  got = model.sample_latents(params, rng, 2, 4)
  without = model.from_diffusion_space(
      params, solver_lib.sample(denoise, model.schedule, rng, shape, grid, self_condition=False))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(without))
  c.diffusion.self_cond_prob = 0.5   # the default still self-conditions, which changes the path
  assert not np.allclose(np.asarray(LDLM(c, enc).sample_latents(params, rng, 2, 4)), np.asarray(got))


def _old_meta(config):
  """Checkpoint meta as the first version wrote it (hand-kept key list + full config)."""
  model = {}
  for key in ckpt_lib.MODEL_DEFINING_KEYS:
    node = config
    for part in key.split('.'):
      node = node[part]
    model[key] = node.to_dict() if hasattr(node, 'to_dict') else node
  return {'model': json.loads(json.dumps(model)), 'config': json.loads(config.to_json_best_effort())}


def test_signature_is_derived_and_refuses_another_latent_space():
  c = tiny_config()
  # Today's meta and the first version's meta both accept their own config ...
  ckpt_lib.check_signature({'model': ckpt_lib.model_signature(c), 'config': json.loads(c.to_json())}, c, 'W')
  ckpt_lib.check_signature(_old_meta(c), c, 'W')
  ckpt_lib.check_signature(_old_meta(c)['model'], c, 'W')   # the old call passed meta['model']
  # ... and refuse another latent space, in one sentence naming the field.
  other = _tiny('tencdm')
  for meta in (_old_meta(c), {'model': ckpt_lib.model_signature(c), 'config': json.loads(c.to_json())}):
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
      ckpt_lib.check_signature(meta, other, 'W')
    assert "latent_space.name='ldlm' but the config says 'tencdm'" in str(e.value)
    assert str(e.value).count('. ') == 0 and 'new --workdir' in str(e.value)
  # A field added to a model-defining section is in the signature without listing it.
  c.model.some_future_field = 3
  assert ckpt_lib.model_signature(c)['model.some_future_field'] == 3
  assert 'model.dtype' not in ckpt_lib.model_signature(c)       # compute-only fields stay out
  c.model.qk_norm = False                                       # missing from the old key list
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='model.qk_norm'):
    ckpt_lib.check_signature(_old_meta(tiny_config()), c, 'W')


def test_every_variant_config_validates_at_both_sizes():
  module = config_module('latent_spaces')
  assert set(module.ROWS) | set(module.TWO_STAGE.values()) == set(VARIANTS)
  for name in VARIANTS:
    for suffix in ('', '_cpu'):
      c = module.get_config(name + suffix)
      if name in module.TWO_STAGE.values():
        c.train.init_from.workdir = '/runs/stage_one'
      validate(c)
      assert c.latent_space.name == VARIANTS[name].get('latent_space.name', 'ldlm')
      assert c.encoder.name == ('minilm-l6' if suffix else 'gpt2')
  assert module.get_config('cosmos_cpu').train.num_steps == module.get_config('ldlm_cpu').train.num_steps // 2


def test_config_errors_name_the_fix():
  with pytest.raises(ConfigError, match='encoder.input=hidden'):
    validate(_tiny('tencdm', **{'encoder.input': 'embeddings'}))
  with pytest.raises(ConfigError, match='train_token_decoder=True'):
    validate(_tiny('scratch_emb', **{'loss.train_token_decoder': False}))
  with pytest.raises(ConfigError, match='init_from.workdir=STAGE1_WORKDIR'):
    validate(_tiny('cosmos_stage2'))
  with pytest.raises(ConfigError, match='latent_space.stage'):
    validate(_tiny('cosmos', **{'latent_space.stage': ''}))
  with pytest.raises(ConfigError, match='not one of'):
    validate(_tiny('ldlm', **{'latent_space.name': 'vae'}))
  with pytest.raises(ValueError, match='unknown latent space variant'):
    config_module('latent_spaces').get_config('nope_cpu')


def _cosmos_run_config(variant, **overrides):
  c = _tiny(variant, **{'model.denoiser.num_layers': 1, 'diffusion.self_cond_prob': 0.0}, **overrides)
  c.train.log_every = 1
  c.train.checkpoint_every = 4
  c.train.eval_every = 0
  c.train.sample_every = 0
  c.train.num_log_samples = 0
  return c


def _logged_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['loss'] for r in map(json.loads, f) if 'loss' in r]


@pytest.mark.slow
def test_cosmos_two_stages_equal_an_autoencoder_frozen_by_hand(tmp_path):
  """Stage one trains the autoencoder; stage two (train.init_from, frozen) logs exactly the
  losses of the same step run on the stage-one EMA autoencoder loaded and frozen by hand;
  the frozen components stay bitwise equal to it in the checkpoint, a resume reads them
  from the run's own checkpoint, and the run samples from its inference state."""
  import orbax.checkpoint as ocp
  from ldlm_jax.data import pipeline as data_lib
  from ldlm_jax.encoders.registry import load_encoder_tokenizer, load_frozen_encoder
  from ldlm_jax.training import restore
  from ldlm_jax.training.loop import train

  stage_one, stage_two = str(tmp_path / 'cosmos_ae'), str(tmp_path / 'cosmos')
  # Stage one asks for end-of-run samples: it has no denoiser, so the loop skips them.
  train(_cosmos_run_config('cosmos', **{'train.num_steps': 4, 'train.num_log_samples': 2}), stage_one)
  assert not os.path.isdir(os.path.join(stage_one, 'samples')) or not os.listdir(os.path.join(stage_one, 'samples'))
  c2 = _cosmos_run_config('cosmos_stage2', **{'train.num_steps': 3, 'train.init_from.workdir': stage_one})
  train(c2, stage_two)

  # By hand: the stage-one EMA autoencoder, read straight from its checkpoint, frozen.
  step_dir = os.path.join(stage_one, 'checkpoints', '4')
  with ocp.StandardCheckpointer() as ckptr:
    ema = ckptr.restore(os.path.join(step_dir, 'state'))['ema_params']
  autoencoder = {k: ema[k] for k in AUTOENCODER}
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
    meta = ckptr.restore(os.path.join(step_dir, 'meta'))
  encoder = load_frozen_encoder(c2.encoder.name, c2.encoder.path, c2.encoder.dtype)
  tokenizer = load_encoder_tokenizer(c2.encoder.name, c2.encoder.path)
  mesh = sharding_lib.make_mesh(c2)
  replicated = sharding_lib.replicated(mesh)
  encoder = encoder.on_device(replicated)
  model = LDLM(c2, encoder)
  frozen = jax.device_put(model.frozen_inputs(encoder.params, meta['norm_mean'], meta['norm_std'],
                                              components=autoencoder), replicated)
  state, _ = state_lib.create_sharded_train_state(model, c2, mesh, jax.random.PRNGKey(c2.train.seed))
  assert set(state.params) == set(state.ema_params) == {'denoiser', 'latent_stats'}
  step_fn = step_lib.compile_train_step(model, c2, mesh, jax.eval_shape(lambda: state), frozen)
  batches = data_lib.make_train_iterator(c2, tokenizer, process_index=0, process_count=1,
                                         batch_size=int(c2.train.batch_size))
  by_hand = []
  for _ in range(4):
    tokens = jax.device_put(np.asarray(next(batches)['tokens']), sharding_lib.batch_sharding(mesh))
    metrics = jax.device_put(step_lib.empty_train_metrics(model.extra_metrics), replicated)
    state, metrics = step_fn(state, frozen, tokens, metrics)
    by_hand.append(float(metrics.compute()['loss']))
  assert _logged_losses(stage_two) == by_hand[:3]

  # Frozen by construction: bitwise the stage-one EMA, outside the state.
  run = restore.load_run(stage_two)
  with ocp.StandardCheckpointer() as ckptr:
    saved = ckptr.restore(os.path.join(stage_two, 'checkpoints', '3', 'state'))
  assert set(saved['params']) == set(saved['ema_params']) == {'denoiser', 'latent_stats'}
  _assert_tree_equal({k: run.state.ema_params[k] for k in AUTOENCODER}, autoencoder)
  assert run.state.params is None   # the inference state holds no raw params or optimizer state

  # init_from with frozen=False: the taken components initialize trainable params and their EMA.
  from ldlm_jax.training import init_from as init_from_lib
  c3 = _cosmos_run_config('ldlm', **{'train.init_from.workdir': stage_one, 'train.init_from.frozen': False,
                                     'train.init_from.components': 'latent_encoder,latent_decoder'})
  model3 = LDLM(c3, encoder)
  state3, shardings3 = state_lib.create_sharded_train_state(model3, c3, mesh, jax.random.PRNGKey(0))
  fresh3 = _np(state3)
  state3, frozen3 = init_from_lib.apply(c3, model3, state3, mesh, shardings3)
  assert frozen3 == {} and model3.frozen_names == ()
  for name in ('latent_encoder', 'latent_decoder'):
    _assert_tree_equal(state3.params[name], autoencoder[name])
    _assert_tree_equal(state3.ema_params[name], autoencoder[name])
  for name in ('token_decoder', 'denoiser'):
    _assert_tree_equal(state3.params[name], fresh3.params[name])
  _assert_tree_equal(state3.opt_state, fresh3.opt_state)

  # Resume without the stage-one directory: the frozen components come from the run's checkpoint.
  os.rename(stage_one, stage_one + '_moved')
  c2.train.num_steps = 4
  train(c2, stage_two)
  assert _logged_losses(stage_two) == by_hand

  with pytest.raises(ConfigError, match='autoencoder stage without a denoiser'):
    restore.load_run(stage_one + '_moved').check_can_sample()   # what `ldlm_jax.sample` calls first
  run.check_can_sample()
  tokens = run.model.generate(run.state.ema_params, jax.random.PRNGKey(0), 2, 2)
  assert tokens.shape == (2, c2.data.seq_len)

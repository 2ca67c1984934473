"""Conditional generation (docs/method.md 6.6): the condition path, guidance, prompts and the CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldlm_jax import conditioning
from ldlm_jax.config import ConfigError, validate
from ldlm_jax.diffusion import solver as solver_lib
from ldlm_jax.diffusion import timesteps as ts
from ldlm_jax.models.ldlm import LDLM

from ldlm_testing import REPO, ToyEncoder, subprocess_env, tiny_config, toy_tokens, train_command

PATHS = ('cross_attention', 'in_context')


def _model(path='cross_attention', **condition):
  c = tiny_config()
  c.condition.enabled = True
  c.condition.path = path
  for k, v in condition.items():
    c.condition[k] = v
  validate(c)
  enc = ToyEncoder()
  model = LDLM(c, enc)
  # Random non-zero weights everywhere (the zero-initialised output projection would hide
  # whether the condition reaches the output).
  params = model.init(jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  frozen = model.frozen_inputs(enc.init_params(), np.zeros(enc.hidden_size), np.ones(enc.hidden_size))
  return c, model, params, frozen


def _unconditional_params(params):
  """The conditional params without the condition path's leaves (the unconditional tree)."""
  den = {k: v for k, v in params['denoiser'].items() if k not in ('cond_proj', 'cond_pos')}
  den = {k: ({kk: vv for kk, vv in v.items() if kk not in ('cross_attn', 'cross_norm')}
             if k.startswith('block') else v) for k, v in den.items()}
  return {**params, 'denoiser': den}


def _prefix_mask(batch, length, n):
  return np.arange(length)[None, :].repeat(batch, 0) < n


@pytest.mark.slow
def test_unconditional_config_keeps_its_params_tree():
  c = tiny_config()
  enc = ToyEncoder()
  base = LDLM(c, enc).init(jax.random.PRNGKey(0))
  for path in PATHS:
    _, model, _, _ = _model(path)
    cond = model.init(jax.random.PRNGKey(0))
    stripped = _unconditional_params(cond)
    assert jax.tree.structure(stripped) == jax.tree.structure(base)
    # Adding the condition path does not change the init of any existing leaf.
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stripped), jax.tree.leaves(base)))


@pytest.mark.slow
@pytest.mark.parametrize('path', PATHS)
def test_dropped_condition_equals_unconditional_loss(path):
  c, model, params, frozen = _model(path, drop_prob=1.0)
  tokens = toy_tokens(4, c.data.seq_len)
  mask = conditioning.draw_prompt_masks(c, np.random.default_rng(0), 4, c.data.seq_len)
  assert not mask.any()
  uncond = LDLM(tiny_config(), ToyEncoder())
  state = ts.init_state(c.timesteps.num_bins)
  for step in (0, 30):
    rng = jax.random.PRNGKey(step + 3)
    loss, aux = model.loss_fn(params, frozen, {'tokens': tokens, 'prompt_mask': mask}, rng, step, state)
    ref, ref_aux = uncond.loss_fn(_unconditional_params(params), frozen, {'tokens': tokens}, rng, step, state)
    if path == 'cross_attention':   # gated off exactly
      assert float(loss) == float(ref)
      np.testing.assert_array_equal(aux['diffusion_per_example'], ref_aux['diffusion_per_example'])
    else:   # masked keys: the same sum, up to the reduction order over the longer sequence
      np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  # A given prefix changes the diffusion loss (the condition reaches the denoiser).
  given = {'tokens': tokens, 'prompt_mask': _prefix_mask(4, c.data.seq_len, 6)}
  loss_c, _ = model.loss_fn(params, frozen, given, jax.random.PRNGKey(3), 0, state)
  assert float(loss_c) != float(model.loss_fn(params, frozen, {'tokens': tokens, 'prompt_mask': mask},
                                              jax.random.PRNGKey(3), 0, state)[0])


@pytest.mark.slow
def test_condition_features_see_only_given_tokens():
  c, model, params, frozen = _model()
  tokens = toy_tokens(2, c.data.seq_len)
  other = tokens.copy()
  other[:, 6:] = (other[:, 6:] + 1) % ToyEncoder.vocab_size
  mask = _prefix_mask(2, c.data.seq_len, 6)
  a = model.condition(frozen, params, tokens, mask)['features']
  b = model.condition(frozen, params, other, mask)['features']
  np.testing.assert_array_equal(a, b)        # the causal toy encoder: a prefix has no future
  assert not np.any(np.asarray(a)[:, 6:])


@pytest.mark.slow
def test_guidance_one_is_the_single_conditional_pass():
  c, model, params, frozen = _model()
  tokens = toy_tokens(3, c.data.seq_len)
  cond = model.condition(frozen, params, tokens, _prefix_mask(3, c.data.seq_len, 5))
  rng, steps = jax.random.PRNGKey(4), 5
  got = model.sample_latents(params, rng, 3, steps, condition=cond, guidance=1.0)
  d = model.dims
  grid = solver_lib.time_grid(steps, 0.05)
  ref = model.from_diffusion_space(params, solver_lib.sample(
      lambda z, t, sc: model.denoise(params, z, t, sc, cond), model.schedule, rng,
      (3, d.latent_len, d.latent_dim), grid))
  np.testing.assert_array_equal(got, ref)
  # w = 2: x0_null + 2 (x0_cond - x0_null) at every step of the scan.
  null = model.null_condition(3)
  z = jax.random.normal(jax.random.PRNGKey(9), (3, d.latent_len, d.latent_dim))
  t = jnp.full((3,), 0.4)
  # cond=None skips the condition modules: the same numbers as an all-False mask.
  np.testing.assert_array_equal(model.denoise(params, z, t, z), model.denoise(params, z, t, z, null))

  def guided(z, t, sc):
    xc, xu = model.denoise(params, z, t, sc, cond), model.denoise(params, z, t, sc, null)
    return xu + 2.0 * (xc - xu)
  ref2 = model.from_diffusion_space(
      params, solver_lib.sample(guided, model.schedule, rng, (3, d.latent_len, d.latent_dim), grid))
  got2 = model.sample_latents(params, rng, 3, steps, condition=cond, guidance=2.0)
  np.testing.assert_allclose(got2, ref2, rtol=1e-4, atol=1e-4)
  assert not np.allclose(got2, got, atol=1e-3)


@pytest.mark.slow
def test_prompt_survives_sampling_bit_for_bit():
  c, model, params, frozen = _model()
  tokens = toy_tokens(4, c.data.seq_len, seed=5)
  mask = _prefix_mask(4, c.data.seq_len, 7)
  fn = jax.jit(lambda p, r: model.generate(p, r, 4, 4, prompt=(tokens, mask), frozen=frozen,
                                           guidance=1.5))
  out = np.asarray(fn(params, jax.random.PRNGKey(2)))
  np.testing.assert_array_equal(out[:, :7], tokens[:, :7])
  free = np.asarray(jax.jit(lambda p, r: model.generate(p, r, 4, 4))(params, jax.random.PRNGKey(2)))
  assert not np.array_equal(free[:, :7], tokens[:, :7])


class _WordTokenizer:
  """One token per word; enough to check where the given pieces go."""
  words = ['<eos>', 'the', 'cat', 'sat', 'on', 'mat', 'a', 'dog']

  def encode(self, text):
    return [self.words.index(w) for w in text.split()]

  def decode(self, ids):
    return ' '.join(self.words[int(i)] for i in ids)


@pytest.mark.slow
def test_masked_span_example_fills_only_its_spans(tmp_path):
  from ldlm_jax.sampling import assemble
  path = tmp_path / 'p.jsonl'
  path.write_text(json.dumps({'text': 'the cat [[2]] on the [[...]] mat'}) + '\n')
  prompts = conditioning.read_prompts(str(path))
  tok = _WordTokenizer()
  tokens, mask = conditioning.encode_prompts(prompts, tok, 12)
  # the cat _ _ on the _ _ _ _ mat | (rest of the chunk)
  assert mask[0].astype(int).tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0]
  c, model, params, frozen = _model()
  seq = c.data.seq_len
  ptok = np.zeros((1, seq), np.int32)
  pmask = np.zeros((1, seq), bool)
  ptok[:, :12], pmask[:, :12] = tokens, mask
  out = np.asarray(model.generate(params, jax.random.PRNGKey(0), 1, 3, prompt=(ptok, pmask),
                                  frozen=frozen))[0]
  np.testing.assert_array_equal(out[pmask[0]], ptok[0][pmask[0]])
  out = out[:12] % len(tok.words)
  record = assemble(prompts[0], out, mask[0], tok)
  text, spans = record['text'], record['spans']
  assert len(spans) == 2
  # Outside its spans the text is the given pieces verbatim.
  outside = text[:spans[0][0]] + '|' + text[spans[0][1]:spans[1][0]] + '|' + text[spans[1][1]:]
  assert outside.split('|') == ['the cat ', ' on the ', ' mat']
  assert text[spans[0][0]:spans[0][1]] == tok.decode(out[2:4])
  assert text[spans[1][0]:spans[1][1]] == tok.decode(out[6:10])


def test_prompt_file_errors(tmp_path):
  for line, phrase in (('{"prompt": "  "}', 'empty prompt'), ('{"text": "no gaps"}', 'no [[...]] gap'),
                       ('{"x": 1}', 'exactly one of'), ('not json', 'is not JSON')):
    path = tmp_path / 'p.jsonl'
    path.write_text(line + '\n')
    with pytest.raises(ConfigError, match=phrase.replace('[', r'\[').replace(']', r'\]')):
      conditioning.read_prompts(str(path))
  path.write_text(json.dumps({'prompt': 'the cat sat on the mat'}) + '\n')
  with pytest.raises(ConfigError, match='shorten it to under 6 tokens'):
    conditioning.encode_prompts(conditioning.read_prompts(str(path)), _WordTokenizer(), 6)


def test_span_masks_follow_the_config():
  c = tiny_config()
  c.condition.prefix_prob = 0.0
  c.condition.drop_prob = 0.0
  masks = conditioning.draw_prompt_masks(c, np.random.default_rng(1), 200, 32)
  gaps = 1.0 - masks.mean(axis=1)
  assert gaps.min() >= 0.15 - 1 / 32 and gaps.max() <= 0.6 + 1 / 32
  runs = [np.sum(np.diff(np.concatenate([[1], m.astype(int)])) == -1) for m in masks]
  assert set(runs) <= {1, 2, 3} and len(set(runs)) == 3
  c.condition.prefix_prob = 1.0
  masks = conditioning.draw_prompt_masks(c, np.random.default_rng(1), 200, 32)
  lengths = masks.sum(axis=1)
  assert np.all(masks == (np.arange(32)[None] < lengths[:, None]))
  assert lengths.min() >= 4 and lengths.max() <= 24


# ------------------------------------------------------------------ the CLI --
def _module(name, *args):
  return subprocess.run([sys.executable, '-m', name, *map(str, args)], env=subprocess_env(),
                        cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def cond_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('cond_run')
  cmd = train_command(workdir, '--config.condition.enabled=True', '--config.train.num_steps=4',
                      '--config.train.checkpoint_every=4')
  proc = subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def test_sample_cli_prompts(cond_run, tiny_run, tmp_path):
  prompts = tmp_path / 'p.jsonl'
  prompts.write_text('\n'.join(json.dumps(r) for r in (
      {'prompt': 'The jury said it'}, {'text': 'The [[3]] said that the city [[...]] .'})) + '\n')
  out = tmp_path / 'o.jsonl'
  proc = _module('ldlm_jax.sample', '--workdir', cond_run, '--prompts', prompts, '--guidance', 1.5,
                 '--steps', 3, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cont, infill = [json.loads(line) for line in out.read_text().splitlines()]
  assert cont['prompt'] == 'The jury said it' and cont['text'].startswith(cont['prompt'])
  assert cont['text'][cont['generated_from']:] == cont['continuation'] and cont['guidance'] == 1.5
  given = [i for i, m in enumerate(cont['prompt_mask']) if m]
  assert given == list(range(len(given))) and len(given) >= 4
  assert infill['kind'] == 'infill' and len(infill['spans']) == 2
  assert infill['text'].startswith('The ') and infill['text'].endswith(' .')
  # The Python API with the same prompts (a text to continue, a record with gaps): the same records.
  from ldlm_jax import api
  result = api.load(cond_run).generate(prompts=['The jury said it', {'text': 'The [[3]] said that the city [[...]] .'}],
                                       guidance=1.5, steps=3)
  assert result.records == [cont, infill]
  # Errors, one sentence each, nothing written.
  bad = tmp_path / 'bad.jsonl'
  for record, phrase in (({'prompt': ''}, 'empty prompt'),
                         ({'prompt': 'word ' * 40}, 'leaving nothing to generate')):
    bad.write_text(json.dumps(record) + '\n')
    proc = _module('ldlm_jax.sample', '--workdir', cond_run, '--prompts', bad, '--out', tmp_path / 'x.jsonl')
    assert proc.returncode == 2 and phrase in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
  proc = _module('ldlm_jax.sample', '--workdir', tiny_run, '--prompts', prompts, '--out', tmp_path / 'x.jsonl')
  assert proc.returncode == 2 and 'trained without conditions' in proc.stderr, proc.stderr
  assert not (tmp_path / 'x.jsonl').exists()


# ------------------------------------------------- continuation evaluation --
@pytest.fixture(scope='module')
def tiny_scorer(tmp_path_factory):
  from tokenizers import pre_tokenizers
  from ldlm_jax.evaluation import gguf_model
  from ldlm_jax.evaluation.llama import LlamaConfig
  from ldlm_testing import random_hf_llama
  config = LlamaConfig(vocab_size=263, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-5,
                       max_position_embeddings=64, tie_word_embeddings=True)
  merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r']
  tokens = ['<|endoftext|>'] + sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(' ', '') for m in merges]
  path = tmp_path_factory.mktemp('scorer') / 'tiny.gguf'
  gguf_model.write_llama_gguf(path, config, random_hf_llama(config, seed=0, scale=0.3, norm_jitter=0.0),
                              tokens, merges, eos_id=0)
  return str(path)


@pytest.mark.slow
def test_continuation_perplexity_scores_only_the_continuation(tiny_scorer):
  from ldlm_jax.evaluation import genppl, scorers
  scorer = scorers.load_scorer('gguf', tiny_scorer)
  ctx = [scorer.tokenizer.encode('the cat sat'), [], scorer.tokenizer.encode('a mat')]
  cont = [scorer.tokenizer.encode(' on a mat'), scorer.tokenizer.encode('then ran'),
          scorer.tokenizer.encode(' in') + [0] + scorer.tokenizer.encode(' the garden')]
  got = genppl.continuation_perplexity(scorer, ctx, cont, batch_size=2)
  for i, (a, b) in enumerate(zip(ctx, cont)):
    ids = np.asarray([a + b], np.int32)
    lp = scorer.token_logprobs(ids, np.ones_like(ids))[0]     # targets 1..n-1
    first = max(len(a), 1)
    full = a + b
    end = next((t + 1 for t in range(first, len(full)) if full[t] == 0), len(full))  # through the first EOS
    np.testing.assert_allclose(got.sample_nll[i], -lp[first - 1:end - 1].sum(), rtol=1e-5)
    assert got.sample_tokens[i] == end - first
  assert got.sample_tokens[2] == len(cont[2]) - len(scorer.tokenizer.encode(' the garden'))


def test_evaluate_continuation_task(cond_run, tiny_scorer, tmp_path):
  out = tmp_path / 'cont.json'
  proc = _module('ldlm_jax.evaluate', '--task', 'continuation', '--workdir', cond_run, '--prompt_tokens', 5,
                 '--num_texts', 4, '--guidance', 1, 2, '--steps', 2, '--scorer', 'gguf',
                 '--scorer_path', tiny_scorer, '--batch_size', 4, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert list(result['rows']) == ['true_continuation', 'unconditional', 'guidance_1', 'guidance_2']
  assert result['rows']['true_continuation']['mauve'] is None
  for name, row in result['rows'].items():
    assert row['gen_ppl'] > 1 and row['scored_tokens'] > 0 and row['entropy'] > 0, name
    assert np.isfinite(row['prompt_gain'])
    if name != 'true_continuation':
      assert 0 < row['mauve'] <= 1
  assert 'prompt gain' in proc.stdout
  proc = _module('ldlm_jax.evaluate', '--task', 'continuation', '--workdir', cond_run, '--prompt_tokens', 16,
                 '--scorer', 'gguf', '--scorer_path', tiny_scorer, '--out', tmp_path / 'x.json')
  assert proc.returncode == 2 and '--prompt_tokens must be in [1, 15]' in proc.stderr, proc.stderr
  assert not (tmp_path / 'x.json').exists()

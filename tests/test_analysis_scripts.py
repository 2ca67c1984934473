"""Smoke tests of the measurement scripts in scripts/analysis: each imports without sys.path edits,
states its purpose in one line, and runs at a tiny size (toy encoder, tiny DiT, synthetic JSON)."""

import importlib
import inspect
import json
import os
import pkgutil

import numpy as np
import pytest
from ldlm_testing import tiny_setup

import scripts.analysis
from ldlm_jax import evaluate
from scripts.analysis import (
  condition_path_time,
  continuation_table,
  embedding_readout,
  encoder_share,
  heldout_recon,
  seed_eval,
  tempered_ngrams,
)

MODULES = sorted(m.name for m in pkgutil.iter_modules(scripts.analysis.__path__))


def test_every_script_has_a_one_line_purpose_and_no_path_edits():
  assert MODULES == ['condition_path_time', 'continuation_table', 'embedding_readout', 'encoder_share',
                     'heldout_recon',
                     'reconstruction_row', 'sampler_order', 'seed_eval', 'tempered_ngrams']
  for name in MODULES:
    module = importlib.import_module(f'scripts.analysis.{name}')
    purpose = module.__doc__.split('\n')[0]
    assert purpose.endswith('.') and len(purpose) > 20, name
    assert f'  {name} ' in scripts.analysis.__doc__, name   # listed in the package's index
    assert 'sys.path' not in inspect.getsource(module), name
    assert callable(module.main), name


@pytest.mark.slow
def test_encoder_share_and_heldout_recon_on_a_toy_encoder():
  # The smoke scale's shrinking (fewer ops to compile): one denoiser block, no self-conditioning pass.
  config, model, params, frozen, tokens = tiny_setup(**{'model.denoiser.num_layers': 1, 'diffusion.self_cond_prob': 0.0,
                                                        'model.qk_norm': False})
  out = encoder_share.measure(model, config, frozen, tokens, repeats=1, inner=1)
  assert out['encoder_ms'] > 0 and out['step_ms'] > 0 and out['share'] > 0
  acc = heldout_recon.reconstruction_accuracy(model, frozen, params, tokens, batch_size=3)
  assert 0.0 <= acc <= 1.0
  lost = heldout_recon.where_tokens_are_lost(model, frozen, params, tokens, batch_size=3)
  assert lost['acc'] == acc and 0.0 <= lost['head_on_features'] <= 1.0 and lost['feature_rel_mse'] > 0


def test_embedding_readout_reads_a_linear_code_exactly():
  # Features that are an invertible linear image of the table rows: the readout is exact,
  # also for tokens the fit never saw (they share the linear map).
  rng = np.random.default_rng(0)
  table = rng.normal(size=(40, 8)).astype(np.float32)
  mix = rng.normal(size=(8, 8)).astype(np.float32)
  train_tokens = rng.integers(0, 30, 400)
  test_tokens = rng.integers(0, 40, 100)
  out = embedding_readout.readout_accuracy(table[train_tokens] @ mix, train_tokens,
                                           table[test_tokens] @ mix, test_tokens, table)
  assert out['acc'] == 1.0 and out['acc_unseen'] == 1.0 and out['unseen_fraction'] > 0


@pytest.mark.slow
def test_condition_path_time_at_a_tiny_size():
  out = condition_path_time.measure(batch=2, length=8, latent_dim=4, hidden=8, width=16, num_layers=1,
                                    num_heads=2, repeats=1, inner=1)
  assert set(out) == set(condition_path_time.CONDITIONS)
  assert all(ms > 0 for ms, _ in out.values())
  assert out['cross_attention'][1] > out[''][1] and out['in_context'][1] > out[''][1]


def test_continuation_table_averages_seeds(tmp_path, capsys):
  def run(seed, mauve, ppl):
    return {'seed': seed, 'checkpoint_step': 350, 'num_texts': 4, 'prompt_tokens': 8, 'steps': 10,
            'rows': {'guidance_1': {'mauve': mauve, 'gen_ppl': ppl, 'entropy': 3.0}}}
  paths = []
  for seed, (mauve, ppl) in enumerate(((0.5, 100.0), (0.7, 300.0))):
    paths.append(str(tmp_path / f'cont_seed{seed}.json'))
    with open(paths[-1], 'w', encoding='utf-8') as f:
      json.dump(run(seed, mauve, ppl), f)
  text = continuation_table.main(paths)
  assert text == capsys.readouterr().out.strip()
  assert text.splitlines()[0].startswith('2 seed(s) [0, 1]; checkpoint step 350')
  assert '| guidance_1 | 0.600 ± 0.100 | 200.0 ± 100.0 | n/a | 3.00 ± 0.00 | n/a |' in text


def test_seed_eval_commands_parse_with_the_tools_own_parsers(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  todo = seed_eval.commands(workdir, final='x0', steps=50, checkpoint_step=1400)
  assert [c[2] for c, _ in todo] == ['ldlm_jax.data.references'] + ['ldlm_jax.sample'] * 3 + ['ldlm_jax.evaluate']
  sample = todo[1][0]
  assert sample[sample.index('--final') + 1] == 'x0' and sample[sample.index('--checkpoint_step') + 1] == '1400'
  args = evaluate.parse_args(todo[-1][0][3:])
  assert args.samples == [os.path.join(workdir, 'eval', f'x0_50_c1400_s{s}.jsonl') for s in range(3)]
  assert args.out == os.path.join(workdir, 'eval', 'x0_50_c1400.json') and args.ngram_baselines == workdir
  os.makedirs(workdir)
  open(os.path.join(workdir, 'references.jsonl'), 'w', encoding='utf-8').close()
  todo = seed_eval.main([workdir, '--no_ngram', '--dry_run'])
  assert len(todo) == 4 and '--ngram_baselines' not in todo[-1][0]   # the references exist: not rebuilt
  assert capsys.readouterr().out.count('-m ldlm_jax.sample') == 3
  assert not os.path.exists(os.path.join(workdir, 'eval'))   # a dry run writes nothing


def test_tempered_ngrams_commands_and_summary(tmp_path):
  todo, metrics = tempered_ngrams.commands(str(tmp_path), 1, '0.6')
  assert metrics == str(tmp_path / 'eval' / 'ngram1_T0.6.json')
  assert [c[c.index('--temperature') + 1] for c in todo[:-1]] == ['0.6'] * 3
  assert evaluate.parse_args(todo[-1][3:]).out == metrics
  os.makedirs(tmp_path / 'eval')
  with open(metrics, 'w', encoding='utf-8') as f:
    json.dump({'mean': {'gen_ppl': 812.4, 'entropy': 3.214}, 'std': {'gen_ppl': 20.6, 'entropy': 0.011}}, f)
  assert tempered_ngrams.summary(metrics) == f'{metrics}: Gen. PPL 812 +- 21, entropy 3.21 +- 0.01'


@pytest.mark.parametrize('name', ['seed_eval', 'tempered_ngrams', 'encoder_share', 'condition_path_time'])
def test_help_runs(name, capsys):
  with pytest.raises(SystemExit) as e:
    importlib.import_module(f'scripts.analysis.{name}').main(['--help'])
  assert e.value.code == 0 and 'usage' in capsys.readouterr().out

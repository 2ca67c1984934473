"""`python -m ldlm_jax.evaluate` end to end with a tiny GGUF Llama scorer, and its input errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from ldlm_jax import evaluate
from ldlm_jax.evaluation import genppl, gguf_model, metrics, scorers
from ldlm_jax.evaluation.llama import LlamaConfig
from ldlm_testing import random_hf_llama

CONFIG = LlamaConfig(vocab_size=263, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-5,
                     max_position_embeddings=48, tie_word_embeddings=True)
WORDS = 'the cat sat on a mat and then ran in the garden after her brother'.split()


@pytest.fixture(scope='module')
def scorer_path(tmp_path_factory):
  merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r']
  tokens = ['<|endoftext|>'] + sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(' ', '') for m in merges]
  path = tmp_path_factory.mktemp('scorer') / 'tiny.gguf'
  tensors = random_hf_llama(CONFIG, seed=0, scale=0.3, norm_jitter=0.0)
  gguf_model.write_llama_gguf(path, CONFIG, tensors, tokens, merges, eos_id=0)
  return str(path)


def _write_samples(path, seed, n=12):
  rng = np.random.RandomState(seed)
  with open(path, 'w', encoding='utf-8') as f:
    for i in range(n):
      text = ' '.join(rng.choice(WORDS, size=rng.randint(3, 9)))
      if i % 3 == 0:  # a generator EOS mid-text: only the part before it is scored
        text += '<|endoftext|> ' + ' '.join(rng.choice(WORDS, size=4))
      record = {'text': text, 'tokens': [int(t) for t in rng.randint(0, 50, size=10)], 'seed': seed,
                'steps': 64, 'checkpoint_step': 1000, 'eos_token': '<|endoftext|>'}
      f.write(json.dumps(record) + '\n')
  return str(path)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp('inputs')
  samples = [_write_samples(d / f'seed{s}.jsonl', s) for s in (0, 1)]
  refs = d / 'refs.txt'
  rng = np.random.RandomState(7)
  refs.write_text('\n'.join(' '.join(rng.choice(WORDS, size=8)) for _ in range(20)) + '\n', encoding='utf-8')
  return samples, str(refs)


@pytest.mark.slow
def test_cli_end_to_end(scorer_path, inputs, tmp_path, capsys):
  samples, refs = inputs
  out = tmp_path / 'sub' / 'metrics.json'
  rc = evaluate.main(['--samples', *samples, '--out', str(out), '--references', refs, '--scorer', 'gguf',
                      '--scorer_path', scorer_path, '--batch_size', '4'])
  assert rc == 0
  result = json.loads(out.read_text())
  printed = capsys.readouterr().out   # a table, not the JSON (that is --out, or stdout with --json)
  assert 'seed0.jsonl' in printed and 'Gen. PPL' in printed and 'mean +- std' in printed
  assert not printed.lstrip().startswith('{') and len(printed.splitlines()) < 12
  assert result['scorer']['eos_id'] == 0 and result['num_references'] == 20
  assert [os.path.basename(f['path']) for f in result['files']] == ['seed0.jsonl', 'seed1.jsonl']

  scorer = scorers.load_scorer('gguf', scorer_path)
  for path, file_result in zip(samples, result['files']):
    records = [json.loads(line) for line in Path(path).read_text(encoding='utf-8').splitlines()]
    ids = [genppl.encode_with_eos_marker(scorer.tokenizer, r['text'], '<|endoftext|>') for r in records]
    assert any(0 in seq for seq in ids)
    expected = genppl.generative_perplexity(scorer, ids, batch_size=4)
    assert file_result['num_samples'] == 12
    assert file_result['seed'] == records[0]['seed'] and file_result['steps'] == 64
    assert file_result['gen_ppl'] == pytest.approx(expected.gen_ppl, rel=1e-6)
    assert file_result['gen_ppl_scored_tokens'] == expected.num_tokens
    words = sum(evaluate.scored_word_count(r['text'], '<|endoftext|>') for r in records)
    assert file_result['gen_ppl_scored_words'] == words
    assert file_result['word_ppl'] == pytest.approx(math.exp(expected.nll_sum / words), rel=1e-6)
    assert file_result['entropy'] == pytest.approx(metrics.unigram_entropy(ids), rel=1e-12)
    assert file_result['diversity'] == pytest.approx(metrics.ngram_diversity(ids), rel=1e-12)
    assert 0.0 < file_result['mauve'] <= 1.0
  for name in ('gen_ppl', 'word_ppl', 'entropy', 'diversity', 'mauve'):
    values = [f[name] for f in result['files']]
    assert result['mean'][name] == pytest.approx(np.mean(values))
    assert result['std'][name] == pytest.approx(np.std(values))
  assert os.listdir(out.parent) == ['metrics.json']  # no temporary file left behind


def test_cli_generator_tokens_and_max_samples(scorer_path, inputs, tmp_path):
  samples, _ = inputs
  out = tmp_path / 'metrics.json'
  rc = evaluate.main(['--samples', samples[0], '--out', str(out), '--scorer', 'gguf', '--scorer_path', scorer_path,
                      '--max_samples', '5', '--metric_tokens', 'generator'])
  assert rc == 0
  result = json.loads(out.read_text())
  file_result = result['files'][0]
  records = [json.loads(line) for line in Path(samples[0]).read_text(encoding='utf-8').splitlines()][:5]
  assert file_result['num_samples'] == 5 and file_result['mauve'] is None and result['mean']['mauve'] is None
  assert file_result['entropy'] == pytest.approx(metrics.unigram_entropy([r['tokens'] for r in records]))
  assert result['std']['gen_ppl'] == 0.0 and math.isfinite(result['mean']['gen_ppl'])


def _fails(argv, capsys, match):
  rc = evaluate.main(argv)
  err = capsys.readouterr().err
  assert rc == 2, err
  assert match in err and err.count('\n') == 1, err
  return err


def test_cli_input_errors(scorer_path, inputs, tmp_path, capsys):
  samples, refs = inputs
  out = tmp_path / 'metrics.json'
  out.write_text('previous')  # an error must leave an existing output untouched
  base = ['--out', str(out), '--scorer', 'gguf', '--scorer_path', scorer_path]

  _fails(['--samples', str(tmp_path / 'nope.jsonl')] + base, capsys, 'nope.jsonl')
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "fine"}\nthis is not json\n')
  _fails(['--samples', samples[0], str(bad)] + base, capsys, 'line 2 is not JSON')
  no_text = tmp_path / 'no_text.jsonl'
  no_text.write_text('{"tokens": [1, 2]}\n')
  _fails(['--samples', str(no_text)] + base, capsys, 'line 1 is not a JSON object with a string "text"')
  empty = tmp_path / 'empty.jsonl'
  empty.write_text('\n')
  _fails(['--samples', str(empty)] + base, capsys, 'has no samples')
  _fails(['--samples', samples[0], '--references', str(tmp_path / 'refs.txt')] + base, capsys, 'refs.txt')
  _fails(['--samples', samples[0], '--out', str(out), '--scorer', 'gguf', '--scorer_path',
          str(tmp_path / 'missing.gguf')], capsys, 'does not exist')
  assert out.read_text() == 'previous'
  assert sorted(os.listdir(tmp_path)) == ['bad.jsonl', 'empty.jsonl', 'metrics.json', 'no_text.jsonl']


def test_cli_gpt2_scorer_without_weights(inputs, tmp_path, capsys, monkeypatch):
  samples, _ = inputs
  monkeypatch.delenv('LDLM_GPT2_LARGE_PATH', raising=False)
  err = _fails(['--samples', samples[0], '--out', str(tmp_path / 'm.json'), '--scorer', 'gpt2-large'],
               capsys, 'gpt2-large')
  assert 'LDLM_GPT2_LARGE_PATH' in err
  assert not (tmp_path / 'm.json').exists()


def test_cli_module_exit_code(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'ldlm_jax.evaluate', '--samples', str(tmp_path / 'x.jsonl'),
                         '--out', str(tmp_path / 'm.json')], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error: Samples file') and proc.stdout == ''
  assert not (tmp_path / 'm.json').exists()


def test_scored_word_count_stops_at_first_eos():
  assert evaluate.scored_word_count('the cat sat', None) == 3
  assert evaluate.scored_word_count('the cat [SEP] a dog [SEP] x', '[SEP]') == 3  # 2 words + EOS
  assert evaluate.scored_word_count('no marker here', '[SEP]') == 3


@pytest.mark.slow
def test_cli_ngram_baselines(scorer_path, inputs, tmp_path, capsys):
  """--ngram_baselines RUN: n-gram samples of the run's training split and its held-out text, evaluated alike."""
  from ldlm_testing import tiny_config
  from ldlm_jax.evaluation import ngram
  samples, refs = inputs
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  (run_dir / 'config.json').write_text(json.dumps(tiny_config().to_dict()), encoding='utf-8')
  out = tmp_path / 'metrics.json'
  assert evaluate.main(['--samples', *samples, '--references', refs, '--scorer', 'gguf', '--scorer_path',
                        scorer_path, '--out', str(out), '--ngram_baselines', str(run_dir), '--json']) == 0
  captured = capsys.readouterr()
  payload = json.loads(out.read_text())
  assert json.loads(captured.out) == payload   # --json: stdout is the payload, the table on stderr
  tempered = {ngram.tempered_name('unigram', t) for t in ngram.TEMPERED['unigram']}
  assert set(payload['baselines']) == {'unigram', 'bigram', 'trigram', 'held_out'} | tempered
  for name in tempered:   # the unigram frontier: scored, no MAUVE
    assert len(payload['baselines'][name]['files']) == 1 and payload['baselines'][name]['mean']['mauve'] is None
  for name in ('unigram', 'bigram', 'trigram'):
    files = payload['baselines'][name]['files']
    assert [f['num_samples'] for f in files] == [12, 12]     # as many sets and samples as the model's
    assert payload['baselines'][name]['mean']['mauve'] is not None
  assert len(payload['baselines']['held_out']['files']) == 1
  for row in ('samples', 'unigram', 'bigram', 'trigram', 'held_out', 'unigram_T0.6', '÷ unigram frontier'):
    assert row in captured.err
  # The evaluated bigram set is exactly the n-gram module's seed-0 sample, scored like any samples file.
  sets = ngram.baseline_sample_sets(str(run_dir), 2, 12)
  scorer = scorers.load_scorer('gguf', scorer_path)
  again = evaluate.evaluate_file(scorer, 'bigram:seed0', sets['bigram'][0])
  assert again['gen_ppl'] == pytest.approx(payload['baselines']['bigram']['files'][0]['gen_ppl'], rel=1e-6)


@pytest.mark.parametrize('module, argv', [('evaluate', ['--out', 'm.json', '--bogus']),
                                          ('experiments.cli', ['run', 'table9', '--out', 'x']),
                                          ('plots', [])])
def test_usage_errors_are_one_line(module, argv, capsys):
  import importlib
  with pytest.raises(SystemExit) as exit_info:
    importlib.import_module(f'ldlm_jax.{module}').parse_args(argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
  assert err.startswith('error: ') and err.strip().endswith('run it with --help to see the options.')


def test_orbax_expected_warnings_are_hidden_others_kept(caplog):
  """evaluate and experiments open checkpoints read-only: orbax's notice of it is not news."""
  import logging
  from ldlm_jax import cli
  cli.hide_expected_warnings()
  absl_logger = logging.getLogger('absl')
  with caplog.at_level(logging.WARNING):
    absl_logger.warning('Given directory is read only=/runs/x/checkpoints')
    absl_logger.warning('Metadata file does not exist: /runs/x/checkpoints/8/state/_CHECKPOINT_METADATA')
    absl_logger.warning('Something else went wrong')
  assert [r.getMessage() for r in caplog.records] == ['Something else went wrong']


def test_api_evaluate_texts_equals_the_cli_file_result(scorer_path, inputs, tmp_path, capsys):
  """ldlm_jax.api.evaluate_texts of a file's texts: the numbers the command line writes for that file."""
  from ldlm_jax import api
  samples, refs = inputs
  out = tmp_path / 'm.json'
  assert evaluate.main(['--samples', samples[0], '--references', refs, '--scorer', 'gguf',
                        '--scorer_path', scorer_path, '--out', str(out), '--json']) == 0
  from_cli = json.loads(capsys.readouterr().out)['files'][0]
  records = evaluate.read_samples(samples[0])
  references = evaluate.read_references(refs)
  result = api.evaluate_texts([r['text'] for r in records], references, scorer='gguf',
                              scorer_path=scorer_path, eos_token='<|endoftext|>')
  for name in ('gen_ppl', 'word_ppl', 'entropy', 'diversity', 'mauve', 'gen_ppl_scored_tokens'):
    assert result[name] == pytest.approx(from_cli[name], rel=1e-6), name
  with pytest.raises(evaluate.EvaluationError, match='MAUVE needs at least 2'):
    api.evaluate_texts(['a text'], ['one reference'], scorer='gguf', scorer_path=scorer_path)
  with pytest.raises(evaluate.EvaluationError, match='non-empty list of strings'):
    api.evaluate_texts('not a list', scorer='gguf', scorer_path=scorer_path)

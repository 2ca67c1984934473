"""`python -m ldlm_jax.sample` and the post-trained token decoder, from a real tiny run."""

import json
import os

from ldlm_testing import read_jsonl, run_module


def test_sample_writes_records_and_is_deterministic(tiny_run, tmp_path):
  out = tmp_path / 'a.jsonl'
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 5, '--steps', 6,
                 '--batch_size', 4, '--seed', 3, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_jsonl(out)
  assert [r['index'] for r in records] == list(range(5))
  r = records[0]
  assert r['checkpoint_step'] == 24 and r['steps'] == 6 and r['seed'] == 3
  assert r['eos_token'] == '[SEP]' and len(r['tokens']) == 16 and isinstance(r['text'], str)
  # Same seed and settings on 2 devices (batch sharded): the same samples.
  again = tmp_path / 'b.jsonl'
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 5, '--steps', 6,
                 '--batch_size', 4, '--seed', 3, '--out', again, devices=2)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [x['tokens'] for x in read_jsonl(again)] == [x['tokens'] for x in records]


def test_sample_options_and_older_checkpoint(tiny_run, tmp_path):
  out = tmp_path / 'c.jsonl'
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 2, '--steps', 4,
                 '--time_grid', 'adaptive', '--solver', 'ddim', '--t_min', 0.1,
                 '--checkpoint_step', 8, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = read_jsonl(out)[0]
  assert (r['checkpoint_step'], r['solver'], r['time_grid'], r['t_min']) == (8, 'ddim', 'adaptive', 0.1)


def test_sample_errors_are_one_sentence(tiny_run, tmp_path):
  proc = run_module('ldlm_jax.sample', '--workdir', tmp_path / 'nothing', '--out', tmp_path / 'x.jsonl')
  assert proc.returncode == 2 and 'has no checkpoints/ directory' in proc.stderr
  assert not (tmp_path / 'x.jsonl').exists()
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--checkpoint_step', 5,
                 '--out', tmp_path / 'x.jsonl')
  assert proc.returncode == 2 and 'available steps: [8, 16, 24]' in proc.stderr
  # ReMDM remasking is an MDLM sampler: an LDLM run refuses it, after restoring, writing nothing.
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--remdm_eta', 0.02, '--out', tmp_path / 'x.jsonl')
  assert proc.returncode == 2 and 'is not an MDLM run' in proc.stderr, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'x.jsonl').exists()


def test_post_trained_token_decoder_is_used_by_sample(tiny_run, tmp_path):
  dec = tmp_path / 'dec'
  proc = run_module('ldlm_jax.post_train_decoder', '--workdir', tiny_run, '--num_layers', 1,
                 '--steps', 4, '--log_every', 2, '--batch_size', 4, '--out', dec)
  assert proc.returncode == 0, proc.stderr[-3000:]
  spec = json.loads((dec / 'decoder.json').read_text())
  assert spec['num_layers'] == 1 and spec['checkpoint_step'] == 24 and spec['noise_std'] == 0.5
  assert 0 < spec['final']['ce_loss']
  out = tmp_path / 'd.jsonl'
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 2, '--steps', 4,
                 '--token_decoder', dec, '--out', out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert read_jsonl(out)[0]['token_decoder'] == str(dec)
  proc = run_module('ldlm_jax.sample', '--workdir', tiny_run, '--num_samples', 2,
                 '--token_decoder', tmp_path, '--out', out)
  assert proc.returncode == 2 and 'not a post-trained token decoder' in proc.stderr


def test_reconstruction_row_writes_a_scorable_samples_file(tiny_run, tmp_path):
  """scripts/analysis/reconstruction_row.py: held-out texts encoded and decoded, read back by evaluate."""
  from ldlm_jax.evaluate import read_samples
  from scripts.analysis import reconstruction_row
  out = str(tmp_path / 'recon.jsonl')
  summary = reconstruction_row.main([str(tiny_run), out, '3'])
  records = read_samples(out)
  assert summary['num_texts'] == len(records) == 3 and 0.0 <= summary['token_accuracy'] <= 1.0
  assert all(len(r['tokens']) == 16 and r['generator'] == 'reconstruction' for r in records)


def test_sample_seeds_flag_errors_before_restoring(tmp_path):
  """--seeds and {seed} in --out go together; each refusal is one sentence, before any restore."""
  nothing = tmp_path / 'nothing'   # no run here: these stop at the flags
  for args, message in (
      (('--seeds', '0,1', '--out', tmp_path / 'x.jsonl'), 'With --seeds, --out must contain {seed}'),
      (('--seed', '1', '--seeds', '0,1', '--out', tmp_path / 's{seed}.jsonl'), 'either --seed or --seeds'),
      (('--seeds', '0,0', '--out', tmp_path / 's{seed}.jsonl'), 'one or more different seeds'),
      (('--seeds', '0,a', '--out', tmp_path / 's{seed}.jsonl'), 'comma-separated integers'),
      (('--out', tmp_path / 's{seed}.jsonl'), 'which only --seeds fills in')):
    proc = run_module('ldlm_jax.sample', '--workdir', nothing, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
  assert sorted(os.listdir(tmp_path)) == []

"""The main comparison's table (ldlm_jax/experiments/tables/main.py): rows, budgets, the equal-FLOPs and
equal-wall-clock steps, and the report's timing section and speed verdicts. Fast, no training."""

import os

import pytest

from ldlm_jax.experiments import report, tables, verdicts
from ldlm_jax.experiments.records import DONE_FILE, PLAN_FILE, SIDE_BY_SIDE_FILE, write_json
from ldlm_jax.experiments.row_configs import row_config
from ldlm_jax.experiments.spec import SCALES, ExperimentError
from ldlm_jax.experiments.sweep import clock_matched, run_groups, sampled_run
from ldlm_jax.methods import flops

MAIN = tables.get('main')


def test_rows_budgets_and_flop_matched_steps():
  for name in ('cpu', 'gpu'):
    scale = MAIN.adjust_scale(SCALES[name])
    assert len(scale.sample_steps) >= 4 and list(scale.sample_steps) == sorted(scale.sample_steps)
    rows = {r.name: r for r in MAIN.rows(scale)}
    assert list(rows)[:5] == ['ldlm', 'mdlm', 'remdm', 'duo', 'ar']
    ldlm = row_config(scale, rows['ldlm'], 0)
    assert ldlm.method.name == 'ldlm'
    for method in ('mdlm', 'duo', 'ar'):
      same = row_config(scale, rows[method], 0)
      # Same data, backbone, batch and steps: only the method differs.
      assert same.method.name == method and same.train.num_steps == ldlm.train.num_steps
      assert same.model.denoiser == ldlm.model.denoiser and same.data == ldlm.data
      matched = row_config(scale, rows[f'{method}_flops'], 0)
      spent = matched.train.num_steps * flops.train_flops_per_token(matched)
      budget = ldlm.train.num_steps * flops.train_flops_per_token(ldlm)
      assert abs(spent / budget - 1) < 1e-3
      assert rows[f'{method}_clock'].match_clock == ('ldlm', method)
    assert row_config(scale, rows['remdm'], 0).method.remdm_eta > 0
    # The clock rows are their own runs, not aliases of the equal-steps rows.
    groups = run_groups(scale, list(rows.values()), 0)
    assert 'mdlm_clock' in groups and 'mdlm' in groups


def test_flops_count_ldlm_extra_modules():
  from ldlm_testing import config_module, load_config_file
  demo = load_config_file('demo')
  mdlm = config_module('baselines').get_config('mdlm_cpu')
  # MDLM's DiT = LDLM's denoiser blocks; LDLM adds the autoencoder, the token decoder, the
  # self-conditioning pass and the frozen encoder, MDLM a 30522-way head.
  blocks = 4 * flops.block(192, 32)
  assert flops.train_flops_per_token(mdlm) == pytest.approx(3 * (blocks + 2 * 192 * 30522))
  assert flops.train_flops_per_token(demo) > 3.5 * blocks


def test_clock_matched_steps(tmp_path):
  row = next(r for r in MAIN.rows(SCALES['cpu']) if r.name == 'mdlm_clock')
  with pytest.raises(ExperimentError, match='run those rows first'):
    clock_matched(row, str(tmp_path), 0)
  write_json(str(tmp_path / 'runs' / 'ldlm' / 'seed0' / DONE_FILE),
             {'checkpoint_step': 1000, 'train_step_seconds': 0.3})
  write_json(str(tmp_path / 'runs' / 'mdlm' / 'seed0' / DONE_FILE),
             {'checkpoint_step': 1000, 'train_step_seconds': 0.2})
  resolved = clock_matched(row, str(tmp_path), 0)
  assert resolved.overrides['train.num_steps'] == 1500 and not resolved.match_clock


def _record(gen_ppl, seconds):
  steps = {str(s): {'gen_ppl': gen_ppl, 'entropy': 3.0, 'mauve': 0.5, 'diversity': 0.9, 'word_ppl': 100.0,
                    'sample_seconds_per_batch': seconds * s} for s in (16, 32)}
  return {'results': steps, 'checkpoint_step': 10, 'seconds': {'train': 60.0}, 'train_step_seconds': 0.1}


def test_report_times_rows_and_judges_speed(tmp_path):
  plan = {'table': 'main', 'scale': 'cpu', 'seeds': 2, 'rows': ['ldlm', 'mdlm'], 'unavailable': {},
          'machine': 'test', 'started': 'now', 'sample_steps': [16, 32], 'num_samples': 4,
          'num_references': 4, 'scorer': 'tiny-random', 'base_config': 'configs/demo.py',
          'scale_overrides': {}}
  write_json(str(tmp_path / PLAN_FILE), plan)
  for seed, jitter in ((0, 0.0), (1, 0.001)):
    ldlm = _record(50.0 + seed, 0.01 + jitter)
    if seed == 1:   # continued from its step-5 checkpoint: 60 s for steps 5-10, so 120 s for the run
      ldlm['train_resumed_from_step'] = 5
    write_json(str(tmp_path / 'runs' / 'ldlm' / f'seed{seed}' / DONE_FILE), ldlm)
    write_json(str(tmp_path / 'runs' / 'mdlm' / f'seed{seed}' / DONE_FILE), _record(80.0 + seed, 0.05 + jitter))
  payload = report.report(str(tmp_path))
  text = (tmp_path / 'main.md').read_text(encoding='utf-8')
  assert '## Time as the sweep measured it' in text and 'pareto_time.png' in text
  assert '## Table 3' not in text   # no side-by-side phase in this sweep
  assert '- `ldlm` seed 1: training continued from its step-5 checkpoint' in text
  assert payload['rows']['ldlm']['train_minutes'] == (1.5, 0.5) and payload['rows']['mdlm']['train_minutes'] == (1.0, 0.0)
  finished_before = {'seconds': {'train': 5.0}, 'checkpoint_step': 10, 'train_resumed_from_step': 10}
  assert report._train_minutes(finished_before, str(tmp_path), False) is None   # its time is lost
  # A run whose training time is marked disturbed (paused, shared) is left out of the mean, named.
  mdlm = tmp_path / 'runs' / 'mdlm' / 'seed1' / DONE_FILE
  write_json(str(mdlm), {**_record(81.0, 0.051), 'seconds': {'train': 600.0},
                         'train_time_disturbed': 'paused for other work'})
  disturbed = report.report(str(tmp_path))
  assert disturbed['rows']['mdlm']['train_minutes'] == (1.0, 0.0)
  assert ('- `mdlm` seed 1: its train minutes are left out (paused for other work)'
          in (tmp_path / 'main.md').read_text(encoding='utf-8'))
  write_json(str(mdlm), _record(81.0, 0.051))
  assert os.path.isfile(tmp_path / 'pareto_time.png')
  claims = {o['claim']: o['verdict'] for o in payload['orderings']}
  assert claims['LDLM samples faster than MDLM'] == 'reproduced'
  assert claims['LDLM beats MDLM at equal compute'] == 'not measured'   # no mdlm_flops run
  data = {'rows': payload['rows'], 'reference': {}}
  assert verdicts.beats(data, plan, 'ldlm', 'mdlm')[0] == 'reproduced'

  # Table 3 measured side by side: the speed verdict reads it, not the sweep's run-by-run times.
  def seconds(value):
    return {'median': value, 'min': value, 'max': value, 'std': 0.01, 'values': [value] * 3}
  step = {'median': 0.2, 'min': 0.19, 'max': 0.25}
  write_json(str(tmp_path / SIDE_BY_SIDE_FILE), {
      'seed': 0, 'rows': {'ldlm': {'run': 'runs/ldlm/seed0'}, 'mdlm': {'run': 'runs/mdlm/seed0', 'train_step_of': 'ldlm'}},
      'train': {'windows': {'warmup': 2, 'iters': 5, 'repeats': 5}, 'finished': 'then', 'machine': 'test',
                'matmul_gflops_start_end': [100.0, 98.0], 'command': '',
                'rows': {'ldlm': {'first': {**step, 'from_step': 0}, 'last': {**step, 'median': 0.1, 'from_step': 8}}}},
      'sample': {'sample_steps': 32, 'repeats': 3, 'min_round_seconds': 60.0, 'finished': 'now', 'machine': 'test',
                 'command': '',
                 'rows': {'ldlm': {'seconds_per_batch': seconds(2.0), 'batch_size': 4},
                          'mdlm': {'seconds_per_batch': seconds(1.0), 'batch_size': 4}}}})
  payload = report.report(str(tmp_path))
  text = (tmp_path / 'main.md').read_text(encoding='utf-8')
  assert '## Table 3: train step and sampling time, side by side in one process' in text
  assert 'Train step (then, float32 2048^3 matmul 100 then 98 GFLOP/s)' in text
  assert 'in a round each row draws batches until it has sampled 60 s (at least one batch)' in text
  assert ('| mdlm | 0.2000 [0.1900, 0.2500] (= ldlm\'s run) | 0.1000 [0.1900, 0.2500] (= ldlm\'s run) | '
          '1.000 [1.000, 1.000] | 4 | 0.5x |') in text
  speed = {o['claim']: o for o in payload['orderings']}['LDLM samples faster than MDLM']
  assert speed['verdict'] == 'not reproduced' and 'side by side in one process' in speed['numbers']
  assert payload['side_by_side']['sample']['rows']['ldlm']['seconds_per_batch']['median'] == 2.0


def test_a_sampling_row_needs_its_trained_run(tmp_path):
  rows = {r.name: r for r in MAIN.rows(MAIN.adjust_scale(SCALES['cpu']))}
  assert rows['remdm'].samples_of == 'mdlm' and rows['mdlm'].samples_of == ''
  with pytest.raises(ExperimentError, match='run that row first'):
    sampled_run(rows['remdm'], {'mdlm': ['mdlm']}, str(tmp_path), 0)
  write_json(str(tmp_path / 'runs' / 'mdlm' / 'seed0' / DONE_FILE), {'seconds': {'train': 1.0}})
  assert sampled_run(rows['remdm'], {'mdlm': ['mdlm']}, str(tmp_path), 0) == str(tmp_path / 'runs' / 'mdlm' / 'seed0')


def test_time_measures_one_part_again_and_keeps_the_other(tmp_path, monkeypatch):
  """`time DIR --part P` re-measures P only; the other part of side_by_side.json stays as it was.
  (The measurement itself runs in test_remdm_row_samples_the_mdlm_run_with_remasking.)"""
  from ldlm_jax.experiments import evaluator, side_by_side
  from ldlm_jax.experiments.records import read_json
  from ldlm_jax.training import restore
  write_json(str(tmp_path / PLAN_FILE), {'table': 'main', 'scale': 'smoke', 'seeds': 1,
                                         'rows': ['mdlm', 'remdm'], 'unavailable': {}})
  write_json(str(tmp_path / 'runs' / 'mdlm' / 'seed0' / DONE_FILE), {})
  write_json(str(tmp_path / 'runs' / 'remdm' / 'seed0' / DONE_FILE),
             {'trained_by': '/elsewhere/runs/mdlm/seed0'})   # a moved sweep: found in this one
  calls = []
  monkeypatch.setattr(restore, 'load_run', lambda path: path)
  monkeypatch.setattr(evaluator, 'machine_description', lambda: 'test')
  monkeypatch.setattr(side_by_side, '_matmul_gflops', lambda: 1.0)

  def fake_train(runs, trained, seed):
    calls.append('train')
    assert trained == {str(tmp_path / 'runs' / 'mdlm' / 'seed0'): 'mdlm'}   # ReMDM's weights are MDLM's
    return {'mdlm': {'first': len(calls)}}, {'windows': {}}

  def fake_sampling(runs, scale, module, seed, repeats):
    calls.append('sample')
    return {n: len(calls) for n in runs}, {'repeats': repeats}
  monkeypatch.setattr(side_by_side, '_time_train', fake_train)
  monkeypatch.setattr(side_by_side, '_time_sampling', fake_sampling)
  first = side_by_side.time_side_by_side(str(tmp_path), 0)
  assert calls == ['train', 'sample'] and first['rows']['remdm'] == {'run': 'runs/remdm/seed0', 'train_step_of': 'mdlm'}
  again = side_by_side.time_side_by_side(str(tmp_path), 0, part='sample', repeats=4)
  assert calls[2:] == ['sample'] and again['train'] == first['train']
  assert again['sample']['rows'] == {'mdlm': 3, 'remdm': 3} and again['sample']['repeats'] == 4
  assert read_json(str(tmp_path / SIDE_BY_SIDE_FILE)) == again
  with pytest.raises(ExperimentError, match='--part must be one of all, train, sample'):
    side_by_side.time_side_by_side(str(tmp_path), 0, part='both')


@pytest.mark.slow
def test_remdm_row_samples_the_mdlm_run_with_remasking(tmp_path):
  """ReMDM trains nothing: it samples MDLM's checkpoint of the same seed with its own eta."""
  from ldlm_jax.evaluate import read_samples
  from ldlm_jax.experiments import sweep
  from ldlm_jax.experiments.records import read_json
  out = tmp_path / 'main'
  sweep.run_table('main', 'smoke', 1, str(out), only_rows=('mdlm', 'remdm'))
  mdlm_dir, remdm_dir = out / 'runs' / 'mdlm' / 'seed0', out / 'runs' / 'remdm' / 'seed0'
  mdlm, remdm = read_json(str(mdlm_dir / DONE_FILE)), read_json(str(remdm_dir / DONE_FILE))
  assert remdm['trained_by'] == str(mdlm_dir)
  assert remdm['seconds']['train'] == mdlm['seconds']['train']
  assert remdm['checkpoint_step'] == mdlm['checkpoint_step']
  assert not os.path.exists(remdm_dir / 'checkpoints') and os.path.isdir(mdlm_dir / 'checkpoints')
  eta = row_config(SCALES['smoke'], {r.name: r for r in MAIN.rows(SCALES['smoke'])}['remdm'], 0).method.remdm_eta
  steps = MAIN.adjust_scale(SCALES['smoke']).sample_steps[-1]
  remasked = read_samples(str(remdm_dir / 'samples' / f'steps{steps}.jsonl'))
  plain = read_samples(str(mdlm_dir / 'samples' / f'steps{steps}.jsonl'))
  assert eta > 0 and all(r['remdm_eta'] == eta for r in remasked) and all(r['remdm_eta'] == 0.0 for r in plain)
  # The sweep ends with Table 3: its rows (here mdlm and remdm) timed side by side in one process,
  # ReMDM's train step being MDLM's run's.
  side = read_json(str(out / SIDE_BY_SIDE_FILE))
  assert set(side['rows']) == {'mdlm', 'remdm'} and side['rows']['remdm']['train_step_of'] == 'mdlm'
  assert set(side['train']['rows']) == {'mdlm'}
  first, last = side['train']['rows']['mdlm']['first'], side['train']['rows']['mdlm']['last']
  assert first['from_step'] == 0 and first['median'] > 0 and last['median'] > 0
  # Each round, a row draws batches until it has sampled the scale's floor (at least one batch).
  floor = side['sample']['min_round_seconds']
  assert side['sample']['repeats'] == 2 and floor > 0
  for row in side['sample']['rows'].values():
    values, per_round = row['seconds_per_batch']['values'], row['batches_per_round']
    assert len(per_round) == 2 and sum(per_round) == len(values)
    start = 0
    for n in per_round:
      spent = values[start:start + n]   # rounded to 1e-5 s each
      assert n >= 1 and sum(spent) >= floor - 1e-4 and sum(spent[:-1]) < floor + 1e-4
      start += n
  assert 'Table 3' in (out / 'main.md').read_text(encoding='utf-8')
  # scripts/analysis/sampler_order on the same sweep: mdlm's batch alone and after remdm's.
  from scripts.analysis import sampler_order
  order = sampler_order.main([str(out), '--first', 'mdlm', '--others', 'remdm'])
  assert len(order['mdlm_alone']) == len(order['mdlm_after_others']) == 3
  assert len(order['remdm_2_steps']) == len(order['mdlm_after_remdm']) == 1
  assert all(t > 0 for times in order.values() for t in times)

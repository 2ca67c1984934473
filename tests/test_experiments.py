"""`python -m ldlm_jax.experiments`: a smoke-scale Table 1 end to end, its report and its resume."""

import json
import os
import shutil

import pytest

from ldlm_jax import experiments
from ldlm_testing import REPO

VERDICTS = ('reproduced', 'not reproduced', 'inside the error bars', 'not measured')


def _run(out, capsys):
  # In this process (the CLI's main): one jax import and one compilation cache for both sweeps.
  assert experiments.main(['run', 'table1', '--scale', 'smoke', '--seeds', '1', '--out', str(out)]) == 0
  return capsys.readouterr().out


@pytest.mark.slow
def test_table1_smoke_report_and_resume(tmp_path, capsys):
  out = tmp_path / 'sweep'
  _run(out, capsys)
  rows = [r.name for r in experiments.ROWS['table1'](experiments.SCALES['smoke'])]
  assert len(rows) == 14
  md = (out / 'table1.md').read_text(encoding='utf-8')
  assert md.startswith('# Table 1') and '- command: `python -m ldlm_jax.experiments run table1 --scale smoke' in md
  assert 'tiny random Llama' in md
  for name in rows:
    assert f'| {name} | 1 | ' in md, name
  for label in ('unigram samples', 'bigram samples', 'trigram samples', 'held-out text',
                'unigram samples, T = 0.6', 'unigram samples, T = 0.9', 'bigram samples, T = 0.8'):
    assert f'| *{label}* | 1 | ' in md, label
  assert '"÷ unigram frontier"' in md
  payload = json.loads((out / 'table1.json').read_text(encoding='utf-8'))
  assert sorted(payload['rows']) == sorted(rows)
  for name in rows:
    for steps in ('2', '4', '8'):
      mean, std = payload['rows'][name]['steps'][steps]['gen_ppl']
      assert mean > 1 and std == 0.0
    assert 0 < payload['rows'][name]['steps']['8']['mauve'][0] <= 1
  assert set(payload['reference']) == set(experiments.REFERENCE_ROWS)
  assert payload['reference']['unigram_T0.8']['mauve'] == [None, None]   # tempered rows: no MAUVE
  assert len(payload['orderings']) == 5
  for item in payload['orderings']:
    assert item['verdict'].startswith(VERDICTS), item
    assert f'**{item["claim"]}**: {item["verdict"]}.' in md
  # Rows with one config share a run (recon_mse = timesteps_adaptive = sigma_dec_0.5).
  assert json.loads((out / 'runs' / 'sigma_dec_0.5' / 'alias.json').read_text())['run'] == 'recon_mse'
  assert (out / 'pareto.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

  # report redraws the table from the saved evaluations alone.
  os.remove(out / 'table1.md')
  os.remove(out / 'pareto.png')
  assert experiments.main(['report', str(out)]) == 0
  # Dates and the measured train minutes (the last cell of a table row) change between reports.
  strip = lambda text: [l.rsplit('|', 2)[0] if l.startswith('| ') else l
                        for l in text.splitlines() if not l.startswith('- date:')]
  assert strip((out / 'table1.md').read_text(encoding='utf-8')) == strip(md)
  assert (out / 'pareto.png').is_file()

  # Resume: finished runs are skipped; a run whose evaluation was lost continues from its
  # checkpoint (the trainer finds nothing to do) and is sampled and evaluated again.
  kept = out / 'runs' / 'recon_mse' / 'seed0' / 'done.json'
  kept_before = kept.read_bytes()
  redo = out / 'runs' / 'recon_ce' / 'seed0'
  os.remove(redo / 'done.json')
  os.remove(redo / 'samples' / 'steps8.jsonl')
  log = _run(out, capsys)
  assert 'recon_mse seed 0: done, skipped' in log
  assert 'recon_ce seed 0 (rows recon_ce): training' in log
  assert 'nothing to do: the checkpoint is at step 2' in log
  assert kept.read_bytes() == kept_before
  assert (redo / 'done.json').is_file() and (redo / 'samples' / 'steps8.jsonl').is_file()
  assert strip((out / 'table1.md').read_text(encoding='utf-8')) == strip(md)

  # --publish mirrors the evaluations; a copy of the mirror continues the sweep elsewhere.
  pub = tmp_path / 'pub'
  assert experiments.main(['report', str(out), '--publish', str(pub)]) == 0
  assert (pub / 'table1.md').is_file() and (pub / 'table1_pareto.png').is_file()
  raw = pub / 'raw' / 'table1'
  assert (raw / 'runs' / 'recon_mse' / 'seed0' / 'done.json').read_bytes() == kept_before
  assert not list(raw.rglob('*.jsonl')) and not list(raw.rglob('checkpoints'))
  fresh = tmp_path / 'fresh'
  shutil.copytree(raw, fresh)
  log = _run(fresh, capsys)
  assert ': training' not in log and 'recon_ce seed 0: done, skipped' in log, log
  # The same table; only the date and the command (its --out) differ.
  strip_run = lambda text: [l for l in strip(text) if not l.startswith('- command:')]
  assert strip_run((fresh / 'table1.md').read_text(encoding='utf-8')) == strip_run(md)

  # --reuse: another table's row with the same config, seed and protocol (textldm's ldlm is
  # table1's recon_mse) is copied from a sweep, here the published mirror, instead of trained.
  other = tmp_path / 'textldm'
  assert experiments.main(['run', 'textldm', '--scale', 'smoke', '--seeds', '1', '--rows', 'ldlm',
                           '--out', str(other), '--reuse', str(raw)]) == 0
  log = capsys.readouterr().out
  assert 'ldlm seed 0: the same run is finished in' in log and ': training' not in log, log
  record = json.loads((other / 'runs' / 'ldlm' / 'seed0' / 'done.json').read_text(encoding='utf-8'))
  assert record['reused_from'] == str(raw / 'runs' / 'recon_mse' / 'seed0')
  assert record['results'] == json.loads(kept_before)['results']
  assert 'seed 0: the same run (identical config, seed and protocol)' in (other / 'textldm.md').read_text()
  # A record written before done.json carried the hash gets it in the mirror, from its config.json.
  old_record = out / 'runs' / 'recon_ce' / 'seed0' / 'done.json'
  record = json.loads(old_record.read_text(encoding='utf-8'))
  sha = record.pop('config_sha256')
  old_record.write_text(json.dumps(record), encoding='utf-8')
  assert experiments.main(['report', str(out), '--publish', str(tmp_path / 'pub2')]) == 0
  mirrored = tmp_path / 'pub2' / 'raw' / 'table1' / 'runs' / 'recon_ce' / 'seed0' / 'done.json'
  assert json.loads(mirrored.read_text(encoding='utf-8'))['config_sha256'] == sha


def test_errors_name_the_fix(tmp_path, capsys):
  assert experiments.main(['report', str(tmp_path)]) == 2
  assert 'plan.json is missing' in capsys.readouterr().err
  refused = tmp_path / 'refused'
  assert experiments.main(['run', 'table1', '--scale', 'smoke', '--out', str(refused),
                           '--reuse', str(tmp_path / 'nothing')]) == 2
  assert 'holds no sweep (plan.json is missing)' in capsys.readouterr().err
  assert not refused.exists()
  rows = experiments.ROWS['table6'](experiments.SCALES['cpu'])
  needs = {r.name: experiments.row_availability(r) for r in rows}
  assert needs['minilm_l6'] == ''
  if not os.environ.get('LDLM_GPT2_PATH'):
    assert 'needs real gpt2 weights' in needs['gpt2'] and 'LDLM_GPT2_PATH' in needs['gpt2']
  if not os.path.isfile(os.path.join(REPO, experiments.LATENT_SPACES_FILE)):
    assert experiments.main(['run', 'table2', '--scale', 'smoke', '--out', str(tmp_path / 't2')]) == 2
    assert 'configs/latent_spaces.py is missing' in capsys.readouterr().err
    assert not (tmp_path / 't2').exists()


def test_table2_plan_builds_valid_configs_for_both_cosmos_stages(tmp_path):
  # Configs only (no training): every row at smoke and cpu scale, and both stages of a
  # two-stage row, pass `validate` after the scale's overrides.
  from ldlm_jax.config import validate
  module = experiments._latent_spaces_module()
  assert module.TWO_STAGE == {'cosmos': 'cosmos_stage2'}
  for scale_name in ('smoke', 'cpu'):
    scale = experiments.SCALES[scale_name]
    rows = experiments.ROWS['table2'](scale)
    assert tuple(r.name for r in rows) == tuple(module.ROWS)
    # Five distinct runs: no row's config equals another's.
    assert experiments._run_groups(scale, rows, 0) == {r.name: [r.name] for r in rows}
    seen = set()
    for row in rows:
      run_dir = str(tmp_path / 'runs' / row.name / 'seed0')
      stages = experiments.run_stages(scale, row, 0, run_dir)
      assert stages[-1][0] == run_dir
      for stage_dir, config in stages:
        validate(config)
        assert stage_dir not in seen
        seen.add(stage_dir)
        assert (config.train.seed, config.data.seed) == (0, 0)
        if scale_name == 'smoke':   # the scale's shrinking applies to every stage
          assert (config.encoder.layer, config.model.denoiser.num_layers) == (1, 1)
      final = stages[-1][1]
      full_steps = 2 if scale_name == 'smoke' else 1400
      assert final.train.num_steps == full_steps
      if row.name in module.TWO_STAGE:
        (one_dir, one), _ = stages
        assert (one.latent_space.name, one.latent_space.stage) == ('cosmos', 'autoencoder')
        assert (final.latent_space.name, final.latent_space.stage) == ('cosmos', 'diffusion')
        assert final.train.init_from.workdir == os.path.abspath(one_dir)
        assert final.train.init_from.frozen and final.train.init_from.components
        assert one_dir == str(tmp_path / 'runs' / row.name / 'stage_one' / 'seed0')
        assert one.train.num_steps == max(1, int(full_steps * module.STAGE_ONE_FRACTION))
        assert not one.train.init_from.workdir
      else:
        assert len(stages) == 1 and not final.train.init_from.workdir
        assert final.latent_space.name == module.VARIANTS[row.name].get('latent_space.name', 'ldlm')
    # The variant's own choice wins over the scale's: scratch embeddings learn from step 0.
    scratch = experiments.row_config(scale, next(r for r in rows if r.name == 'scratch_emb'), 0)
    assert scratch.encoder_warmup.steps == 0


def test_textldm_table_plans_two_stage_rows_next_to_ldlm(tmp_path):
  # Configs only: LDLM is the scale's base; each TextLDM row trains its VAE (stage one,
  # REPA on or off) and then the DiT on it. Stage two needs issue 16 part A's process keys:
  # without them the rows say so and the sweep refuses with that sentence.
  from ldlm_jax.config import base_config, validate
  part_a = 'process' in base_config().diffusion
  scale = experiments.SCALES['smoke']
  rows = experiments.ROWS['textldm'](scale)
  assert [r.name for r in rows] == ['ldlm', 'textldm', 'textldm_norepa']
  assert experiments.row_availability(rows[0]) == ''
  for row in rows[1:]:
    (one_dir, one), = experiments.run_stages(scale, row, 0, str(tmp_path / row.name / 'seed0'))[:1]
    validate(one)
    assert (one.latent_space.name, one.latent_space.stage) == ('textldm_vae', 'vae')
    assert (one.latent_space.repa_weight > 0) == (row.name == 'textldm')
    assert one.train.num_steps == 1 and one_dir.endswith(os.path.join(row.name, 'stage_one', 'seed0'))
    why = experiments.row_availability(row)
    if part_a:
      assert why == ''
      final = experiments.run_stages(scale, row, 0, str(tmp_path / row.name / 'seed0'))[-1][1]
      validate(final)
      assert final.diffusion.process == 'rectified_flow'
    else:
      assert 'issue 16 part A' in why
  if not part_a:
    with pytest.raises(experiments.ExperimentError, match='issue 16 part A'):
      experiments.run_table('textldm', 'smoke', 1, str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()


def test_train_minutes_count_a_two_stage_rows_first_stage(tmp_path):
  """Rows are compared at equal training time: a two-stage row's minutes include stage one's."""
  plan = {'rows': ['ldlm', 'textldm'], 'seeds': 2, 'sample_steps': [8],
          'stage_one': {'textldm': {'config': 'configs/textldm.py:textldm', 'num_steps': 1}}}
  results = {'8': {m: 1.0 for m in experiments.METRICS}}
  def done(path, record):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, experiments.DONE_FILE), 'w', encoding='utf-8') as f:
      json.dump(record, f)
  runs = tmp_path / 'runs'
  done(runs / 'ldlm' / 'seed0', {'results': results, 'seconds': {'train': 600.0}})
  done(runs / 'ldlm' / 'seed1', {'results': results, 'seconds': {'train': 720.0}})
  # Seed 0 carries its first stage's time; seed 1 was written before that (read from stage one).
  done(runs / 'textldm' / 'seed0', {'results': results, 'seconds': {'train': 600.0, 'stage_one_train': 300.0}})
  done(runs / 'textldm' / 'seed1', {'results': results, 'seconds': {'train': 600.0}})
  done(runs / 'textldm' / 'stage_one' / 'seed1', {'seconds': {'train': 300.0}})
  rows = experiments._collect(str(tmp_path), plan)['rows']
  assert rows['ldlm']['train_minutes'] == (11.0, 1.0)
  assert rows['textldm']['train_minutes'] == (15.0, 0.0)


def test_verdicts_do_not_reward_a_collapsed_rows_lower_gen_ppl():
  def row(ppl, std, entropy):
    return {'seeds': 2, 'steps': {'100': {'gen_ppl': (ppl, std), 'entropy': (entropy, 0.0)}}}
  data = {'rows': {'warm': row(1600.0, 10.0, 3.14), 'cold': row(420.0, 10.0, 2.57),
                   'near': row(1610.0, 20.0, 3.1), 'good': row(900.0, 10.0, 3.2)},
          'reference': {'held_out': {'entropy': (3.32, 0.0)}}}
  plan = {'sample_steps': [100]}
  verdict = lambda a, b: experiments.verdict_beats(data, plan, a, b)[0]
  # cold's lower Gen. PPL comes with an entropy 0.75 nats below held-out text: warm wins.
  assert verdict('warm', 'cold') == "reproduced (cold's lower Gen. PPL comes with collapsed entropy)"
  assert verdict('cold', 'warm') == 'not reproduced (lower Gen. PPL with collapsed entropy)'
  assert verdict('warm', 'near') == 'inside the error bars'
  assert verdict('good', 'warm') == 'reproduced'
  assert verdict('warm', 'good') == 'not reproduced'

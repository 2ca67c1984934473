"""`python -m ldlm_jax.experiments`: a smoke-scale Table 1 end to end, its report and its resume; refusals.

Slow (a sweep trains two of Table 1's rows; four rows, two of them sharing the first's run); the
tables' configs, every row's among them, and the report have fast tests of their own
(test_experiment_tables.py, test_experiments_report.py)."""

import json
import os
import shutil

import pytest

from ldlm_testing import REPO

from ldlm_jax.experiments import report as report_lib
from ldlm_jax.experiments import tables
from ldlm_jax.experiments.cli import main
from ldlm_jax.experiments.records import write_json
from ldlm_jax.experiments.row_configs import row_availability
from ldlm_jax.experiments.spec import REFERENCE_ROWS, SCALES
from ldlm_jax.experiments.tables import table2

VERDICTS = ('reproduced', 'not reproduced', 'inside the error bars', 'not measured')
# recon_mse = timesteps_adaptive = sigma_dec_0.5 (one config, one run: an alias), and recon_ce.
RUN_ROWS = ('recon_mse', 'recon_ce', 'timesteps_adaptive', 'sigma_dec_0.5')


def _run(out, capsys):
  # In this process (the CLI's main): one jax import and one compilation cache for both sweeps.
  assert main(['run', 'table1', '--scale', 'smoke', '--seeds', '1', '--rows', ','.join(RUN_ROWS),
               '--out', str(out)]) == 0
  return capsys.readouterr().out


@pytest.mark.slow
def test_table1_smoke_report_and_resume(tmp_path, capsys):
  out = tmp_path / 'sweep'
  _run(out, capsys)
  rows = [r.name for r in tables.rows('table1', SCALES['smoke'])]
  assert len(rows) == 14
  md = (out / 'table1.md').read_text(encoding='utf-8')
  assert md.startswith('# Table 1') and '- command: `python -m ldlm_jax.experiments run table1 --scale smoke' in md
  assert 'tiny random Llama' in md
  for name in rows:   # --rows: the plan, so the table, holds the chosen rows only
    assert (f'| {name} | 1 | ' in md) if name in RUN_ROWS else (f'| {name} | ' not in md), name
  for label in ('unigram samples', 'bigram samples', 'trigram samples', 'held-out text',
                'unigram samples, T = 0.6', 'unigram samples, T = 0.9', 'bigram samples, T = 0.8'):
    assert f'| *{label}* | 1 | ' in md, label
  assert '"÷ unigram frontier"' in md
  payload = json.loads((out / 'table1.json').read_text(encoding='utf-8'))
  assert sorted(payload['rows']) == sorted(RUN_ROWS)
  for name in RUN_ROWS:
    for steps in ('2', '4', '8'):
      mean, std = payload['rows'][name]['steps'][steps]['gen_ppl']
      assert mean > 1 and std == 0.0
    assert 0 < payload['rows'][name]['steps']['8']['mauve'][0] <= 1
  assert set(payload['reference']) == set(REFERENCE_ROWS)
  assert payload['reference']['unigram_T0.8']['mauve'] == [None, None]   # tempered rows: no MAUVE
  assert len(payload['orderings']) == 5
  for item in payload['orderings']:
    assert item['verdict'].startswith(VERDICTS), item
    assert f'**{item["claim"]}**: {item["verdict"]}.' in md
  verdict = {item['claim']: item['verdict'] for item in payload['orderings']}
  assert verdict['MSE beats CE'] != 'not measured'   # both rows ran
  assert verdict['enough warmup beats none'] == 'not measured'   # neither ran
  # Rows with one config share a run (recon_mse = timesteps_adaptive = sigma_dec_0.5).
  assert json.loads((out / 'runs' / 'sigma_dec_0.5' / 'alias.json').read_text())['run'] == 'recon_mse'
  assert (out / 'pareto.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

  # report redraws the table from the saved evaluations alone.
  os.remove(out / 'table1.md')
  os.remove(out / 'pareto.png')
  assert main(['report', str(out)]) == 0
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
  # Its training time is lost with its record: the report says so and leaves the cell blank.
  redone = (out / 'table1.md').read_text(encoding='utf-8')
  assert '- `recon_ce` seed 0: training continued from its step-2 checkpoint' in redone
  assert json.loads((redo / 'done.json').read_text())['train_resumed_from_step'] == 2
  unresumed = lambda text: [l for l in strip(text) if not l.startswith('- `recon_ce` seed 0: training continued')]
  assert unresumed(redone) == strip(md)

  # --publish mirrors the evaluations; a copy of the mirror continues the sweep elsewhere.
  pub = tmp_path / 'pub'
  assert main(['report', str(out), '--publish', str(pub)]) == 0
  assert (pub / 'table1.md').is_file() and (pub / 'table1_pareto.png').is_file()
  raw = pub / 'raw' / 'table1'
  assert (raw / 'runs' / 'recon_mse' / 'seed0' / 'done.json').read_bytes() == kept_before
  assert not list(raw.rglob('*.jsonl')) and not list(raw.rglob('checkpoints'))
  fresh = tmp_path / 'fresh'
  shutil.copytree(raw, fresh)
  log = _run(fresh, capsys)
  assert ': training' not in log and 'recon_ce seed 0: done, skipped' in log, log
  # The same table; only the date and the command (its --out) differ.
  strip_run = lambda text: [l for l in unresumed(text) if not l.startswith('- command:')]
  assert strip_run((fresh / 'table1.md').read_text(encoding='utf-8')) == strip_run(md)

  # --reuse: another table's row with the same config, seed and protocol (textldm's ldlm is
  # table1's recon_mse) is copied from a sweep, here the published mirror, instead of trained.
  other = tmp_path / 'textldm'
  # With `run --publish`, the report and raw/TABLE are written as each run finishes.
  assert main(['run', 'textldm', '--scale', 'smoke', '--seeds', '1', '--rows', 'ldlm',
                           '--out', str(other), '--reuse', str(raw), '--publish', str(tmp_path / 'pub3')]) == 0
  log = capsys.readouterr().out
  assert 'ldlm seed 0: the same run is finished in' in log and ': training' not in log, log
  # The same table; the published copy names its plots TABLE_pareto*.png.
  published = (tmp_path / 'pub3' / 'textldm.md').read_text().replace('textldm_pareto', 'pareto')
  assert published == (other / 'textldm.md').read_text()
  assert ((tmp_path / 'pub3' / 'raw' / 'textldm' / 'runs' / 'ldlm' / 'seed0' / 'done.json').read_bytes()
          == (other / 'runs' / 'ldlm' / 'seed0' / 'done.json').read_bytes())
  record = json.loads((other / 'runs' / 'ldlm' / 'seed0' / 'done.json').read_text(encoding='utf-8'))
  assert record['reused_from'] == str(raw / 'runs' / 'recon_mse' / 'seed0')
  assert record['results'] == json.loads(kept_before)['results']
  assert 'seed 0: the same run (identical config, seed and protocol)' in (other / 'textldm.md').read_text()
  # A record written before done.json carried the hash gets it in the mirror, from its config.json.
  old_record = out / 'runs' / 'recon_ce' / 'seed0' / 'done.json'
  record = json.loads(old_record.read_text(encoding='utf-8'))
  sha = record.pop('config_sha256')
  old_record.write_text(json.dumps(record), encoding='utf-8')
  assert main(['report', str(out), '--publish', str(tmp_path / 'pub2')]) == 0
  mirrored = tmp_path / 'pub2' / 'raw' / 'table1' / 'runs' / 'recon_ce' / 'seed0' / 'done.json'
  assert json.loads(mirrored.read_text(encoding='utf-8'))['config_sha256'] == sha


def test_errors_name_the_fix(tmp_path, capsys):
  assert main(['report', str(tmp_path)]) == 2
  assert 'plan.json is missing' in capsys.readouterr().err
  refused = tmp_path / 'refused'
  assert main(['run', 'table1', '--scale', 'smoke', '--out', str(refused),
                           '--reuse', str(tmp_path / 'nothing')]) == 2
  assert 'holds no sweep (plan.json is missing)' in capsys.readouterr().err
  assert not refused.exists()
  (tmp_path / 'a_file').write_text('x')
  assert main(['run', 'table1', '--scale', 'smoke', '--out', str(refused),
               '--publish', str(tmp_path / 'a_file')]) == 2
  assert '--publish' in capsys.readouterr().err and not refused.exists()
  # `time` refuses a directory without a sweep, and a sweep whose timed rows are not finished,
  # before it compiles or writes anything.
  assert main(['time', str(tmp_path / 'nothing')]) == 2
  assert 'holds no sweep (plan.json is missing)' in capsys.readouterr().err
  unfinished = tmp_path / 'unfinished'
  write_json(str(unfinished / 'plan.json'), {'table': 'main', 'scale': 'smoke', 'seeds': 1,
                                             'rows': ['ldlm', 'mdlm'], 'unavailable': {}})
  assert main(['time', str(unfinished)]) == 2
  assert 'Row ldlm has no finished run for seed 0' in capsys.readouterr().err
  assert main(['time', str(unfinished), '--seed', '1']) == 2
  assert "--seed must be one of the sweep's seeds 0..0, got 1" in capsys.readouterr().err
  assert sorted(os.listdir(unfinished)) == ['plan.json']
  rows = tables.rows('table6', SCALES['cpu'])
  needs = {r.name: row_availability(r) for r in rows}
  assert needs['minilm_l6'] == ''
  if not os.environ.get('LDLM_GPT2_PATH'):
    assert 'needs real gpt2 weights' in needs['gpt2'] and 'LDLM_GPT2_PATH' in needs['gpt2']
  if not os.path.isfile(os.path.join(REPO, table2.LATENT_SPACES_FILE)):
    assert main(['run', 'table2', '--scale', 'smoke', '--out', str(tmp_path / 't2')]) == 2
    assert 'configs/latent_spaces.py is missing' in capsys.readouterr().err
    assert not (tmp_path / 't2').exists()


def test_report_prints_the_results_table(tmp_path, capsys, monkeypatch):
  """`report` prints the rows of TABLE.md's results table (not the JSON) and where it wrote."""
  (tmp_path / 'table1.md').write_text(
      '# Table 1\n\n- command: x\n\n| row | seeds | Gen. PPL |\n|---|---|---|\n| recon_ce | 1 | 100 |\n'
      '| *held-out text* | 1 | 217 |\n\nnote\n\n| row | 2 steps |\n|---|---|\n', encoding='utf-8')
  monkeypatch.setattr(report_lib, 'report', lambda out, publish: {
      'plan': {'table': 'table1'}, 'orderings': [{'claim': 'MSE beats CE', 'verdict': 'holds'}]})
  assert main(['report', str(tmp_path)]) == 0
  printed = capsys.readouterr().out.splitlines()
  assert printed[:4] == ['| row | seeds | Gen. PPL |', '|---|---|---|', '| recon_ce | 1 | 100 |',
                         '| *held-out text* | 1 | 217 |']
  assert printed[4].startswith('wrote ') and printed[5] == '  MSE beats CE: holds'

"""The experiments' tables (ldlm_jax/experiments/tables): the registry, and each table's rows and configs.

Configs only: nothing is trained, and no test here imports jax's compiled paths.
"""

import os

import pytest

from ldlm_jax.config import validate
from ldlm_jax.experiments import tables
from ldlm_jax.experiments.cli import parse_args
from ldlm_jax.experiments.row_configs import (
  ablation_variants,
  config_module,
  row_availability,
  row_config,
  run_stages,
)
from ldlm_jax.experiments.spec import SCALES, ExperimentError, Row
from ldlm_jax.experiments.sweep import run_groups, run_table


@pytest.mark.parametrize('name', tables.NAMES)
def test_every_registered_table_builds_valid_configs(name, tmp_path):
  """What every table module promises: a title, uniquely named rows whose every stage's config
  validates at smoke and cpu scale, and orderings that are 'not measured' without data."""
  module = tables.get(name)
  assert isinstance(module.TITLE, str) and module.TITLE
  assert parse_args(['run', name, '--out', str(tmp_path)]).table == name   # the CLI offers it
  for scale_name in ('smoke', 'cpu'):
    rows = tables.rows(name, SCALES[scale_name])
    assert rows and all(isinstance(r, Row) for r in rows)
    assert len({r.name for r in rows}) == len(rows)
    for row in rows:
      if row_availability(row):   # e.g. encoder weights this machine lacks
        continue
      run_dir = str(tmp_path / 'runs' / row.name / 'seed1')
      stages = run_stages(SCALES[scale_name], row, 1, run_dir)
      assert stages[-1][0] == run_dir and len(stages) == (2 if row.stage_one else 1)
      for _, config in stages:
        validate(config)
        assert (config.train.seed, config.data.seed) == (1, 1)
  for claim, verdict, _ in tables.orderings(name, {'rows': {}, 'reference': {}}, {'sample_steps': [8]}):
    assert claim and verdict == 'not measured'


def test_unknown_table_names_the_choices():
  with pytest.raises(ExperimentError, match='table1, table2'):
    tables.get('table3')


def test_table1_rows_are_configs_ablations_variants():
  variants = ablation_variants()
  scale = SCALES['cpu']   # 1400 steps
  rows = {r.name: r for r in tables.rows('table1', scale)}
  assert list(rows) == ['recon_mse', 'recon_ce', 'recon_mse_ce', 'warmup_none', 'warmup_short', 'warmup_long',
                        'timesteps_uniform', 'timesteps_adaptive', 'sigma_dec_0.0', 'sigma_dec_0.1',
                        'sigma_dec_0.25', 'sigma_dec_0.5', 'sigma_dec_1.0', 'sigma_dec_2.0']
  for name in ('recon_mse', 'recon_ce', 'recon_mse_ce', 'timesteps_uniform', 'timesteps_adaptive'):
    assert rows[name].overrides == variants[name]
  assert rows['sigma_dec_0.25'].overrides == variants['decoder_noise_0.25'] == {'loss.decoder_noise_std': 0.25}
  assert [rows[f'warmup_{k}'].overrides['encoder_warmup.steps'] for k in ('none', 'short', 'long')] == [0, 70, 700]
  # Rows with one config share a run: recon_mse = timesteps_adaptive = sigma_dec_0.5, and at cpu
  # scale warmup_long = timesteps_uniform (the demo's warmup is half its run).
  groups = run_groups(scale, list(rows.values()), 0)
  assert groups['recon_mse'] == ['recon_mse', 'timesteps_adaptive', 'sigma_dec_0.5']
  assert groups['warmup_long'] == ['warmup_long', 'timesteps_uniform'] and len(groups) == 11


def test_table2_plan_builds_valid_configs_for_both_cosmos_stages(tmp_path):
  # Rows and order are configs/latent_spaces.py's; a two-stage row trains its stage one first.
  module = config_module(tables.get('table2').LATENT_SPACES_FILE)
  assert module.TWO_STAGE == {'cosmos': 'cosmos_stage2'}
  for scale_name in ('smoke', 'cpu'):
    scale = SCALES[scale_name]
    rows = tables.rows('table2', scale)
    assert tuple(r.name for r in rows) == tuple(module.ROWS)
    # Five distinct runs: no row's config equals another's.
    assert run_groups(scale, rows, 0) == {r.name: [r.name] for r in rows}
    for row in rows:
      run_dir = str(tmp_path / 'runs' / row.name / 'seed0')
      stages = run_stages(scale, row, 0, run_dir)
      for _, config in stages:
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
        assert not final.train.init_from.workdir
        assert final.latent_space.name == module.VARIANTS[row.name].get('latent_space.name', 'ldlm')
    # The variant's own choice wins over the scale's: scratch embeddings learn from step 0.
    scratch = row_config(scale, next(r for r in rows if r.name == 'scratch_emb'), 0)
    assert scratch.encoder_warmup.steps == 0


def test_table4_6_7_rows():
  cpu = SCALES['cpu']
  assert [r.overrides['encoder.layer'] for r in tables.rows('table4', cpu)] == [2, 3, 4, 5, 6]
  table6 = {r.name: r for r in tables.rows('table6', cpu)}
  assert table6['bert_base'].overrides == ablation_variants()['encoder_bert_base']
  assert (table6['minilm_l6'].needs, table6['bert_base'].needs, table6['gpt2'].needs) == ('', 'bert-base', 'gpt2')
  perceiver, self_attention = tables.rows('table7', cpu)
  assert row_config(cpu, perceiver, 0).model.latent_encoder.type == 'perceiver'
  assert row_config(cpu, self_attention, 0).model.latent_decoder.type == 'self_attention'


def test_textldm_table_plans_two_stage_rows_next_to_ldlm(tmp_path):
  # LDLM is the scale's base; each TextLDM row trains its VAE (stage one, REPA on or off) and then
  # the DiT on it. Without the config schema's diffusion.process the rows say so and the sweep refuses.
  from ldlm_jax.config import base_config
  has_process = 'process' in base_config().diffusion
  scale = SCALES['smoke']
  rows = tables.rows('textldm', scale)
  assert [r.name for r in rows] == ['ldlm', 'textldm', 'textldm_norepa']
  assert row_availability(rows[0]) == ''
  for row in rows[1:]:
    (one_dir, one), = run_stages(scale, row, 0, str(tmp_path / row.name / 'seed0'))[:1]
    validate(one)
    assert (one.latent_space.name, one.latent_space.stage) == ('textldm_vae', 'vae')
    assert (one.latent_space.repa_weight > 0) == (row.name == 'textldm')
    assert one.train.num_steps == 1 and one_dir.endswith(os.path.join(row.name, 'stage_one', 'seed0'))
    why = row_availability(row)
    if has_process:
      assert why == ''
      final = run_stages(scale, row, 0, str(tmp_path / row.name / 'seed0'))[-1][1]
      validate(final)
      assert final.diffusion.process == 'rectified_flow'
    else:
      assert 'config schema lacks' in why
  if not has_process:
    with pytest.raises(ExperimentError, match='config schema lacks'):
      run_table('textldm', 'smoke', 1, str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()

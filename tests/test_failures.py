"""Every user mistake and every fault: one sentence, exit code 2, no traceback, nothing lost.

One test per class of fault. Each asserts the exit code, the sentence, that no
traceback was printed, and that the files there before are byte-identical afterwards.
Most cases stop before anything is compiled; the damaged-checkpoint resume and SIGINT
share one training subprocess on a copy of the session's tiny run.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from ldlm_testing import REPO, subprocess_env, train_command


def _snapshot(root):
  """{relative path: sha256} of every file under root (folders as None)."""
  out = {}
  for base, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(base, name), root)] = None
    for name in files:
      path = os.path.join(base, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _cli(*args, module='ldlm_jax.train'):
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], env=subprocess_env(),
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def _one_sentence(proc, *fragments):
  """Exit code 2, stderr's last line is `error: ...` holding every fragment, no traceback."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert 'Traceback' not in proc.stderr + proc.stdout, proc.stderr[-3000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith('error: '), proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in line, line
  return line


def _tiny(*args):
  return ('--config', os.path.join(REPO, 'configs', 'tiny.py'), *args)


@pytest.mark.slow
def test_config_errors_are_one_sentence(tmp_path):
  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  before = _snapshot(tmp_path)
  workdir = tmp_path / 'run'
  _one_sentence(_cli('--config', tmp_path / 'nope.py', '--workdir', workdir),
                f'config file {tmp_path / "nope.py"} does not exist')
  _one_sentence(_cli('--config', broken, '--workdir', workdir), 'syntax error at line 1')
  _one_sentence(_cli(*_tiny('--config.train.no_such_key=1', '--workdir', workdir)),
                '--config.train.no_such_key is not a config key',
                'did you mean --config.train.num_steps?')
  _one_sentence(_cli(*_tiny('--config.trian.batch_size=2', '--workdir', workdir)),
                'did you mean --config.train.batch_size?')
  # bench takes --config too and shares the parser.
  _one_sentence(_cli('train', *_tiny('--config.model.latent_dimm=8'), module='ldlm_jax.bench'),
                'did you mean --config.model.latent_dim?')
  # A work directory under a regular file.
  _one_sentence(_cli(*_tiny('--workdir', kept / 'notes.txt' / 'run')),
                f'{kept / "notes.txt"} is a file, not a directory')
  assert _snapshot(tmp_path) == before and not workdir.exists()


@pytest.mark.slow
def test_numeric_flags_and_output_paths_are_checked_before_work(tmp_path):
  (tmp_path / 'file').write_text('mine')
  before = _snapshot(tmp_path)
  # No run is needed: the flags are checked before the work directory is read.
  workdir = tmp_path / 'no_run'
  out = tmp_path / 'samples.jsonl'
  _one_sentence(_cli('--workdir', workdir, '--out', out, '--steps', 0, module='ldlm_jax.sample'),
                '--steps must be >= 1 (got 0)')
  _one_sentence(_cli('--workdir', workdir, '--out', out, '--batch_size', 0, '--num_samples', -1,
                     module='ldlm_jax.sample'), '--num_samples must be >= 1 (got -1)')
  _one_sentence(_cli('--workdir', workdir, '--out', tmp_path / 'file' / 'x.jsonl',
                     module='ldlm_jax.sample'),
                f'--out {tmp_path / "file" / "x.jsonl"} cannot be written', 'is a file')
  _one_sentence(_cli('--workdir', workdir, '--steps', 0, module='ldlm_jax.post_train_decoder'),
                '--steps must be >= 1 (got 0)')
  _one_sentence(_cli('train', *_tiny('--iters', 0), module='ldlm_jax.bench'),
                '--iters must be >= 1 (got 0)')
  _one_sentence(_cli('train', *_tiny('--json_out', tmp_path / 'file' / 'b.json'),
                     module='ldlm_jax.bench'), 'is a file, not a directory')
  # The argparse commands use the same checks.
  from ldlm_jax import evaluate, plots
  samples = tmp_path / 's.jsonl'
  samples.write_text(json.dumps({'text': 'a b c'}) + '\n')
  before = _snapshot(tmp_path)
  assert evaluate.main(['--samples', str(samples), '--out', str(tmp_path / 'file' / 'm.json')]) == 2
  assert plots.main(['--workdir', str(tmp_path), '--out_dir', str(tmp_path / 'file' / 'p')]) == 2
  assert _snapshot(tmp_path) == before and not out.exists()


@pytest.mark.slow
def test_refused_fresh_run_leaves_nothing_and_names_undecodable_files(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  for i in range(3):
    (corpus / f'doc{i}.txt').write_bytes(b'\xff\xfe not utf-8 \x80' + bytes([i]))
  before = _snapshot(tmp_path)
  workdir = tmp_path / 'run'
  _one_sentence(_cli(*_tiny('--config.data.source=files', f'--config.data.path={corpus}',
                            '--workdir', workdir)),
                'All 3 documents', 'skipped as undecodable')
  assert not workdir.exists()  # no empty checkpoints/, no normalization file
  assert _snapshot(tmp_path) == before


def test_refused_resume_adds_no_files(tiny_run, tmp_path):
  # Refused after the restore, when the logger has opened a TensorBoard events file.
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  before = _snapshot(workdir)
  proc = subprocess.run(train_command(workdir, '--config.train.num_steps=30',
                                      '--config.train.eval_every=8', '--config.data.eval_split=nosuch'),
                        env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
  _one_sentence(proc, "has no split 'nosuch'")
  assert _snapshot(workdir) == before


def test_evaluate_all_empty_samples_and_prepare_overwrite_of_a_foreign_folder(tmp_path, capsys):
  from ldlm_jax import evaluate
  from ldlm_jax.data import prepare
  samples = tmp_path / 'empty.jsonl'
  samples.write_text(''.join(json.dumps({'text': t}) + '\n' for t in ('', ' ', '')))
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'thesis.tex').write_text('do not delete')
  before = _snapshot(tmp_path)
  assert evaluate.main(['--samples', str(samples), '--out', str(tmp_path / 'm.json')]) == 2
  assert 'Every one of the 3 texts' in capsys.readouterr().err
  assert prepare.main(['--path', str(tmp_path), '--tokenizer', 'minilm-l6', '--seq_len', '16',
                       '--out', str(mine), '--overwrite']) == 2
  err = capsys.readouterr().err
  assert 'is not a prepared dataset' in err and 'nothing was deleted' in err
  assert _snapshot(tmp_path) == before


def test_training_split_smaller_than_one_batch_is_named(tmp_path, caplog):
  from ldlm_jax.config import base_config
  from ldlm_jax.data import pipeline
  from ldlm_jax.data.testing import NumberTokenizer
  (tmp_path / 'train.jsonl').write_text(
      ''.join(json.dumps({'text': ' '.join(str(1 + 3 * i + j) for j in range(3))}) + '\n'
              for i in range(3)))  # 3 chunks of 4 tokens (3 + EOS)
  c = base_config()
  c.data.source, c.data.path, c.data.seq_len, c.data.prefetch = 'files', str(tmp_path), 4, 0
  it = pipeline.make_train_iterator(c, NumberTokenizer(eos_id=0), batch_size=8)
  it.close()
  assert "The 'train' split holds only 3 chunk(s) of data.seq_len=4 tokens, fewer than one batch of 8" in caplog.text


def test_checkpoint_mismatch_and_damage_read_differently(tiny_run, tmp_path):
  import jax
  from ldlm_jax.training import checkpoint as ckpt_lib
  from ldlm_jax.training import restore
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  run = restore.load_run(str(workdir))
  abstract = ckpt_lib.ensure_abstract(run.state)
  wrong = jax.tree.map(lambda x: x, abstract)
  wrong = wrong.replace(step=jax.ShapeDtypeStruct((2,), abstract.step.dtype))
  checkpointer = ckpt_lib.Checkpointer(str(workdir), read_only=True)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='step has shape'):
    checkpointer.restore(24, wrong)
  import flax
  fewer = {k: v for k, v in flax.serialization.to_state_dict(abstract).items() if k != 'opt_state'}
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='tree of arrays differs'):
    checkpointer.restore(24, fewer)  # the checkpoint holds more than this model
  # A step without its meta item, then one with a truncated array file: both damage.
  shutil.rmtree(workdir / 'checkpoints' / '24' / 'meta')
  with pytest.raises(ckpt_lib.CheckpointDamagedError, match='step 24 .* is damaged .*meta item'):
    checkpointer.read_meta(24)
  checkpointer.close()
  # Every array file truncated: sampling reads only part of the state (the inference
  # state), so one truncated file might hold only arrays it never reads.
  data_dir = workdir / 'checkpoints' / '16' / 'state' / 'ocdbt.process_0' / 'd'
  for data_file in data_dir.iterdir():
    with open(data_file, 'r+b') as f:
      f.truncate(data_file.stat().st_size // 2)
  before = _snapshot(workdir)
  proc = subprocess.run(
      [sys.executable, '-c', 'from ldlm_jax.training import restore; import sys; '
       f'print(restore.load_run({str(workdir)!r}).step)'],
      env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.split()[-1] == '8', proc.stderr[-3000:]
  warnings = [l for l in proc.stderr.splitlines() if l.startswith('WARNING: checkpoint step')]
  assert len(warnings) == 2 and 'step 24 is damaged' in warnings[0] and 'step 16' in warnings[1]
  assert 'does not fit' not in proc.stderr and 'Traceback' not in proc.stderr
  assert _snapshot(workdir) == before  # readers keep damaged steps in place


def test_damaged_latest_step_resumes_from_intact_one_and_sigint_checkpoints(tiny_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  data_dir = workdir / 'checkpoints' / '24' / 'state' / 'ocdbt.process_0' / 'd'
  biggest = max(data_dir.iterdir(), key=lambda p: p.stat().st_size)
  with open(biggest, 'r+b') as f:
    f.truncate(biggest.stat().st_size // 2)
  damaged = _snapshot(workdir / 'checkpoints' / '24')
  err_path = tmp_path / 'stderr.txt'
  with open(err_path, 'w') as err_file:  # a file: an unread stderr pipe could fill and block
    proc = subprocess.Popen(train_command(workdir, '--config.train.num_steps=100000',
                                          '--config.train.checkpoint_every=100000'),
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=err_file, text=True)
  timer = threading.Timer(300, proc.kill)
  timer.start()
  stdout = []
  for line in proc.stdout:  # Ctrl-C once training steps are being logged
    stdout.append(line)
    if line.startswith('step 18/'):
      proc.send_signal(signal.SIGINT)
      break
  rest, _ = proc.communicate()
  timer.cancel()
  stderr = err_path.read_text()
  out = ''.join(stdout) + rest
  assert proc.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in out + stderr
  warning = [l for l in out.splitlines() if l.startswith('WARNING: checkpoint step 24 is damaged')]
  assert len(warning) == 1 and 'using step 16 instead' in warning[0] and 'does not fit' not in out
  assert 'resumed from step 16' in out
  last = out.strip().splitlines()[-1]
  assert last.startswith('SIGINT: checkpoint at step ') and last.endswith(' written; exiting.')
  step = int(last.split('step ')[1].split()[0])
  assert 16 < step < 100000
  steps = sorted(int(n) for n in os.listdir(workdir / 'checkpoints') if n.isdigit())
  assert steps == [8, 16, step]
  # Resumed from step 16 exactly: the logged losses equal the uninterrupted run's.
  timing = ('steps_per_sec', 'tokens_per_sec')
  def losses(run):
    with open(os.path.join(run, 'metrics.jsonl')) as f:
      return [{k: v for k, v in json.loads(l).items() if k not in timing} for l in f]
  resumed, straight = losses(workdir), losses(tiny_run)
  assert resumed[-1]['step'] >= 18
  assert ([r for r in resumed if r['step'] <= 24] ==
          [r for r in straight if r['step'] <= resumed[-1]['step']])
  # The damaged step is kept, byte for byte, out of orbax's way.
  assert _snapshot(workdir / 'damaged_checkpoints' / '24') == damaged
  # Library INFO lines (orbax writes over a hundred) are hidden by default.
  assert not [l for l in (out + stderr).splitlines() if l[:1] == 'I' and l[1:5].isdigit()]


def test_every_step_damaged_moves_nothing(tmp_path):
  from ldlm_jax.training import checkpoint as ckpt_lib

  class Steps:  # the part of Checkpointer that restore_latest_intact uses
    directory = str(tmp_path / 'checkpoints')

    def all_steps(self):
      return [8, 16]

  for step in (8, 16):
    os.makedirs(tmp_path / 'checkpoints' / str(step))
  before = _snapshot(tmp_path)

  def damaged(step):
    raise ckpt_lib.CheckpointDamagedError(step, Steps.directory, 'truncated')
  logged = []
  with pytest.raises(ckpt_lib.CheckpointDamagedError, match='step 16 .* every older step; nothing was moved'):
    ckpt_lib.restore_latest_intact(Steps(), damaged, logged.append, set_aside=True)
  assert _snapshot(tmp_path) == before and not logged  # a rerun must not start from scratch


def test_late_reads_into_a_closed_event_loop_are_silenced_and_nothing_else(monkeypatch, capsys):
  """A damaged step's in-flight reads finish into orbax's closed loop, even at exit (CI saw it).

  The real error is made here the way tensorstore meets it: `call_soon_threadsafe` on a
  closed loop, handed to `sys.excepthook`. After damage was found it prints nothing; the
  same message raised from any other code, and any other error, still print.
  """
  import asyncio
  from ldlm_jax.training import checkpoint as ckpt_lib
  printed = []
  monkeypatch.setattr(sys, 'excepthook', lambda t, e, tb: printed.append(str(e)))
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  monkeypatch.setattr(ckpt_lib, '_SILENCED', False)
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError:
    kind, error, tb = sys.exc_info()
    late_read = (kind, error, tb.tb_next)  # called from C: the traceback starts in asyncio
  try:
    raise RuntimeError('Event loop is closed')
  except RuntimeError:
    elsewhere = sys.exc_info()
  sys.excepthook(*late_read)
  assert printed == ['Event loop is closed']  # not silenced before any damage was found
  ckpt_lib._silence_failed_reads()
  sys.excepthook(*late_read)
  sys.excepthook(*elsewhere)
  sys.excepthook(ValueError, ValueError('other'), None)
  assert printed == ['Event loop is closed'] * 2 + ['other']

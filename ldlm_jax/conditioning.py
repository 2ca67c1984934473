"""Conditional generation (docs/method.md Section 6.6): which tokens of a chunk are given.

Training: `draw_prompt_masks` marks, per example, a random prefix or random
spans of the chunk as given (True), or nothing (the dropped / "null"
condition of classifier-free guidance), following the `condition` config
section. The masks are drawn on the host from a NumPy generator seeded by
(train.seed, step, process), so a resumed run draws the same masks, and
travel in the batch dict next to the tokens (docs/architecture.md, "The batch").

Sampling: `read_prompts` reads a JSONL file of records, each either
  {"prompt": "text to continue"}                     a prefix to continue, or
  {"text": "The [[...]] sat on the [[...]]."}       spans to fill: every
                                                     `[[...]]` is a gap
and `encode_prompts` turns them into (tokens, mask) rows of the model's
length: the given text's tokens at their positions, gaps and the rest of
the chunk to be generated. A `[[...]]` gap is filled with `gap_tokens`
generated tokens (default 4; `[[n]]` asks for n).
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from ldlm_jax.errors import ConfigError

GAP = re.compile(r'\[\[(\d*|\.\.\.)\]\]')
DEFAULT_GAP_TOKENS = 4


# ----------------------------------------------------------------- training --
def mask_rng(seed: int, step: int, process_index: int = 0) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(step), int(process_index), 15])


def draw_prompt_masks(config, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
  """(batch, length) bool, True = given; one independent draw per example."""
  cc = config.condition
  out = np.zeros((batch, length), bool)
  for i in range(batch):
    if rng.random() < float(cc.drop_prob):
      continue                                  # the null condition
    if rng.random() < float(cc.prefix_prob):
      lo = int(np.ceil(float(cc.min_prefix) * length))
      hi = max(lo, int(np.floor(float(cc.max_prefix) * length)))
      out[i, :rng.integers(lo, hi + 1)] = True
    else:
      out[i] = span_mask(rng, length, int(cc.span_max_gaps), float(cc.span_min_fraction),
                         float(cc.span_max_fraction))
  return out


def span_mask(rng: np.random.Generator, length: int, max_gaps: int, min_frac: float,
              max_frac: float) -> np.ndarray:
  """Given everywhere except 1..max_gaps gaps covering a random fraction of the chunk."""
  num_gaps = int(rng.integers(1, max_gaps + 1))
  total = int(round(rng.uniform(min_frac, max_frac) * length))
  total = min(max(total, num_gaps), length)
  # Gap lengths: a random composition of `total` into num_gaps positive parts.
  cuts = np.sort(rng.choice(np.arange(1, total), size=num_gaps - 1, replace=False)) if num_gaps > 1 else []
  sizes = np.diff(np.concatenate([[0], cuts, [total]])).astype(int)
  # Given tokens between the gaps: a random composition of the rest into num_gaps + 1 parts >= 0.
  rest = length - total
  between = rng.multinomial(rest, np.full(num_gaps + 1, 1.0 / (num_gaps + 1)))
  mask = np.ones(length, bool)
  pos = 0
  for g in range(num_gaps):
    pos += int(between[g])
    mask[pos:pos + sizes[g]] = False
    pos += int(sizes[g])
  return mask


# ----------------------------------------------------------------- sampling --
@dataclasses.dataclass
class Prompt:
  """One record: the text pieces, alternately given and gap sizes (a continuation: one piece)."""
  index: int
  kind: str                 # 'continuation' | 'infill'
  pieces: list              # str (given text) or int (number of tokens to generate)
  record: dict


def read_prompts(path: str) -> list[Prompt]:
  """The records of a prompts JSONL file; ConfigError naming the line for a bad one."""
  prompts = []
  with open(path, encoding='utf-8') as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        raise ConfigError(f'{path} line {line_no} is not JSON; write one object per line, '
                          'e.g. {"prompt": "Once upon a time"}.') from None
      prompts.append(prompt_from_record(record, len(prompts), f'{path} line {line_no}'))
  if not prompts:
    raise ConfigError(f'{path} has no prompts; write one JSON object per line.')
  return prompts


def prompts_from_records(records, where: str = 'prompts') -> list[Prompt]:
  """Prompts from Python values: a str is a text to continue; a dict is a record as in a prompts
  file ({"prompt": ...} or {"text": "... [[...]] ..."}). ConfigError naming the item for a bad one."""
  if isinstance(records, (str, dict)):
    records = [records]
  prompts = []
  for i, record in enumerate(records):
    if isinstance(record, str):
      record = {'prompt': record}
    prompts.append(prompt_from_record(record, len(prompts), f'{where}[{i}]'))
  if not prompts:
    raise ConfigError(f'{where} is empty; give at least one prompt.')
  return prompts


def prompt_from_record(record, index: int, where: str) -> Prompt:
  """One prompt record ({"prompt": ...} or {"text": ...}); `where` names it in the error."""
  if not isinstance(record, dict) or not (('prompt' in record) ^ ('text' in record)):
    raise ConfigError(f'{where} needs exactly one of "prompt" (a text to continue) '
                      'or "text" (a text with [[...]] gaps to fill).')
  if 'prompt' in record:
    text = record['prompt']
    if not isinstance(text, str) or not text.strip():
      raise ConfigError(f'{where} has an empty prompt; give some text to continue.')
    return Prompt(index, 'continuation', [text], record)
  text = record['text']
  if not isinstance(text, str) or not text.strip():
    raise ConfigError(f'{where} has an empty text; give a text with [[...]] gaps.')
  pieces, pos = [], 0
  for m in GAP.finditer(text):
    pieces.append(text[pos:m.start()])
    size = int(m.group(1)) if m.group(1).isdigit() else DEFAULT_GAP_TOKENS
    if size < 1:
      raise ConfigError(f'{where} asks for a gap of {size} tokens; use [[n]] with n >= 1.')
    pieces.append(size)
    pos = m.end()
  pieces.append(text[pos:])
  if len(pieces) == 1:
    raise ConfigError(f'{where} has no [[...]] gap to fill; mark one, '
                      'or use "prompt" to continue the text.')
  pieces = [p for p in pieces if p != '']
  if not any(isinstance(p, str) and p.strip() for p in pieces):
    raise ConfigError(f'{where} has only gaps; give some text around them.')
  return Prompt(index, 'infill', pieces, record)


def encode_prompts(prompts: list[Prompt], tokenizer, length: int):
  """(tokens (P, L) int32, mask (P, L) bool): each prompt's given tokens at their positions.

  Text pieces are tokenized separately (no special tokens), so a given
  piece's tokens are exactly what the tokenizer makes of it."""
  tokens = np.zeros((len(prompts), length), np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for p in prompts:
    pos = 0
    for piece in p.pieces:
      if isinstance(piece, int):
        pos += piece
        continue
      ids = list(tokenizer.encode(piece))
      if pos + len(ids) > length:
        break
      tokens[p.index, pos:pos + len(ids)] = ids
      mask[p.index, pos:pos + len(ids)] = True
      pos += len(ids)
    need = prompt_length(p, tokenizer)
    if need >= length:
      raise ConfigError(
          f'prompt {p.index} is {need} tokens but the model generates chunks of {length} '
          f'(data.seq_len), leaving nothing to generate; shorten it to under {length} tokens.')
    if not mask[p.index].any():
      raise ConfigError(f'prompt {p.index} has no tokens after tokenization; give some text.')
  return tokens, mask


def prompt_length(p: Prompt, tokenizer) -> int:
  """Tokens a prompt occupies (given tokens plus gaps; a continuation needs >= 1 more)."""
  return sum(piece if isinstance(piece, int) else len(list(tokenizer.encode(piece)))
             for piece in p.pieces)

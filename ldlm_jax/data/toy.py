"""A toy language with a strict word order: the check that a model learns order.

Every sentence walks one fixed cycle of word classes; each slot's word is
drawn uniformly from its class:

  determiner  adjective  noun  verb  adverb  '.'

A bag of words keeps the class frequencies and loses the order, so the
fraction of *legal adjacent pairs* (the next word's class is the one after
the current word's class in the cycle; '.' is followed by a determiner)
separates a model that learned order (close to 1) from one that learned
word frequencies only (about 1/6 for these classes). The same samples with
their words shuffled are the frequency-only reference on the model's own
vocabulary.

Every word is a single token for the WordPiece (BERT / MiniLM) and GPT-2
BPE tokenizers (a leading space in GPT-2), so a chunk of L tokens holds L
words, cut at a random phase of the cycle.

The corpus also gets its own frozen encoder, DIR/encoder: a word-level
tokenizer over the language's 21 words and BERT's five special tokens, and a
small BERT (2 layers, width 64) with random weights, loaded like any local
model directory (`--config.encoder.name=local --config.encoder.path=DIR/encoder`).
Its 26-token vocabulary makes the discrete baselines' heads and samplers, and
LDLM's token decoder, about a thousand times smaller than over MiniLM's 30522
WordPiece tokens: the order checks of the test suite train on it in seconds
of compute per hundred steps.

  python -m ldlm_jax.data.toy --out DIR     # writes DIR/{train,validation,reference}.jsonl, DIR/encoder/
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterable, Sequence

import safetensors.numpy
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers

from ldlm_jax import fileio
from ldlm_jax.encoders import bert, loading

CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('determiner', ('the', 'a', 'this', 'that')),
    ('adjective', ('big', 'small', 'old', 'red')),
    ('noun', ('dog', 'cat', 'man', 'car')),
    ('verb', ('saw', 'found', 'took', 'made')),
    ('adverb', ('today', 'again', 'here', 'there')),
    ('stop', ('.',)),
)
WORD_CLASS: dict[str, int] = {w: i for i, (_, words) in enumerate(CLASSES) for w in words}
SPLITS = {'train': 0, 'validation': 1, 'reference': 2}
ENCODER_DIR = 'encoder'
SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')   # BERT's; [SEP] ends a document
# The toy encoder's BERT: large enough to tell 26 tokens and 512 positions apart, small enough
# that its forward pass costs nothing next to the model trained on it.
ENCODER_SIZE = {'hidden_size': 64, 'num_hidden_layers': 2, 'num_attention_heads': 4,
                'intermediate_size': 128, 'max_position_embeddings': 512}


def sentences(rng: random.Random, count: int) -> list[str]:
  """`count` sentences of the language, each slot uniform over its class."""
  return [' '.join(rng.choice(words) for _, words in CLASSES) for _ in range(count)]


def documents(seed: int, num_documents: int, sentences_per_document: int) -> list[str]:
  rng = random.Random(seed)
  return [' '.join(sentences(rng, sentences_per_document)) for _ in range(num_documents)]


def write_corpus(out: str, num_documents: int = 400, sentences_per_document: int = 50,
                 seed: int = 0) -> str:
  """Writes out/{train,validation,reference}.jsonl (one document a line) and the toy encoder
  out/encoder (write_encoder); returns `out`.

  Validation and reference get a tenth of the training documents each, from
  their own seeds. The files are written to a temporary name and renamed, so
  an interrupted call leaves no partial corpus.
  """
  os.makedirs(out, exist_ok=True)
  for split, offset in SPLITS.items():
    n = num_documents if split == 'train' else max(num_documents // 10, 1)
    docs = documents(seed * 1000 + offset, n, sentences_per_document)
    fileio.write_jsonl(os.path.join(out, f'{split}.jsonl'), ({'text': d} for d in docs))
  write_encoder(os.path.join(out, ENCODER_DIR), seed)
  return out


def write_encoder(out: str, seed: int = 0) -> str:
  """Writes the toy language's frozen encoder into `out` (created) and returns `out`: a word-level
  `tokenizer.json`, a BERT `config.json` (ENCODER_SIZE) and `model.safetensors` with BERT's
  random initialisation from `seed`. Each file is written to a temporary name and renamed."""
  words = [w for _, members in CLASSES for w in members]
  vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *words])}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token='[UNK]'))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()      # 'here.' -> 'here', '.'
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  config = {'model_type': 'bert', 'architectures': ['BertModel'], 'vocab_size': len(vocab),
            'type_vocab_size': 2, 'hidden_act': 'gelu', 'layer_norm_eps': 1e-12,
            'position_embedding_type': 'absolute', **ENCODER_SIZE}
  hf = bert.BertConfig.from_hf(config, out)
  tensors = loading.random_torch_tensors(bert.weight_specs(hf), seed=seed)
  os.makedirs(out, exist_ok=True)
  fileio.write_text(os.path.join(out, 'tokenizer.json'), tok.to_str())
  fileio.write_text(os.path.join(out, loading.CONFIG_FILE), json.dumps(config, indent=1))
  with fileio.atomic_open(os.path.join(out, loading.SAFETENSORS_FILE), binary=True) as f:
    f.write(safetensors.numpy.save(tensors))
  return out


def words_of(text: str) -> list[str]:
  """Lower-cased words and full stops of a decoded sample ('dog.' -> 'dog', '.')."""
  return text.lower().replace('.', ' . ').split()


def legal_pair_fraction(texts: Iterable[str]) -> float:
  """Fraction of adjacent word pairs whose classes follow the cycle (unknown words are illegal)."""
  legal = total = 0
  n = len(CLASSES)
  for text in texts:
    w = words_of(text)
    for a, b in zip(w, w[1:]):
      total += 1
      ca, cb = WORD_CLASS.get(a), WORD_CLASS.get(b)
      legal += int(ca is not None and cb is not None and cb == (ca + 1) % n)
  return legal / max(total, 1)


def shuffled(texts: Sequence[str], seed: int = 0) -> list[str]:
  """The same texts with each one's words in a random order (the frequency-only reference)."""
  rng = random.Random(seed)
  out = []
  for text in texts:
    w = words_of(text)
    rng.shuffle(w)
    out.append(' '.join(w))
  return out


def order_report(texts: Sequence[str], seed: int = 0) -> dict:
  """{'legal_pairs', 'shuffled_legal_pairs', 'known_words'} of a sample set."""
  w = [x for t in texts for x in words_of(t)]
  return {'legal_pairs': legal_pair_fraction(texts),
          'shuffled_legal_pairs': legal_pair_fraction(shuffled(texts, seed)),
          'known_words': sum(x in WORD_CLASS for x in w) / max(len(w), 1)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', required=True, help='directory to write the corpus splits into')
  p.add_argument('--num_documents', type=int, default=400)
  p.add_argument('--sentences_per_document', type=int, default=50)
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args(argv)
  if a.num_documents < 1 or a.sentences_per_document < 1:
    p.error('--num_documents and --sentences_per_document must be at least 1')
  print(write_corpus(a.out, a.num_documents, a.sentences_per_document, a.seed))


if __name__ == '__main__':
  main()

"""Gen. PPL (MDLM protocol) against hand computations on a fixed bigram scorer."""

import math

import jax
import numpy as np
import pytest

from ldlm_jax.encoders.tokenizers import gpt2_bpe_files_dir, load_tokenizer
from ldlm_jax.evaluation import genppl, scorers
from ldlm_jax.evaluation.llama import Llama, LlamaConfig, params_from_hf_tensors
from ldlm_testing import random_hf_llama

EOS = 0
VOCAB = 10


class _Tok:
  eos_id = EOS


class BigramScorer(scorers.CausalScorer):
  """log p(x_t | x_<t) = TABLE[x_{t-1}, x_t]: a fixed normalized bigram model."""

  def __init__(self, max_len=64):
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(VOCAB, VOCAB))
    self.table = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    self.name, self.tokenizer, self.max_len = 'bigram', _Tok(), max_len
    self.calls = []

  def token_logprobs(self, ids_BL, mask_BL):
    self.calls.append(np.array(ids_BL))
    lp = self.table[ids_BL[:, :-1], ids_BL[:, 1:]]
    return np.where(mask_BL[:, 1:] > 0, lp, 0.0)

  def last_hidden(self, ids_BL, mask_BL):
    raise NotImplementedError


def hand_nll(table, sample, max_len):
  """Sum of -log p over targets 1.. up to and including the first EOS at t >= 1; token count."""
  sample = sample[:max_len]
  nll, count = 0.0, 0
  for t in range(1, len(sample)):
    nll -= table[sample[t - 1], sample[t]]
    count += 1
    if sample[t] == EOS:
      break
  return nll, count


SAMPLES = [
    [5, 3, EOS, 4, EOS, 2],   # scores 3|5 and EOS|3; everything after the first EOS is masked
    [EOS, 1, 2, EOS, 9],      # a leading EOS is context (like a BOS); stops at the EOS at t=3
    [7],                      # a single token has nothing to score
    [],                       # empty
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2],  # longer than max_len=8: truncated, no EOS
    [4, 4, 4],
]


@pytest.mark.parametrize('batch_size', [1, 2, 8])
def test_gen_ppl_matches_hand_computation(batch_size):
  scorer = BigramScorer(max_len=8)
  result = genppl.generative_perplexity(scorer, SAMPLES, batch_size=batch_size, length_multiple=4)
  per_sample = [hand_nll(scorer.table, s, 8) for s in SAMPLES]
  assert [c for _, c in per_sample] == [2, 3, 0, 0, 7, 2]
  np.testing.assert_allclose(result.sample_nll, [n for n, _ in per_sample], rtol=1e-12)
  np.testing.assert_array_equal(result.sample_tokens, [c for _, c in per_sample])
  total_nll, total_tokens = sum(n for n, _ in per_sample), sum(c for _, c in per_sample)
  assert result.num_tokens == total_tokens == 14
  # exp(total NLL / total tokens), not the mean of per-sample perplexities.
  assert result.gen_ppl == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-12)
  mean_of_ppls = np.mean([math.exp(n / c) for n, c in per_sample if c])
  assert abs(result.gen_ppl - mean_of_ppls) > 1e-3
  # No BOS: each scored row starts with the sample's own first token.
  first_tokens = {int(row[0]) for call in scorer.calls for row in call}
  assert first_tokens <= {5, EOS, 1, 4}
  assert all(call.shape[1] <= 8 for call in scorer.calls)


def test_scored_target_mask():
  ids = np.array([[EOS, 3, EOS, 4, EOS], [2, 3, 4, 5, 6]])
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
  expected = np.array([[True, True, False, False], [True, True, False, False]])
  np.testing.assert_array_equal(genppl.scored_target_mask(ids, mask, EOS), expected)


def test_no_scored_token_gives_nan():
  result = genppl.generative_perplexity(BigramScorer(), [[3], []])
  assert result.num_tokens == 0 and math.isnan(result.gen_ppl)


@pytest.fixture(scope='module')
def gpt2_tokenizer():
  return load_tokenizer(gpt2_bpe_files_dir())


def test_eos_marker_split_joins_with_scorer_eos(gpt2_tokenizer):
  tok = gpt2_tokenizer
  ids = genppl.encode_with_eos_marker(tok, 'Hello world[SEP] Next one[SEP][SEP]', '[SEP]')
  assert ids == tok.encode('Hello world') + [tok.eos_id] + tok.encode(' Next one') + [tok.eos_id, tok.eos_id]
  ids = genppl.encode_with_eos_marker(tok, '<|endoftext|>start', '<|endoftext|>')
  assert ids == [tok.eos_id] + tok.encode('start')
  # Without a marker the text is plain text: a literal marker is not an EOS.
  plain = genppl.encode_with_eos_marker(tok, 'a <|endoftext|> b', None)
  assert plain == tok.encode('a <|endoftext|> b') and tok.eos_id not in plain


def test_texts_with_markers_end_to_end(gpt2_tokenizer):
  """Texts -> scorer ids (marker -> EOS) -> Gen. PPL equals the hand value on those ids."""
  tok = gpt2_tokenizer

  class ModTok:
    eos_id = EOS

    def encode(self, text):  # GPT-2 ids folded into the bigram vocabulary, never EOS
      return [1 + i % (VOCAB - 1) for i in tok.encode(text)]

  scorer = BigramScorer()
  scorer.tokenizer = ModTok()
  texts = ['The cat sat.<|endoftext|> Another document', 'No marker here at all']
  result = genppl.generative_perplexity_of_texts(scorer, texts, ['<|endoftext|>', None])
  ids0 = ModTok().encode('The cat sat.') + [EOS] + ModTok().encode(' Another document')
  ids1 = ModTok().encode('No marker here at all')
  (n0, c0), (n1, c1) = hand_nll(scorer.table, ids0, 64), hand_nll(scorer.table, ids1, 64)
  assert c0 == len(ModTok().encode('The cat sat.')) and c1 == len(ids1) - 1
  assert result.gen_ppl == pytest.approx(math.exp((n0 + n1) / (c0 + c1)), rel=1e-12)
  with pytest.raises(ValueError, match='one per text'):
    genppl.generative_perplexity_of_texts(scorer, texts, ['[SEP]'])


def test_llama_scorer_padding_and_batching_do_not_change_scores():
  """The JAX scorer: a sample scored alone equals it scored in a padded batch with longer ones."""
  config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=4, max_position_embeddings=32)
  params = params_from_hf_tensors(random_hf_llama(config, seed=1), config)
  scorer = scorers.llama_scorer('tiny', config, params, _Tok())
  rng = np.random.RandomState(0)
  samples = [list(rng.randint(1, 50, size=n)) for n in (5, 17, 30, 40)]  # 40 > max_len: truncated
  together = genppl.generative_perplexity(scorer, samples, batch_size=4, length_multiple=32)
  alone = [genppl.generative_perplexity(scorer, [s], batch_size=1, length_multiple=32) for s in samples]
  np.testing.assert_allclose(together.sample_nll, [a.nll_sum for a in alone], rtol=1e-5)
  np.testing.assert_array_equal(together.sample_tokens, [4, 16, 29, 31])
  # Direct check of one sample against the model's own log-softmax.
  ids = np.array([samples[1]], np.int32)
  logits = np.asarray(jax.jit(Llama(config).apply)({'params': params}, ids), np.float64)[0]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
  expected = -sum(logp[t - 1, samples[1][t]] for t in range(1, 17))
  assert together.sample_nll[1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_perplexity_and_features_in_one_pass_equal_the_two_passes():
  """evaluate's path: Gen. PPL and MAUVE features from one forward pass per batch (Llama's
  `with_hidden`), equal to `generative_perplexity` + `features_from_ids`; the padding length
  does not change either. Lists the one pass cannot take whole (1 token) fall back to two passes."""
  config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=4, max_position_embeddings=32)
  params = params_from_hf_tensors(random_hf_llama(config, seed=2), config)
  scorer = scorers.llama_scorer('tiny', config, params, _Tok())
  calls = []
  both = scorer.logprobs_and_last_hidden
  scorer.logprobs_and_last_hidden = lambda ids, mask: calls.append(ids.shape) or both(ids, mask)
  rng = np.random.RandomState(1)
  samples = [list(rng.randint(1, 50, size=n)) for n in (3, 9, 17, 30, 31, 6)]
  for multiple in (4, 16, 32):
    calls.clear()
    result, features = genppl.perplexity_and_features(scorer, samples, batch_size=4, length_multiple=multiple)
    assert calls and all(shape[1] % multiple == 0 or shape[1] == 32 for shape in calls)
    apart = genppl.generative_perplexity(scorer, samples, batch_size=4, length_multiple=32)
    np.testing.assert_allclose(result.sample_nll, apart.sample_nll, rtol=1e-5)
    np.testing.assert_array_equal(result.sample_tokens, apart.sample_tokens)
    np.testing.assert_allclose(features, scorer.features_from_ids(samples, batch_size=4, length_multiple=32),
                               rtol=1e-4, atol=1e-5)
  with_short = samples + [[7]]   # one token: no Gen. PPL target, but a MAUVE feature
  calls.clear()
  result, features = genppl.perplexity_and_features(scorer, with_short, batch_size=4)
  assert not calls and features.shape == (7, 16)
  np.testing.assert_allclose(result.sample_nll[:-1], apart.sample_nll, rtol=1e-5)
  assert result.sample_tokens[-1] == 0


def test_padded_length_buckets():
  assert [scorers.padded_length(n, 16, 1024) for n in (1, 16, 17, 33, 128, 129, 200, 1000, 1025)] == \
      [16, 16, 32, 48, 128, 192, 256, 1024, 1024]
  assert scorers.padded_length(40, 16, 36) == 36


@pytest.mark.slow
def test_gpt2_scorer_matches_transformers(tmp_path, gpt2_tokenizer):
  """'gpt2' through the project's Flax GPT-2: Gen. PPL and MAUVE features equal HF GPT-2 by hand."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  hf_config = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=2, n_head=2)
  model = transformers.GPT2LMHeadModel(hf_config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 2:
        p.normal_(0.0, 0.3)
  model.save_pretrained(tmp_path)  # no tokenizer files: the registry uses the packaged GPT-2 BPE
  scorer = scorers.load_scorer('gpt2', str(tmp_path))
  assert scorer.max_len == 32 and scorer.tokenizer.eos_id == gpt2_tokenizer.eos_id == 50256
  texts = ['A short text.<|endoftext|> Then more words that are masked', 'Another sample without any end']
  result = genppl.generative_perplexity_of_texts(scorer, texts, '<|endoftext|>', batch_size=2)

  nll, count, features = 0.0, 0, []
  for text in texts:
    ids = genppl.encode_with_eos_marker(gpt2_tokenizer, text, '<|endoftext|>')
    with torch.no_grad():
      out = model(torch.tensor([ids]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0].double(), -1).numpy()
    for t in range(1, len(ids)):
      nll -= logp[t - 1, ids[t]]
      count += 1
      if ids[t] == 50256:
        break
    features.append(out.hidden_states[-1][0, -1].numpy())
  assert result.num_tokens == count
  assert result.gen_ppl == pytest.approx(math.exp(nll / count), rel=1e-4)
  ids = [genppl.encode_with_eos_marker(scorer.tokenizer, t, '<|endoftext|>') for t in texts]
  np.testing.assert_allclose(scorer.features_from_ids(ids), np.stack(features), atol=1e-4)
  # The one-pass path (GPT-2 has no both_fn: its two functions in one program) gives the same.
  together, together_features = genppl.perplexity_and_features(scorer, ids, batch_size=2)
  assert together.num_tokens == count
  assert together.gen_ppl == pytest.approx(math.exp(nll / count), rel=1e-4)
  np.testing.assert_allclose(together_features, np.stack(features), atol=1e-4)
  # features() takes plain text: the second text has no marker, so it matches too.
  np.testing.assert_allclose(scorer.features(texts[1:]), features[1][None], atol=1e-4)

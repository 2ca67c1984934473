"""The paper's rivals on LDLM's DiT backbone, data pipeline and trainer (ldlm_jax/methods).

  python -m ldlm_jax.train --config configs/baselines.py:mdlm --workdir runs/mdlm_lm1b
  python -m ldlm_jax.train --config configs/baselines.py:ar_cpu --workdir runs/ar_cpu
  python -m ldlm_jax.sample --workdir runs/ar_cpu --num_samples 64 --out runs/ar_cpu/s.jsonl

NAME is a method ('mdlm', 'remdm', 'duo', 'ar') with a size suffix:
  ''      LM1B at the paper's sizes (configs/lm1b.py: GPT-2 tokenizer, L 128,
          batch 512, 1M steps, bfloat16), the DiT of LDLM's denoiser (12 x 768, 12 heads);
  '_owt'  OpenWebText at the paper's sizes (configs/owt.py: L 1024);
  '_cpu'  this machine: configs/demo.py's data, tokenizer (MiniLM), DiT (4 x 192) and schedule;
  '_toy'  the strict-order toy language at configs/toy_order.py's size (the learning tests),
          with the language's own 26-token encoder: pass
          --config.data.path=CORPUS --config.encoder.path=CORPUS/encoder
          (CORPUS written by `python -m ldlm_jax.data.toy --out CORPUS`).
'remdm' is MDLM trained the same way and sampled with ReMDM remasking
(method.remdm_eta; the training is identical, the sampler differs).

Every baseline starts from its LDLM config, so data, tokenizer, backbone size,
optimizer, batch, steps and evaluation are LDLM's and only the method differs.
The frozen encoder is still loaded (its tokenizer defines the vocabulary) but
never run. Hardware and time: BUILD_NOTES.md, "Baselines".
"""

from ldlm_jax.config import sibling

METHODS = ('mdlm', 'remdm', 'duo', 'ar')
SIZES = {'': 'lm1b', '_owt': 'owt', '_cpu': 'demo', '_toy': 'toy_order'}
# ReMDM's rescale eta for the 'remdm' rows (ReMDM reports eta about 0.01-0.05 for
# 'rescale'; ours within that range).
REMDM_ETA = 0.02
# Duo's curriculum: the first half of training reads the Gaussian relaxation
# (Duo trains its curriculum for part of the run; the fraction is ours).
CURRICULUM_FRACTION = 0.5


def names() -> list[str]:
  return [m + s for m in METHODS for s in SIZES]


def method_overrides(method: str, num_steps: int) -> dict:
  """The dotted fields that turn an LDLM config of `num_steps` steps into baseline `method`
  (the main comparison's rows are these over the scale's LDLM config)."""
  if method not in METHODS:
    raise ValueError(f'no baseline {method!r}; choose one of {METHODS}')
  out = {'method.name': 'mdlm' if method == 'remdm' else method}
  if method == 'remdm':
    out['method.remdm_eta'] = REMDM_ETA
  if method == 'duo':
    out['method.time_conditioning'] = True   # Duo's backbone reads t (MDLM's does not need it)
    out['method.curriculum_steps'] = int(CURRICULUM_FRACTION * num_steps)
  return out


def get_config(name: str = 'mdlm'):
  method = next((m for m in METHODS if name == m or name.startswith(m + '_')), None)
  suffix = name[len(method):] if method else None
  if method is None or suffix not in SIZES:
    raise ValueError(f'configs/baselines.py has no {name!r}; choose one of {names()}')
  c = sibling(__file__, SIZES[suffix]).get_config()
  for key, value in method_overrides(method, int(c.train.num_steps)).items():
    section, field = key.split('.')
    c[section][field] = value
  if suffix == '_toy':
    # configs/toy_order.py's default encoder is the language's own (ldlm_jax/data/toy.py): the
    # vocabulary is its 26 tokens, not MiniLM's 30522, so heads and samplers cost next to nothing.
    # The toy language at seq_len 16 is learned in a few hundred steps by a narrow DiT.
    c.model.denoiser.num_layers = 2
    c.model.denoiser.width = 32
    c.model.denoiser.num_heads = 2
    c.train.num_steps = 300
    c.train.checkpoint_every = 300
    c.train.log_every = 25
    c.train.eval_every = 200     # the eval step too (a tracer leak there once passed these checks)
    c.optim.learning_rate = 1e-2
    c.optim.warmup_steps = 20
    # Sampling at temperature 1 reads the head's calibration over the whole vocabulary: the EMA
    # must not keep a share of the (uniform) initialisation, as a constant 0.99 does at 300 steps.
    c.optim.ema_warmup = True
    c.sample.num_steps = 16
    if method != 'ar':
      # The diffusion baselines learn the order more slowly than AR (with MiniLM's vocabulary and
      # batch 16, legal pairs at 300 steps: MDLM 0.76-0.83, Duo 0.84; at 600: 0.89, 0.88;
      # BUILD_NOTES.md, "Baselines"): 800 steps, the rate decayed to 0 over the last 300
      # (optim.decay_steps). On the toy encoder at batch 32: MDLM 0.93-0.96, Duo 0.96-0.97.
      c.train.num_steps = c.train.checkpoint_every = 800
      c.optim.decay_steps = 300
      # 16 steps for 16 tokens unmask several tokens per step, drawn independently (MDLM at 800
      # steps: 0.89 legal pairs at 16 sampling steps, 0.94 at 64).
      c.sample.num_steps = 64
    if method == 'duo':
      c.method.curriculum_steps = 200
  return c

"""configs/demo.py with conditional generation on (docs/method.md Section 6.6): continuation and infilling.

  python -m ldlm_jax.train --config configs/demo_conditional.py --workdir runs/demo_cond
  python -m ldlm_jax.sample --workdir runs/demo_cond --prompts prompts.jsonl --guidance 1.5 \
      --out continuations.jsonl
  python -m ldlm_jax.evaluate --task continuation --workdir runs/demo_cond --guidance 1.5 ...

The same model, corpus and schedule as the demo; each training example is
given a random prefix (half of them) or random spans (the other half) of its
chunk, and 10% are given nothing (classifier-free guidance's null
condition), so one model samples unconditionally, continues prompts and
fills gaps. The denoiser reads the given tokens' MiniLM features through one
cross-attention per DiT block (BUILD_NOTES.md, "Conditional generation", has the measured
numbers and the choice of path).
"""

from ldlm_jax.config import sibling


def get_config():
  c = sibling(__file__, 'demo').get_config()
  c.condition.enabled = True
  return c

"""LDLM on LM1B at the paper's sizes and recipe (paper Sec. 8, App. C).

Launch (one host, all local accelerators):
  LDLM_GPT2_PATH=/path/to/gpt2 python -m ldlm_jax.train \
      --config configs/lm1b.py --workdir /mnt/BUCKET/ldlm/lm1b \
      --config.data.data_dir=/mnt/BUCKET/tensorflow_datasets
Pod slice / cluster: see launch/ and README.md.

Hardware: paper: 1M steps at batch 512 took about 5.5 days on 4 A100.
The default is laid out for ONE HOST WITH 8 GPUs OF 80 GiB: pure data parallelism
(the 4.2 GiB state replicated), 64 examples x 128 tokens per device, no recomputation.
Variants (same model, same batch 512): `configs/lm1b.py:tpu_v4_64` for a TPU v4-64 /
v5p-64 slice (32 chips, 16 examples each, state sharded 4 ways), `configs/lm1b.py:gpu64`
for 64 GPUs (8 examples each). The plans (XLA:CPU compiles; the state sizes are exact,
the temporaries an upper estimate, see ldlm_jax/benchmarks/aot.py):

  python -m ldlm_jax.bench compile --config configs/lm1b.py --devices 8
    mesh data=8 fsdp=1, 64 per device: state 4.169 GiB + frozen encoder/batch 0.411 GiB
    + temporaries 13.572 GiB = 18.152 GiB per device (fits 80 GiB, and JAX's default 75%)
  python -m ldlm_jax.bench compile --config configs/lm1b.py:tpu_v4_64 --devices 32
    mesh data=8 fsdp=4, 16 per chip: state 1.047 GiB + frozen encoder/batch 0.411 GiB
    + temporaries 3.933 GiB = 5.390 GiB per chip (fits a v4 chip's 32 GiB)
  python -m ldlm_jax.bench compile --config configs/lm1b.py:gpu64 --devices 64
    (8 examples per device; the state is the default's, the temporaries an eighth of them)

(measured 2026-12-07, BUILD_NOTES.md "Python API and export").
Needs: GPT-2 small weights in a local HF directory (LDLM_GPT2_PATH or
--config.encoder.path) and LM1B prepared for TFDS in data.data_dir (we never
download). Expected metric: the paper reports its Gen. PPL / entropy frontier
in Fig. 1 and Table 8 (numbers lost in our copy of the paper).
"""

from ldlm_jax.config import base_config, set_dotted

# The hardware each variant is laid out for: `--config configs/lm1b.py:NAME`. Every variant
# keeps the global batch (512) and the model; only the layout changes.
VARIANTS = {
    # One host with 8 GPUs of 80 GiB (the default): pure data parallelism, 64 examples x
    # 128 tokens per device, no recomputation (the state, 4.2 GiB, is replicated).
    '': {},
    # A TPU v4-64 / v5p-64 slice (32 chips, 32 / 95 GiB each): 16 examples per chip; the
    # state sharded 4 ways so that more of a 32 GiB chip is left to activations.
    'tpu_v4_64': {'mesh.fsdp': 4},
    # 64 GPUs (8 hosts x 8): 8 examples per device.
    'gpu64': {},
}


def get_config(variant: str = ''):
  if variant not in VARIANTS:
    raise ValueError(f'unknown configs/lm1b.py variant {variant!r}; use one of {sorted(VARIANTS)}')
  c = base_config()
  c.encoder.name = 'gpt2'            # GPT-2 small, hidden_states[-3]
  c.data.source = 'tfds'
  c.data.tfds_name = 'lm1b'
  c.data.seq_len = 128
  c.model.dtype = 'bfloat16'         # float32 params and optimizer state
  c.encoder.dtype = 'bfloat16'
  c.encoder_warmup.steps = 10_000    # paper: 10k for LM1B
  c.train.num_steps = 1_000_000      # main runs: 1M; ablations: 500k
  c.train.batch_size = 512
  c.train.log_every = 500
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 10_000
  c.sample.num_steps = 128           # the paper shows LM1B samples at 128 NFE
  # Conditional generation (docs/method.md 6.6; not in the paper): off, the paper's
  # unconditional model. --config.condition.enabled=True trains prompt
  # continuation and infilling with classifier-free guidance (config.py has
  # the section's fields and the origin of each default).
  c.condition.enabled = False
  # Memory layout for one 8 x 80 GiB host (see the module docstring for the plan).
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.model.remat = 'none'
  c.model.attention_query_chunk = 0
  for key, value in VARIANTS[variant].items():
    set_dotted(c, key, value)
  return c

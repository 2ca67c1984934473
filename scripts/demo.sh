#!/usr/bin/env bash
# The README's main command: set-up, then train the embedded default
# (configs/demo.py: MiniLM encoder, Brown corpus) on CPU, sample from it,
# evaluate the samples beside the reference rows (unigram/bigram/trigram
# samples fitted to the run's own training split, and held-out text) and draw
# the diagnostics. Extra arguments are config overrides for the training run,
# e.g. --config.train.num_steps=300.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh demo
. .venv/bin/activate
. scripts/cpu_malloc.sh
WORKDIR=${WORKDIR:-runs/demo}
start=$(date +%s)
python -m ldlm_jax.train --config configs/demo.py --workdir "$WORKDIR" "$@"
# Three sampling seeds x 64 samples, one process and one compiled sampler: the evaluation reports
# mean +- std over them.
python -m ldlm_jax.sample --workdir "$WORKDIR" --num_samples 64 --seeds 0,1,2 \
    --out "$WORKDIR/samples/final_seed{seed}.jsonl"
echo "train + sample: $(( $(date +%s) - start )) s"
python -m ldlm_jax.data.references --workdir "$WORKDIR" --num_texts 256 --out "$WORKDIR/references.jsonl"
python -m ldlm_jax.evaluate --samples "$WORKDIR"/samples/final_seed{0,1,2}.jsonl \
    --references "$WORKDIR/references.jsonl" --scorer smollm2 --out "$WORKDIR/eval_metrics.json" \
    --ngram_baselines "$WORKDIR"
python -m ldlm_jax.plots --workdir "$WORKDIR"
echo "done in $(( $(date +%s) - start )) s: $WORKDIR"

#!/usr/bin/env bash
# Protocol of BUILD_NOTES "Demo": 3 seeds x 64 samples, 100 steps, SmolLM2, MAUVE vs 256 refs; + n-gram rows.
set -euo pipefail
W=$1; FINAL=${2:-z}; STEPS=${3:-100}; NG=${4:-1}
PY=${PYTHON:-python}
# CKPT=N evaluates checkpoint N (default: the latest); its files are tagged _cN.
CK=""; TAG=""; [ -n "${CKPT:-}" ] && CK="--checkpoint_step $CKPT" && TAG="_c$CKPT"
mkdir -p $W/eval
[ -f $W/references.jsonl ] || $PY -m ldlm_jax.data.references --workdir $W --num_texts 256 --out $W/references.jsonl
for s in 0 1 2; do
  $PY -m ldlm_jax.sample --workdir $W --num_samples 64 --seed $s --steps $STEPS --final $FINAL $CK --out $W/eval/${FINAL}_${STEPS}${TAG}_s$s.jsonl 2>&1 | grep -v Warn | tail -1
done
EXTRA=""; [ "$NG" = 1 ] && EXTRA="--ngram_baselines $W"
$PY -m ldlm_jax.evaluate --samples $W/eval/${FINAL}_${STEPS}${TAG}_s{0,1,2}.jsonl \
  --references $W/references.jsonl --scorer smollm2 --out $W/eval/${FINAL}_${STEPS}${TAG}.json $EXTRA 2>&1 | tail -20

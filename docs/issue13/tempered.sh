#!/usr/bin/env bash
# Tempered n-gram rows (issue 13): ORDER in 1 2, temperatures T...; 3 seeds x 64 samples of the run's length,
# scored like the model's samples (SmolLM2, no MAUVE). Usage: tempered.sh RUN_WORKDIR ORDER T [T ...]
set -euo pipefail
W=$1; ORDER=$2; shift 2
PY=${PYTHON:-python}
mkdir -p $W/eval
for T in "$@"; do
  for s in 0 1 2; do
    $PY -m ldlm_jax.evaluation.ngram --workdir $W --order $ORDER --num_samples 64 --seed $s --temperature $T \
        --out $W/eval/ngram${ORDER}_T${T}_s$s.jsonl
  done
  $PY -m ldlm_jax.evaluate --samples $W/eval/ngram${ORDER}_T${T}_s{0,1,2}.jsonl --scorer smollm2 \
      --out $W/eval/ngram${ORDER}_T${T}.json > /dev/null
  $PY - "$W/eval/ngram${ORDER}_T${T}.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
m, s = d['mean'], d['std']
print(f"{sys.argv[1]}: Gen. PPL {m['gen_ppl']:.0f} +- {s['gen_ppl']:.0f}, entropy {m['entropy']:.2f} +- {s['entropy']:.2f}")
PYEOF
done

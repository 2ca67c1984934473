#!/usr/bin/env bash
# Every GPU measurement of issue 17 in one run of under ten minutes.
#
#   bash scripts/bench_gpu.sh OUT_DIR          (PYTHON=/path/to/python to choose the interpreter)
#
# Steps (each a `python -m ldlm_jax.bench` run with its own time limit; a
# step that would not finish before the 570 s budget is skipped and listed
# as such):
#   train_ce     LM1B train step, 128 examples, dense CE vs the chunked CE
#                (loss.ce_vocab_chunk=0,8192), both compiled, alternating windows
#   train_remat  the same with model.remat=block,dots_no_batch (remat none is
#                train_ce's 8192 row)
#   train_noflags  the default config without the XLA GPU flags (LDLM_XLA_GPU_FLAGS=0)
#   sample_owt   OWT sampling, 16 x 1024 tokens, 1024 Euler-Maruyama steps
#   compile_owt  the GPU compiler's plan of the OWT train step per device of an
#                8-GPU fsdp run at batch 512 (64 per device, remat block)
# Output in OUT_DIR: NAME.json and NAME.log per step, steps.tsv, and the
# summary bench_gpu.json + bench_gpu.md (ldlm_jax/benchmarks/gpu_report.py).
#
# Exit codes: 0 all steps ran; 1 a step failed or was skipped (the table says
# which); 2 usage; 3 no GPU: one line on stderr, nothing measured, nothing
# written.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
BUDGET_S="${BENCH_GPU_BUDGET_S:-570}"

if [ "$#" -ne 1 ]; then
  echo "usage: bash scripts/bench_gpu.sh OUT_DIR" >&2
  exit 2
fi
OUT="$1"

backend="$(JAX_PLATFORMS="${JAX_PLATFORMS:-}" "$PYTHON" -c \
  'import jax; print(jax.default_backend())' 2>/dev/null | tail -n 1)"
if [ "$backend" != "gpu" ]; then
  echo "bench_gpu.sh: no GPU visible to JAX (backend: ${backend:-unavailable}); nothing measured. Run it on a machine with an NVIDIA GPU and jax[cuda]." >&2
  exit 3
fi

mkdir -p "$OUT" || exit 2
: > "$OUT/steps.tsv"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
failed=0

# step NAME LIMIT_S ARGS...: runs `python -m ldlm_jax.bench ARGS --json_out OUT/NAME.json`
# with a time limit, or records it as skipped (-1) when the budget cannot hold it.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  local cmd="python -m ldlm_jax.bench $* --json_out $OUT/$name.json"
  if [ "$left" -lt "$limit" ]; then
    printf '%s\t-1\t0\t%s\n' "$name" "$cmd" >> "$OUT/steps.tsv"
    echo "== $name: skipped ($left s left, needs up to $limit s)"
    failed=1
    return
  fi
  echo "== $name (limit $limit s): $cmd"
  local t0=$SECONDS
  timeout "$limit" "$PYTHON" -m ldlm_jax.bench "$@" --json_out "$OUT/$name.json" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%d\t%d\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$cmd" >> "$OUT/steps.tsv"
  tail -n 4 "$OUT/$name.log"
  [ "$rc" -eq 0 ] || failed=1
}

TRAIN=(train --preset lm1b_train --batch_size 128 --warmup 2 --iters 10 --repeats 3)
step train_ce 170 "${TRAIN[@]}" --compare=loss.ce_vocab_chunk=0,8192
step train_remat 170 "${TRAIN[@]}" --compare=model.remat=block,dots_no_batch
LDLM_XLA_GPU_FLAGS=0 step train_noflags 90 "${TRAIN[@]}"
step sample_owt 110 sample --preset owt_sample --warmup 1 --iters 1 --repeats 2
step compile_owt 100 compile --config configs/owt.py --devices 1 --batch_size 64 \
  --config.model.remat=block --device_memory_gib 80

"$PYTHON" -m ldlm_jax.benchmarks.gpu_report "$OUT" || failed=1
echo "bench_gpu.sh: $((SECONDS - START)) s; table in $OUT/bench_gpu.md"
exit "$failed"

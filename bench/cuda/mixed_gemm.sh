#!/usr/bin/env bash
# Batched decode with int8 / int4 weights through the mixed-input GEMM (gemm_mixed.cu, the default
# for kMaxGemvRows < m <= kMaxMixedRows) against the dequantize-then-cuBLASLt GEMM it replaces
# (MISTRAL_MIXED_MAX_ROWS=0), in the same run on the same random 7B, with bf16 (cuBLASLt) and HF
# transformers (bf16) as the peers. First runs the GPU tests of this build, then gemv_bench's
# kernel table (--mixed-only: each 7B shape at m = 9, 16, 32), again at other split caps
# (MISTRAL_MIXED_MAX_SPLITS) at the end. Each decode line is
# `mistral bench --device cuda --batch B --prompt-tokens 128 --new-tokens 32 --runs 2
# [--weights int8|int4]`: aggregate decode tok/s. Every run's JSON is gathered into
# OUT_DIR/runs.json (gather_runs.py).
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/mixed_gemm.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: mixed_gemm.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
start_sweep mixed-runs
gpu_tests
"$dir/gemv_bench" --mixed-only --samples 11 2>&1 | tee "$out/gemv_bench.txt"
batched() {  # NAME MIXED_MAX_ROWS ARGS...: one bench run, kept as NN-NAME
  local name=$1 rows=$2; shift 2
  env ${rows:+MISTRAL_MIXED_MAX_ROWS=$rows} "$bin" bench --device cuda --model "$work/m7b" \
    --prompt-tokens 128 --new-tokens 32 --runs 2 "$@" > "$out/run.json" 2> "$out/run.err" ||
    { echo "$name: failed"; tail -3 "$out/run.err"; return; }
  keep_run "$name"
  report "$name" "$out/run.json"
}
# In order of what matters most, so a call cut short still has the first results.
for w in int4 int8; do
  batched "$w-b32-mixed" "" --batch 32 --weights "$w"
  batched "$w-b32-gemm" 0 --batch 32 --weights "$w"
done
batched bf16-b32 "" --batch 32
for b in 16 9; do
  batched "int4-b$b-mixed" "" --batch "$b" --weights int4
  batched "int4-b$b-gemm" 0 --batch "$b" --weights int4
done
batched int4-b1 "" --batch 1 --weights int4
date -u
python3 "$here/hf_bench.py" "$work/m7b" --batch 32 --prompt-tokens 128 --new-tokens 32 --runs 2 \
  > "$runs/hf-bf16-b32.json" 2> "$runs/hf-bf16-b32.err" &&
  report "HF transformers bf16 batch 32" "$runs/hf-bf16-b32.json" || tail -3 "$runs/hf-bf16-b32.err"
date -u
rm -f "$out/run.json" "$out/run.err"
python3 "$here/gather_runs.py" "$runs" "$out/runs.json"
for splits in 8 4; do  # the split cap against the default 16 (the kernel table's mixed rows)
  echo "MISTRAL_MIXED_MAX_SPLITS=$splits"
  MISTRAL_MIXED_MAX_SPLITS=$splits "$dir/gemv_bench" --mixed-only --samples 11 2>&1 |
    grep -E ' mixed ' | tee "$out/gemv_bench-splits$splits.txt"
done
date -u

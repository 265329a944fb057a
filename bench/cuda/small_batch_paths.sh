#!/usr/bin/env bash
# Batched decode of 4 and 8 rows (m <= kMaxGemvRows, the decode GEMV's range) through the three
# paths linear() can take, on a GPU machine, in the same run on the same random 7B: the default
# GEMV (gemv_rows.cu), the tensor-core GEMV (MISTRAL_GEMV_KERNEL=pipelined, gemv.cu) and the
# dequantize-then-cuBLASLt GEMM (MISTRAL_GEMV_MAX_ROWS=1), for bf16 and int4 weights. Each line is
# `mistral bench --device cuda --batch B --prompt-tokens 128 --new-tokens 32 --runs 2
# [--weights int4]`: aggregate decode tok/s.
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/small_batch_paths.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: small_batch_paths.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
start_sweep path-runs
for b in 8 4; do
  for w in bf16 int4; do
    args=(--batch "$b" --prompt-tokens 128 --new-tokens 32 --runs 2)
    [[ $w == bf16 ]] || args+=(--weights "$w")
    for path in rows pipelined gemm; do
      env_set=()
      [[ $path == pipelined ]] && env_set=(MISTRAL_GEMV_KERNEL=pipelined)
      [[ $path == gemm ]] && env_set=(MISTRAL_GEMV_MAX_ROWS=1)
      env "${env_set[@]}" "$bin" bench --device cuda --model "$work/m7b" "${args[@]}" \
        > "$out/run.json" 2> "$out/run.err" || { echo "$w b$b $path: failed"; continue; }
      keep_run "$w-b$b-$path"
      report "$w batch $b, $path" "$out/run.json"
    done
  done
done
date -u
rm -f "$out/run.json" "$out/run.err"
python3 "$here/gather_runs.py" "$runs" "$out/runs.json"

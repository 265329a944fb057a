#!/usr/bin/env bash
# Sweeps the decode knobs of the CUDA backend on a GPU machine, end to end (random 7B, 512-token
# prompt, 128 decode steps, best of 2) and per GEMV shape (gemv_bench): loads in flight per lane
# in the row GEMV (MISTRAL_GEMV_INFLIGHT; single-row decode takes the fused GEMV, so these runs
# turn the fusions off), the warps per block (MISTRAL_FUSED_WARPS) and blocks per SM
# (MISTRAL_FUSED_GEMV_BLOCKS_PER_SM) of the fused GEMV's grid for int8/int4, and the split plan
# of decode attention (MISTRAL_ATTN_BLOCKS_PER_SM, MISTRAL_ATTN_MIN_KEYS, also at 4,096 keys).
# The defaults in gemv_rows.cu, gemv_fused.cu and attention_decode.cu were picked with it
# (bench/RESULTS.md).
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_knobs.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: decode_knobs.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
for loads in 2 4 8; do
  MISTRAL_GEMV_INFLIGHT=$loads "$dir/gemv_bench" --samples 5 \
    --peak-gbs 4814 > "$out/gemv-inflight$loads.txt" 2>&1
  for w in bf16 int8 int4; do
    args=(--prompt-tokens 512)
    [[ $w == bf16 ]] || args+=(--weights "$w")
    MISTRAL_CUDA_FUSE=0 MISTRAL_GEMV_INFLIGHT=$loads decode "loads in flight $loads, $w" "${args[@]}"
  done
done
for warps in 8 16; do
  for w in int8 int4; do
    MISTRAL_FUSED_WARPS=$warps decode "fused GEMV, $warps warps per block, $w" --prompt-tokens 512 \
      --weights "$w"
  done
done
for blocks in 1 2 3 0; do  # 0: as many as fit
  for w in int8 int4; do
    MISTRAL_FUSED_GEMV_BLOCKS_PER_SM=$blocks \
      decode "fused GEMV, $blocks blocks/SM, $w" --prompt-tokens 512 --weights "$w"
  done
done
for cfg in "2 32" "4 16" "8 8" "4 8" "16 4"; do
  set -- $cfg
  for prompt in 512 3968; do
    MISTRAL_ATTN_BLOCKS_PER_SM=$1 MISTRAL_ATTN_MIN_KEYS=$2 \
      decode "attention $1 blocks/SM, >= $2 keys/split, prompt $prompt" --prompt-tokens "$prompt"
  done
done

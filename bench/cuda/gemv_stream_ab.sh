#!/usr/bin/env bash
# The bulk-copy decode GEMV (gemv_stream.cu) against the register-streaming one (gemv_fused.cu),
# end to end in the same run on the same GPU: random 7B, 512-token prompt, 128 decode steps, best
# of 2, for bf16 / int8 / int4 weights (int8 / int4 quantized at load), each as
# MISTRAL_GEMV_STREAM=0 then 1; then the ring's knobs with the pipeline on: slots
# (MISTRAL_STREAM_STAGES), the L2 evict-first hint on the weights (MISTRAL_STREAM_EVICT_FIRST) and
# blocks per SM (MISTRAL_STREAM_BLOCKS_PER_SM). Prints decode tok/s and ms per token per run.
# FORMATS (default "bf16 int8 int4") picks the weights of the first part; quick stops after it.
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/gemv_stream_ab.sh OUT_DIR [WORK_DIR] [quick]
set -uo pipefail
out=${1:?usage: gemv_stream_ab.sh OUT_DIR [WORK_DIR] [quick]}
work=${2:-/tmp/mb}
quick=${3:-}
bin=${DEVICE_DIR:-.device_cuda}/mistral
source "$(dirname "$0")/decode_run.sh"
ab() {  # LABEL WEIGHTS: decode with a 512-token prompt and those weights
  local w=$2
  decode "$1" --prompt-tokens 512 $([[ $w == bf16 ]] || echo "--weights $w")
}
for w in ${FORMATS:-bf16 int8 int4}; do
  for s in 0 1; do
    MISTRAL_GEMV_STREAM=$s ab "$w, stream $s" "$w"
  done
done
[[ -n $quick ]] && exit 0
for w in bf16 int4; do
  for stages in 2 6 8; do
    MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_STAGES=$stages ab "$w, stream, $stages slots" "$w"
  done
  MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_EVICT_FIRST=0 ab "$w, stream, no evict-first" "$w"
  MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_BLOCKS_PER_SM=2 ab "$w, stream, 2 blocks/SM" "$w"
  MISTRAL_GEMV_STREAM=0 ab "$w, stream 0 again" "$w"
done

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
mkdir -p "$out" "$work"
[[ -f "$work/m7b/config.json" ]] ||
  "$bin" random-checkpoint --preset 7b --dtype bf16 --out "$work/m7b" > /dev/null
decode() {  # LABEL ARGS...: prints LABEL, decode tok/s and ms per token
  local label=$1; shift
  "$bin" bench --device cuda --model "$work/m7b" --prompt-tokens 512 --new-tokens 128 --runs 2 \
    "$@" > "$out/run.json" 2> "$out/run.err" || { echo "$label: failed"; tail -3 "$out/run.err"; return; }
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['decode_tok_s']; \
print(f'{sys.argv[2]:50s} {t:8.1f} tok/s {1000/t:7.3f} ms', flush=True)" "$out/run.json" "$label"
}
weights() { [[ $1 == bf16 ]] || echo "--weights $1"; }
for w in ${FORMATS:-bf16 int8 int4}; do
  for s in 0 1; do
    MISTRAL_GEMV_STREAM=$s decode "$w, stream $s" $(weights $w)
  done
done
[[ -n $quick ]] && exit 0
for w in bf16 int4; do
  for stages in 2 6 8; do
    MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_STAGES=$stages decode "$w, stream, $stages slots" $(weights $w)
  done
  MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_EVICT_FIRST=0 decode "$w, stream, no evict-first" $(weights $w)
  MISTRAL_GEMV_STREAM=1 MISTRAL_STREAM_BLOCKS_PER_SM=2 decode "$w, stream, 2 blocks/SM" $(weights $w)
  MISTRAL_GEMV_STREAM=0 decode "$w, stream 0 again" $(weights $w)
done

#!/usr/bin/env bash
# Quantized prefill (dequantize-then-cuBLASLt GEMM) at several dequantized tile sizes, on a GPU
# machine, in the same run on the same random 7B: the baseline binary BASE_BIN (the engine before
# the change: tiles as large as the 64 MB scratch, the last one a remainder, and a thread per group
# of 32 in the dequantize kernel) against this build at MISTRAL_DEQUANT_TILE_MB = 256 (the
# default: every 7B matrix in one tile), 128 and 64. Each line is `mistral bench --device cuda
# --prompt-tokens 512 --new-tokens 8 --runs 3 [--weights int4|int8]`: best prefill tok/s of 3,
# its time to first token, the first run's, and decode tok/s. Then batch 32 (128-token prompts,
# 32 steps: every step's GEMMs go through the same tiles, m = 32); batch 8, 9 and 16 (the decode
# GEMV takes m <= 8, the GEMM m >= 9) for int4 and bf16; and HF transformers' bf16 prefill as the
# peer. First runs the GPU tests of this build.
# Every run's JSON is gathered into OUT_DIR/runs.json (gather_runs.py).
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/prefill_tiles.sh OUT_DIR BASE_BIN [WORK_DIR]
set -uo pipefail
out=${1:?usage: prefill_tiles.sh OUT_DIR BASE_BIN [WORK_DIR]}
base=${2:?usage: prefill_tiles.sh OUT_DIR BASE_BIN [WORK_DIR]}
work=${3:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
start_sweep tile-runs
gpu_tests
prefill() {  # NAME BINARY TILE_MB ARGS...: one bench run, kept as NN-NAME
  local name=$1 binary=$2 tile=$3; shift 3
  MISTRAL_DEQUANT_TILE_MB=$tile "$binary" bench --device cuda --model "$work/m7b" "$@" \
    > "$out/run.json" 2> "$out/run.err" || { echo "$name: failed"; tail -3 "$out/run.err"; return; }
  keep_run "$name"
  report_prefill "$name" "$out/run.json"
}
report_prefill() {  # LABEL JSON: prefill tok/s and time to first token; for the engine's runs
  # also the first run's time to first token and decode tok/s (HF's 8 steps time no decode)
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
more = f'(first {1e3*d[\"first_run_time_to_first_token_s\"]:6.2f})  decode \
{d[\"decode_tok_s\"]:8.1f}' if 'first_run_time_to_first_token_s' in d else ''; \
print(f'{sys.argv[2]:28s} prefill {d[\"prefill_tok_s\"]:9.0f} tok/s  ttft \
{1e3*d[\"time_to_first_token_s\"]:6.2f} ms {more}'.rstrip(), flush=True)" "$2" "$1"
}
one=(--prompt-tokens 512 --new-tokens 8 --runs 3)
b32=(--batch 32 --prompt-tokens 128 --new-tokens 32 --runs 2)
# In order of what matters most, so a call cut short still has the first results.
prefill int4-base "$base" "" "${one[@]}" --weights int4
for tile in 256 128 64 256; do prefill "int4-tile$tile" "$bin" "$tile" "${one[@]}" --weights int4; done
prefill int4-base-again "$base" "" "${one[@]}" --weights int4
prefill int8-base "$base" "" "${one[@]}" --weights int8
for tile in 256 64; do prefill "int8-tile$tile" "$bin" "$tile" "${one[@]}" --weights int8; done
prefill bf16 "$bin" "" "${one[@]}"
date -u
for w in int4 int8; do
  prefill "$w-b32-base" "$base" "" "${b32[@]}" --weights "$w"
  prefill "$w-b32" "$bin" "" "${b32[@]}" --weights "$w"
done
prefill bf16-b32 "$bin" "" "${b32[@]}"
for b in 8 9 16; do
  prefill "int4-b$b" "$bin" "" --batch "$b" --prompt-tokens 128 --new-tokens 32 --runs 2 --weights int4
  prefill "bf16-b$b" "$bin" "" --batch "$b" --prompt-tokens 128 --new-tokens 32 --runs 2
done
date -u
python3 "$here/hf_bench.py" "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 8 \
  --runs 3 > "$runs/hf-bf16.json" 2> "$runs/hf-bf16.err" &&
  report_prefill "HF transformers bf16" "$runs/hf-bf16.json" || tail -3 "$runs/hf-bf16.err"
date -u
rm -f "$out/run.json" "$out/run.err"
python3 "$here/gather_runs.py" "$runs" "$out/runs.json"

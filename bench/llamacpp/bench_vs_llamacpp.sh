#!/usr/bin/env bash
# Side-by-side CPU benchmark of our engine against llama.cpp on one random-weight Mistral-7B
# (see README.md beside this file). Installs the llama.cpp peer if needed, writes the random
# checkpoint if MODEL_DIR has none, converts it to GGUF (BF16, then Q8_0 / Q4_0) in WORK_DIR,
# then runs both engines one after the other per weight format and prints a markdown table.
#   bench/llamacpp/bench_vs_llamacpp.sh [MODEL_DIR=/tmp/m7b] [WORK_DIR=/tmp/llbench]
# Knobs (environment): FORMATS=bf16,q8_0,q4_0 (add f16 for llama.cpp F16), THREADS=2,
# PROMPT_TOKENS=64, NEW_TOKENS=32, REPEATS=2, WARMUP=1, FLASH_ATTN=auto,
# MISTRAL_BIN (default build/apps/cli/mistral), LLAMA_BENCH (llama-bench binary, optional).
# Disk: BF16 14.5 GB + Q8_0 7.7 GB + Q4_0 4.1 GB in WORK_DIR (+14.5 GB for f16).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export MODEL_DIR=${1:-${MODEL_DIR:-/tmp/m7b}}
export WORK_DIR=${2:-${WORK_DIR:-/tmp/llbench}}
export MISTRAL_BIN=${MISTRAL_BIN:-$ROOT/build/apps/cli/mistral}
if [ ! -x "$MISTRAL_BIN" ]; then
  echo "no binary at $MISTRAL_BIN: build it (cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release" \
       "&& ninja -C build mistral) or set MISTRAL_BIN" >&2
  exit 1
fi
bash "$HERE/setup.sh" >&2
if [ ! -f "$MODEL_DIR/config.json" ]; then
  "$MISTRAL_BIN" random-checkpoint --preset 7b --dtype bf16 --seed 0 --out "$MODEL_DIR"
fi
exec python3 "$HERE/bench_vs_llamacpp.py" --model "$MODEL_DIR" --work "$WORK_DIR"

#!/usr/bin/env bash
# Engine-only CPU benchmark on a random-weight Mistral-7B (bf16, Hugging Face layout, ~14.5 GB
# written to $MODEL_DIR, default /tmp/mistral-7b-random): prefill of P tokens and N decode steps at
# batch 1. The side-by-side comparison with llama.cpp belongs to the CPU speed work (issue 4).
# Usage: bench/bench_cpu_7b.sh [PROMPT_TOKENS=64] [NEW_TOKENS=32] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-64}; N=${2:-32}; T=${3:-2}
MODEL_DIR=${MODEL_DIR:-/tmp/mistral-7b-random}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target mistral >/dev/null
[ -f "$MODEL_DIR/config.json" ] ||
  build/apps/cli/mistral random-checkpoint --preset 7b --dtype bf16 --seed 0 --out "$MODEL_DIR"
build/apps/cli/mistral bench --model "$MODEL_DIR" --prompt-tokens "$P" --new-tokens "$N" --threads "$T"

#!/usr/bin/env bash
# Whether a persistent decode kernel is worth building: persistent_layer_bench (the 7B's layers
# streamed through a shared-memory ring across grid barriers, int4 and bf16, against a plain read
# of the same bytes), boundary_bench (a boundary of the programmatic-launch chain against a
# persistent kernel's grid barrier, with and without the next step's weights staged through it),
# and, as the same-call reference, the engine's own batch-1 decode on the random 7B
# (`mistral bench --device cuda --prompt-tokens 512 --new-tokens 128 --runs 2 [--weights int4]`,
# whose ms per token / 32 is its time per layer, lm_head included).
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/persistent_layers.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: persistent_layers.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
start_sweep persistent-runs
timeout 120 "$dir/persistent_layer_bench" 2>&1 | tee "$out/persistent_layer_bench.txt"
timeout 120 "$dir/boundary_bench" 2>&1 | tee "$out/boundary_bench.txt"
decode "engine int4, batch 1" --prompt-tokens 512 --weights int4
decode "engine bf16, batch 1" --prompt-tokens 512
date -u

#!/usr/bin/env bash
# Decode with steps queued ahead of the host (GenerationConfig::decode_ahead, the default) against
# host-fed steps, on a GPU machine, in the same run on the same random 7B: bf16, int8 and int4
# weights at batch 1 (512-token prompt, 128 decode steps, best of 2; on and off interleaved
# so drift in clocks falls on both), bf16 at batch 32, and HF transformers (bf16,
# batch 1, same shapes) as the peer. First runs the GPU model tests (cuda_model_test), which
# check that decode ahead gives the tokens of host-fed steps.
# Every run's JSON is gathered into OUT_DIR/runs.json (gather_runs.py); the single runs' files
# stay in WORK_DIR/ahead-runs.
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_ahead.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: decode_ahead.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
source "$(dirname "$0")/decode_run.sh"
start_sweep ahead-runs
gpu_test cuda_model_test
run_ahead() {  # NAME AHEAD ARGS...: one bench run, its JSON and stderr kept as N-NAME-ahead-AHEAD
  local name=$1 ahead=$2; shift 2
  decode "$name, decode ahead $ahead" "$@" --decode-ahead "$ahead"
  keep_run "$name-ahead-$ahead"
}
run_pair() {  # WEIGHTS ORDER...: batch 1, decode ahead on and off in the order given
  local w=$1; shift
  local args=(--prompt-tokens 512)
  [[ $w == bf16 ]] || args+=(--weights "$w")
  for ahead in "$@"; do run_ahead "$w" "$ahead" "${args[@]}"; done
}
# In order of what matters most, so a call cut short still has the first results.
run_pair int4 true false false true
run_pair bf16 true false
date -u
python3 "$here/hf_bench.py" "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 128 \
  --runs 2 > "$runs/hf-bf16-b1.json" 2> "$runs/hf-bf16-b1.err" &&
  report "HF transformers bf16" "$runs/hf-bf16-b1.json" || tail -3 "$runs/hf-bf16-b1.err"
date -u
run_pair int8 true false
run_pair bf16 false true
for ahead in true false; do run_ahead bf16-b32 "$ahead" --batch 32 --prompt-tokens 128; done
date -u
rm -f "$out/run.json" "$out/run.err"
python3 "$here/gather_runs.py" "$runs" "$out/runs.json"

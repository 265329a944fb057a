#!/usr/bin/env bash
# Decode with steps queued ahead of the host (GenerationConfig::decode_ahead, the default) against
# host-fed steps, on a GPU machine, in the same run on the same random 7B: bf16, int8 and int4
# weights at batch 1 (512-token prompt, 128 decode steps, best of 2; on and off interleaved
# so drift in clocks falls on both), bf16 at batch 32, and HF transformers (bf16,
# batch 1, same shapes) as the peer. First runs the GPU model tests (cuda_model_test), which
# check that decode ahead gives the tokens of host-fed steps.
# Every run's JSON ends up in OUT_DIR/runs.json.
# Usage (repository root, after stage_device.sh and `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_ahead.sh OUT_DIR [WORK_DIR]
set -uo pipefail
out=${1:?usage: decode_ahead.sh OUT_DIR [WORK_DIR]}
work=${2:-/tmp/mb}
dir=${DEVICE_DIR:-.device_cuda}
bin=$dir/mistral
source "$(dirname "$0")/decode_run.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
  --format=csv,noheader
date -u
"$dir/cuda_model_test" > "$out/cuda_model_test.log" 2>&1
echo "cuda_model_test exit $?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_model_test.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]' "$out/cuda_model_test.log" | head -20
runs=0
# In order of what matters most, so a call cut short still has the first results.
run_pair() {  # WEIGHTS ORDER...: batch 1, decode ahead on and off in the order given
  local w=$1; shift
  local args=(--prompt-tokens 512)
  [[ $w == bf16 ]] || args+=(--weights "$w")
  for ahead in "$@"; do
    decode "$w, decode ahead $ahead" "${args[@]}" --decode-ahead "$ahead"
    runs=$((runs + 1)); cp "$out/run.json" "$out/$runs-$w-ahead-$ahead.json"
  done
}
run_pair int4 true false false true
run_pair bf16 true false
date -u
python3 "$(dirname "$0")/hf_bench.py" "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 128 \
  --runs 2 > "$out/hf-bf16-b1.json" 2> "$out/hf-bf16-b1.err" &&
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['decode_tok_s']; \
print(f'{\"HF transformers bf16\":55s} {t:8.1f} tok/s {1000/t:7.3f} ms')" "$out/hf-bf16-b1.json" ||
  tail -3 "$out/hf-bf16-b1.err"
date -u
run_pair int8 true false
run_pair bf16 false true
for ahead in true false; do
  decode "bf16 batch 32, decode ahead $ahead" --batch 32 --prompt-tokens 128 --decode-ahead "$ahead"
  runs=$((runs + 1)); cp "$out/run.json" "$out/$runs-bf16-b32-ahead-$ahead.json"
done
date -u
# One file for every run's JSON (a GPU call returns only a few files of OUT_DIR).
python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(path)[:-5]
    if name == "run":
        continue
    try:
        runs[name] = json.load(open(path))
    except ValueError as e:
        runs[name] = {"error": str(e)}
    os.remove(path)
json.dump(runs, open(os.path.join(out, "runs.json"), "w"), indent=1)
PY
rm -f "$out/run.json" "$out/run.err"

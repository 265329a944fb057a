#!/usr/bin/env bash
# Decode with steps queued ahead of the host (GenerationConfig::decode_ahead, the default) against
# host-fed steps, on a GPU machine, in the same run on the same random 7B: bf16, int8 and int4
# weights at batch 1 (512-token prompt, 128 decode steps, best of 2; on and off interleaved
# on/off/off/on so drift in clocks falls on both), bf16 at batch 32, and HF transformers (bf16,
# batch 1, same shapes) as the peer. First runs the GPU model tests (cuda_model_test), which
# check that decode ahead gives the tokens of host-fed steps.
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
shape=(--prompt-tokens 512)
for w in int4 int8 bf16; do
  args=("${shape[@]}")
  [[ $w == bf16 ]] || args+=(--weights "$w")
  for ahead in true false false true; do
    decode "$w, decode ahead $ahead" "${args[@]}" --decode-ahead "$ahead"
    cp "$out/run.json" "$out/$w-ahead-$ahead.json"
  done
done
date -u
for ahead in true false; do
  decode "bf16 batch 32, decode ahead $ahead" --batch 32 --prompt-tokens 128 --decode-ahead "$ahead"
  cp "$out/run.json" "$out/bf16-b32-ahead-$ahead.json"
done
python3 "$(dirname "$0")/hf_bench.py" "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 128 \
  --runs 2 > "$out/hf-bf16-b1.json" 2> "$out/hf-bf16-b1.err" &&
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['decode_tok_s']; \
print(f'{\"HF transformers bf16\":55s} {t:8.1f} tok/s {1000/t:7.3f} ms')" "$out/hf-bf16-b1.json" ||
  tail -3 "$out/hf-bf16-b1.err"
date -u

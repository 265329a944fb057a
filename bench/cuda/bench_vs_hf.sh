#!/usr/bin/env bash
# The CUDA backend and Hugging Face transformers side by side on one GPU, in the same run, on
# the same random-weight Mistral-7B (bf16). Run on the GPU machine from the repository root,
# after bench/cuda/stage_device.sh staged the binaries into .device_cuda:
#   bench/cuda/bench_vs_hf.sh OUT_DIR [WORK_DIR]
# Writes OUT_DIR/results.json (every run's JSON, and the stderr of failed ones), OUT_DIR/summary.txt
# and OUT_DIR/gpu.txt; the single runs' files stay in WORK_DIR/runs.
# Ours: `mistral bench --device cuda` at batch 1 (bf16, int8, int4 weights; 512-token prompt,
# 128 decode steps, 3 runs; and with each optimization turned off) and batch 32 (bf16;
# 128-token prompts, 128 steps). HF: hf_bench.py
# with the same shapes (bf16).
set -uo pipefail
out=${1:?OUT_DIR}
work=${2:-/tmp/mistral-bench}
runs="$work/runs"
mkdir -p "$out" "$runs"
source bench/cuda/device_env.sh
bin=.device_cuda/mistral
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
  --format=csv > "$out/gpu.txt" 2>&1
if [[ ! -f "$work/m7b/config.json" ]]; then
  start=$SECONDS
  "$bin" random-checkpoint --preset 7b --dtype bf16 --out "$work/m7b" > /dev/null
  echo "random-checkpoint $((SECONDS - start)) s"
fi
run_ours() {  # NAME ARGS...
  local name=$1; shift
  local start=$SECONDS
  "$bin" bench --device cuda --model "$work/m7b" "$@" > "$runs/ours-$name.json" \
    2> "$runs/ours-$name.err"
  echo "ours $name: exit $?, $((SECONDS - start)) s"
}
shape=(--prompt-tokens 512 --new-tokens 128 --runs 3)
run_ours bf16-b1 "${shape[@]}"
# The latest optimization off (same run, same GPU): the fusions (norms, residual adds, SwiGLU and
# the int8 / int4 quantization of x in the GEMV kernels, rope of q and k in one kernel).
MISTRAL_CUDA_FUSE=0 run_ours bf16-b1-nofuse "${shape[@]}"
if [[ -n "${EXTRA:-}" ]]; then  # EXTRA=1: the earlier ones off in turn too
  MISTRAL_CUDA_PDL=0 run_ours bf16-b1-nopdl "${shape[@]}"
  run_ours bf16-b1-oneblock --kv-block-size 640 "${shape[@]}"
  MISTRAL_CUDA_GRAPHS=0 run_ours bf16-b1-nographs "${shape[@]}"
  MISTRAL_CUDA_JOIN=0 run_ours bf16-b1-nojoin "${shape[@]}"
  MISTRAL_CUDA_FUSE=0 MISTRAL_GEMV_KERNEL=pipelined run_ours bf16-b1-pipelined "${shape[@]}"
fi
run_ours bf16-b1-ctx4k --prompt-tokens 3968 --new-tokens 128 --runs 3
run_ours int8-b1 --weights int8 "${shape[@]}"
MISTRAL_CUDA_FUSE=0 run_ours int8-b1-nofuse --weights int8 "${shape[@]}"
run_ours int4-b1 --weights int4 "${shape[@]}"
MISTRAL_CUDA_FUSE=0 run_ours int4-b1-nofuse --weights int4 "${shape[@]}"
run_ours bf16-b32 --batch 32 --prompt-tokens 128 --new-tokens 128 --runs 2
if [[ -z "${SKIP_HF:-}" ]]; then  # SKIP_HF=1: ours only (HF measured earlier on this kind)
start=$SECONDS
python3 .device_cuda/hf_bench.py "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 128 \
  --runs 2 > "$runs/hf-bf16-b1.json" 2> "$runs/hf-bf16-b1.err"
python3 .device_cuda/hf_bench.py "$work/m7b" --batch 32 --prompt-tokens 128 --new-tokens 128 \
  --runs 2 > "$runs/hf-bf16-b32.json" 2> "$runs/hf-bf16-b32.err"
echo "hf: $((SECONDS - start)) s"
fi
python3 "$(dirname "$0")/gather_runs.py" "$runs" "$out/results.json"
python3 - "$out/results.json" <<'PY' | tee "$out/summary.txt"
import json, sys
results = json.load(open(sys.argv[1]))
print("run                            prefill tok/s  TTFT ms  first-run TTFT ms  decode tok/s  first-run decode  BW frac")
for name, r in results.items():
    if "error" in r:
        print(f"{name:30} failed: {r['error']}")
        continue
    first = r.get("first_run", {})
    ttft_first = r.get("first_run_time_to_first_token_s", first.get("ttft_s", float("nan")))
    dec_first = r.get("first_run_decode_tok_s", first.get("decode_tok_s", float("nan")))
    print(f"{name:30} {r['prefill_tok_s']:13.0f} {1e3 * r['time_to_first_token_s']:8.2f} "
          f"{1e3 * ttft_first:18.2f} {r['decode_tok_s']:13.1f} {dec_first:17.1f} "
          f"{r.get('decode_bandwidth_fraction', float('nan')):8.3f}")
PY

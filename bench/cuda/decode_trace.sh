#!/usr/bin/env bash
# The decode timeline of a trace build (cmake -DMISTRAL_CUDA_TRACE=ON; src/backend/cuda/trace.cuh):
# for each format of FORMATS (default "int4 int8 bf16"), the staged trace binary
# ($DEVICE_DIR/NAME/mistral, NAME default "trace", staged by stage_variant.sh) decodes the random
# 7B as decode_run.sh's decode does (`mistral bench --device cuda --model WORK/m7b --prompt-tokens
# 512 --new-tokens 128 --runs 2 [--weights F]`) with MISTRAL_CUDA_TRACE_OUT set, then
# trace_timeline.py prints the last step's per-layer table (OUT/timeline-F.txt, .json). The
# marks cost time, so main's binary runs in the same call too, for the tok/s the trace perturbs.
# Usage (repository root on the GPU machine, after `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_trace.sh OUT_DIR WORK_DIR [NAME]
set -uo pipefail
out=${1:?usage: decode_trace.sh OUT_DIR WORK_DIR [NAME]}
work=${2:?usage: decode_trace.sh OUT_DIR WORK_DIR [NAME]}
name=${3:-trace}
source "$(dirname "$0")/decode_run.sh"
main_bin=$bin
[[ -x $dir/$name/mistral ]] || { echo "decode_trace.sh: no $dir/$name/mistral" >&2; exit 2; }
start_sweep trace
for format in ${FORMATS:-int4 int8 bf16}; do
  weights=()
  [[ $format != bf16 ]] && weights=(--weights "$format")
  bin=$main_bin
  decode "$format main" --prompt-tokens 512 "${weights[@]}"
  bin=$dir/$name/mistral
  MISTRAL_CUDA_TRACE_OUT=$out/trace-$format.bin \
    decode "$format $name (marks on)" --prompt-tokens 512 "${weights[@]}"
  python3 "$here/trace_timeline.py" "$out/trace-$format.bin" --json "$out/timeline-$format.json" \
    | tee "$out/timeline-$format.txt"
  rm -f "$out/trace-$format.bin"  # 32 MiB; the summary is what comes back
done

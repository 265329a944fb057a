#!/usr/bin/env bash
# The decode timeline of trace builds (cmake -DMISTRAL_CUDA_TRACE=ON; src/backend/cuda/trace.cuh):
# for each format of FORMATS (default "int4 int8 bf16"), main's binary and then each staged trace
# binary NAME ($DEVICE_DIR/NAME/mistral, staged by stage_variant.sh; default the one NAME "trace")
# decode the random 7B as decode_run.sh's decode does (`mistral bench --device cuda --model
# WORK/m7b --prompt-tokens 512 --new-tokens 128 --runs 2 [--weights F]`), the trace binaries with
# MISTRAL_CUDA_TRACE_OUT set; trace_timeline.py then prints the last step's per-layer table
# (OUT/timeline-F-NAME.txt, .json). The marks cost time: main's tok/s, in the same call, is what
# they perturb.
# Usage (repository root on the GPU machine, after `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_trace.sh OUT_DIR WORK_DIR [NAME...]
set -uo pipefail
out=${1:?usage: decode_trace.sh OUT_DIR WORK_DIR [NAME...]}
work=${2:?usage: decode_trace.sh OUT_DIR WORK_DIR [NAME...]}
shift 2
names=("$@")
((${#names[@]} > 0)) || names=(trace)
source "$(dirname "$0")/decode_run.sh"
main_bin=$bin
for name in "${names[@]}"; do
  [[ -x $dir/$name/mistral ]] || { echo "decode_trace.sh: no $dir/$name/mistral" >&2; exit 2; }
done
start_sweep trace
for format in ${FORMATS:-int4 int8 bf16}; do
  weights=()
  [[ $format != bf16 ]] && weights=(--weights "$format")
  bin=$main_bin
  decode "$format main" --prompt-tokens 512 "${weights[@]}"
  for name in "${names[@]}"; do
    bin=$dir/$name/mistral
    MISTRAL_CUDA_TRACE_OUT=$out/trace-$format-$name.bin \
      decode "$format $name (marks on)" --prompt-tokens 512 "${weights[@]}"
    python3 "$here/trace_timeline.py" "$out/trace-$format-$name.bin" \
      --json "$out/timeline-$format-$name.json" | tee "$out/timeline-$format-$name.txt"
    rm -f "$out/trace-$format-$name.bin"  # 32 MiB; the summary is what comes back
  done
done

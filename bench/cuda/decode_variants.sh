#!/usr/bin/env bash
# Batch-1 decode of several builds (or settings) of the engine, alternated in one call on one GPU,
# so that they compare (H100 machines differ by 2-3% on the same binary, so only runs of one call
# compare). Each VARIANT is NAME[+VAR=VALUE...]: the binary $DEVICE_DIR/NAME/mistral (staged by
# stage_variant.sh), or $DEVICE_DIR/mistral for NAME "main", run with those environment settings.
# Per format of FORMATS (default "int4 bf16 int8"), ROUNDS rounds (default 2) each run every
# variant once: `mistral bench --device cuda --model WORK/m7b --prompt-tokens 512 --new-tokens
# 128 --runs 2 [--weights F]` on a random 7B (decode_run.sh's decode), printing one line per run.
# TESTS=1 first runs the staged GPU tests (cuda_kernels_test, cuda_model_test), main's and those
# of every variant staged with its tests (stage_variant.sh --tests), each with the variant's
# settings; HF=1 last runs
# Hugging Face transformers on the same weights (hf_bench.py, bf16; its JSON in OUT_DIR/hf.json);
# BUDGET_S (default 480) starts no run after that many seconds, so a call's limit is not hit.
# Usage (repository root on the GPU machine, after `source bench/cuda/device_env.sh`):
#   bench/cuda/decode_variants.sh OUT_DIR WORK_DIR main kv+MISTRAL_KV_PREFETCH=0 ...
set -uo pipefail
out=${1:?usage: decode_variants.sh OUT_DIR WORK_DIR VARIANT...}
work=${2:?usage: decode_variants.sh OUT_DIR WORK_DIR VARIANT...}
shift 2
(($# > 0)) || { echo "decode_variants.sh: name at least one VARIANT" >&2; exit 2; }
source "$(dirname "$0")/decode_run.sh"
budget=${BUDGET_S:-480}
for variant in "$@"; do
  name=${variant%%+*}
  [[ $name == main ]] && continue
  [[ -x $dir/$name/mistral ]] || { echo "decode_variants.sh: no $dir/$name/mistral" >&2; exit 2; }
done
start_sweep variants
with_settings() {  # VARIANT COMMAND...: the command in a subshell with VARIANT's VAR=VALUE exported
  local settings=()
  [[ $1 == *+* ]] && IFS=+ read -r -a settings <<< "${1#*+}"
  shift
  (
    for s in "${settings[@]}"; do export "$s"; done
    "$@"
  )
}
variant_tests() {  # VARIANT: its staged GPU tests, logs beside main's
  dir=$dir/${1%%+*}
  out=$out/tests-${1//[^A-Za-z0-9_.=-]/_}
  mkdir -p "$out"
  gpu_tests
}
if [[ ${TESTS:-0} == 1 ]]; then
  gpu_tests
  for variant in "$@"; do
    name=${variant%%+*}
    [[ $name != main && -x $dir/$name/cuda_kernels_test ]] || continue
    echo "tests of $variant:"
    with_settings "$variant" variant_tests "$variant"
  done
fi
run_variant() {  # VARIANT FORMAT
  local name=${1%%+*} weights=()
  [[ $2 != bf16 ]] && weights=(--weights "$2")
  bin=$dir/mistral
  [[ $name != main ]] && bin=$dir/$name/mistral
  with_settings "$1" decode "$2 $1" --prompt-tokens 512 "${weights[@]}"
}
for format in ${FORMATS:-int4 bf16 int8}; do
  for ((round = 1; round <= ${ROUNDS:-2}; ++round)); do
    for variant in "$@"; do
      if ((SECONDS > budget)); then
        echo "budget of $budget s spent: $format $variant round $round not run"
        continue
      fi
      run_variant "$variant" "$format"
    done
  done
done
if [[ ${HF:-0} == 1 ]] && ((SECONDS < budget)); then
  python3 "$here/hf_bench.py" "$work/m7b" --batch 1 --prompt-tokens 512 --new-tokens 128 \
    --runs 2 > "$out/hf.json" 2> "$out/hf.err"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(f\"HF transformers bf16: {d['decode_tok_s']:.1f} tok/s decode, \
{d['prefill_tok_s']:.0f} prefill, {1000 * d['time_to_first_token_s']:.1f} ms TTFT\")" \
    "$out/hf.json" || tail -5 "$out/hf.err"
fi
date -u

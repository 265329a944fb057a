#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz with clang++ and runs each for $1 seconds (default 60)
# from a freshly generated seed corpus. Crashes are written to build-fuzz/artifacts/ (the build
# directory may be set with MISTRAL_FUZZ_BUILD_DIR).
# The tokenizer targets' seeds come from the tokenizer files of the mistral-common Python package
# (fuzz/make_tokenizer_seeds.py); without it they start from an empty corpus.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MISTRAL_FUZZ_BUILD_DIR:-${root}/build-fuzz}"
export CXX="${CXX:-clang++}"

cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="${CXX}" -DMISTRAL_FUZZ=ON -DMISTRAL_BUILD_TESTS=OFF
tokenizer_targets=(fuzz_tokenizer_tekken fuzz_tokenizer_hf_json fuzz_tokenizer_sentencepiece)
cmake --build "${build}" --target fuzz_safetensors_header fuzz_index fuzz_make_seeds \
  "${tokenizer_targets[@]}"

corpus="${build}/corpus"
mkdir -p "${corpus}" "${build}/artifacts"
"${build}/fuzz/fuzz_make_seeds" "${corpus}"
python3 "${root}/fuzz/make_tokenizer_seeds.py" "${corpus}" ||
  echo "warning: no tokenizer seeds (is mistral_common installed?); fuzzing from scratch" >&2

status=0
for target in fuzz_safetensors_header fuzz_index; do
  echo "=== ${target}: ${seconds}s"
  "${build}/fuzz/${target}" "${corpus}/${target}" \
    -max_total_time="${seconds}" -dict="${root}/fuzz/safetensors.dict" -max_len=4096 \
    -artifact_prefix="${build}/artifacts/${target}-" -print_final_stats=1 || status=1
done
# Tokenizer files: the seeds are 1-30 KB cuts of real files; -timeout reports hangs.
for target in "${tokenizer_targets[@]}"; do
  echo "=== ${target}: ${seconds}s"
  mkdir -p "${corpus}/${target}"
  dict=()
  [[ "${target}" == fuzz_tokenizer_sentencepiece ]] ||
    dict=(-dict="${root}/fuzz/tokenizer_json.dict")
  "${build}/fuzz/${target}" "${corpus}/${target}" \
    -max_total_time="${seconds}" "${dict[@]}" -max_len=65536 -timeout=30 \
    -artifact_prefix="${build}/artifacts/${target}-" -print_final_stats=1 || status=1
done
exit "${status}"

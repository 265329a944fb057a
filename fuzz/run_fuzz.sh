#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz with clang++ and runs each for $1 seconds (default 60)
# from a freshly generated seed corpus. Crashes are written to build-fuzz/artifacts/.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build-fuzz"
export CXX="${CXX:-clang++}"

cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="${CXX}" -DMISTRAL_FUZZ=ON -DMISTRAL_BUILD_TESTS=OFF
cmake --build "${build}" --target fuzz_safetensors_header fuzz_index fuzz_make_seeds

corpus="${build}/corpus"
mkdir -p "${corpus}" "${build}/artifacts"
"${build}/fuzz/fuzz_make_seeds" "${corpus}"

status=0
for target in fuzz_safetensors_header fuzz_index; do
  echo "=== ${target}: ${seconds}s"
  "${build}/fuzz/${target}" "${corpus}/${target}" \
    -max_total_time="${seconds}" -dict="${root}/fuzz/safetensors.dict" -max_len=4096 \
    -artifact_prefix="${build}/artifacts/${target}-" -print_final_stats=1 || status=1
done
exit "${status}"

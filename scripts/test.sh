#!/usr/bin/env bash
# Builds everything and runs every test: the Release build under CTest (in parallel; the CUDA
# library too where nvcc is installed), then the loader and model tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
jobs=$(nproc)

# With nvcc present the CUDA kernel library and its tests are compiled and linked too; its tests
# (CTest label gpu) skip on a machine without a GPU.
cuda=OFF
if command -v nvcc >/dev/null 2>&1; then cuda=ON; fi
# Tests and benchmarks on explicitly: scripts/demo.sh configures the same build folder with both
# off, and CMake would keep that from its cache.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMISTRAL_CUDA="$cuda" \
  -DMISTRAL_BUILD_TESTS=ON -DMISTRAL_BUILD_BENCH=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure --timeout 600 --no-tests=error

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMISTRAL_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs" --target io_tests model_tests tokenizer_tests mistral
ctest --test-dir build-asan -j "$jobs" --output-on-failure --timeout 900 --no-tests=error -R '^(io_tests|model_tests|tokenizer_tests)\.'

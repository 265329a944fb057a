#!/usr/bin/env bash
# Builds everything and runs every test: the Release build under CTest (in parallel), then the
# loader and model tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure --timeout 600

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMISTRAL_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs" --target io_tests model_tests tokenizer_tests mistral
ctest --test-dir build-asan -j "$jobs" --output-on-failure --timeout 900 -R '^(io_tests|model_tests|tokenizer_tests)\.'

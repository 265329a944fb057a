#!/usr/bin/env bash
# Gathers what a GPU machine needs to run this build's CUDA binaries into one folder (default
# .device_cuda, excluded from git): the CLI, the GPU tests and benchmarks, and lib/ with the shared
# libraries they link against except glibc's and cuBLASLt (too large to carry; the GPU machine's
# CUDA or PyTorch installation has it, see run_device.sh). Run here after building:
#   cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DMISTRAL_CUDA=ON \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DMISTRAL_BUILD_TESTS=ON -DMISTRAL_BUILD_BENCH=ON
#   cmake --build build-cuda --target mistral cuda_model_test cuda_kernels_test gemv_bench \
#     boundary_bench persistent_layer_bench
#   bench/cuda/stage_device.sh build-cuda .device_cuda
set -euo pipefail
build=${1:-build-cuda}
dest=${2:-.device_cuda}
rm -rf "$dest"
mkdir -p "$dest/lib"
for bin in apps/cli/mistral tests/cuda/cuda_model_test tests/cuda/cuda_kernels_test \
           bench/cuda/gemv_bench bench/cuda/boundary_bench bench/cuda/persistent_layer_bench; do
  if [[ -x "$build/$bin" ]]; then cp "$build/$bin" "$dest/"; fi
done
cp bench/cuda/run_device.sh bench/cuda/sass_loops.py bench/cuda/hf_bench.py \
   bench/cuda/gather_runs.py bench/cuda/bench_vs_hf.sh "$dest/" 2>/dev/null || true
for bin in "$dest"/mistral "$dest"/cuda_*test "$dest"/*_bench; do
  [[ -x "$bin" ]] || continue
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so|libcublas' |
  while read -r lib; do cp -L "$lib" "$dest/lib/"; done
du -sh "$dest"

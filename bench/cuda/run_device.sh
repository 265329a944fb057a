#!/usr/bin/env bash
# Runs the CUDA kernel tests and gemv_bench on a GPU machine, from a folder holding the built
# binaries, and writes the logs to OUT_DIR. Used for bench/cuda/RESULTS.md.
#   run_device.sh BIN_DIR OUT_DIR [gtest filter for the compute-sanitizer pass]
# BIN_DIR holds cuda_kernels_test and gemv_bench, and optionally lib/ with the C++ runtime and
# libcudart they were linked against (for machines whose own are older); libcublasLt.so.13 is
# taken from the machine (CUDA toolkit or the nvidia-cublas wheel).
set -uo pipefail
bin=$(cd "$1" && pwd)
out=$2
sanitize_filter=${3:-}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0

if [[ -d "$bin/lib" ]]; then export LD_LIBRARY_PATH="$bin/lib:${LD_LIBRARY_PATH:-}"; fi
if ! ldd "$bin/cuda_kernels_test" | grep -q 'libcublasLt.so.13 => /'; then
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
    if [[ -e "$dir/libcublasLt.so.13" ]]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$dir"; break; fi
  done
fi
ldd "$bin/cuda_kernels_test" | grep -E 'cublas|cudart|stdc|not found'

{ date -u; nvidia-smi; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version,pstate --format=csv; } \
  2>&1 | tee "$out/nvidia-smi.txt"

"$bin/cuda_kernels_test" 2>&1 | tee "$out/tests.log" | grep -E '^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|Failure|error|check failed' | head -80
echo "cuda_kernels_test exit: ${PIPESTATUS[0]}"

if [[ -n "$sanitize_filter" ]] && command -v compute-sanitizer >/dev/null; then
  timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "$bin/cuda_kernels_test" \
    --gtest_filter="$sanitize_filter" > "$out/memcheck.log" 2>&1
  echo "memcheck exit: $?"; grep -E 'ERROR SUMMARY|PASSED|FAILED' "$out/memcheck.log" | tail -5
fi

if command -v cuobjdump >/dev/null && [[ -f "$bin/sass_loops.py" ]]; then
  cuobjdump -sass -arch sm_90 "$bin/gemv_bench" | python3 "$bin/sass_loops.py" gemv_kernel \
    > "$out/gemv_loops.txt" 2>&1
fi

"$bin/gemv_bench" 2>&1 | tee "$out/bench.log"
echo "gemv_bench exit: ${PIPESTATUS[0]}"

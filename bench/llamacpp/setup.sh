#!/usr/bin/env bash
# Installs the llama.cpp peer for the side-by-side CPU benchmark: llama-cpp-python (which compiles
# llama.cpp from its vendored source) and the gguf writer, at pinned versions. Idempotent: does
# nothing when the pinned versions are already importable with a native CPU build.
#   bench/llamacpp/setup.sh                  # python packages only
#   WITH_LLAMA_BENCH=1 bench/llamacpp/setup.sh  # also build llama.cpp's own llama-bench from the
#                                            # same vendored source into $LLAMA_BENCH_BUILD
set -euo pipefail
PY=${PYTHON:-python3}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
GGUF_VERSION=${GGUF_VERSION:-0.19.0}
LLAMA_BENCH_BUILD=${LLAMA_BENCH_BUILD:-/tmp/llama-bench-build}
JOBS=${JOBS:-2}

installed() {
  "$PY" - "$LLAMA_CPP_PYTHON_VERSION" "$GGUF_VERSION" <<'EOF' 2>/dev/null
import sys, importlib.metadata as md
import llama_cpp, gguf  # noqa: F401
sys.exit(0 if (md.version("llama_cpp_python") == sys.argv[1] and md.version("gguf") == sys.argv[2]) else 1)
EOF
}

if installed; then
  echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION and gguf $GGUF_VERSION already installed"
else
  # GGML_NATIVE=ON compiles ggml's CPU backend with -march=native (AVX-512, VNNI, BF16 here); it is
  # llama.cpp's default for a non-cross build, stated so that SOURCE_DATE_EPOCH cannot turn it off.
  # The multimodal library (LLAVA_BUILD) is not needed for text models. --no-cache-dir: a wheel
  # cached from a build with other flags must not be reused.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DCMAKE_BUILD_TYPE=Release}"
  export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS MAKEFLAGS=-j$JOBS
  echo "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION with CMAKE_ARGS=$CMAKE_ARGS"
  "$PY" -m pip install --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "gguf==$GGUF_VERSION"
fi

"$PY" - <<'EOF'
import importlib.metadata as md
import llama_cpp
print("llama-cpp-python", md.version("llama_cpp_python"), "| gguf", md.version("gguf"),
      "| numpy", md.version("numpy"))
print("llama.cpp system info:", llama_cpp.llama_print_system_info().decode().strip())
EOF

if [ "${WITH_LLAMA_BENCH:-0}" = 1 ] && [ ! -x "$LLAMA_BENCH_BUILD/bin/llama-bench" ]; then
  SRC=$(mktemp -d)
  trap 'rm -rf "$SRC"' EXIT
  "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" \
    -d "$SRC" >/dev/null
  tar -xzf "$SRC"/llama_cpp_python-*.tar.gz -C "$SRC"
  cmake -S "$SRC"/llama_cpp_python-*/vendor/llama.cpp -B "$LLAMA_BENCH_BUILD" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$LLAMA_BENCH_BUILD" --target llama-bench -j "$JOBS"
fi
if [ -x "$LLAMA_BENCH_BUILD/bin/llama-bench" ]; then
  echo "llama-bench: $LLAMA_BENCH_BUILD/bin/llama-bench"
fi

#!/usr/bin/env bash
# Installs what building and testing need, from Debian's packages and PyPI only. Idempotent: skips
# what is already there, so a second run costs seconds.
set -euo pipefail

apt_packages=(cmake ninja-build g++ clang clang-format nlohmann-json3-dev libgtest-dev libgmock-dev
              libcli11-dev libsentencepiece-dev libpcre2-dev pkg-config libbenchmark-dev python3-pip)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Reference implementations the tests compare against (tokenizers), and fixture tooling.
py_packages=(numpy safetensors sentencepiece tokenizers mistral-common tiktoken pytest)
if ! python3 -c "import numpy, safetensors, sentencepiece, tokenizers, mistral_common, tiktoken, pytest" 2>/dev/null; then
  echo "installing Python packages: ${py_packages[*]}"
  python3 -m pip install -q "${py_packages[@]}"
fi

#!/usr/bin/env bash
# Stages one more build of the CLI beside what stage_device.sh staged, as DEST/NAME/mistral
# (stripped), for decode_variants.sh; with --tests, also its GPU tests (cuda_kernels_test,
# cuda_model_test, stripped; decode_variants.sh's TESTS=1 runs them); with --pack, also packs
# DEST into PACK (default
# .device_pack/bins.tar.xz, excluded from git) for the device tool's `carry`, whose limit is
# 64 MiB: the staged binaries are stripped first, then packed with a dictionary as large as
# them all. Typical use, here:
#   bench/cuda/stage_device.sh build-cuda .device_cuda        # main: CLI, tests, libraries
#   (edit, rebuild build-cuda's mistral)
#   bench/cuda/stage_variant.sh build-cuda try1 --pack
# then on the GPU machine (carry .device_pack): `tar -xJf .device_pack/bins.tar.xz &&
#   source bench/cuda/device_env.sh && bench/cuda/decode_variants.sh OUT /tmp/w main try1`.
# Usage: stage_variant.sh BUILD NAME [--tests] [--pack] [DEST] [PACK]
set -euo pipefail
usage="usage: stage_variant.sh BUILD NAME [--tests] [--pack] [DEST] [PACK]"
build=${1:?$usage}
name=${2:?$usage}
shift 2
tests=0
pack=0
while [[ ${1:-} == --tests || ${1:-} == --pack ]]; do
  [[ $1 == --tests ]] && tests=1
  [[ $1 == --pack ]] && pack=1
  shift
done
dest=${1:-.device_cuda}
archive=${2:-.device_pack/bins.tar.xz}
[[ $name != main && $name != lib && $name != */* ]] ||
  { echo "stage_variant.sh: NAME must be a plain folder name other than main and lib" >&2; exit 2; }
[[ -d $dest/lib ]] || { echo "stage_variant.sh: $dest has no lib/: run stage_device.sh first" >&2; exit 2; }
mkdir -p "$dest/$name"
cp "$build/apps/cli/mistral" "$dest/$name/mistral"
strip "$dest/$name/mistral"
if ((tests)); then
  for t in cuda_kernels_test cuda_model_test; do
    [[ -x $build/tests/cuda/$t ]] ||
      { echo "stage_variant.sh: no $build/tests/cuda/$t (build it, or leave out --tests)" >&2; exit 2; }
    cp "$build/tests/cuda/$t" "$dest/$name/$t"
    strip "$dest/$name/$t"
  done
fi
if ((pack)); then
  for bin in "$dest"/mistral "$dest"/cuda_*test "$dest"/*_bench; do
    [[ -x $bin ]] && strip "$bin"
  done
  mkdir -p "$(dirname "$archive")"
  # The variants' binaries share most of their bytes. With a dictionary that spans them all, xz
  # stores those bytes once: on 2026-12-08, 14 stripped binaries (7 builds of the CLI, 3 of
  # each GPU test and a benchmark, 330 MB) packed into 19 MiB, where 8 of them had taken 50 MiB
  # at xz -6. Unpacking needs 256 MiB of memory.
  tar -cf - "$dest" | xz -T1 --lzma2=preset=9,dict=256MiB > "$archive"
  size=$(stat -c %s "$archive")
  echo "$archive: $((size >> 20)) MiB"
  ((size < 64 << 20)) || { echo "stage_variant.sh: $archive is over the 64 MiB carry limit" >&2; exit 1; }
fi

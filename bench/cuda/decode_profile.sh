#!/usr/bin/env bash
# Where one decode step's time goes: Nsight Compute's duration of every kernel of a few decoder
# layers, kernel by kernel, in the decode phase of `mistral bench` (CUDA graph nodes included).
# ncu runs each kernel alone (no overlap with its neighbours, caches left warm), so the sum is
# the kernels' own time, and the step time measured by bench minus that sum is what launches,
# ramps and drains cost. Run on the GPU machine from the repository root, after stage_device.sh:
#   bench/cuda/decode_profile.sh MODEL_DIR [mistral bench args...]   (e.g. --weights int4)
set -uo pipefail
model=${1:?MODEL_DIR}
shift
source bench/cuda/device_env.sh
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
# Warm-up, a 128-token prefill and the first decode steps launch ~3,000 kernels (bf16), so the
# default skip ends well inside decode; int8 / int4 prefill launches more (a dequantize kernel
# per GEMM): use SKIP=7000 there. 40 kernels are four to five layers.
"$ncu" --cache-control none --clock-control none --launch-skip "${SKIP:-4000}" --launch-count 40 \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  --csv .device_cuda/mistral bench --device cuda --model "$model" --prompt-tokens 128 \
  --new-tokens 32 --runs 1 "$@" 2>/dev/null | python3 -c '
import csv, sys, re
rows = [r for r in csv.reader(l for l in sys.stdin if l.startswith("\""))]
head, rows = rows[0], rows[1:]
ix = {h: i for i, h in enumerate(head)}
kernels = {}
for r in rows:
    k = kernels.setdefault(r[ix["ID"]], {"name": r[ix["Kernel Name"]]})
    k[r[ix["Metric Name"]]] = float(r[ix["Metric Value"]].replace(",", ""))
total = 0.0
for kid, k in sorted(kernels.items(), key=lambda kv: int(kv[0])):
    name = re.sub(r"^(void )?(mistral::cuda::)?(\(anonymous namespace\)::)?", "", k["name"])[:70]
    us = k.get("gpu__time_duration.sum", 0) / 1e3
    total += us
    dram = k.get("dram__throughput.avg.pct_of_peak_sustained_elapsed", 0)
    print(f"{kid:>5} {us:8.2f} us  dram {dram:5.1f}%  {name}")
print(f"sum {total:.1f} us over {len(kernels)} kernels")
'

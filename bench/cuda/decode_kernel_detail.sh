#!/usr/bin/env bash
# Why each kernel of one decode layer takes the time it does: Nsight Compute's full metric set
# (occupancy, warp stall reasons, DRAM and L2 traffic, registers) for N consecutive kernels of the
# decode phase of `mistral bench`, written raw as CSV, and a short table of the metrics that tell
# latency from bandwidth limits. Slow (every kernel is replayed ~40 times): keep N to one layer.
# Run on the GPU machine from the repository root, after stage_device.sh:
#   bench/cuda/decode_kernel_detail.sh MODEL_DIR OUT_CSV [mistral bench args...]
# SKIP (default 4000; 7000 for int8 / int4, see decode_profile.sh) and N (default 8) pick them.
set -uo pipefail
model=${1:?MODEL_DIR}
out=${2:?OUT_CSV}
shift 2
source bench/cuda/device_env.sh
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
"$ncu" --set full --cache-control none --clock-control none --launch-skip "${SKIP:-4000}" \
  --launch-count "${N:-8}" --csv --page raw .device_cuda/mistral bench --device cuda \
  --model "$model" --prompt-tokens 128 --new-tokens 32 --runs 1 "$@" 2>"$out.err" |
  grep '^"' > "$out"
if [[ ! -s "$out" ]]; then
  echo "decode_kernel_detail.sh: ncu ($ncu) profiled no kernel; its stderr is in $out.err" >&2
  exit 1
fi
python3 - "$out" <<'PY'
import csv, re, sys
rows = list(csv.reader(open(sys.argv[1])))
head, rows = rows[0], [r for r in rows[1:] if r and r[0].isdigit()]
ix = {h: i for i, h in enumerate(head)}
want = [
    ("us", "gpu__time_duration.sum", 1e-3),
    ("dram%", "dram__bytes_read.sum.pct_of_peak_sustained_elapsed", 1),
    ("regs", "launch__registers_per_thread", 1),
    ("grid", "launch__grid_size", 1),
    ("occ%", "sm__warps_active.avg.pct_of_peak_sustained_active", 1),
    ("issue%", "smsp__issue_active.avg.pct_of_peak_sustained_active", 1),
    ("L2hit%", "lts__t_sector_hit_rate.pct", 1),
] + [  # warps stalled per issued instruction, by reason
    (short, f"smsp__average_warps_issue_stalled_{reason}_per_issue_active.ratio", 1)
    for short, reason in [("long_sb", "long_scoreboard"), ("short_sb", "short_scoreboard"),
                          ("barrier", "barrier"), ("wait", "wait"), ("mio", "mio_throttle"),
                          ("lg_thr", "lg_throttle")]
]
print(" ".join(f"{n:>8}" for n, _, _ in want), " kernel")
for r in rows:
    vals = []
    for _, m, scale in want:
        try:
            vals.append(f"{float(r[ix[m]].replace(',', '')) * scale:8.1f}")
        except (KeyError, ValueError):
            vals.append(f"{'-':>8}")
    name = re.sub(r"^(void )?(mistral::cuda::)?(\(anonymous namespace\)::|<?unnamed>::)?", "",
                  r[ix["Kernel Name"]])[:60]
    print(" ".join(vals), "", name)
PY

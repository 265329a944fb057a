#!/usr/bin/env python3
"""Register budget of the fused decode GEMV kernels (src/backend/cuda/gemv_fused.cu), checked at
build time: no GPU needed.

Each instance must fit its blocks per SM: at most 64 registers a thread (int8 / int4: 2 blocks of
16 warps an SM; bf16: 4 blocks of 8 warps), and no spills. ptxas picks the count itself, and a
small edit can move it past 64, which halves the blocks an SM holds: bench/RESULTS.md
(2026-12-07, "Weight rounds preloaded") saw the int4 gate|up kernel go to 66 that way.

Compiles the file for one architecture with `-Xptxas -v` and reads ptxas's report. The flags
below are the Release build's that bear on code generation (src/backend/cuda/CMakeLists.txt and
the top-level CMakeLists.txt); keep them in step.
Usage: kernel_registers.py --nvcc NVCC --include SRC_DIR --source FILE [--arch 90]
       [--max-registers 64] [--define NAME=VALUE ...]
(--define: the build's own definitions, e.g. MISTRAL_CUDA_TRACE=1 in a trace build, whose
timeline marks must not cost the kernels their occupancy either. --default-shapes-only: only the
block shapes the engine launches unless MISTRAL_FUSED_WARPS=8 asks otherwise, i.e. not the 8-warp
int8 / int4 instances; a trace build times the default shapes, and two of those 8-warp
instances sit at 64 registers with nothing to spare.)
"""
import argparse
import re
import subprocess
import sys
import tempfile

# gemv_fused_kernel<WeightFormat F, OutT, bool kNorm, GemvOutput kOut, int kW>, as mangled.
KERNEL = re.compile(r"gemv_fused_kernelILNS0_12WeightFormatE(\d)E(.*?)Lb(\d)"
                    r"ELNS0_10GemvOutputE(\d)ELi(\d+)E")
FORMATS = {"0": "bf16", "1": "int8", "2": "int4"}
OUTPUTS = {"0": "store", "1": "add", "2": "swiglu"}


def ptxas_report(args):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.nvcc, "-cubin", f"-arch=sm_{args.arch}", "-O3", "-DNDEBUG", "-std=c++20",
               "--expt-relaxed-constexpr", "-Xptxas", "-v", "-I", args.include, "-o",
               f"{tmp}/kernels.cubin", args.source] + [f"-D{d}" for d in args.define]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kernel_registers: {' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return done.stderr


def kernels(report):
    """(description, registers, spill store bytes, spill load bytes) per fused GEMV instance."""
    found, name = [], None
    for line in report.splitlines():
        entry = re.search(r"Compiling entry function '([^']*)'", line)
        if entry:
            name, spill = entry.group(1), None  # ptxas reports spills, then registers
            continue
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spills and name:
            spill = (int(spills.group(1)), int(spills.group(2)))
        used = re.search(r"Used (\d+) registers", line)
        if used and name:
            match = KERNEL.search(name)
            if match:
                if spill is None:
                    sys.exit(f"kernel_registers: ptxas gave no spill line for {name}")
                f, out_type, norm, output, warps = match.groups()
                what = (f"{FORMATS[f]} {'float' if out_type.endswith('f') else 'bf16'} out, "
                        f"{'norm' if norm == '1' else 'no norm'}, {OUTPUTS[output]}, "
                        f"{warps} warps")
                found.append((what, int(used.group(1))) + spill)
            name = None
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvcc", required=True)
    parser.add_argument("--include", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--arch", default="90")
    parser.add_argument("--max-registers", type=int, default=64)
    parser.add_argument("--define", action="append", default=[])
    parser.add_argument("--default-shapes-only", action="store_true")
    args = parser.parse_args()
    found = kernels(ptxas_report(args))
    if args.default_shapes_only:
        found = [k for k in found if k[0].startswith("bf16") or not k[0].endswith(" 8 warps")]
    if not found:
        sys.exit(f"kernel_registers: no gemv_fused_kernel instance in ptxas's report of "
                 f"{args.source}")
    bad = []
    for what, registers, spill_stores, spill_loads in sorted(found):
        ok = registers <= args.max_registers and spill_stores == 0 and spill_loads == 0
        print(f"{'ok ' if ok else 'BAD'} {what}: {registers} registers, "
              f"spills {spill_stores}/{spill_loads} bytes")
        if not ok:
            bad.append(what)
    if bad:
        sys.exit(f"kernel_registers: {len(bad)} of {len(found)} fused GEMV kernels "
                 f"(sm_{args.arch}) take more than {args.max_registers} registers or spill: "
                 f"{'; '.join(bad)}")
    print(f"{len(found)} fused GEMV kernels within {args.max_registers} registers, no spills")


if __name__ == "__main__":
    main()

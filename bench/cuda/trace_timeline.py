#!/usr/bin/env python3
"""The decode timeline of a trace build, per layer (issue 5's diagnostics).

A build configured with -DMISTRAL_CUDA_TRACE=ON marks points of every block of the fused decode
GEMV and of decode attention (src/backend/cuda/trace.cuh); run with MISTRAL_CUDA_TRACE_OUT=FILE,
the backend writes the last marks to FILE when it is destroyed (trace_recorder.h gives the
format). This script groups the marks into block instances, launches, layers (q|k|v, attention,
o, gate|up, down) and decode steps, and prints, in microseconds from the layer's first q|k|v
block start:
  - one layer (default: the last of the last complete step): each kernel's points as
    [earliest block, latest block];
  - the mean over every layer of that step of the same numbers, and of the layer's period;
  - per kernel, the gap from the previous kernel's last block end to this kernel's first wait
    return (the boundary) and the spans wait -> prologue / queries and -> last end.

Usage: trace_timeline.py FILE [--layer I] [--json OUT]
       trace_timeline.py --self-test
"""
import argparse
import json
import os
import struct
import sys
import tempfile

MAGIC = b"MTRACE\0\0"
HEADER = struct.Struct("<8sIIQQ")
RECORD = struct.Struct("<QIHBB")  # ns, block, kernel, point, sm (trace_record.h)
VERSION = 1

GEMV, ATTENTION = 1, 2
FORMATS = ["bf16", "int8", "int4"]
OUTPUTS = ["store", "add", "swiglu"]
GEMV_POINTS = ["start", "wait", "prologue", "end"]
ATTENTION_POINTS = ["start", "wait", "queries", "walked", "merge", "end"]
ROLES = ["q|k|v", "attention", "o", "gate|up", "down"]


def kind(code):
    return code >> 12


def describe(code):
    if kind(code) == ATTENTION:
        return "attention"
    if kind(code) == GEMV:
        fmt, norm, out, size = (code >> 10) & 3, (code >> 9) & 1, (code >> 7) & 3, code & 127
        return (f"gemv {FORMATS[fmt] if fmt < 3 else fmt} {OUTPUTS[out] if out < 3 else out}"
                f"{' +norm' if norm else ''} k~{size}Ki")
    return f"kernel {code:#x}"


def points_of(code):
    return ATTENTION_POINTS if kind(code) == ATTENTION else GEMV_POINTS


def read_records(path):
    """The ring's records, oldest first (ring order; a block's records are adjacent)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"{path}: cannot read the trace: {e.strerror}")
    if len(data) < HEADER.size:
        sys.exit(f"{path}: too short for a trace header")
    magic, version, record_bytes, made, capacity = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or record_bytes != RECORD.size:
        sys.exit(f"{path}: not a version-{VERSION} trace (magic {magic!r}, version {version}, "
                 f"record size {record_bytes})")
    kept = min(made, capacity)
    body = data[HEADER.size:HEADER.size + kept * RECORD.size]
    if len(body) != kept * RECORD.size:
        sys.exit(f"{path}: {kept} records announced, {len(body) // RECORD.size} present")
    records = list(RECORD.iter_unpack(body))
    if made > capacity:  # wrapped: the oldest record is at made % capacity
        start = made % capacity
        records = records[start:] + records[:start]
    return records, made, capacity


def block_instances(records):
    """(kernel, block, sm, [ns per point]) for every block whose records are all present."""
    out, i, n = [], 0, len(records)
    while i < n:
        ns, block, code, point, sm = records[i]
        if point != 0 or ns == 0 or kind(code) not in (GEMV, ATTENTION):
            i += 1
            continue
        count = len(points_of(code))
        group = records[i:i + count]
        if len(group) == count and all(
                r[3] == p and r[2] == code and r[1] == block and r[0] != 0
                for p, r in enumerate(group)):
            out.append((code, block, sm, [r[0] for r in group]))
            i += count
        else:
            i += 1
    return out


def launches(instances):
    """Block instances grouped into launches: in start order, a launch ends where the kernel
    changes or a block index repeats (a launch's blocks all start before the next launch's)."""
    result = []
    for inst in sorted(instances, key=lambda x: x[3][0]):
        code, block = inst[0], inst[1]
        if not result or result[-1]["code"] != code or block in result[-1]["blocks"]:
            result.append({"code": code, "blocks": {}})
        result[-1]["blocks"][block] = inst[3]
    return result


def is_layer(seq):
    if len(seq) != 5 or kind(seq[1]["code"]) != ATTENTION:
        return False
    gemvs = [seq[0], seq[2], seq[3], seq[4]]
    if any(kind(l["code"]) != GEMV for l in gemvs):
        return False
    outputs = [(l["code"] >> 7) & 3 for l in gemvs]
    return outputs == [0, 1, 2, 1]  # store, add, swiglu, add


def steps_of(runs):
    """Decode steps: maximal runs of adjacent layers (q|k|v right after the previous down)."""
    layers = [i for i in range(1, len(runs) - 3) if is_layer(runs[i - 1:i + 4])]
    steps, current = [], []
    for i in layers:
        if current and i - 1 != current[-1] + 5:
            steps.append(current)
            current = []
        current.append(i - 1)
    if current:
        steps.append(current)
    return steps


def layer_table(runs, first):
    """Per kernel of the layer starting at runs[first]: per point [min, max] us from t0."""
    seq = runs[first:first + 5]
    t0 = min(times[0] for times in seq[0]["blocks"].values())
    table = []
    for role, launch in zip(ROLES, seq):
        names = points_of(launch["code"])
        cols = list(zip(*launch["blocks"].values()))
        table.append({
            "kernel": role,
            "what": describe(launch["code"]),
            "blocks": len(launch["blocks"]),
            "points": {n: [(min(c) - t0) / 1000.0, (max(c) - t0) / 1000.0]
                       for n, c in zip(names, cols)},
        })
    return t0, table


def spans(table, previous_end=None):
    """Derived per kernel: boundary (previous kernel's last end -> this one's first wait return;
    for q|k|v, `previous_end`: the previous layer's down, in this layer's time, if known),
    wait -> prologue (GEMV) or queries (attention), latest, and -> last end."""
    out = []
    for row in table:
        p = row["points"]
        staged = p.get("prologue", p.get("queries"))
        out.append({
            "kernel": row["kernel"],
            "boundary": None if previous_end is None else p["wait"][0] - previous_end,
            "wait_to_staged": staged[1] - p["wait"][0],
            "wait_to_end": p["end"][1] - p["wait"][0],
        })
        previous_end = p["end"][1]
    return out


def mean_tables(tables):
    mean = []
    for rows in zip(*tables):
        first = rows[0]
        mean.append({
            "kernel": first["kernel"], "what": first["what"], "blocks": first["blocks"],
            "points": {n: [sum(r["points"][n][0] for r in rows) / len(rows),
                           sum(r["points"][n][1] for r in rows) / len(rows)]
                       for n in first["points"]},
        })
    return mean


def render(table, title, previous_end=None):
    lines = [title]
    for row in table:
        cells = "  ".join(f"{n} {lo:7.2f}-{hi:<7.2f}" for n, (lo, hi) in row["points"].items())
        lines.append(f"  {row['kernel']:9s} {row['blocks']:5d} blocks  {cells}   ({row['what']})")
    for s in spans(table, previous_end):
        boundary = "" if s["boundary"] is None else f"boundary {s['boundary']:5.2f}  "
        lines.append(f"  {s['kernel']:9s} {boundary}wait->staged {s['wait_to_staged']:5.2f}  "
                     f"wait->end {s['wait_to_end']:5.2f}")
    return "\n".join(lines)


def summarize(path, layer_index=-1):
    records, made, capacity = read_records(path)
    runs = launches(block_instances(records))
    steps = steps_of(runs)
    if not steps:
        sys.exit(f"{path}: no complete decode layer among {len(runs)} launches "
                 f"({made} marks, ring of {capacity})")
    longest = max(len(s) for s in steps)
    step = [s for s in steps if len(s) == longest][-1]
    if not -len(step) <= layer_index < len(step):
        sys.exit(f"--layer {layer_index}: the step has {len(step)} layers")
    starts, tables, down_ends = [], [], [None]
    for first in step:
        t0, table = layer_table(runs, first)
        if starts:  # the previous layer's down end, in this layer's time
            down_ends.append(tables[-1][4]["points"]["end"][1] - (t0 - starts[-1]) / 1000.0)
        starts.append(t0)
        tables.append(table)
    periods = [(b - a) / 1000.0 for a, b in zip(starts, starts[1:])]
    chosen = layer_index % len(step)
    known = [e for e in down_ends if e is not None]
    return {
        "marks": made, "ring": capacity, "launches": len(runs), "steps": len(steps),
        "layers_in_step": len(step), "layer": chosen,
        "layer_table": tables[chosen],
        "layer_previous_end": down_ends[chosen],
        "mean_table": mean_tables(tables),
        "mean_previous_end": sum(known) / len(known) if known else None,
        "mean_period_us": sum(periods) / len(periods) if periods else None,
    }


def print_summary(s):
    print(f"{s['marks']} marks (ring {s['ring']}), {s['launches']} launches, {s['steps']} "
          f"decode step(s) in the ring; the last complete one has {s['layers_in_step']} layers")
    print(render(s["layer_table"], f"layer {s['layer']} of that step (us from its first q|k|v "
                                   f"block start, [earliest, latest block]):",
                 s["layer_previous_end"]))
    period = s["mean_period_us"]
    print(render(s["mean_table"], "mean over the step's layers" +
                 (f" (layer period {period:.2f} us):" if period is not None else ":"),
                 s["mean_previous_end"]))


def write_trace(path, instances, made=None, capacity=1 << 12):
    """A trace file from (code, block, sm, [ns...]) instances (for the self-test)."""
    records = []
    for code, block, sm, times in instances:
        records += [(t, block, code, p, sm) for p, t in enumerate(times)]
    made = len(records) if made is None else made
    with open(path, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, RECORD.size, made, capacity))
        for r in records[:capacity]:
            f.write(RECORD.pack(*r))


def self_test():
    qkv = (GEMV << 12) | (2 << 10) | (1 << 9) | (0 << 7) | 4
    o = (GEMV << 12) | (2 << 10) | (1 << 7) | 4
    gate_up = (GEMV << 12) | (2 << 10) | (1 << 9) | (2 << 7) | 4
    down = (GEMV << 12) | (2 << 10) | (1 << 7) | 14
    head = (GEMV << 12) | (2 << 10) | 4
    att = ATTENTION << 12
    instances, t = [], 1_000_000

    def gemv(code, t0, blocks=2):
        # block b starts at t0 + b us, waits 1 us more, prologue 2 us, ends 5 us after start
        for b in range(blocks):
            s = t0 + b * 1000
            instances.append((code, b, b, [s, s + 1000, s + 3000, s + 5000]))

    for step in range(2):
        for layer in range(2):
            gemv(qkv, t)
            for b in range(3):  # attention: start t+6, wait +1, ... end +10 (+b)
                s = t + 6000
                instances.append((att, b, 10 + b, [s, s + 1000, s + 2000, s + 4000,
                                                   s + 5000, s + 10000 + b * 1000]))
            gemv(o, t + 20000)
            gemv(gate_up, t + 30000)
            gemv(down, t + 40000)
            t += 50000
        gemv(head, t)
        t += 10000
    # a torn group (its points 1-3 missing) must be skipped, not taken for a block
    instances.insert(0, (qkv, 7, 0, [1]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.bin")
        write_trace(path, instances)
        s = summarize(path)
    checks = [
        (s["steps"], 2), (s["layers_in_step"], 2), (s["layer"], 1), (s["mean_period_us"], 50.0),
        (s["layer_table"][0]["points"]["start"], [0.0, 1.0]),
        (s["layer_table"][0]["points"]["end"], [5.0, 6.0]),
        (s["layer_table"][1]["points"]["end"], [16.0, 18.0]),
        (s["layer_table"][1]["blocks"], 3),
        (spans(s["layer_table"])[1]["boundary"], 7.0 - 6.0),   # attention wait 7 - qkv end 6
        (spans(s["layer_table"])[2]["boundary"], 21.0 - 18.0),  # o wait 21 - attention end 18
        (spans(s["layer_table"])[2]["wait_to_staged"], 24.0 - 21.0),
        (spans(s["layer_table"])[4]["wait_to_end"], 46.0 - 41.0),
        (s["layer_previous_end"], 46.0 - 50.0),  # the previous layer's down ended at 46 of 50
        (spans(s["layer_table"], s["layer_previous_end"])[0]["boundary"], 1.0 - (46.0 - 50.0)),
    ]
    failed = [(got, want) for got, want in checks if got != want]
    if failed:
        sys.exit(f"self-test failed: (got, expected) {failed}")
    print(f"self-test: {len(checks)} checks passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", nargs="?")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--json")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.trace:
        parser.error("a trace file is needed (or --self-test)")
    s = summarize(args.trace, args.layer)
    print_summary(s)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads `cuobjdump -sass` output on stdin; for every kernel whose name contains the pattern
given as argument, prints each loop (a backward branch) that contains HMMA instructions: its
length in instructions and its opcode counts. The body of a kernel's main loop is what decides
whether a memory-bound kernel can keep up with the memory (METHOD.md: read the disassembly)."""
import collections
import re
import sys

pattern = sys.argv[1] if len(sys.argv) > 1 else "gemv_kernel"
text = sys.stdin.read()
for func in re.split(r"\n\s+Function : ", text)[1:]:
    name = func.split("\n", 1)[0].strip()
    if pattern not in name:
        continue
    insts = []  # (address, opcode, full text)
    for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", func):
        addr = int(m.group(1), 16)
        body = re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())
        insts.append((addr, body.split()[0], body))
    print(name)
    for addr, op, body in insts:
        if not op.startswith("BRA"):
            continue
        target = re.search(r"0x([0-9a-f]+)", body)
        if not target or int(target.group(1), 16) >= addr:
            continue
        lo = int(target.group(1), 16)
        loop = [o for a, o, _ in insts if lo <= a <= addr]
        counts = collections.Counter(o.split(".")[0] for o in loop)
        if counts["HMMA"] == 0:
            continue
        top = " ".join(f"{k}:{v}" for k, v in counts.most_common(14))
        print(f"  loop {lo:#x}-{addr:#x}: {len(loop)} instructions, {top}")

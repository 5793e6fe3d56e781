#!/usr/bin/env python3
"""Top heap consumers at the peak of a heaptrack profile, one line each.

    tools/bench/heap-top.py PROFILE.zst [N]

Each line: bytes at the peak, number of allocations, and the first frames
of the backtrace outside the allocator and the standard library, innermost
first. Used for the heap profiles of the edge's memory benchmark
(docs/transports.md; how to record one: services/edge/benches/edge/main.rs).
"""
import re
import subprocess
import sys

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
out = subprocess.run(
    ["heaptrack_print", "-f", path, "-p", "1", "-a", "0", "-T", "0", "-m", "0", "-n", str(n), "-s", "0"],
    capture_output=True, text=True, check=True,
).stdout
entries = []
cur = None
for line in out.splitlines():
    m = re.match(r"^(\S+) peak memory consumed over (\d+) calls from", line)
    if m:
        cur = [m.group(1), m.group(2), []]
        entries.append(cur)
        continue
    if line.startswith(("MOST", "total")):
        cur = None
    if cur is not None and line.strip().startswith("at "):
        cur[2].append(line.strip()[3:])
total = re.search(r"peak heap memory consumption: (\S+)", out)
print("total peak heap:", total.group(1) if total else "?")
skip = ("alloc/src", "library/", "/rustc/", "raw_vec", "boxed.rs", "futures-core", "futures-util", "core/src")
for size, calls, frames in entries:
    shown = []
    for f in frames:
        f = re.sub(r"^/root/\.cargo/registry/src/[^/]+/", "", f)
        f = re.sub(r"^.*/services/", "services/", f)
        if any(x in f for x in skip):
            continue
        shown.append(f)
    print(f"{size:>9} {calls:>8} calls  " + "  <-  ".join(shown[:4]))

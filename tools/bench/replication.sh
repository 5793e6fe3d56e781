#!/usr/bin/env bash
# What replication costs (docs/benchmarks.md, "One server or three"): the
# same two measurements, one after the other on this machine, with NATS as
# one server and the session bucket at one replica (R1), then as a
# three-member JetStream cluster with the bucket at three replicas (R3,
# QRLOGIN_BENCH_NATS_NODES=3, as production runs):
#
#   1. cross-node delivery (tools/bench/cross-node.sh sse): CLIENTS SSE
#      browsers wait on edge-1, confirms through edge-2 at RATE/s; latency
#      from the confirm's answer to CONFIRMED parsed on edge-1;
#   2. whole logins per second (QRLOGIN_COMPARE_ONLY=throughput
#      tools/bench/compare.sh: create, watch, scan, confirm on the other
#      edge, pushed CONFIRMED, redeem; rising rates until p99 completion
#      passes 100 ms), with one and with two auth replicas.
#
#   tools/bench/replication.sh [CLIENTS] [RATE]      defaults: 10000 500
#
# Prints one table (and writes it to artifacts/bench/replication/summary.txt
# beside each run's result files). Takes about 15 minutes at the defaults.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
clients="${1:-10000}"
rate="${2:-500}"
OUT="$ROOT/artifacts/bench/replication"
rm -rf "$OUT"
mkdir -p "$OUT"
bench_build
export QRLOGIN_BENCH_NO_BUILD=1
machine_line | tee "$OUT/summary.txt"

for nodes in 1 3; do
  bench_log "replication: NATS on $nodes server(s): cross-node SSE, $clients browsers, $rate confirms/s"
  QRLOGIN_BENCH_NATS_NODES=$nodes "$BENCH_DIR/cross-node.sh" sse "$clients" "$rate" \
    >"$OUT/cross-node-r$nodes.log" 2>&1 ||
    { tail -n 20 "$OUT/cross-node-r$nodes.log" >&2; bench_die "cross-node on $nodes server(s) failed (see $OUT/cross-node-r$nodes.log)"; }
  cp "$ROOT/artifacts/bench/cross-node-sse/result.json" "$OUT/cross-node-r$nodes.json"
  bench_log "replication: NATS on $nodes server(s): whole logins per second"
  QRLOGIN_BENCH_NATS_NODES=$nodes QRLOGIN_COMPARE_ONLY=throughput \
    "$BENCH_DIR/compare.sh" --out "$OUT/throughput-r$nodes" >"$OUT/throughput-r$nodes.log" 2>&1 ||
    { tail -n 20 "$OUT/throughput-r$nodes.log" >&2; bench_die "throughput on $nodes server(s) failed (see $OUT/throughput-r$nodes.log)"; }
done

python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(p):
    with open(os.path.join(out, p)) as f:
        return json.load(f)
rows = []
for n, label in ((1, "R1 (one server)"), (3, "R3 (three members)")):
    cross = load("cross-node-r%d.json" % n)
    lat = cross.get("latency") or {}
    tp = {}
    for replicas in (1, 2):
        try:
            t = load("throughput-r%d/rows/throughput-%d.json" % (n, replicas))
        except OSError:
            continue
        held = t.get("highest_rate_held")
        steps = [s for s in t.get("steps", []) if s.get("rate") == held]
        p99 = steps[0]["completion_ms"].get("p99") if steps else None
        tp[replicas] = (held, p99)
    rows.append((label, cross, lat, tp))
print("| NATS | SSE cross-node median | p99 | max | confirms/s achieved | logins/s held, 1 auth (p99 there) | 2 auth (p99 there) |")
print("|---|---|---|---|---|---|---|")
def fmt_tp(v):
    if not v or v[0] is None:
        return "none held"
    return "%d (%.1f ms)" % (v[0], v[1]) if v[1] is not None else "%d" % v[0]
for label, cross, lat, tp in rows:
    print("| %s | %.2f ms | %.2f ms | %.1f ms | %.0f | %s | %s |" % (
        label, lat.get("median_ms", float("nan")), lat.get("p99_ms", float("nan")),
        lat.get("max_ms", float("nan")), cross.get("confirm_rate_achieved") or 0,
        fmt_tp(tp.get(1)), fmt_tp(tp.get(2))))
PY
echo "replication: results in $OUT"

#!/usr/bin/env bash
# 100,000 concurrent waiting browsers on this one machine (DESIGN.md
# "Targets"): six edges (about 16,700 connections each: a process may hold
# 20,000 open files), six loadgen worker processes (each bound to its own
# source address, 127.0.0.2 ... 127.0.0.7, so that no source/destination
# pair runs out of ephemeral ports), mixed transports (70% SSE, 30%
# WebSocket). Every session is then scanned and confirmed on an edge other
# than the one its browser waits on, and every browser must get CONFIRMED.
#
#   tools/bench/scale.sh [CLIENTS] [CONFIRMS_PER_S] [EDGES]
#
# Defaults: 100000, 1000, 6. PENDING lives 15 minutes here (default 120 s;
# records are kept 30 minutes, which must be at least the longest deadline),
# since creating 100,000 sessions and confirming them takes longer than
# 120 s on two cores. Once all browsers wait, the CPU of every process is
# measured over an idle window of QRLOGIN_BENCH_IDLE (30s) before the
# confirms start. Results: artifacts/bench/scale/result.json.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
clients="${1:-100000}"
rate="${2:-1000}"
edges="${3:-6}"
workers=$(((clients + 16999) / 17000))
export QRLOGIN_PENDING_TTL="${QRLOGIN_PENDING_TTL:-15m}"
export QRLOGIN_SESSION_RETENTION="${QRLOGIN_SESSION_RETENTION:-30m}"
bench_build
machine_line
bench_init scale "$edges"
start_cluster
echo "== scale: $clients browsers over $edges edges, $workers loadgen workers, confirms at $rate/s"
free -m | sed 's/^/before: /'
# shellcheck disable=SC2046
timeout 1500 "$LOADGEN_BIN" run \
  --watch-edges "$(edge_urls 1 "$edges")" \
  --user-token "$(user_token)" \
  --clients "$clients" --workers "$workers" --ws-percent 30 --confirm-rate "$rate" \
  --connect-concurrency 64 --phone-concurrency 64 \
  --connect-timeout 600s --confirm-timeout 600s --idle-for "${QRLOGIN_BENCH_IDLE:-30s}" \
  --on-confirm "free -m | sed 's/^/all watching: /' >&2" \
  $(measure_args) --json-out "$RUN/result.json"

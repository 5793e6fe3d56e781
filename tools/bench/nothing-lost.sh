#!/usr/bin/env bash
# Nothing lost under faults (DESIGN.md "Targets"): 2,000 waiting browsers
# (half SSE, half WebSocket) over two edges; phones scan and confirm at
# 100/s on the other edge and browsers redeem, while, in turn: edge-1 is
# killed (SIGKILL) and started 1 s later; NATS is stopped (SIGTERM) and
# started 2 s later (its JetStream store stays); auth is killed (SIGKILL)
# and started 1 s later. Browsers reconnect and resume by version (SSE Last-Event-ID,
# WebSocket ?since=). At the end every browser must hold its session's
# final stored state (REDEEMED, same version as a short poll returns).
#
#   tools/bench/nothing-lost.sh [CLIENTS] [CONFIRMS_PER_S]
#
# Defaults: 2000, 100. Results: artifacts/bench/nothing-lost/result.json.
# QRLOGIN_BENCH_FAULTS replaces the fault steps (see tools/bench/fault.sh).
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
clients="${1:-2000}"
rate="${2:-100}"
faults="${QRLOGIN_BENCH_FAULTS:-sleep:2 kill:edge-1 sleep:1 start:edge-1 sleep:2 stop:nats sleep:2 start:nats sleep:2 kill:auth sleep:1 start:auth}"
bench_build
machine_line
bench_init nothing-lost 2
start_cluster
echo "== nothing lost: $clients browsers over 2 edges, confirms at $rate/s, faults while confirming: $faults"
timeout 600 "$LOADGEN_BIN" run \
  --watch-edges "$(edge_urls 1 2)" \
  --user-token "$(user_token)" \
  --clients "$clients" --workers 1 --ws-percent 50 --confirm-rate "$rate" \
  --redeem --verify --expect-reconnects \
  --connect-timeout 120s --confirm-timeout 180s \
  --on-confirm "$BENCH_DIR/fault.sh $RUN $faults" \
  --json-out "$RUN/result.json"

#!/usr/bin/env bash
# Cross-node delivery under load (DESIGN.md "Targets"): 10,000 browsers wait
# on edge-1; phones scan and confirm through edge-2's HTTP routes (with a
# development user token) at 500 confirms/s; each browser's latency runs
# from the moment its confirm is written to edge-2 until CONFIRMED is
# parsed from its stream on edge-1 (auth -> JetStream KV -> NATS -> edge-1).
# A fresh cluster (nats-server, auth, two edges) per transport.
#
#   tools/bench/cross-node.sh [sse|ws|both] [CLIENTS] [CONFIRMS_PER_S]
#
# Defaults: both, 10000, 500. Results: artifacts/bench/cross-node-*/result.json.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
which="${1:-both}"
clients="${2:-10000}"
rate="${3:-500}"
case "$which" in
  sse) transports=(sse) ;;
  ws) transports=(ws) ;;
  both) transports=(sse ws) ;;
  *) bench_die "first argument: sse, ws or both" ;;
esac
bench_build
machine_line
status=0
for t in "${transports[@]}"; do
  bench_init "cross-node-$t" 2
  start_cluster
  ws_percent=0
  [[ "$t" == ws ]] && ws_percent=100
  echo "== cross-node delivery: $clients $t browsers on edge-1, confirms via edge-2 at $rate/s"
  # shellcheck disable=SC2046
  timeout 900 "$LOADGEN_BIN" run \
    --watch-edges "$(edge_url edge-1)" --phone-edges "$(edge_url edge-2)" \
    --user-token "$(user_token)" \
    --clients "$clients" --workers 1 --ws-percent "$ws_percent" --confirm-rate "$rate" \
    --connect-timeout 240s --confirm-timeout 240s \
    $(measure_args) --json-out "$RUN/result.json" || status=1
  bench_stop_all
done
exit "$status"

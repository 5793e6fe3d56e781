#!/usr/bin/env bash
# Screenshots of the Prometheus graphs during a load run, into
# artifacts/monitoring/: on the running local cluster with Prometheus
# (deploy/local/up.sh --with-monitoring), 500 browsers (half SSE, half
# WebSocket; the local edges allow 600 creates a minute from one address)
# wait on both edges and are confirmed across edges at 20/s,
# and screenshots.mjs photographs the graphs while that runs.
#
#   deploy/monitoring/screenshots.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/local/monitoring.sh
source "$ROOT/deploy/local/monitoring.sh"
is_running prometheus || die "Prometheus is not running (deploy/local/up.sh --with-monitoring)"
loadgen="$ROOT/target/release/qrlogin-loadgen"
[[ -x "$loadgen" ]] || "$ROOT/tools/build-release.sh" -q
token="$("$AUTH_BIN" dev-token --key "$KEY_DIR/user-token.pem" --sub alice --name Alice)"
mkdir -p "$ROOT/artifacts/monitoring"
log "load: 500 browsers, 20 confirms/s across edges (log: artifacts/monitoring/load.log)"
timeout 300 "$loadgen" run \
  --watch-edges "$EDGE1_URL,$EDGE2_URL" --user-token "$token" \
  --clients 500 --workers 1 --ws-percent 50 --confirm-rate 20 --redeem \
  --connect-timeout 60s --confirm-timeout 120s >"$ROOT/artifacts/monitoring/load.log" 2>&1 &
load=$!
# Photograph while the confirms run (they take about 25 s at 20/s).
sleep 20
node "$ROOT/deploy/monitoring/screenshots.mjs" "$PROMETHEUS_URL"
wait "$load" || log "the load run reported failures; see artifacts/monitoring/load.log"
tail -n 15 "$ROOT/artifacts/monitoring/load.log"

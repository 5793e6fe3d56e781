#!/usr/bin/env bash
# The dashboard and the rules against real series: on the running local
# cluster (deploy/local/up.sh, or --start to start one and stop it after),
# starts Prometheus (deploy/local/monitoring.sh, scraping every second)
# unless it runs, drives a short load (10 browsers over both edges, half
# SSE, half WebSocket, each scanned, confirmed on the other edge and
# redeemed), then runs check-queries.py: every PromQL expression of the
# dashboard and of the rules must find series. Stops what it started.
#
#   deploy/monitoring/test-queries.sh [--start]
#
# Last line: "N passed, N failed"; exit status 1 when a check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
start_cluster=0
[[ "${1:-}" == "--start" ]] && start_cluster=1
if ((start_cluster)); then
  "$ROOT/deploy/local/up.sh" --detach --no-build >/dev/null
fi
export QRLOGIN_LOCAL_SCRAPE_INTERVAL="${QRLOGIN_LOCAL_SCRAPE_INTERVAL:-1s}"
# shellcheck source=deploy/local/monitoring.sh
source "$ROOT/deploy/local/monitoring.sh"

started_prometheus=0
cleanup() {
  ((started_prometheus)) && stop_component prometheus 10
  ((start_cluster)) && "$ROOT/deploy/local/down.sh" >/dev/null 2>&1
  return 0
}
trap cleanup EXIT
# A bound from outside (tools/test.sh's timeout) still stops what we started.
trap 'exit 143' TERM INT

if ! { is_running edge-1 && is_running edge-2 && is_running auth; }; then
  echo "no local cluster is running (deploy/local/up.sh --detach, or pass --start)"
  echo "0 passed, 1 failed"
  exit 1
fi
if ! is_running prometheus; then
  start_prometheus
  started_prometheus=1
fi

loadgen="$ROOT/target/release/qrlogin-loadgen"
# Built (a no-op when up to date: the same set as every other script), so a
# stale binary never plays an older protocol.
"$ROOT/tools/build-release.sh" -q
# One phone user of its own: auth allows a user QRLOGIN_CONFIRM_LIMIT
# confirms a minute (10 by default), so the load stays within it.
token="$("$AUTH_BIN" dev-token --key "$KEY_DIR/user-token.pem" --sub "monitoring-$$" --name Monitoring)"
log "load: 10 browsers, confirmed across edges, redeemed"
timeout 90 "$loadgen" run \
  --watch-edges "$EDGE1_URL,$EDGE2_URL" \
  --user-token "$token" \
  --clients 10 --workers 1 --ws-percent 50 --confirm-rate 10 \
  --redeem --connect-timeout 20s --confirm-timeout 20s >"$LOG_DIR/test-queries-load.log" 2>&1 ||
  { echo "the load run failed; see $LOG_DIR/test-queries-load.log"; tail -5 "$LOG_DIR/test-queries-load.log"; }

"$ROOT/.tools/venv/bin/python" "$ROOT/deploy/monitoring/check-queries.py" \
  --prometheus "$PROMETHEUS_URL" --wait "${QRLOGIN_QUERY_WAIT:-30}"

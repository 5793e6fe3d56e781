#!/usr/bin/env bash
# Smoke test of the load path, short enough for the test command (< 60 s):
# a fresh mini cluster (nats-server, auth, two edges), 200 waiting browsers
# (half SSE, half WebSocket) spread over both edges, every session scanned
# and confirmed on the other edge and redeemed, while edge-1 is killed
# (SIGKILL) and started again. The QR code rotates every 2 s (1 s grace)
# and the browsers wait 4 s before the first scan, so every phone scans a
# payload that was pushed after the create. Checks: every browser got its
# event, holds its session's final stored state, and the kill made browsers
# reconnect.
#
#   tools/bench/smoke.sh             (QRLOGIN_BENCH_NO_BUILD=1 skips the build)
#
# Last line: "N passed, N failed"; exit status 1 when a check failed.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
bench_build
bench_init smoke 2
export QRLOGIN_QR_ROTATION=2s QRLOGIN_QR_GRACE=1s
start_cluster
set +e
timeout 120 "$LOADGEN_BIN" run --smoke \
  --watch-edges "$(edge_urls 1 2)" \
  --user-token "$(user_token)" \
  --expect-reconnects \
  --idle-for 4s \
  --on-confirm "$BENCH_DIR/fault.sh $RUN sleep:1 kill:edge-1 sleep:0.5 start:edge-1" \
  --json-out "$RUN/result.json"
status=$?
set -e
if ((status != 0 && status != 1)); then
  echo "loadgen ended abnormally (status $status); logs in $RUN/logs"
  echo "0 passed, 1 failed"
fi
exit "$status"

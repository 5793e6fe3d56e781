#!/usr/bin/env bash
# The measured comparison, in one run on this machine (docs/transports.md
# explains every figure):
#
#   1. each qrlogin transport — short polling every 1 s and 2 s, long
#      polling, SSE, WebSocket, STOMP, the gRPC stream — with N waiting
#      browsers through two HAProxies (round-robin, no affinity) in front of
#      two edges, a fixed wait, then scan and confirm of every session at a
#      fixed rate on the edge that does not hold its watch
#      (`qrlogin-loadgen transport`); fresh edges and balancers per transport;
#   2. the peers (tools/bench/peers/run.sh at the same scale): Pushpin stock
#      and without its rate limit, Socket.IO + Redis adapter over WebSocket,
#      and Socket.IO long polling behind round-robin;
#   3. throughput: whole logins per second with one and with two auth
#      replicas, rising until p99 completion passes 100 ms
#      (`qrlogin-loadgen throughput`);
#   4. results.json (every row) and SVG charts (qrlogin-charts).
#
#   tools/bench/compare.sh [--quick] [--out DIR]
#
# Full: 10,000 browsers, 30 s wait, confirms at 500/s. --quick: 200
# browsers, 3 s wait, a 2 s QR rotation, peers at 200, short throughput
# steps; it checks its
# own output and ends with "N passed, M failed" (tools/test.sh runs it).
# Default DIR: artifacts/bench/compare/<UTC time>/. QRLOGIN_BENCH_NO_BUILD=1
# uses the built release binaries. QRLOGIN_COMPARE_ONLY="sse grpc" runs only
# those transports, without peers and throughput (to re-run one part);
# QRLOGIN_COMPARE_ONLY=throughput runs only the throughput part.
# PENDING lives 15 minutes here (default 120 s): creating 10,000 sessions
# while 10,000 browsers short-poll every second takes longer than 120 s on
# two cores. Each edge accepts 19,000 gRPC connections (default 1,000), as
# every browser holds its own. Everything runs on 127.0.0.0/8, is
# started here and stopped on exit.
#
# The gRPC stream goes through each HAProxy's TCP frontend (as in the local
# cluster), so its bytes are counted where the others' are. Bytes: HAProxy's
# frontend counters (bin + bout: HTTP heads and bodies, WebSocket frames,
# HTTP/2 frames; not TCP/IP headers). Auth reads: a third HAProxy between
# the edges and auth (h2), counting GetLoginSession calls apart.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

quick=0
out=""
while (($#)); do
  case "$1" in
    --quick) quick=1; shift ;;
    --out) out="$2"; shift 2 ;;
    *) bench_die "unknown argument $1 (compare.sh [--quick] [--out DIR])" ;;
  esac
done
[[ -n "$out" ]] || out="$ROOT/artifacts/bench/compare/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

TRANSPORTS=(short-poll-1s short-poll-2s long-poll sse ws stomp grpc)
only="${QRLOGIN_COMPARE_ONLY:-}"
only_throughput=0
if [[ "$only" == throughput ]]; then
  only_throughput=1 only="" TRANSPORTS=()
elif [[ -n "$only" ]]; then
  read -r -a TRANSPORTS <<<"$only"
fi
export QRLOGIN_PENDING_TTL="${QRLOGIN_PENDING_TTL:-15m}"
export QRLOGIN_SESSION_RETENTION="${QRLOGIN_SESSION_RETENTION:-30m}"
export QRLOGIN_GRPC_MAX_CONNECTIONS="${QRLOGIN_GRPC_MAX_CONNECTIONS:-19000}"
# Each row gets fresh edges; once it is measured they have nothing to
# drain (the default 10 s drain would add 20 s per row).
export QRLOGIN_DRAIN_DEADLINE="${QRLOGIN_DRAIN_DEADLINE:-500ms}"
# The pace the edges ask of short-poll clients: the fastest row polls every
# second (a poll sooner than half of it would get 429 slow_down).
export QRLOGIN_POLL_INTERVAL="${QRLOGIN_POLL_INTERVAL:-1s}"
if ((quick)); then
  N="${QRLOGIN_COMPARE_CLIENTS:-200}"; WAIT=3s; RATE=500
  # The QR code rotates within the quick run's wait (2 s, 1 s grace), so
  # every phone scans a payload that was pushed after the create.
  export QRLOGIN_QR_ROTATION="${QRLOGIN_QR_ROTATION:-2s}" QRLOGIN_QR_GRACE="${QRLOGIN_QR_GRACE:-1s}"
  PEER_ARGS=(--quick --waiting "$N" --polling-sessions 50)
  TP_RATES=50,200,400; TP_STEP=2s
else
  N="${QRLOGIN_COMPARE_CLIENTS:-10000}"; WAIT=30s; RATE=500
  PEER_ARGS=(--waiting "$N" --rates "$RATE")
  TP_RATES=50,100,200,300,400,600,800,1000; TP_STEP=6s
fi
started=$(date +%s)
CHARTS_BIN="$BIN_DIR/qrlogin-charts"

bench_build
[[ -x "$CHARTS_BIN" ]] || bench_die "$CHARTS_BIN is missing"
command -v haproxy >/dev/null || bench_die "haproxy missing: run tools/bootstrap.sh --peers"

export QRLOGIN_BENCH_RUN_DIR="$out"
bench_init run 2
{
  for v in AUTH2 AUTHLB AUTH2LB AUTHLB_STATS EDGE1_GRPC EDGE2_GRPC HB1_HTTP HB1_GRPC HB1_STATS HB2_HTTP HB2_GRPC HB2_STATS; do
    echo "${v}_PORT=$(free_port)"
  done
} >>"$RUN/cluster.env"
bench_load "$RUN"
trap compare_stop EXIT

compare_stop() {
  local f
  for f in "$RUN"/pids/hb-* "$RUN"/pids/authlb "$RUN"/pids/auth-2; do
    [[ -f "$f" ]] && stop_component "$(basename "$f")" 5
  done
  bench_stop_all
}

# HAProxy between the edges and auth (h2 both sides): frontend `auth`
# (auth-1 only; GetLoginSession to backend auth_read, the rest to
# auth_other, so reads are counted apart) and frontend `auth2` (both
# replicas, for the throughput run).
start_authlb() {
  cat >"$RUN/authlb.cfg" <<EOF
global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch 1
frontend auth
    bind 127.0.0.1:$AUTHLB_PORT proto h2
    use_backend auth_read if { path_beg /qrlogin.auth.v1.AuthService/GetLoginSession }
    default_backend auth_other
frontend auth2
    bind 127.0.0.1:$AUTH2LB_PORT proto h2
    default_backend auth_all
backend auth_read
    server auth-1 127.0.0.1:$AUTH_PORT proto h2
backend auth_other
    server auth-1 127.0.0.1:$AUTH_PORT proto h2
backend auth_all
    balance roundrobin
    server auth-1 127.0.0.1:$AUTH_PORT proto h2 check inter 500ms
    server auth-2 127.0.0.1:$AUTH2_PORT proto h2 check inter 500ms
frontend stats
    bind 127.0.0.1:$AUTHLB_STATS_PORT
    stats enable
    stats uri /
EOF
  spawn authlb haproxy -db -f "$RUN/authlb.cfg"
  wait_port "$AUTHLB_PORT" 10 || bench_die "auth balancer did not start (see $RUN/logs/authlb.log)"
}

# One browsers' balancer, as deploy/local/haproxy.cfg.in (round-robin, no
# affinity, http-no-delay, the same timeouts), without request logs, and
# with room for 9,000 connections (18,000 descriptors of the 20,000).
start_hb() {
  local name="$1" http="$2" grpc="$3" stats="$4"
  cat >"$RUN/$name.cfg" <<EOF
global
    maxconn 9000
defaults
    mode http
    maxconn 9000
    option forwardfor
    option http-no-delay
    retries 3
    option redispatch 1
    timeout connect 2s
    timeout client 65s
    timeout server 65s
    timeout tunnel 1h
    timeout client-fin 10s
    timeout server-fin 10s
    timeout http-request 10s
    timeout http-keep-alive 15s
    timeout queue 5s
frontend www
    bind 127.0.0.1:$http
    default_backend edges
backend edges
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 2 rise 2
    server edge-1 127.0.0.1:$EDGE1_PORT port $EDGE1_OPS_PORT
    server edge-2 127.0.0.1:$EDGE2_PORT port $EDGE2_OPS_PORT
frontend stats
    bind 127.0.0.1:$stats
    stats enable
    stats uri /
defaults
    mode tcp
    maxconn 9000
    retries 3
    option redispatch 1
    timeout connect 2s
    timeout client 65s
    timeout server 65s
frontend grpc
    bind 127.0.0.1:$grpc
    default_backend edges_grpc
backend edges_grpc
    balance roundrobin
    server edge-1 127.0.0.1:$EDGE1_GRPC_PORT
    server edge-2 127.0.0.1:$EDGE2_GRPC_PORT
EOF
  spawn "$name" haproxy -db -f "$RUN/$name.cfg"
  wait_port "$http" 10 || bench_die "$name did not start (see $RUN/logs/$name.log)"
}

# Fresh edges and balancers (memory baselines and counters from zero).
start_front() {
  local auth_url="$1"
  # Edges with their gRPC port, reaching auth through the auth balancer.
  start_edge edge-1 "$EDGE1_GRPC_PORT" "$auth_url"
  start_edge edge-2 "$EDGE2_GRPC_PORT" "$auth_url"
  start_hb hb-1 "$HB1_HTTP_PORT" "$HB1_GRPC_PORT" "$HB1_STATS_PORT"
  start_hb hb-2 "$HB2_HTTP_PORT" "$HB2_GRPC_PORT" "$HB2_STATS_PORT"
  # Both edges up in both balancers' eyes before any browser comes.
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ "$(hb_up "$HB1_STATS_PORT")" == 2 && "$(hb_up "$HB2_STATS_PORT")" == 2 ]]; then return 0; fi
    sleep 0.1
  done
  bench_die "the balancers do not see both edges up after 10 s"
}

stop_front() {
  stop_component hb-1 5
  stop_component hb-2 5
  stop_component edge-1 10
  stop_component edge-2 10
}

# Servers of backend `edges` that HAProxy (stats on port $1) sees UP.
hb_up() {
  python3 - "$1" <<'PY' 2>/dev/null || echo 0
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", "/;csv")
rows = [l.split(",") for l in c.getresponse().read().decode().splitlines()]
print(sum(1 for r in rows if len(r) > 17 and r[0] == "edges" and r[1].startswith("edge-") and r[17] == "UP"))
PY
}

machine_line | tee "$out/machine.txt"
echo "compare: N=$N, wait $WAIT, confirms at $RATE/s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_nats
start_auth
start_authlb
token="$(user_token)"
export QRLOGIN_LOADGEN_USER_TOKEN="$token"
mkdir -p "$out/rows"
failed_transports=()

# 1. qrlogin's transports.
for t in "${TRANSPORTS[@]}"; do
  start_front "http://127.0.0.1:$AUTHLB_PORT"
  bench_log "transport $t: $N browsers"
  if ! timeout 900 "$LOADGEN_BIN" transport --transport "$t" --clients "$N" \
    --balancers "127.0.0.1:$HB1_HTTP_PORT,127.0.0.1:$HB2_HTTP_PORT" \
    --grpc-balancers "127.0.0.1:$HB1_GRPC_PORT,127.0.0.1:$HB2_GRPC_PORT" \
    --balancer-stats "127.0.0.1:$HB1_STATS_PORT,127.0.0.1:$HB2_STATS_PORT" \
    --auth-stats "127.0.0.1:$AUTHLB_STATS_PORT" \
    --phone-edges "$(edge_urls 1 2)" \
    --edge-pid "edge-1=$(pid_of edge-1)" --edge-pid "edge-2=$(pid_of edge-2)" \
    --wait "$WAIT" --confirm-rate "$RATE" \
    $( ((quick)) && echo --quick) --out "$out/rows/qrlogin-$t.json"; then
    failed_transports+=("$t")
  fi
  stop_front
done

if [[ -n "$only" ]]; then
  bench_log "only ${TRANSPORTS[*]}: rows in $out/rows"
  exit "${#failed_transports[@]}"
fi

# 2. The peers, at the same scale.
if ((!only_throughput)); then
  bench_log "peers: ${PEER_ARGS[*]}"
  QRLOGIN_BENCH_NO_BUILD=1 timeout 1800 "$ROOT/tools/bench/peers/run.sh" "${PEER_ARGS[@]}" \
    --out "$out/rows/peers.json" || bench_log "peers: run.sh failed (rows may be missing)"
fi

# 3. Throughput with one, then two auth replicas.
for replicas in 1 2; do
  if ((replicas == 1)); then
    start_front "http://127.0.0.1:$AUTHLB_PORT"
    pids=(--pid "auth-1=$(pid_of auth)")
  else
    spawn auth-2 env \
      QRLOGIN_AUTH_LISTEN="127.0.0.1:$AUTH2_PORT" \
      QRLOGIN_NATS_URL="$NATS_URL" \
      QRLOGIN_NATS_NKEY_SEED_FILE="$RUN/keys/nats-auth.seed" \
      QRLOGIN_RECORD_KEY_FILE="$RUN/keys/record.key" \
      QRLOGIN_SERVICE_TOKENS_FILE="$RUN/keys/service-tokens" \
      QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE="$RUN/keys/user-token.pub.pem" \
      QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE="$RUN/keys/access-token.pem" \
      "$AUTH_BIN" serve
    wait_port "$AUTH2_PORT" 30 || bench_die "auth-2 did not start"
    sleep 1.5 # two health checks of the auth balancer (500 ms apart) see it up
    start_front "http://127.0.0.1:$AUTH2LB_PORT"
    pids=(--pid "auth-1=$(pid_of auth)" --pid "auth-2=$(pid_of auth-2)")
  fi
  # One server (nats), or the members of a QRLOGIN_BENCH_NATS_NODES=3 run.
  nats_pids=()
  for f in "$RUN"/pids/nats*; do
    [[ -f "$f" ]] && nats_pids+=(--pid "$(basename "$f")=$(cat "$f")")
  done
  bench_log "throughput: $replicas auth replica(s), rates $TP_RATES, steps of $TP_STEP"
  timeout 900 "$LOADGEN_BIN" throughput --auth-replicas "$replicas" \
    --balancers "127.0.0.1:$HB1_HTTP_PORT,127.0.0.1:$HB2_HTTP_PORT" \
    --phone-edges "$(edge_urls 1 2)" \
    "${pids[@]}" "${nats_pids[@]}" \
    --pid "edge-1=$(pid_of edge-1)" --pid "edge-2=$(pid_of edge-2)" \
    --pid "haproxy-1=$(pid_of hb-1)" --pid "haproxy-2=$(pid_of hb-2)" \
    --pid "auth-balancer=$(pid_of authlb)" \
    --rates "$TP_RATES" --step "$TP_STEP" --out "$out/rows/throughput-$replicas.json" ||
    bench_log "throughput with $replicas auth replica(s) failed"
  stop_front
done

if ((only_throughput)); then
  bench_log "only throughput: rows in $out/rows"
  python3 - "$out"/rows/throughput-*.json <<'PY' | python3 "$BENCH_DIR/compare-report.py" /dev/stdin
import json, sys
rows = []
for f in sys.argv[1:]:
    d = json.load(open(f))
    rows += d if isinstance(d, list) else [d]
print(json.dumps(rows))
PY
  exit 0
fi

# 4. results.json and charts.
python3 - "$out/results.json" "$out"/rows/*.json <<'PY'
import json, sys
rows = []
for f in sys.argv[2:]:
    d = json.load(open(f))
    rows += d if isinstance(d, list) else [d]
json.dump(rows, open(sys.argv[1], "w"), indent=1)
PY
"$CHARTS_BIN" --input "$out/results.json" --out-dir "$out/charts" >/dev/null
secs=$(($(date +%s) - started))
echo "compare: results in $out/results.json, charts in $out/charts ($secs s, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
python3 "$BENCH_DIR/compare-report.py" "$out/results.json" >"$out/summary.md"
cat "$out/summary.md"
if ((quick)); then
  python3 "$BENCH_DIR/compare-report.py" "$out/results.json" --check "$N" --charts "$out/charts"
fi

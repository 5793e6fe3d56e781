# Shared by the benchmark scripts: a throw-away cluster of real processes
# (nats-server, auth, N edges) on free loopback ports, in its own run
# directory, stopped on exit. Sourced, not run.
#
# A run directory holds pids/NAME, logs/NAME.log, keys/, nats/ (the
# JetStream store) and cluster.env (ports and settings), so that
# tools/bench/fault.sh, started while a benchmark runs, can kill and
# restart any component with the same settings.
#
# QRLOGIN_BENCH_NATS_NODES=3 runs NATS as a three-member JetStream cluster
# (components nats-1..3, routes on loopback, a store each) with the
# session and limits buckets at three replicas, as production runs it;
# the default, 1, is one server with R1 buckets.
#
# Edges get limits fit for load from one host: every client comes from
# 127.0.0.x, so the per-IP create rate (30/min by default) is raised and
# auth's cluster-wide create limit is off, auth's cap on concurrent calls is
# raised, and the connection cap is set just under the 20,000 open files
# per process.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
BIN_DIR="${QRLOGIN_BENCH_BIN_DIR:-$ROOT/target/release}"
AUTH_BIN="$BIN_DIR/qrlogin-auth"
EDGE_BIN="$BIN_DIR/qrlogin-edge"
LOADGEN_BIN="$BIN_DIR/qrlogin-loadgen"
NATS_BIN="$ROOT/.tools/bin/nats-server"

bench_log() { printf 'bench: %s\n' "$*" >&2; }
bench_die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# Builds the release binaries every benchmark runs, in one cargo invocation
# (as tools/test.sh does: one feature unification, nothing built twice),
# unless QRLOGIN_BENCH_NO_BUILD=1.
bench_build() {
  [[ -x "$NATS_BIN" ]] || bench_die "$NATS_BIN is missing: run tools/bootstrap.sh"
  if [[ "${QRLOGIN_BENCH_NO_BUILD:-0}" != 1 ]]; then
    "$ROOT/tools/build-release.sh" -q ||
      bench_die "build failed"
  fi
  local b
  for b in "$AUTH_BIN" "$EDGE_BIN" "$LOADGEN_BIN"; do
    [[ -x "$b" ]] || bench_die "$b is missing"
  done
}

# A TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Creates the run directory and picks ports: bench_init NAME EDGE_COUNT.
bench_init() {
  local name="$1" edges="$2" i
  RUN="${QRLOGIN_BENCH_RUN_DIR:-$ROOT/artifacts/bench}/$name"
  rm -rf "$RUN"
  mkdir -p "$RUN/pids" "$RUN/logs" "$RUN/keys" "$RUN/nats"
  {
    local nodes="${QRLOGIN_BENCH_NATS_NODES:-1}"
    [[ "$nodes" == 1 || "$nodes" == 3 ]] || bench_die "QRLOGIN_BENCH_NATS_NODES: 1 or 3"
    echo "NATS_NODES=$nodes"
    echo "NATS_PORT=$(free_port)"
    for ((i = 1; i <= nodes; i++)); do
      echo "NATS${i}_PORT=$(free_port)"
      echo "NATS${i}_ROUTE_PORT=$(free_port)"
      echo "NATS${i}_MONITOR_PORT=$(free_port)"
    done
    printf 'export QRLOGIN_KV_REPLICAS=%q\n' "${QRLOGIN_KV_REPLICAS:-$nodes}"
    echo "AUTH_PORT=$(free_port)"
    echo "EDGE_COUNT=$edges"
    for ((i = 1; i <= edges; i++)); do
      echo "EDGE${i}_PORT=$(free_port)"
      echo "EDGE${i}_OPS_PORT=$(free_port)"
    done
    # Settings the services get; the caller's QRLOGIN_* variables win.
    printf 'export QRLOGIN_CREATE_RATE_PER_IP=%q\n' "${QRLOGIN_CREATE_RATE_PER_IP:-100000000}"
    printf 'export QRLOGIN_CREATE_LIMIT=%q\n' "${QRLOGIN_CREATE_LIMIT:-0}"
    # One load generator plays every phone as one user: the per-user scan
    # and confirm limits (a protection, not a cost being measured) are off.
    printf 'export QRLOGIN_SCAN_LIMIT=%q\n' "${QRLOGIN_SCAN_LIMIT:-0}"
    printf 'export QRLOGIN_CONFIRM_LIMIT=%q\n' "${QRLOGIN_CONFIRM_LIMIT:-0}"
    printf 'export QRLOGIN_MAX_CONCURRENT_REQUESTS=%q\n' "${QRLOGIN_MAX_CONCURRENT_REQUESTS:-8192}"
    printf 'export QRLOGIN_MAX_CONNECTIONS=%q\n' "${QRLOGIN_MAX_CONNECTIONS:-19500}"
    # The load generator's few source addresses (127.0.0.2, ...) play every
    # browser: the per-client caps would refuse all but a few hundred.
    printf 'export QRLOGIN_MAX_REQUESTS_PER_CLIENT=%q\n' "${QRLOGIN_MAX_REQUESTS_PER_CLIENT:-1000000}"
    printf 'export QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT=%q\n' "${QRLOGIN_GRPC_MAX_CONNECTIONS_PER_CLIENT:-100000}"
    printf 'export QRLOGIN_MAX_WATCHERS_PER_SESSION=%q\n' "${QRLOGIN_MAX_WATCHERS_PER_SESSION:-8}"
    printf 'export QRLOGIN_TRUSTED_PROXIES=%q\n' "${QRLOGIN_TRUSTED_PROXIES:-127.0.0.1/32}"
    printf 'export RUST_LOG=%q\n' "${QRLOGIN_BENCH_LOG:-warn}"
  } >"$RUN/cluster.env"
  bench_load "$RUN"
  trap bench_stop_all EXIT
  trap 'exit 130' INT TERM
}

# Reads a run directory's settings (for fault.sh).
bench_load() {
  RUN="$1"
  # shellcheck disable=SC1091
  source "$RUN/cluster.env"
  if [[ "${NATS_NODES:-1}" == 1 ]]; then
    NATS_URL="nats://127.0.0.1:$NATS_PORT"
  else
    local i urls=()
    for ((i = 1; i <= NATS_NODES; i++)); do
      urls+=("nats://127.0.0.1:$(nats_port "nats-$i")")
    done
    NATS_URL="$(IFS=,; echo "${urls[*]}")"
  fi
  AUTH_URL="http://127.0.0.1:$AUTH_PORT"
}

nats_port() { local v="NATS${1#nats-}_PORT"; echo "${!v}"; }
edge_port() { local v="EDGE${1#edge-}_PORT"; echo "${!v}"; }
# The edge's operations port (/readyz, /healthz, /metrics).
edge_ops_port() { local v="EDGE${1#edge-}_OPS_PORT"; echo "${!v}"; }
edge_url() { echo "http://127.0.0.1:$(edge_port "$1")"; }
# Comma-separated URLs of edges FROM..TO.
edge_urls() {
  local i out=()
  for ((i = $1; i <= $2; i++)); do out+=("$(edge_url "edge-$i")"); done
  (IFS=,; echo "${out[*]}")
}
# The pid of a component, empty (and success) when it is not running: under
# `set -e` a failing `pid="$(pid_of x)"` would end the caller (an exit trap
# that stops what is already stopped would turn a passed run into status 1).
pid_of() { cat "$RUN/pids/$1" 2>/dev/null || true; }

spawn() {
  local name="$1"
  shift
  printf '\n==== %s start %s ====\n' "$name" "$(date -u +%FT%TZ)" >>"$RUN/logs/$name.log"
  setsid "$@" >>"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name"
  disown $!
}

# Waits (at most $2 seconds, default 20) until 127.0.0.1:$1 accepts.
wait_port() {
  local port="$1" limit="${2:-20}" i
  for ((i = 0; i < limit * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# HTTP status of GET http://127.0.0.1:$1$2 (000 when nothing answers).
http_status() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null || echo 000
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", sys.argv[2])
print(c.getresponse().status)
PY
}

# Waits until edge NAME says ready (NATS connected, auth answers).
wait_edge_ready() {
  local port i
  port="$(edge_ops_port "$1")"
  for ((i = 0; i < 300; i++)); do
    [[ "$(http_status "$port" /readyz)" == 200 ]] && return 0
    sleep 0.1
  done
  bench_die "$1 is not ready after 30 s (see $RUN/logs/$1.log)"
}

# The run's development keys: token keys and the NATS nkey users (kept if there).
bench_keys() {
  "$AUTH_BIN" dev-keygen --out "$RUN/keys" --keep-existing >/dev/null 2>&1 ||
    bench_die "qrlogin-auth dev-keygen failed"
}

# NATS secured as everywhere else: accounts, nkey users auth and edge. One
# server (`nats`), or with NATS_NODES=3 the members nats-1..3; either way
# this returns once JetStream can take the buckets (on a cluster: a meta
# leader is elected).
start_nats() {
  bench_keys
  if [[ "${NATS_NODES:-1}" == 1 ]]; then
    "$AUTH_BIN" dev-nats-config --keys "$RUN/keys" --listen "127.0.0.1:$NATS_PORT" \
      --server-name qrlogin-bench --store-dir "$RUN/nats" >"$RUN/nats.conf" ||
      bench_die "qrlogin-auth dev-nats-config failed"
    spawn nats "$NATS_BIN" --config "$RUN/nats.conf"
    wait_port "$NATS_PORT" || bench_die "nats did not start (see $RUN/logs/nats.log)"
    return
  fi
  local i
  for ((i = 1; i <= NATS_NODES; i++)); do start_nats_member "nats-$i"; done
  for ((i = 1; i <= NATS_NODES; i++)); do wait_nats_member "nats-$i"; done
}

# One member of the benchmark's NATS cluster: its own ports and store, a
# route to every member (itself included: nats-server skips it).
start_nats_member() {
  local name="$1" i routes=() v
  for ((i = 1; i <= NATS_NODES; i++)); do
    v="NATS${i}_ROUTE_PORT"
    routes+=(--route "nats-route://127.0.0.1:${!v}")
  done
  v="NATS${name#nats-}_ROUTE_PORT"
  local route_port="${!v}"
  v="NATS${name#nats-}_MONITOR_PORT"
  mkdir -p "$RUN/$name"
  "$AUTH_BIN" dev-nats-config --keys "$RUN/keys" --listen "127.0.0.1:$(nats_port "$name")" \
    --http-port "${!v}" --server-name "$name" --store-dir "$RUN/$name" \
    --cluster-name qrlogin-bench --cluster-listen "127.0.0.1:$route_port" "${routes[@]}" \
    --lame-duck-duration 30s --lame-duck-grace-period 1s >"$RUN/$name.conf" ||
    bench_die "qrlogin-auth dev-nats-config failed"
  spawn "$name" "$NATS_BIN" --config "$RUN/$name.conf"
}

# Waits until member NAME is healthy: in the cluster, JetStream current.
wait_nats_member() {
  local v="NATS${1#nats-}_MONITOR_PORT" i
  for ((i = 0; i < 600; i++)); do
    [[ "$(http_status "${!v}" /healthz)" == 200 ]] && return 0
    sleep 0.05
  done
  bench_die "$1 is not healthy after 30 s (see $RUN/logs/$1.log)"
}

start_auth() {
  bench_keys
  spawn auth env \
    QRLOGIN_AUTH_LISTEN="127.0.0.1:$AUTH_PORT" \
    QRLOGIN_NATS_URL="$NATS_URL" \
    QRLOGIN_NATS_NKEY_SEED_FILE="$RUN/keys/nats-auth.seed" \
    QRLOGIN_RECORD_KEY_FILE="$RUN/keys/record.key" \
    QRLOGIN_SERVICE_TOKENS_FILE="$RUN/keys/service-tokens" \
    QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE="$RUN/keys/user-token.pub.pem" \
    QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE="$RUN/keys/access-token.pem" \
    "$AUTH_BIN" serve
  wait_port "$AUTH_PORT" 30 || bench_die "auth did not start (see $RUN/logs/auth.log)"
}

start_edge() {
  # start_edge NAME [GRPC_PORT] [AUTH_URL]: the gRPC watch port is off
  # unless given (or QRLOGIN_EDGE_GRPC_LISTEN says otherwise); auth is
  # reached at AUTH_URL (default: the run's auth).
  local name="$1" grpc_port="${2:-}" auth_url="${3:-$AUTH_URL}" grpc_listen
  grpc_listen="${QRLOGIN_EDGE_GRPC_LISTEN:-off}"
  [[ -n "$grpc_port" ]] && grpc_listen="127.0.0.1:$grpc_port"
  spawn "$name" env \
    QRLOGIN_EDGE_LISTEN="127.0.0.1:$(edge_port "$name")" \
    QRLOGIN_EDGE_GRPC_LISTEN="$grpc_listen" \
    QRLOGIN_OPS_LISTEN="127.0.0.1:$(edge_ops_port "$name")" \
    QRLOGIN_NODE_NAME="$name" \
    QRLOGIN_AUTH_URL="$auth_url" \
    QRLOGIN_NATS_URL="$NATS_URL" \
    QRLOGIN_NATS_NKEY_SEED_FILE="$RUN/keys/nats-edge.seed" \
    QRLOGIN_AUTH_SERVICE_TOKEN_FILE="$RUN/keys/service-token" \
    "$EDGE_BIN"
  wait_port "$(edge_port "$name")" 30 || bench_die "$name did not start (see $RUN/logs/$name.log)"
  if [[ -n "$grpc_port" ]]; then
    wait_port "$grpc_port" 30 || bench_die "$name's gRPC port is not open"
  fi
  wait_edge_ready "$name"
}

# Starts nats, auth and every edge.
start_cluster() {
  local i
  start_nats
  start_auth
  for ((i = 1; i <= EDGE_COUNT; i++)); do start_edge "edge-$i"; done
  bench_log "cluster up in $RUN: nats $NATS_URL (KV replicas $QRLOGIN_KV_REPLICAS), auth :$AUTH_PORT, $EDGE_COUNT edges ($(edge_urls 1 "$EDGE_COUNT"))"
}

# A phone user's JWT signed with the run's development key.
user_token() {
  "$AUTH_BIN" dev-token --key "$RUN/keys/user-token.pem" --sub bench-user --name "Bench User" --ttl 2h
}

# Stops one component: SIGTERM, then SIGKILL after $2 seconds (default 10).
stop_component() {
  local name="$1" limit="${2:-10}" pid i
  pid="$(pid_of "$name")"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || { rm -f "$RUN/pids/$name"; return 0; }
  for ((i = 0; i < limit * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/pids/$name"
}

# --measure arguments for the loadgen: every component's pid.
measure_args() {
  local f
  for f in "$RUN"/pids/*; do
    [[ -f "$f" ]] && printf -- '--measure %s=%s ' "$(basename "$f")" "$(cat "$f")"
  done
}

bench_stop_all() {
  local f
  [[ -n "${RUN:-}" && -d "$RUN/pids" ]] || return 0
  for f in "$RUN"/pids/edge-*; do [[ -f "$f" ]] && stop_component "$(basename "$f")" 5; done
  stop_component auth 5
  stop_component nats 5
  for f in "$RUN"/pids/nats-*; do [[ -f "$f" ]] && stop_component "$(basename "$f")" 5; done
  return 0
}

machine_line() {
  printf 'machine: %s cores, %s GiB RAM, %s, kernel %s\n' "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" \
    "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(uname -r)"
}

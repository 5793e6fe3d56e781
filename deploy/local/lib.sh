# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file
# Shared definitions of the local cluster: ports, paths, and how to start,
# stop and wait for each component. Sourced by up.sh, down.sh, ctl.sh and
# e2e.sh so that all of them agree on what "edge-1" or "nats" means. The
# NATS members (one server, or the three of up.sh --nats-cluster) are
# defined in lib-nats.sh.
#
# Every port can be changed through the environment (see below). Any other
# QRLOGIN_* variable in the environment (QRLOGIN_PENDING_TTL,
# QRLOGIN_LONG_POLL_MAX, QRLOGIN_LOG_FORMAT, ...) reaches the services as it
# is, which is how tests shorten deadlines.

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
# Where a cluster keeps its state (pids, logs, keys, stores, cluster.env):
# deploy/local/run, or QRLOGIN_LOCAL_RUN_DIR for a cluster of its own beside
# a demo one (tools/bench/chaos.sh); every script acting on that cluster
# needs the same value.
RUN_DIR="${QRLOGIN_LOCAL_RUN_DIR:-$LOCAL_DIR/run}"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
KEY_DIR="$RUN_DIR/keys"
CLUSTER_ENV="$RUN_DIR/cluster.env"

# A running cluster records the settings it was started with; scripts that
# act on it (ctl.sh, e2e.sh, down.sh) read them back so they find the same
# ports even when the caller's environment differs.
if [[ -z "${QRLOGIN_LOCAL_IGNORE_RUNNING:-}" && -f "$CLUSTER_ENV" ]]; then
  # shellcheck disable=SC1090
  source "$CLUSTER_ENV"
fi

: "${QRLOGIN_LOCAL_BIND:=127.0.0.1}"
: "${QRLOGIN_LOCAL_HTTP_PORT:=8080}"
: "${QRLOGIN_LOCAL_STATS_PORT:=8404}"
: "${QRLOGIN_LOCAL_EDGE1_PORT:=8081}"
: "${QRLOGIN_LOCAL_EDGE2_PORT:=8082}"
# gRPC watch ports (qrlogin.watch.v1.LoginWatch): each edge's own, and
# HAProxy's TCP frontend over both.
: "${QRLOGIN_LOCAL_GRPC_PORT:=50060}"
: "${QRLOGIN_LOCAL_EDGE1_GRPC_PORT:=50061}"
: "${QRLOGIN_LOCAL_EDGE2_GRPC_PORT:=50062}"
# Operations ports of the edges (/readyz, /healthz, /metrics), on 127.0.0.1.
: "${QRLOGIN_LOCAL_EDGE1_OPS_PORT:=9081}"
: "${QRLOGIN_LOCAL_EDGE2_OPS_PORT:=9082}"
: "${QRLOGIN_LOCAL_AUTH_PORT:=50051}"
# NATS: the client and monitoring ports of the server, or of nats-1 (then
# +1 and +2 for nats-2 and nats-3), and the first route port of a cluster.
: "${QRLOGIN_LOCAL_NATS_PORT:=4222}"
: "${QRLOGIN_LOCAL_NATS_MONITOR_PORT:=8222}"
: "${QRLOGIN_LOCAL_NATS_ROUTE_PORT:=6222}"
# 1: one nats-server (component nats) and one auth. 3 (up.sh
# --nats-cluster): a JetStream cluster nats-1..3 and two auth replicas
# auth-1, auth-2 behind HAProxy, the session bucket at three replicas.
: "${QRLOGIN_LOCAL_NATS_NODES:=1}"
: "${QRLOGIN_LOCAL_PUBLIC_URL:=http://127.0.0.1:${QRLOGIN_LOCAL_HTTP_PORT}}"
: "${QRLOGIN_LOCAL_BIN_DIR:=$ROOT/target/release}"
# true: NATS over TLS (tls://) and edge -> auth gRPC over TLS, with a CA and
# a server certificate for 127.0.0.1 made here (run/tls/); up.sh --tls.
: "${QRLOGIN_LOCAL_TLS:=false}"

TOOLS_BIN="$ROOT/.tools/bin"
AUTH_BIN="$QRLOGIN_LOCAL_BIN_DIR/qrlogin-auth"
EDGE_BIN="$QRLOGIN_LOCAL_BIN_DIR/qrlogin-edge"
NATS_BIN="$TOOLS_BIN/nats-server"
HAPROXY_BIN="$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)"

HTTP_URL="$QRLOGIN_LOCAL_PUBLIC_URL"
EDGE1_URL="http://127.0.0.1:${QRLOGIN_LOCAL_EDGE1_PORT}"
EDGE2_URL="http://127.0.0.1:${QRLOGIN_LOCAL_EDGE2_PORT}"
GRPC_ADDR="127.0.0.1:${QRLOGIN_LOCAL_GRPC_PORT}"
EDGE1_GRPC_ADDR="127.0.0.1:${QRLOGIN_LOCAL_EDGE1_GRPC_PORT}"
EDGE2_GRPC_ADDR="127.0.0.1:${QRLOGIN_LOCAL_EDGE2_GRPC_PORT}"
EDGE1_OPS_URL="http://127.0.0.1:${QRLOGIN_LOCAL_EDGE1_OPS_PORT}"
EDGE2_OPS_URL="http://127.0.0.1:${QRLOGIN_LOCAL_EDGE2_OPS_PORT}"
# Where auth's gRPC is reached (edges, grpcurl): auth itself, or with
# --nats-cluster HAProxy's TCP frontend over auth-1 and auth-2.
AUTH_ADDR="127.0.0.1:${QRLOGIN_LOCAL_AUTH_PORT}"
TLS_DIR="$RUN_DIR/tls"
if [[ "$QRLOGIN_LOCAL_TLS" == true ]]; then
  NATS_SCHEME=tls
  AUTH_URL="https://$AUTH_ADDR"
  # How grpcurl reaches auth: verifying its certificate against the local CA.
  GRPCURL_AUTH_TLS=(-cacert "$TLS_DIR/ca.pem")
  # TLS settings of NATS's server, of every NATS client (auth, edges), of
  # auth's gRPC server and of the edges' auth client.
  NATS_TLS_ARGS=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
  NATS_CLIENT_TLS_ENV=("QRLOGIN_NATS_TLS_CA_FILE=$TLS_DIR/ca.pem")
  AUTH_TLS_ENV=("QRLOGIN_AUTH_TLS_CERT_FILE=$TLS_DIR/server.pem" "QRLOGIN_AUTH_TLS_KEY_FILE=$TLS_DIR/server.key")
  EDGE_TLS_ENV=("QRLOGIN_AUTH_TLS_CA_FILE=$TLS_DIR/ca.pem")
else
  NATS_SCHEME=nats
  AUTH_URL="http://$AUTH_ADDR"
  GRPCURL_AUTH_TLS=(-plaintext)
  NATS_TLS_ARGS=() NATS_CLIENT_TLS_ENV=() AUTH_TLS_ENV=() EDGE_TLS_ENV=()
fi
STATS_URL="http://127.0.0.1:${QRLOGIN_LOCAL_STATS_PORT}/"

# auth's operations port (/metrics, /healthz, /readyz), on 127.0.0.1.
: "${QRLOGIN_LOCAL_AUTH_OPS_PORT:=9083}"

log() { printf 'local: %s\n' "$*" >&2; }
die() { printf 'local: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=deploy/local/lib-nats.sh
source "$LOCAL_DIR/lib-nats.sh"

# auth: one process, or two replicas behind HAProxy (--nats-cluster).
if ((NATS_CLUSTERED)); then
  AUTH_MEMBERS=(auth-1 auth-2)
else
  AUTH_MEMBERS=(auth)
fi

# Start order. One server: NATS, auth, the edges, then HAProxy in front of
# them. A cluster: HAProxy before the edges, which reach auth through it.
if ((NATS_CLUSTERED)); then
  COMPONENTS=("${NATS_MEMBERS[@]}" "${AUTH_MEMBERS[@]}" haproxy edge-1 edge-2)
else
  COMPONENTS=(nats auth edge-1 edge-2 haproxy)
fi

# Names that stand for several components: with --nats-cluster, "nats" is
# nats-1..3 and "auth" is auth-1 and auth-2. Prints the components NAME
# means, one a line; dies on a name it does not know.
members_of() {
  local c
  case "$1" in
    nats) printf '%s\n' "${NATS_MEMBERS[@]}"; return ;;
    auth) printf '%s\n' "${AUTH_MEMBERS[@]}"; return ;;
  esac
  for c in "${COMPONENTS[@]}"; do
    [[ "$c" == "$1" ]] && { echo "$1"; return; }
  done
  local groups=""
  ((NATS_CLUSTERED)) && groups=" (nats and auth name each group)"
  die "unknown component '$1' (one of: ${COMPONENTS[*]})$groups"
}

save_cluster_env() {
  mkdir -p "$RUN_DIR"
  {
    echo "# Written by deploy/local/up.sh: the settings of the running cluster."
    local v
    for v in QRLOGIN_LOCAL_BIND QRLOGIN_LOCAL_HTTP_PORT QRLOGIN_LOCAL_STATS_PORT \
      QRLOGIN_LOCAL_EDGE1_PORT QRLOGIN_LOCAL_EDGE2_PORT QRLOGIN_LOCAL_EDGE1_OPS_PORT \
      QRLOGIN_LOCAL_EDGE2_OPS_PORT QRLOGIN_LOCAL_AUTH_PORT \
      QRLOGIN_LOCAL_GRPC_PORT QRLOGIN_LOCAL_EDGE1_GRPC_PORT QRLOGIN_LOCAL_EDGE2_GRPC_PORT \
      QRLOGIN_LOCAL_NATS_PORT QRLOGIN_LOCAL_NATS_MONITOR_PORT QRLOGIN_LOCAL_PUBLIC_URL \
      QRLOGIN_LOCAL_NATS_ROUTE_PORT QRLOGIN_LOCAL_NATS_NODES \
      QRLOGIN_LOCAL_AUTH_OPS_PORT QRLOGIN_LOCAL_TLS \
      QRLOGIN_LOCAL_BIN_DIR; do
      printf '%s=%q\n' "$v" "${!v}"
    done
    # Service overrides given to up.sh, so that a restarted component gets them too.
    while IFS='=' read -r name _; do
      [[ "$name" == QRLOGIN_LOCAL_* ]] && continue
      printf 'export %s=%q\n' "$name" "${!name}"
    done < <(env | grep -E '^QRLOGIN_[A-Z0-9_]+=' || true)
  } >"$CLUSTER_ENV"
}

# --- processes ----------------------------------------------------------------

pid_file() { echo "$PID_DIR/$1.pid"; }

# Prints the pid of a running component, or nothing.
component_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

is_running() { [[ -n "$(component_pid "$1")" ]]; }

# True when the component is stopped by SIGSTOP (ctl.sh freeze). A frozen
# process still runs as far as is_running is concerned.
is_frozen() {
  local pid state
  pid="$(component_pid "$1")"
  [[ -n "$pid" ]] || return 1
  state="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)"
  [[ "$state" == T ]]
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when PORT can be bound on the configured address (nothing else holds it).
port_free() {
  python3 - "$QRLOGIN_LOCAL_BIND" "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.close()
PY
}

# A component's ports, one "PORT VARIABLE" a line: the variable is the one
# that moves the port (nats-2's client port is QRLOGIN_LOCAL_NATS_PORT + 1).
component_ports() {
  local i
  case "$1" in
    nats | nats-[0-9]*)
      i="$(nats_index "$1")"
      echo "$(nats_port "$1") QRLOGIN_LOCAL_NATS_PORT"
      echo "$(nats_monitor_port "$1") QRLOGIN_LOCAL_NATS_MONITOR_PORT"
      ((NATS_CLUSTERED)) && echo "$((QRLOGIN_LOCAL_NATS_ROUTE_PORT + i - 1)) QRLOGIN_LOCAL_NATS_ROUTE_PORT"
      ;;
    auth | auth-[12])
      echo "$(auth_port "$1") QRLOGIN_LOCAL_AUTH_PORT"
      echo "$(auth_ops_port "$1") QRLOGIN_LOCAL_AUTH_OPS_PORT"
      ;;
    edge-1) printf '%s %s\n' "$QRLOGIN_LOCAL_EDGE1_PORT" QRLOGIN_LOCAL_EDGE1_PORT \
      "$QRLOGIN_LOCAL_EDGE1_OPS_PORT" QRLOGIN_LOCAL_EDGE1_OPS_PORT \
      "$QRLOGIN_LOCAL_EDGE1_GRPC_PORT" QRLOGIN_LOCAL_EDGE1_GRPC_PORT ;;
    edge-2) printf '%s %s\n' "$QRLOGIN_LOCAL_EDGE2_PORT" QRLOGIN_LOCAL_EDGE2_PORT \
      "$QRLOGIN_LOCAL_EDGE2_OPS_PORT" QRLOGIN_LOCAL_EDGE2_OPS_PORT \
      "$QRLOGIN_LOCAL_EDGE2_GRPC_PORT" QRLOGIN_LOCAL_EDGE2_GRPC_PORT ;;
    haproxy)
      printf '%s %s\n' "$QRLOGIN_LOCAL_HTTP_PORT" QRLOGIN_LOCAL_HTTP_PORT \
        "$QRLOGIN_LOCAL_STATS_PORT" QRLOGIN_LOCAL_STATS_PORT \
        "$QRLOGIN_LOCAL_GRPC_PORT" QRLOGIN_LOCAL_GRPC_PORT
      ((NATS_CLUSTERED)) && echo "$QRLOGIN_LOCAL_AUTH_PORT QRLOGIN_LOCAL_AUTH_PORT"
      ;;
    *) members_of "$1" >/dev/null ;;
  esac
}

# auth's gRPC and operations ports: auth's own, or with --nats-cluster
# auth-N on QRLOGIN_LOCAL_AUTH_PORT + N (HAProxy holds the port itself) and
# QRLOGIN_LOCAL_AUTH_OPS_PORT + N - 1.
auth_port() {
  case "$1" in
    auth-*) echo $((QRLOGIN_LOCAL_AUTH_PORT + ${1#auth-})) ;;
    *) echo "$QRLOGIN_LOCAL_AUTH_PORT" ;;
  esac
}
auth_ops_port() {
  case "$1" in
    auth-*) echo $((QRLOGIN_LOCAL_AUTH_OPS_PORT + ${1#auth-} - 1)) ;;
    *) echo "$QRLOGIN_LOCAL_AUTH_OPS_PORT" ;;
  esac
}

# Fails with a message naming each taken port and the variable that moves it.
check_ports_free() {
  local c port var taken=()
  for c in "$@"; do
    while read -r port var; do
      if ! port_free "$port"; then
        log "port $port ($c) is already in use on $QRLOGIN_LOCAL_BIND; choose another with $var=<port>"
        taken+=("$var")
      fi
    done < <(component_ports "$c")
  done
  if ((${#taken[@]})); then
    die "cannot start: ${#taken[@]} port(s) taken (see above); stop what holds them or set ${taken[*]}"
  fi
}

# Runs a command in its own session (so a Ctrl-C in the terminal reaches only
# up.sh, which then stops everything in order), logs to run/logs/NAME.log and
# records its pid.
spawn() {
  local name="$1"
  shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  printf '\n==== %s start %s ====\n' "$name" "$(date -u +%FT%TZ)" >>"$LOG_DIR/$name.log"
  # NO_COLOR: plain log files, without terminal colour codes.
  NO_COLOR=1 setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$name")"
  # Not a job of this shell: its end is watched through the pid file, and
  # bash should not report "Killed" when ctl.sh kills it on purpose.
  disown $!
}

# Development keys (dev-keygen): token signing keys and the NATS nkey users
# auth and edge. Items already there are kept.
make_keys() {
  mkdir -p "$KEY_DIR"
  "$AUTH_BIN" dev-keygen --out "$KEY_DIR" --keep-existing >/dev/null 2>&1 ||
    die "qrlogin-auth dev-keygen could not write $KEY_DIR"
}

# With QRLOGIN_LOCAL_TLS=true: a CA and one server certificate (P-256,
# for IP 127.0.0.1 and localhost) that NATS and auth present, in run/tls/.
# The certificate is for clients too (extended key usage clientAuth): NATS
# cluster members present it to each other on their routes. Items already
# there are kept (a certificate without clientAuth is made again).
# Development only: the prod overlay takes certificates from Secrets
# (docs/security.md).
make_certs() {
  [[ "$QRLOGIN_LOCAL_TLS" == true ]] || return 0
  if [[ -s "$TLS_DIR/ca.pem" && -s "$TLS_DIR/server.pem" && -s "$TLS_DIR/server.key" ]] &&
    openssl x509 -in "$TLS_DIR/server.pem" -noout -ext extendedKeyUsage 2>/dev/null |
    grep -q 'Client Authentication'; then
    return 0
  fi
  command -v openssl >/dev/null || die "openssl is needed for QRLOGIN_LOCAL_TLS=true"
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR" || exit 1
    { [[ -s ca.pem && -s ca.key ]] ||
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=qrlogin local CA" -keyout ca.key -out ca.pem \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"; } &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" >server.ext &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile server.ext -out server.pem
  ) >"$LOG_DIR/tls.log" 2>&1 || die "could not make the local certificates (see $LOG_DIR/tls.log)"
  chmod 600 "$TLS_DIR"/*.key
}

# auth (one process, or auth-1 / auth-2 with --nats-cluster): the session
# bucket at three replicas on a cluster (QRLOGIN_KV_REPLICAS unless given).
start_auth() {
  local name="$1" replicas=()
  make_certs
  ((NATS_CLUSTERED)) && replicas=("QRLOGIN_KV_REPLICAS=${QRLOGIN_KV_REPLICAS:-3}")
  spawn "$name" env "${NATS_CLIENT_TLS_ENV[@]}" "${AUTH_TLS_ENV[@]}" "${replicas[@]}" \
    QRLOGIN_AUTH_LISTEN="127.0.0.1:$(auth_port "$name")" \
    QRLOGIN_AUTH_OPS_LISTEN="127.0.0.1:$(auth_ops_port "$name")" \
    QRLOGIN_NATS_URL="$AUTH_NATS_URL" \
    QRLOGIN_NATS_NKEY_SEED_FILE="$KEY_DIR/nats-auth.seed" \
    QRLOGIN_RECORD_KEY_FILE="$KEY_DIR/record.key" \
    QRLOGIN_SERVICE_TOKENS_FILE="$KEY_DIR/service-tokens" \
    QRLOGIN_GRPC_REFLECTION="${QRLOGIN_GRPC_REFLECTION:-true}" \
    QRLOGIN_CREATE_LIMIT="${QRLOGIN_CREATE_LIMIT:-6000}" \
    QRLOGIN_PUBLIC_BASE_URL="$QRLOGIN_LOCAL_PUBLIC_URL" \
    QRLOGIN_USER_TOKEN_PUBLIC_KEY_FILE="$KEY_DIR/user-token.pub.pem" \
    QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE="$KEY_DIR/access-token.pem" \
    "$AUTH_BIN" serve
}

# Every client of the local cluster comes from 127.0.0.1, so the per-IP create
# limit (30 a minute by default, meant for the public) is raised to 600 unless
# QRLOGIN_CREATE_RATE_PER_IP says otherwise, and auth's cluster-wide one
# (QRLOGIN_CREATE_LIMIT, 60 a minute per network) to 6000. Reflection is on
# (QRLOGIN_GRPC_REFLECTION) so that grpcurl needs no .proto files.
#
# Origins a browser may open the WebSocket from: the public URL and its
# localhost / 127.0.0.1 twin, so both spellings work in a local browser.
allowed_origins() {
  local port="$QRLOGIN_LOCAL_HTTP_PORT"
  local list="$QRLOGIN_LOCAL_PUBLIC_URL,http://127.0.0.1:$port,http://localhost:$port"
  echo "${QRLOGIN_ALLOWED_ORIGINS:-$list}"
}

start_edge() {
  local name="$1" port ops_port grpc_port
  case "$name" in
    edge-1) port="$QRLOGIN_LOCAL_EDGE1_PORT" ops_port="$QRLOGIN_LOCAL_EDGE1_OPS_PORT" grpc_port="$QRLOGIN_LOCAL_EDGE1_GRPC_PORT" ;;
    edge-2) port="$QRLOGIN_LOCAL_EDGE2_PORT" ops_port="$QRLOGIN_LOCAL_EDGE2_OPS_PORT" grpc_port="$QRLOGIN_LOCAL_EDGE2_GRPC_PORT" ;;
    *) die "unknown edge '$name'" ;;
  esac
  # The operations port stays on loopback even when QRLOGIN_LOCAL_BIND opens
  # the public one to the network (for a phone on the same Wi-Fi).
  spawn "$name" env "${NATS_CLIENT_TLS_ENV[@]}" "${EDGE_TLS_ENV[@]}" \
    QRLOGIN_EDGE_LISTEN="$QRLOGIN_LOCAL_BIND:$port" \
    QRLOGIN_EDGE_GRPC_LISTEN="$QRLOGIN_LOCAL_BIND:$grpc_port" \
    QRLOGIN_GRPC_REFLECTION="${QRLOGIN_GRPC_REFLECTION:-true}" \
    QRLOGIN_OPS_LISTEN="127.0.0.1:$ops_port" \
    QRLOGIN_NODE_NAME="$name" \
    QRLOGIN_AUTH_URL="$AUTH_URL" \
    QRLOGIN_NATS_URL="$(nats_urls_from "${name#edge-}")" \
    QRLOGIN_NATS_NKEY_SEED_FILE="$KEY_DIR/nats-edge.seed" \
    QRLOGIN_AUTH_SERVICE_TOKEN_FILE="$KEY_DIR/service-token" \
    QRLOGIN_WEB_DIR="$ROOT/web" \
    QRLOGIN_PUBLIC_BASE_URL="$QRLOGIN_LOCAL_PUBLIC_URL" \
    QRLOGIN_DEV_USER_TOKEN_KEY_FILE="$KEY_DIR/user-token.pem" \
    QRLOGIN_CREATE_RATE_PER_IP="${QRLOGIN_CREATE_RATE_PER_IP:-600}" \
    QRLOGIN_ALLOWED_ORIGINS="$(allowed_origins)" \
    QRLOGIN_TRUSTED_PROXIES="${QRLOGIN_TRUSTED_PROXIES:-127.0.0.1/32}" \
    "$EDGE_BIN"
}

# The template's lines between "#@AUTH_LB_BEGIN@" and "#@AUTH_LB_END@" (the
# frontend over auth-1 and auth-2) are kept only with --nats-cluster.
render_haproxy_cfg() {
  local auth_lb=(-e '/^#@AUTH_LB_BEGIN@/,/^#@AUTH_LB_END@/d')
  ((NATS_CLUSTERED)) && auth_lb=(-e '/^#@AUTH_LB_\(BEGIN\|END\)@/d')
  mkdir -p "$RUN_DIR"
  sed "${auth_lb[@]}" \
    -e "s|@BIND@|$QRLOGIN_LOCAL_BIND|g" \
    -e "s|@HTTP_PORT@|$QRLOGIN_LOCAL_HTTP_PORT|g" \
    -e "s|@STATS_PORT@|$QRLOGIN_LOCAL_STATS_PORT|g" \
    -e "s|@EDGE1_PORT@|$QRLOGIN_LOCAL_EDGE1_PORT|g" \
    -e "s|@EDGE2_PORT@|$QRLOGIN_LOCAL_EDGE2_PORT|g" \
    -e "s|@GRPC_PORT@|$QRLOGIN_LOCAL_GRPC_PORT|g" \
    -e "s|@EDGE1_GRPC_PORT@|$QRLOGIN_LOCAL_EDGE1_GRPC_PORT|g" \
    -e "s|@EDGE2_GRPC_PORT@|$QRLOGIN_LOCAL_EDGE2_GRPC_PORT|g" \
    -e "s|@EDGE1_OPS_PORT@|$QRLOGIN_LOCAL_EDGE1_OPS_PORT|g" \
    -e "s|@EDGE2_OPS_PORT@|$QRLOGIN_LOCAL_EDGE2_OPS_PORT|g" \
    -e "s|@AUTH_PORT@|$QRLOGIN_LOCAL_AUTH_PORT|g" \
    -e "s|@AUTH1_PORT@|$(auth_port auth-1)|g" \
    -e "s|@AUTH2_PORT@|$(auth_port auth-2)|g" \
    -e "s|@AUTH1_OPS_PORT@|$(auth_ops_port auth-1)|g" \
    -e "s|@AUTH2_OPS_PORT@|$(auth_ops_port auth-2)|g" \
    "$LOCAL_DIR/haproxy.cfg.in" >"$RUN_DIR/haproxy.cfg"
  "$HAPROXY_BIN" -c -q -f "$RUN_DIR/haproxy.cfg" || die "HAProxy rejected $RUN_DIR/haproxy.cfg"
}

start_haproxy() {
  render_haproxy_cfg
  # -db: stay in the foreground (no daemon), so the recorded pid is HAProxy's.
  spawn haproxy "$HAPROXY_BIN" -db -f "$RUN_DIR/haproxy.cfg"
}

start_component() {
  case "$1" in
    nats | nats-[0-9]*) start_nats "$1" ;;
    auth | auth-[12]) start_auth "$1" ;;
    edge-1 | edge-2) start_edge "$1" ;;
    haproxy) start_haproxy ;;
    *) members_of "$1" >/dev/null ;;
  esac
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

component_ready() {
  case "$1" in
    nats | nats-[0-9]*) nats_member_ready "$1" ;;
    auth) port_open "$QRLOGIN_LOCAL_AUTH_PORT" ;;
    # A replica serves once NATS and the session bucket are there.
    auth-[12]) port_open "$(auth_port "$1")" && http_ok "http://127.0.0.1:$(auth_ops_port "$1")/readyz" ;;
    edge-1) http_ok "$EDGE1_OPS_URL/readyz" && port_open "$QRLOGIN_LOCAL_EDGE1_GRPC_PORT" ;;
    edge-2) http_ok "$EDGE2_OPS_URL/readyz" && port_open "$QRLOGIN_LOCAL_EDGE2_GRPC_PORT" ;;
    # The demo page through HAProxy: an edge is in rotation.
    haproxy) http_ok "$HTTP_URL/" && haproxy_listening ;;
  esac
}

# HAProxy's ports accept connections (with --nats-cluster it starts before
# the edges, since they reach auth through it).
haproxy_listening() {
  port_open "$QRLOGIN_LOCAL_HTTP_PORT" && port_open "$QRLOGIN_LOCAL_STATS_PORT" &&
    port_open "$QRLOGIN_LOCAL_GRPC_PORT" && { ((!NATS_CLUSTERED)) || port_open "$QRLOGIN_LOCAL_AUTH_PORT"; }
}

# Waits until a component answers its readiness check (or CHECK NAME, when
# given); fails early when the process died, pointing at its log.
wait_ready() {
  local name="$1" timeout="${2:-30}" check="${3:-component_ready}" deadline
  deadline=$((SECONDS + timeout))
  until "$check" "$name"; do
    if ! is_running "$name"; then
      log "$name exited during start-up; last lines of $LOG_DIR/$name.log:"
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${timeout}s; see $LOG_DIR/$name.log"
      return 1
    fi
    sleep 0.2
  done
}

# Starts components (a name may stand for a group: members_of) and waits
# until each is ready. The members of a group start together: a NATS
# cluster member is healthy only once a majority of them runs.
start_and_wait() {
  local timeout="$1" c
  shift
  for c in "$@"; do
    is_running "$c" || start_component "$c"
  done
  for c in "$@"; do
    wait_ready "$c" "$timeout" || return 1
  done
  # An auth replica serves the edges, and an edge the browsers, once
  # HAProxy has it in rotation again (two good checks), so that a rolling
  # restart never leaves none.
  for c in "$@"; do
    is_running haproxy || continue
    case "$c" in
      auth-*) wait_in_rotation auth_replicas "$c" 15 || return 1 ;;
      edge-*)
        wait_in_rotation edges "$c" 15 || return 1
        wait_in_rotation edges_grpc "$c" 15 || return 1
        ;;
    esac
  done
}

# True when HAProxy's stats say BACKEND's SERVER is UP.
haproxy_server_up_in() {
  curl -fsS --max-time 2 "$STATS_URL;csv" 2>/dev/null |
    awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { print $18 }' | grep -q '^UP'
}

wait_in_rotation() {
  local deadline=$((SECONDS + $3))
  until haproxy_server_up_in "$1" "$2"; do
    ((SECONDS < deadline)) || { log "HAProxy did not take $2 back within $3s (see $STATS_URL)"; return 1; }
    sleep 0.2
  done
}

# Stops one component: SIGTERM (graceful: edges drain), then SIGKILL after
# the grace period. A frozen process (ctl.sh freeze) gets SIGCONT right
# after SIGTERM, so it handles the signal instead of holding it.
stop_component() {
  stop_together_within "${2:-20}" "$1"
}

# Kills one component at once (SIGKILL), as a crash would (a frozen process
# dies too).
kill_component() {
  local name="$1" pid
  pid="$(component_pid "$name")"
  if [[ -n "$pid" ]]; then
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  rm -f "$(pid_file "$name")"
}

# Stops several components together: SIGTERM (and SIGCONT, for a frozen
# one) to all, then SIGKILL to those still running after the grace period.
# Used for the two edges, which each take up to QRLOGIN_DRAIN_DEADLINE to
# drain, and for the members of a group.
stop_together() { stop_together_within 20 "$@"; }

stop_together_within() {
  local grace="$1" name pid deadline pids=()
  shift
  for name in "$@"; do
    pid="$(component_pid "$name")"
    if [[ -n "$pid" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$((SECONDS + grace))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        log "pid $pid did not stop within ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  done
  for name in "$@"; do rm -f "$(pid_file "$name")"; done
}

# HAProxy first (no new requests), then the edges (they drain together),
# auth, and NATS last.
stop_all() {
  # Prometheus (deploy/local/monitoring.sh), when it runs, goes first.
  stop_component prometheus 10
  stop_component haproxy
  stop_together edge-1 edge-2
  stop_together "${AUTH_MEMBERS[@]}"
  stop_together "${NATS_MEMBERS[@]}"
}

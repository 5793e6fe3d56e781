#!/usr/bin/env bash
# Starts a local qrlogin cluster of real processes: NATS (JetStream), one auth,
# two edges (edge-1, edge-2) and HAProxy (round-robin, no affinity) in front;
# or, with --nats-cluster, three NATS servers and two auth replicas.
#
#   deploy/local/up.sh              install tools, build, start, stay in the
#                                   foreground; Ctrl-C or SIGTERM stops all
#   deploy/local/up.sh --detach     same, but return once everything is ready
#                                   (stop with deploy/local/down.sh)
#   deploy/local/up.sh --no-build   skip tools/bootstrap.sh and cargo build
#   deploy/local/up.sh --tls        NATS over TLS and edge -> auth gRPC over
#                                   TLS, with a local CA and certificate made
#                                   in deploy/local/run/tls/ (same as
#                                   QRLOGIN_LOCAL_TLS=true)
#   deploy/local/up.sh --nats-cluster   a JetStream cluster of three
#                                   nats-server processes (nats-1, nats-2,
#                                   nats-3: routes between them, a store
#                                   each) with the session bucket at three
#                                   replicas, and two auth replicas (auth-1,
#                                   auth-2) behind HAProxy (same as
#                                   QRLOGIN_LOCAL_NATS_NODES=3); combines
#                                   with --tls (routes over mutual TLS too)
#   deploy/local/up.sh --with-monitoring   also Prometheus (Debian's package) scraping
#                                   auth and both edges, with the rules of
#                                   deploy/monitoring/ (deploy/local/monitoring.sh)
#
# Ports (defaults): QRLOGIN_LOCAL_HTTP_PORT (8080, HAProxy),
# QRLOGIN_LOCAL_STATS_PORT (8404), QRLOGIN_LOCAL_EDGE1_PORT (8081),
# QRLOGIN_LOCAL_EDGE2_PORT (8082), QRLOGIN_LOCAL_EDGE1_OPS_PORT (9081, edge-1's
# /readyz /healthz /metrics), QRLOGIN_LOCAL_EDGE2_OPS_PORT (9082),
# QRLOGIN_LOCAL_AUTH_PORT (50051),
# QRLOGIN_LOCAL_NATS_PORT (4222), QRLOGIN_LOCAL_NATS_MONITOR_PORT (8222),
# QRLOGIN_LOCAL_AUTH_OPS_PORT (9083, auth's /metrics /healthz /readyz),
# QRLOGIN_LOCAL_PROMETHEUS_PORT (9090, with --with-monitoring).
# With --nats-cluster: nats-N listens on QRLOGIN_LOCAL_NATS_PORT + N - 1
# (4222..4224), monitors on QRLOGIN_LOCAL_NATS_MONITOR_PORT + N - 1
# (8222..8224) and routes on QRLOGIN_LOCAL_NATS_ROUTE_PORT + N - 1
# (6222..6224); HAProxy holds QRLOGIN_LOCAL_AUTH_PORT and auth-N listens on
# QRLOGIN_LOCAL_AUTH_PORT + N (50052, 50053), its operations port on
# QRLOGIN_LOCAL_AUTH_OPS_PORT + N - 1 (9083, 9084).
# QRLOGIN_LOCAL_BIND (127.0.0.1) is where HAProxy and the edges listen; set
# QRLOGIN_LOCAL_BIND=0.0.0.0 and QRLOGIN_LOCAL_PUBLIC_URL=http://<lan-ip>:8080
# to scan the QR code with a real phone on the same network.
# Other QRLOGIN_* variables (e.g. QRLOGIN_PENDING_TTL=15s) reach the services.
set -euo pipefail

export QRLOGIN_LOCAL_IGNORE_RUNNING=1
for arg in "$@"; do
  case "$arg" in
    --tls) export QRLOGIN_LOCAL_TLS=true ;;
    --nats-cluster) export QRLOGIN_LOCAL_NATS_NODES=3 ;;
  esac
done
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=deploy/local/monitoring.sh
source "$LOCAL_DIR/monitoring.sh"
unset QRLOGIN_LOCAL_IGNORE_RUNNING

detach=0
build=1
monitoring=0
for arg in "$@"; do
  case "$arg" in
    --detach | -d) detach=1 ;;
    --no-build) build=0 ;;
    --with-monitoring) monitoring=1 ;;
    --tls | --nats-cluster) ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

for c in "${COMPONENTS[@]}"; do
  if is_running "$c"; then
    die "a local cluster is already running ($c has pid $(component_pid "$c")); stop it with deploy/local/down.sh"
  fi
done

if ((build)); then
  log "installing pinned tools and system packages (tools/bootstrap.sh --system)"
  if ((monitoring)); then
    "$ROOT/tools/bootstrap.sh" --system --monitoring
  else
    "$ROOT/tools/bootstrap.sh" --system
  fi
  log "building the release binaries (tools/build-release.sh)"
  "$ROOT/tools/build-release.sh"
fi

for bin in "$NATS_BIN" "$AUTH_BIN" "$EDGE_BIN" "$HAPROXY_BIN"; do
  [[ -x "$bin" ]] || die "$bin is missing; run deploy/local/up.sh without --no-build"
done
command -v curl >/dev/null || die "curl is missing; run tools/bootstrap.sh --system"

check_ports_free "${COMPONENTS[@]}"
if ((monitoring)); then
  [[ -x "$PROMETHEUS_BIN" ]] || die "prometheus is missing; run deploy/local/up.sh without --no-build"
  port_free "$QRLOGIN_LOCAL_PROMETHEUS_PORT" ||
    die "port $QRLOGIN_LOCAL_PROMETHEUS_PORT (prometheus) is taken; choose another with QRLOGIN_LOCAL_PROMETHEUS_PORT=<port>"
fi

mkdir -p "$RUN_DIR" "$LOG_DIR" "$PID_DIR"
log "development keys in $KEY_DIR (missing ones are generated)"
make_keys
save_cluster_env

stopping=0
shutdown() {
  ((stopping)) && return
  stopping=1
  log "stopping (HAProxy, edges drain, auth, NATS)"
  stop_all
  log "stopped; logs stay in $LOG_DIR"
}

# In the foreground a failed start or a signal stops what was started; with
# --detach only a failed start does.
trap 'status=$?; if ((status != 0)); then shutdown; fi' EXIT
trap 'shutdown; exit 130' INT
trap 'shutdown; exit 143' TERM

if ((NATS_CLUSTERED)); then
  # The members start together (a member is healthy only once a majority
  # runs), then wait for a meta leader; each auth replica in turn (the
  # first creates the bucket); HAProxy, through which the edges reach auth;
  # the edges; and last the demo page through HAProxy.
  log "starting ${NATS_MEMBERS[*]}"
  start_and_wait 60 "${NATS_MEMBERS[@]}" || die "NATS did not start; the cluster was stopped"
  wait_nats_cluster 60 || die "NATS did not form a cluster; the cluster was stopped"
  for c in "${AUTH_MEMBERS[@]}"; do
    log "starting $c"
    start_and_wait 60 "$c" || die "$c did not start; the cluster was stopped"
  done
  log "starting haproxy"
  start_component haproxy
  wait_ready haproxy 60 haproxy_listening || die "haproxy did not start; the cluster was stopped"
  for c in edge-1 edge-2; do
    log "starting $c"
    start_and_wait 60 "$c" || die "$c did not start; the cluster was stopped"
  done
  wait_ready haproxy 60 || die "HAProxy does not serve the demo page; the cluster was stopped"
else
  for c in "${COMPONENTS[@]}"; do
    log "starting $c"
    start_component "$c"
    wait_ready "$c" 60 || die "$c did not start; the cluster was stopped"
  done
fi
monitoring_line="Monitoring           off (deploy/local/up.sh --with-monitoring, or deploy/local/monitoring.sh start)"
if ((monitoring)); then
  log "starting prometheus"
  start_prometheus
  monitoring_line="Prometheus           $PROMETHEUS_URL/  (rules: $PROMETHEUS_URL/rules, alerts: $PROMETHEUS_URL/alerts)"
fi

# The NATS and auth lines of the summary: one server and one auth, or each
# member with its URLs.
nats_lines() {
  local m
  if ((!NATS_CLUSTERED)); then
    printf '  NATS                 %s    monitor %s/\n' "$NATS_URL" "$NATS_MONITOR_URL"
    return
  fi
  for m in "${NATS_MEMBERS[@]}"; do
    printf '  NATS %-15s %s://127.0.0.1:%s    monitor %s/    route :%s\n' "$m" "$NATS_SCHEME" \
      "$(nats_port "$m")" "$(nats_monitor_url "$m")" "$(nats_route_port "$m")"
  done
  printf '  Session stream       %s led by %s (deploy/local/ctl.sh leader)\n' "$SESSION_STREAM" \
    "$(nats_stream_leader || echo '(none yet)')"
}
auth_lines() {
  local a
  if ((!NATS_CLUSTERED)); then
    echo "  auth metrics         http://127.0.0.1:$QRLOGIN_LOCAL_AUTH_OPS_PORT/metrics"
    return
  fi
  for a in "${AUTH_MEMBERS[@]}"; do
    printf '  %-20s gRPC 127.0.0.1:%s    metrics http://127.0.0.1:%s/metrics\n' "$a" "$(auth_port "$a")" "$(auth_ops_port "$a")"
  done
}

cat <<EOF

qrlogin local cluster is up.

  Login page (demo)    $HTTP_URL/
  Phone page           $HTTP_URL/phone.html
  HAProxy stats        $STATS_URL
  Edges (direct)       edge-1 $EDGE1_URL   edge-2 $EDGE2_URL
  Edges (operations)   edge-1 $EDGE1_OPS_URL/metrics   edge-2 $EDGE2_OPS_URL/metrics
  gRPC (auth)          $AUTH_ADDR$( ((NATS_CLUSTERED)) && echo " (HAProxy over ${AUTH_MEMBERS[*]})")    e.g. $TOOLS_BIN/grpcurl ${GRPCURL_AUTH_TLS[*]} -import-path $ROOT/proto -proto qrlogin/auth/v1/auth.proto $AUTH_ADDR describe
$(nats_lines)
$(auth_lines)
  $monitoring_line
  Logs                 $LOG_DIR/{$(IFS=,; echo "${COMPONENTS[*]}")}.log
  Act on one           deploy/local/ctl.sh {status|kill|stop|start|restart|freeze|thaw|ldm|leader} {$(IFS='|'; echo "${COMPONENTS[*]}")}
  End-to-end checks    deploy/local/e2e.sh

EOF

if ((detach)); then
  trap - EXIT INT TERM
  echo "Running in the background; stop it with deploy/local/down.sh"
  exit 0
fi

echo "Press Ctrl-C to stop."
# Stay in the foreground and say when a component goes away or comes back
# (ctl.sh may kill and restart components while the cluster runs).
declare -A seen_down=()
while :; do
  for c in "${COMPONENTS[@]}"; do
    if is_running "$c"; then
      if [[ -n "${seen_down[$c]:-}" ]]; then
        log "$c is running again (pid $(component_pid "$c"))"
        unset "seen_down[$c]"
      fi
    elif [[ -z "${seen_down[$c]:-}" ]]; then
      log "$c is not running; see $LOG_DIR/$c.log (deploy/local/ctl.sh start $c)"
      seen_down[$c]=1
    fi
  done
  # Sleep in the background and wait for it, so that signals are handled at once.
  sleep 1 &
  wait $! || true
done

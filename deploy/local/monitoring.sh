#!/usr/bin/env bash
# Prometheus (Debian's package) for the local cluster: scrapes auth's (each
# replica's, with --nats-cluster) and both edges' operations ports and itself, loads the rules of
# deploy/monitoring/rules/, keeps its data in deploy/local/run/prometheus/.
# NATS is not scraped: nats-server serves JSON, not the Prometheus format
# (its /metrics is 404), and no exporter for it is packaged for Debian or
# PyPI; the services' own NATS metrics (link state, reconnects, bucket
# latency, gaps) stand in for it here (docs/operations.md).
#
#   deploy/local/monitoring.sh start    on a running cluster (up.sh --with-monitoring does this)
#   deploy/local/monitoring.sh stop
#   deploy/local/monitoring.sh status
#
# QRLOGIN_LOCAL_PROMETHEUS_PORT (9090) is where it listens (127.0.0.1);
# QRLOGIN_LOCAL_SCRAPE_INTERVAL (5s) how often it scrapes and evaluates rules.
# Sourced by up.sh and down.sh for start_prometheus / stop_component prometheus.

# shellcheck source=deploy/local/lib.sh
[[ -n "${LOCAL_DIR:-}" ]] || source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${QRLOGIN_LOCAL_PROMETHEUS_PORT:=9090}"
: "${QRLOGIN_LOCAL_SCRAPE_INTERVAL:=5s}"
PROMETHEUS_BIN="$(command -v prometheus 2>/dev/null || echo /usr/bin/prometheus)"
PROMETHEUS_URL="http://127.0.0.1:${QRLOGIN_LOCAL_PROMETHEUS_PORT}"
PROMETHEUS_DATA="$RUN_DIR/prometheus"
MONITORING_DIR="$ROOT/deploy/monitoring"

# Every service's /metrics is on its operations port, never the public one.
render_prometheus_yml() {
  local edge1="$QRLOGIN_LOCAL_EDGE1_OPS_PORT"
  local edge2="$QRLOGIN_LOCAL_EDGE2_OPS_PORT"
  local a auth_targets=""
  for a in "${AUTH_MEMBERS[@]}"; do
    auth_targets+="      - targets: [\"127.0.0.1:$(auth_ops_port "$a")\"]
        labels: {instance: $a}
"
  done
  mkdir -p "$RUN_DIR" "$PROMETHEUS_DATA"
  cat >"$RUN_DIR/prometheus.yml" <<YAML
# Written by deploy/local/monitoring.sh; edit that script, not this file.
global:
  scrape_interval: $QRLOGIN_LOCAL_SCRAPE_INTERVAL
  evaluation_interval: $QRLOGIN_LOCAL_SCRAPE_INTERVAL
  external_labels:
    cluster: qrlogin-local
rule_files:
  - $MONITORING_DIR/rules/*.yml
scrape_configs:
  - job_name: qrlogin-auth
    static_configs:
${auth_targets}  - job_name: qrlogin-edge
    static_configs:
      - targets: ["127.0.0.1:$edge1"]
        labels: {instance: edge-1}
      - targets: ["127.0.0.1:$edge2"]
        labels: {instance: edge-2}
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$QRLOGIN_LOCAL_PROMETHEUS_PORT"]
YAML
  promtool check config "$RUN_DIR/prometheus.yml" >/dev/null ||
    die "promtool rejected $RUN_DIR/prometheus.yml"
}

start_prometheus() {
  [[ -x "$PROMETHEUS_BIN" ]] || die "prometheus is missing; run tools/bootstrap.sh --monitoring"
  if is_running prometheus; then
    log "prometheus already running (pid $(component_pid prometheus))"
    return 0
  fi
  port_free "$QRLOGIN_LOCAL_PROMETHEUS_PORT" ||
    die "port $QRLOGIN_LOCAL_PROMETHEUS_PORT (prometheus) is taken; choose another with QRLOGIN_LOCAL_PROMETHEUS_PORT=<port>"
  render_prometheus_yml
  spawn prometheus "$PROMETHEUS_BIN" \
    --config.file="$RUN_DIR/prometheus.yml" \
    --storage.tsdb.path="$PROMETHEUS_DATA" \
    --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$QRLOGIN_LOCAL_PROMETHEUS_PORT"
  local deadline=$((SECONDS + 30))
  until http_ok "$PROMETHEUS_URL/-/ready"; do
    if ! is_running prometheus; then
      tail -n 20 "$LOG_DIR/prometheus.log" >&2 || true
      die "prometheus exited during start-up; see $LOG_DIR/prometheus.log"
    fi
    ((SECONDS < deadline)) || die "prometheus not ready after 30s; see $LOG_DIR/prometheus.log"
    sleep 0.2
  done
  log "prometheus ready at $PROMETHEUS_URL (data in $PROMETHEUS_DATA)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    start) start_prometheus ;;
    stop) stop_component prometheus 10 ;;
    status) if is_running prometheus; then echo "prometheus running at $PROMETHEUS_URL"; else echo "prometheus not running"; exit 1; fi ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
fi

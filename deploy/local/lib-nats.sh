# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source lib.sh
# The NATS part of the local cluster, sourced by lib.sh: one nats-server
# (component "nats"), or with QRLOGIN_LOCAL_NATS_NODES=3 (up.sh
# --nats-cluster) the JetStream cluster nats-1, nats-2, nats-3, each with
# its own client, monitoring and route port and its own store. Every
# member's nats.conf comes from `qrlogin-auth dev-nats-config`, that is
# from services/auth/src/nats_accounts.rs, the rules deploy/k8s/check.sh
# holds the Kubernetes ConfigMap to. Also: readiness, and which member
# leads the session bucket's stream and the JetStream meta group.

case "$QRLOGIN_LOCAL_NATS_NODES" in
  1) NATS_CLUSTERED=0 NATS_MEMBERS=(nats) ;;
  3) NATS_CLUSTERED=1 NATS_MEMBERS=(nats-1 nats-2 nats-3) ;;
  *) die "QRLOGIN_LOCAL_NATS_NODES must be 1 or 3, not '$QRLOGIN_LOCAL_NATS_NODES'" ;;
esac
NATS_CLUSTER_NAME=qrlogin
# Lame duck mode (ctl.sh ldm): after 1 s the server closes its clients,
# spread over at most 30 s (the least nats-server accepts), and exits by
# itself once they are gone.
NATS_LAME_DUCK=(--lame-duck-duration 30s --lame-duck-grace-period 1s)
NATS_LAME_DUCK_SECONDS=31
# The stream behind the session bucket (ctl.sh leader names its leader).
SESSION_STREAM="KV_${QRLOGIN_KV_BUCKET:-qrlogin_sessions}"

# Member N's ports are the configured ones + N - 1 ("nats" is member 1).
nats_index() {
  case "$1" in
    nats) echo 1 ;;
    nats-[1-9]) echo "${1#nats-}" ;;
    *) die "not a NATS member: '$1'" ;;
  esac
}
nats_port() { echo $((QRLOGIN_LOCAL_NATS_PORT + $(nats_index "$1") - 1)); }
nats_monitor_port() { echo $((QRLOGIN_LOCAL_NATS_MONITOR_PORT + $(nats_index "$1") - 1)); }
nats_route_port() { echo $((QRLOGIN_LOCAL_NATS_ROUTE_PORT + $(nats_index "$1") - 1)); }
nats_monitor_url() { echo "http://127.0.0.1:$(nats_monitor_port "$1")"; }
# The JetStream store: run/nats for the one server, run/nats-N for a member.
nats_store() { echo "$RUN_DIR/$1"; }

urls=()
for m in "${NATS_MEMBERS[@]}"; do urls+=("$NATS_SCHEME://127.0.0.1:$(nats_port "$m")"); done
# Every member's client URL, comma-separated: what the edges get.
NATS_URLS="$(IFS=,; echo "${urls[*]}")"
unset urls m
# The first member's (the one server's) client and monitoring URLs.
NATS_URL="${NATS_URLS%%,*}"
NATS_MONITOR_URL="$(nats_monitor_url "${NATS_MEMBERS[0]}")"
# Every member's client URL, starting from the Nth (1-based, wrapping): an
# edge connects to the first URL of its list, so edge-N gets the list from
# member N on and the edges spread over the members as a Service spreads
# them in Kubernetes (otherwise every edge sits on nats-1 and one member's
# loss moves them all).
nats_urls_from() {
  local n=$((($1 - 1) % ${#NATS_MEMBERS[@]})) i out=() all
  IFS=, read -r -a all <<<"$NATS_URLS"
  for ((i = 0; i < ${#all[@]}; i++)); do out+=("${all[(n + i) % ${#all[@]}]}"); done
  (IFS=,; echo "${out[*]}")
}
# auth's QRLOGIN_NATS_URL: every member, as the edges get, so that an auth
# replica starting while a member is down still finds the cluster.
AUTH_NATS_URL="$NATS_URLS"

# nats.conf of one member, with the qrlogin accounts (the nkey users auth
# and edge, least privilege, nobody anonymous) and, on a cluster, routes to
# every member (over mutual TLS with --tls) and the lame duck settings.
render_nats_conf() {
  local name="$1" m args=()
  mkdir -p "$RUN_DIR" "$(nats_store "$name")" "$LOG_DIR"
  make_certs
  args=(--keys "$KEY_DIR" --listen "127.0.0.1:$(nats_port "$name")"
    --http-port "$(nats_monitor_port "$name")" --store-dir "$(nats_store "$name")"
    "${NATS_TLS_ARGS[@]}" "${NATS_LAME_DUCK[@]}")
  if ((NATS_CLUSTERED)); then
    args+=(--server-name "$name" --cluster-name "$NATS_CLUSTER_NAME"
      --cluster-listen "127.0.0.1:$(nats_route_port "$name")")
    for m in "${NATS_MEMBERS[@]}"; do
      args+=(--route "nats-route://127.0.0.1:$(nats_route_port "$m")")
    done
    [[ "$QRLOGIN_LOCAL_TLS" == true ]] && args+=(--cluster-tls-ca "$TLS_DIR/ca.pem")
  else
    args+=(--server-name qrlogin-local)
  fi
  "$AUTH_BIN" dev-nats-config "${args[@]}" >"$RUN_DIR/$name.conf" ||
    die "qrlogin-auth dev-nats-config failed for $name"
}

start_nats() {
  render_nats_conf "$1"
  spawn "$1" "$NATS_BIN" --config "$RUN_DIR/$1.conf"
}

# One server: JetStream is on. A cluster member: /healthz, which is OK only
# once the member is current with the meta group and every stream it holds.
nats_member_ready() {
  if ((NATS_CLUSTERED)); then
    http_ok "$(nats_monitor_url "$1")/healthz"
  else
    http_ok "$(nats_monitor_url "$1")/healthz?js-enabled-only=true"
  fi
}

# The whole of NATS is ready: every member healthy and (on a cluster) a
# JetStream meta leader elected.
nats_cluster_ready() {
  local m
  for m in "${NATS_MEMBERS[@]}"; do
    nats_member_ready "$m" || return 1
  done
  ((!NATS_CLUSTERED)) || [[ -n "$(nats_roles | awk '$1 == "meta" { print $2 }')" ]]
}

wait_nats_cluster() {
  local deadline=$((SECONDS + ${1:-60}))
  until nats_cluster_ready; do
    ((SECONDS < deadline)) || { log "NATS has no healthy cluster after ${1:-60}s; see $LOG_DIR/nats-*.log"; return 1; }
    sleep 0.2
  done
}

# Who leads, as the members' monitoring ports (/jsz) tell: prints
# "stream NAME" (the leader of the session bucket's stream) and "meta NAME"
# (the JetStream meta leader), NAME being a component (nats-N, or nats for
# the one server) or "-" when none is known. Members that are down or
# frozen are skipped (1 s timeout each); a member's own claim to lead
# wins over what another member last heard.
nats_roles() {
  local m args=()
  for m in "${NATS_MEMBERS[@]}"; do
    if is_running "$m" && ! is_frozen "$m"; then
      args+=("$m=$(nats_monitor_url "$m")")
    fi
  done
  python3 - "$SESSION_STREAM" "$NATS_CLUSTERED" "${args[@]}" <<'PY'
import json, sys, urllib.request

stream, clustered, members = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
claims = {"stream": [], "meta": []}
for item in members:
    name, url = item.split("=", 1)
    try:
        with urllib.request.urlopen(f"{url}/jsz?accounts=true&streams=true", timeout=1) as r:
            jsz = json.load(r)
    except (OSError, ValueError):
        continue
    if not clustered:
        # One server leads everything it holds.
        found = any(s.get("name") == stream for a in jsz.get("account_details") or []
                    for s in a.get("stream_detail") or [])
        claims["meta"].append((name, name))
        if found:
            claims["stream"].append((name, name))
        continue
    meta = (jsz.get("meta_cluster") or {}).get("leader") or ""
    if meta:
        claims["meta"].append((name, meta))
    for account in jsz.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            leader = (s.get("cluster") or {}).get("leader") or ""
            if s.get("name") == stream and leader:
                claims["stream"].append((name, leader))
for role in ("stream", "meta"):
    seen = claims[role]
    own = [leader for member, leader in seen if member == leader]
    print(role, (own or [leader for _, leader in seen] or ["-"])[0])
PY
}

# Prints the component leading the session bucket's stream; fails when no
# member names one (no quorum, or the bucket does not exist yet).
nats_stream_leader() {
  local leader
  leader="$(nats_roles | awk '$1 == "stream" { print $2 }')"
  [[ -n "$leader" && "$leader" != - ]] || return 1
  echo "$leader"
}

nats_meta_leader() {
  local leader
  leader="$(nats_roles | awk '$1 == "meta" { print $2 }')"
  [[ -n "$leader" && "$leader" != - ]] || return 1
  echo "$leader"
}

# Lame duck mode: the member stops taking clients, hands over what it
# leads, moves its clients to the other members and exits by itself (within
# NATS_LAME_DUCK_SECONDS).
nats_lame_duck() {
  local pid
  pid="$(component_pid "$1")"
  [[ -n "$pid" ]] || die "$1 is not running"
  "$NATS_BIN" --signal "ldm=$pid" >/dev/null 2>&1 || die "nats-server --signal ldm=$pid failed"
}

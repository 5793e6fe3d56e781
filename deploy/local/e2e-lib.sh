# shellcheck shell=bash
# Helpers of deploy/local/e2e.sh: HTTP and JSON, sessions, and the watchers
# (short and long polling and SSE with curl, WebSocket and SSE with
# watch.mjs). Sourced by e2e.sh after lib.sh; uses its WORK and BG_PIDS.
# Results go to globals that the checks read: STATUS NODE BODY (http), SID
# SECRET VERSION TTL (create), WATCH_PATH and REISSUES (watchers).
# shellcheck disable=SC2034

stop_watchers() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BG_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  BG_PIDS=()
}

# --- HTTP and JSON helpers --------------------------------------------------------
# http METHOD URL [BODY] [curl args...]: sets STATUS, NODE and BODY.
http() {
  local method="$1" url="$2" body="${3-}"
  shift 2
  (($#)) && shift
  local headers="$WORK/headers.$RANDOM"
  local data=()
  [[ -n "$body" ]] && data=(-H 'Content-Type: application/json' --data "$body")
  BODY="$(curl -sS --max-time 40 -X "$method" -D "$headers" "${data[@]}" "$@" "$url" 2>"$WORK/curl.err")" || true
  STATUS="$(awk 'toupper($1) ~ /^HTTP\// { s = $2 } END { print s + 0 }' "$headers" 2>/dev/null)"
  NODE="$(tr -d '\r' <"$headers" 2>/dev/null | awk -F': *' 'tolower($1) == "x-edge-node" { n = $2 } END { print n }')"
  rm -f "$headers"
}

# json FIELD [FIELD...]: reads JSON on stdin, prints the dotted fields, one a line.
json() {
  python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
for path in sys.argv[1:]:
    value = doc
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    print("" if value is None else value)
' "$@"
}

auth_browser() { echo "Authorization: Bearer $1"; }

# create: a new session through HAProxy; sets SID, SECRET, VERSION and TTL (seconds to the deadline).
create() {
  http POST "$HTTP_URL/v1/login-sessions" '{}'
  if [[ "$STATUS" != 201 ]]; then
    echo "create returned HTTP $STATUS: $BODY"
    return 1
  fi
  { read -r SID; read -r SECRET; read -r VERSION; } < <(json session_id browser_secret version <<<"$BODY")
  TTL="$(python3 -c '
import json, sys
from datetime import datetime
d = json.loads(sys.argv[1])
p = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print(round((p(d["expires_at"]) - p(d["updated_at"])).total_seconds()))' "$BODY")"
}

# phone ACTION BASE: scan/confirm/deny as Alice on the given base URL.
phone() {
  http POST "$2/v1/login-sessions/$SID/$1" '{}' -H "Authorization: Bearer $USER_TOKEN"
}

expect_phone() {
  local action="$1" base="$2" want_node="$3"
  phone "$action" "$base"
  if [[ "$STATUS" != 200 ]]; then
    echo "$action returned HTTP $STATUS: $BODY"
    return 1
  fi
  if [[ -n "$want_node" && "$NODE" != "$want_node" ]]; then
    echo "$action was answered by '$NODE', expected $want_node"
    return 1
  fi
}

# --- watchers ----------------------------------------------------------------------
# Every watcher writes what it receives to a file; `states FILE` lists the
# snapshots in it as "STATE VERSION NODE" lines, whatever the format (JSON
# lines from polling and watch.mjs, or raw SSE from curl).
states() {
  python3 -c '
import json, sys
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    if line.startswith("data:"):
        line = line[5:].strip()
    if not line.startswith("{"):
        continue
    try:
        doc = json.loads(line)
    except ValueError:
        continue
    if "state" in doc and "version" in doc:
        print(doc["state"], doc["version"], doc.get("node") or "-")
' "$1" 2>/dev/null
}

# wait_state FILE STATE SECONDS: prints "VERSION NODE" of the first snapshot in STATE.
wait_state() {
  local file="$1" want="$2" deadline=$((SECONDS + $3)) line
  while ((SECONDS < deadline)); do
    line="$(states "$file" | awk -v s="$want" '$1 == s { print $2, $3; exit }')"
    if [[ -n "$line" ]]; then
      echo "$line"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Short polling of edge-1 (direct) every 300 ms until a final or CONFIRMED state.
start_short_poll() {
  local file="$1"
  (
    while :; do
      b="$(curl -sS --max-time 5 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID")" || b=''
      echo "$b" >>"$file"
      case "$b" in *'"state":"CONFIRMED"'* | *'"state":"REDEEMED"'* | *'"state":"DENIED"'* | *'"state":"CANCELLED"'* | *'"state":"EXPIRED"'*) exit 0 ;; esac
      sleep 0.3
    done
  ) >/dev/null 2>&1 &
  BG_PIDS+=($!)
}

# Long polling of edge-1 (direct): one plain GET for the current snapshot,
# then GETs with since=<newest version> and wait=20s.
start_long_poll() {
  local file="$1"
  (
    b="$(curl -sS --max-time 5 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID")" || b=''
    echo "$b" >>"$file"
    since="$(json version <<<"$b" 2>/dev/null)"
    [[ -n "$since" ]] || since="$VERSION"
    while :; do
      b="$(curl -sS --max-time 30 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID?since=$since&wait=20s")" || b=''
      echo "$b" >>"$file"
      v="$(json version <<<"$b" 2>/dev/null)" && [[ -n "$v" ]] && since="$v"
      case "$b" in *'"state":"CONFIRMED"'* | *'"state":"REDEEMED"'* | *'"state":"DENIED"'* | *'"state":"CANCELLED"'* | *'"state":"EXPIRED"'*) exit 0 ;; esac
      [[ -z "$b" ]] && sleep 0.5
    done
  ) >/dev/null 2>&1 &
  BG_PIDS+=($!)
}

# SSE with curl via HAProxy, re-opened until X-Edge-Node is WANT (at most 12
# tries). Sets REISSUES to the number of re-opens.
start_sse_curl() {
  local file="$1" want="$2" headers="$1.headers" node pid
  REISSUES=0
  for _ in $(seq 1 12); do
    : >"$file"
    : >"$headers"
    curl -sS -N --max-time 90 -D "$headers" -H "$(auth_browser "$SECRET")" \
      "$HTTP_URL/v1/login-sessions/$SID/events" >>"$file" 2>>"$WORK/sse.err" &
    pid=$!
    node=''
    for _ in $(seq 1 50); do
      node="$(tr -d '\r' <"$headers" | awk -F': *' 'tolower($1) == "x-edge-node" { print $2 }')"
      [[ -n "$node" ]] && break
      sleep 0.1
    done
    if [[ "$node" == "$want" ]]; then
      BG_PIDS+=("$pid")
      return 0
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    REISSUES=$((REISSUES + 1))
  done
  echo "SSE never landed on $want in 12 tries through HAProxy"
  return 1
}

# watch.mjs in the background: start_node_watcher FILE TRANSPORT [args...]
start_node_watcher() {
  local file="$1" transport="$2"
  shift 2
  "${WATCH[@]}" --base="$HTTP_URL" --session="$SID" --secret="$SECRET" --transport="$transport" "$@" >"$file" 2>&1 &
  BG_PIDS+=($!)
}

# Waits until watch.mjs reports the connection open; prints its node.
wait_open() {
  local file="$1" deadline=$((SECONDS + $2)) node
  while ((SECONDS < deadline)); do
    node="$(grep -m1 '"event":"open"' "$file" 2>/dev/null | json node)"
    if [[ -n "$node" ]]; then
      echo "$node"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Starts the watcher of one transport on edge-1 and waits for its first snapshot.
# Sets WATCH_PATH to a description of how it got there.
start_watcher_on_edge1() {
  local transport="$1" file="$2" node
  case "$transport" in
    poll)
      start_short_poll "$file"
      WATCH_PATH="short polls direct to edge-1"
      ;;
    longpoll)
      # A held long poll answers only at the end, so its X-Edge-Node cannot
      # steer it before the event: it goes to edge-1's own port.
      start_long_poll "$file"
      WATCH_PATH="long polls direct to edge-1"
      ;;
    sse)
      start_sse_curl "$file" edge-1 || return 1
      WATCH_PATH="curl SSE via HAProxy on edge-1 (X-Edge-Node checked, $REISSUES re-issued)"
      ;;
    ws)
      start_node_watcher "$file" ws --want-node=edge-1 --until=CONFIRMED --timeout=40
      node="$(wait_open "$file" 10)" || { echo "WebSocket did not open: $(tail -n 2 "$file")"; return 1; }
      [[ "$node" == edge-1 ]] || { echo "WebSocket landed on $node, not edge-1"; return 1; }
      WATCH_PATH="WebSocket via HAProxy on edge-1 ($(grep -c '"event":"retry"' "$file") re-issued)"
      ;;
  esac
  wait_state "$file" PENDING 10 >/dev/null || { echo "watcher saw no first snapshot"; return 1; }
  # Give a long poll time to be held by the edge before the phone acts.
  [[ "$transport" == longpoll ]] && sleep 0.3
  return 0
}

# --- gRPC and HAProxy ----------------------------------------------------------------

# grpc METHOD: calls AuthService/METHOD for SID straight on auth, as Alice.
grpc() {
  "$GRPCURL" -plaintext -import-path "$ROOT/proto" -proto qrlogin/auth/v1/auth.proto \
    -H "authorization: Bearer $GRPC_TOKEN" -d "{\"session_id\":\"$SID\"}" \
    "$AUTH_ADDR" "qrlogin.auth.v1.AuthService/$1"
}

# True when HAProxy has the edge NAME up.
haproxy_server_up() {
  curl -fsS --max-time 2 "$STATS_URL;csv" 2>/dev/null |
    awk -F, -v s="$1" '$1 == "edges" && $2 == s { print $18 }' | grep -q '^UP'
}

#!/usr/bin/env bash
# End-to-end checks against the local cluster (deploy/local/up.sh), with real
# clients only: curl (HTTP, short and long polling, SSE), grpcurl (gRPC
# straight to auth, the README's grpcurl block run as written, and the
# edges' gRPC watch stream), a WebSocket client and the standard STOMP client
# (deploy/local/watch.mjs, on `ws` and `@stomp/stompjs` pinned in
# web/tests/package-lock.json). For every push transport it also prints the
# confirm→event latency through HAProxy (median and max of a few logins): a
# figure, not a pass/fail bound.
#
#   deploy/local/e2e.sh            against a running cluster
#   deploy/local/e2e.sh --start    start one first (up.sh --detach, with
#                                  QRLOGIN_PENDING_TTL=15s unless set) and stop
#                                  it at the end; --keep leaves it running
#   deploy/local/e2e.sh --no-build with --start: skip bootstrap and build
#   QRLOGIN_E2E_ONLY=REGEX         run only the checks whose name matches
#   QRLOGIN_LOCAL_TLS=true         with --start: a TLS cluster (up.sh --tls),
#                                  plus a check that plaintext is refused
#   QRLOGIN_LOCAL_NATS_NODES=3     with --start: a NATS cluster (up.sh
#                                  --nats-cluster); the NATS failure check
#                                  then kills the member leading the session
#                                  bucket's stream (instead of restarting the
#                                  one server), plus a check of the cluster
#
# Each check prints one line, "ok - ..." or "FAIL - ...", saying which path
# each request took: "via HAProxy" (the node that answered is read from
# X-Edge-Node, and a watcher that must sit on edge-1 is re-opened until it
# does) or "direct to edge-N" (the edge's own port, used where a check needs
# one request on a given node and the balancer cannot be steered). The last
# line is "N passed, N failed"; the exit status is 1 when any check failed.
# The whole run is bounded (about a minute and a half; every wait has a limit).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=0
keep=0
build_flag=()
for arg in "$@"; do
  case "$arg" in
    --start) start=1 ;;
    --keep) keep=1 ;;
    --no-build) build_flag=(--no-build) ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

if ((start)); then
  export QRLOGIN_PENDING_TTL="${QRLOGIN_PENDING_TTL:-15s}"
  if ! "$HERE/up.sh" --detach "${build_flag[@]}"; then
    echo "e2e: the cluster did not start" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
fi

# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"
GRPCURL="$TOOLS_BIN/grpcurl"
WATCH=(node "$HERE/watch.mjs")

WORK="$(mktemp -d -t qrlogin-e2e.XXXXXX)"
BG_PIDS=()
passed=0
failed=0
skipped=0

cleanup() {
  stop_watchers
  rm -rf "$WORK"
  if ((start && !keep)); then "$HERE/down.sh" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=deploy/local/e2e-lib.sh
source "$HERE/e2e-lib.sh"
# shellcheck source=deploy/local/e2e-attacks.sh
source "$HERE/e2e-attacks.sh"
# shellcheck source=deploy/local/e2e-nats.sh
source "$HERE/e2e-nats.sh"

# --- reporting ------------------------------------------------------------------
# A check is a function that prints its success text on stdout and, when it
# fails, the reason on stdout and returns 1.
# The check runs in this shell (not in $(...), which would wait for the
# background watchers that inherit its output).
check() {
  local name="$1" result rc
  shift
  [[ -z "${QRLOGIN_E2E_ONLY:-}" || "$name" =~ $QRLOGIN_E2E_ONLY ]] || return 0
  "$@" >"$WORK/result" 2>"$WORK/stderr"
  rc=$?
  result="$(tr '\n' ' ' <"$WORK/result" | sed 's/ *$//')"
  if ((rc == 0)); then
    echo "ok - $name: $result"
    passed=$((passed + 1))
  elif ((rc == 2)); then
    echo "skip - $name: $result"
    skipped=$((skipped + 1))
  else
    [[ -z "$result" ]] && result="$(tail -n 3 "$WORK/stderr" | tr '\n' ' ')"
    echo "FAIL - $name: $result"
    failed=$((failed + 1))
  fi
  stop_watchers
}

# --- checks --------------------------------------------------------------------------

# Watcher on edge-1, scan and confirm on edge-2: both events reach the watcher.
check_transport() {
  local transport="$1" file="$WORK/watch-$1" scanned confirmed
  create || return 1
  start_watcher_on_edge1 "$transport" "$file" || return 1
  expect_phone scan "$EDGE2_URL" edge-2 || return 1
  scanned="$(wait_state "$file" SCANNED 10)" || { echo "watcher never saw SCANNED ($WATCH_PATH)"; return 1; }
  expect_phone confirm "$EDGE2_URL" edge-2 || return 1
  confirmed="$(wait_state "$file" CONFIRMED 25)" || { echo "watcher never saw CONFIRMED ($WATCH_PATH)"; return 1; }
  for got in "$scanned" "$confirmed"; do
    [[ "${got#* }" == edge-1 ]] || { echo "a snapshot came from '${got#* }', expected edge-1 ($WATCH_PATH)"; return 1; }
  done
  echo "$WATCH_PATH; scan and confirm direct to edge-2; SCANNED v${scanned% *} and CONFIRMED v${confirmed% *} delivered by edge-1"
  echo "$SID $SECRET" >"$WORK/confirmed-$transport"
}

# Redeem once (200, token for Alice); a repeat (an answer lost) gets the same
# token, not a second one.
check_redeem() {
  local transport="$1" token name again first_node
  [[ -f "$WORK/confirmed-$transport" ]] || { echo "no confirmed session from the $transport check"; return 1; }
  read -r SID SECRET <"$WORK/confirmed-$transport"
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 ]] || { echo "first redeem returned HTTP $STATUS: $BODY"; return 1; }
  { read -r token; read -r name; } < <(json access_token user.display_name <<<"$BODY")
  [[ -n "$token" && "$name" == "Alice (alice-"*")" ]] || { echo "first redeem gave token '${token:0:12}' for '$name'"; return 1; }
  first_node="$NODE"
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  again="$(json access_token <<<"$BODY")"
  [[ "$STATUS" == 200 && "$again" == "$token" ]] || { echo "repeated redeem returned HTTP $STATUS, the same token: $([[ "$again" == "$token" ]] && echo yes || echo no)"; return 1; }
  echo "via HAProxy: first redeem on $first_node gave Alice's token, the repeat (on $NODE) the same token"
}

check_grpc() {
  local file="$WORK/watch-grpc" out scanned confirmed
  create || return 1
  start_watcher_on_edge1 sse "$file" || return 1
  out="$(grpc ScanLoginSession "\"qr_payload\":\"$QR_PAYLOAD\"" 2>&1)" || { echo "grpcurl ScanLoginSession: $out"; return 1; }
  [[ "$(json session.state <<<"$out")" == LOGIN_STATE_SCANNED ]] || { echo "ScanLoginSession answered: $out"; return 1; }
  scanned="$(wait_state "$file" SCANNED 10)" || { echo "watcher never saw SCANNED"; return 1; }
  out="$(grpc ConfirmLoginSession "\"match_code\":$(shown_match_code)" 2>&1)" || { echo "grpcurl ConfirmLoginSession: $out"; return 1; }
  confirmed="$(wait_state "$file" CONFIRMED 10)" || { echo "watcher never saw CONFIRMED"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 ]] || { echo "redeem after gRPC confirm returned HTTP $STATUS"; return 1; }
  echo "$WATCH_PATH; scan and confirm by grpcurl straight to auth ($AUTH_ADDR, dev-token JWT); SCANNED v${scanned% *} and CONFIRMED v${confirmed% *} delivered by ${confirmed#* }; redeem 200"
}

# grpcurl on edge-1's gRPC port: reflection lists the watch service, health
# answers SERVING, and WatchLoginSession streams a login created through
# HTTP and confirmed through edge-2 (SCANNED, CONFIRMED, then REDEEMED after
# the redeem), and ends with OK.
check_grpc_watch() {
  local file="$WORK/grpc-stream" out got rc
  out="$("$GRPCURL" -plaintext "$EDGE1_GRPC_ADDR" list 2>&1)" || { echo "grpcurl list: $out"; return 1; }
  if ! grep -qx qrlogin.watch.v1.LoginWatch <<<"$out" || ! grep -qx grpc.health.v1.Health <<<"$out"; then
    echo "reflection lists: $(tr '\n' ' ' <<<"$out")"
    return 1
  fi
  out="$("$GRPCURL" -plaintext "$EDGE1_GRPC_ADDR" grpc.health.v1.Health/Check 2>&1)"
  [[ "$(json status <<<"$out")" == SERVING ]] || { echo "health: $out"; return 1; }
  create || return 1
  start_grpc_watch "$EDGE1_GRPC_ADDR" "$file"
  wait_state "$file" PENDING 10 >/dev/null || { echo "no PENDING on the stream: $(cat "$file.err")"; return 1; }
  expect_phone scan "$EDGE2_URL" edge-2 || return 1
  wait_state "$file" SCANNED 10 >/dev/null || { echo "the stream never printed SCANNED"; return 1; }
  expect_phone confirm "$EDGE2_URL" edge-2 || return 1
  got="$(wait_state "$file" CONFIRMED 10)" || { echo "the stream never printed CONFIRMED"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 ]] || { echo "redeem returned HTTP $STATUS"; return 1; }
  wait_state "$file" REDEEMED 10 >/dev/null || { echo "the stream never printed REDEEMED"; return 1; }
  for _ in $(seq 1 50); do kill -0 "$GRPC_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$GRPC_PID" 2>/dev/null && { echo "grpcurl still running after REDEEMED"; return 1; }
  wait "$GRPC_PID"
  rc=$?
  ((rc == 0)) || { echo "grpcurl exited $rc: $(cat "$file.err")"; return 1; }
  echo "grpcurl list/health on $EDGE1_GRPC_ADDR; WatchLoginSession direct to edge-1 printed $(states "$file" | awk '{print $1}' | tr '\n' ' ')(CONFIRMED v${got% *} from ${got#* }) for scan and confirm direct to edge-2 and a redeem via HAProxy; the stream ended OK"
}

check_cancel() {
  local file="$WORK/watch-cancel" got
  create || return 1
  start_watcher_on_edge1 ws "$file" || return 1
  http DELETE "$EDGE2_URL/v1/login-sessions/$SID" '' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 && "$NODE" == edge-2 ]] || { echo "cancel returned HTTP $STATUS from $NODE: $BODY"; return 1; }
  got="$(wait_state "$file" CANCELLED 10)" || { echo "watcher never saw CANCELLED"; return 1; }
  echo "$WATCH_PATH; DELETE direct to edge-2; CANCELLED v${got% *} delivered by ${got#* }"
}

check_deny() {
  local file="$WORK/watch-deny" got
  create || return 1
  start_watcher_on_edge1 longpoll "$file" || return 1
  expect_phone scan "$EDGE2_URL" edge-2 || return 1
  wait_state "$file" SCANNED 10 >/dev/null || { echo "watcher never saw SCANNED"; return 1; }
  expect_phone deny "$EDGE2_URL" edge-2 || return 1
  got="$(wait_state "$file" DENIED 25)" || { echo "watcher never saw DENIED"; return 1; }
  echo "$WATCH_PATH; scan and deny direct to edge-2; DENIED v${got% *} delivered by ${got#* }"
}

# Expiry reaches a watcher. With a short PENDING deadline (e2e.sh --start sets
# 15 s) the session is left alone; otherwise it is confirmed and left
# unredeemed until the CONFIRMED deadline (30 s by default).
check_expiry() {
  local file="$WORK/watch-expiry" got which limit
  create || return 1
  start_watcher_on_edge1 sse "$file" || return 1
  which="PENDING"
  limit="$TTL"
  if ((TTL > 40)); then
    expect_phone scan "$HTTP_URL" '' || return 1
    expect_phone confirm "$HTTP_URL" '' || return 1
    which="CONFIRMED"
    limit="$(python3 -c '
import json, sys
from datetime import datetime
d = json.loads(sys.argv[1])
p = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print(round((p(d["expires_at"]) - p(d["updated_at"])).total_seconds()))' "$BODY")"
    ((limit <= 40)) || { echo "deadlines are ${TTL}s (PENDING) and ${limit}s (CONFIRMED); start the cluster with QRLOGIN_PENDING_TTL=15s for a bounded run"; return 1; }
  fi
  got="$(wait_state "$file" EXPIRED $((limit + 8)))" || { echo "no EXPIRED within $((limit + 8))s of a ${limit}s $which deadline"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 409 || "$STATUS" == 410 ]] || { echo "redeem after expiry returned HTTP $STATUS"; return 1; }
  echo "$WATCH_PATH; ${limit}s $which deadline passed; EXPIRED v${got% *} delivered by ${got#* }; redeem afterwards HTTP $STATUS $(json error.code <<<"$BODY")"
}

# Kill edge-1 (SIGKILL) under a WebSocket and an SSE watcher of a SCANNED
# session; confirm on edge-2 while they reconnect; both end CONFIRMED.
check_edge_kill() {
  local ws_file="$WORK/kill-ws" sse_file="$WORK/kill-sse" stomp_file="$WORK/kill-stomp" n f got deadline
  create || return 1
  expect_phone scan "$EDGE2_URL" edge-2 || return 1
  start_node_watcher "$ws_file" ws --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  start_node_watcher "$sse_file" sse --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  start_node_watcher "$stomp_file" stomp --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  for f in "$ws_file" "$sse_file" "$stomp_file"; do
    n="$(wait_open "$f" 10)" || { echo "watcher did not open: $(tail -n 2 "$f")"; return 1; }
    [[ "$n" == edge-1 ]] || { echo "watcher landed on $n, not edge-1"; return 1; }
    wait_state "$f" SCANNED 10 >/dev/null || { echo "watcher saw no SCANNED before the kill"; return 1; }
  done
  "$HERE/ctl.sh" kill edge-1 2>/dev/null
  expect_phone confirm "$EDGE2_URL" edge-2 || return 1
  for f in "$ws_file" "$sse_file" "$stomp_file"; do
    got="$(wait_state "$f" CONFIRMED 20)" || { echo "a watcher never saw CONFIRMED after the kill: $(tail -n 3 "$f" | tr '\n' ' ')"; return 1; }
    [[ "${got#* }" == edge-2 ]] || { echo "CONFIRMED came from ${got#* }, expected edge-2"; return 1; }
    grep -q '"event":"drop"' "$f" || { echo "the watcher never saw its connection drop"; return 1; }
  done
  "$HERE/ctl.sh" start edge-1 >/dev/null 2>&1 || { echo "edge-1 did not come back"; return 1; }
  deadline=$((SECONDS + 15))
  until haproxy_server_up edge-1; do
    ((SECONDS < deadline)) || { echo "HAProxy did not mark edge-1 up again"; return 1; }
    sleep 0.2
  done
  echo "WebSocket, SSE and STOMP (watch.mjs) via HAProxy on edge-1; SIGKILL edge-1; confirm direct to edge-2; all three reconnected via HAProxy to edge-2 and got CONFIRMED v${got% *}; edge-1 restarted and back in HAProxy"
}

# Stop edge-1 gracefully (SIGTERM) under a WebSocket and an SSE watcher: it
# drains (WebSocket close 1012, SSE stream ended), both resume on edge-2, and
# a confirm made then reaches them.
check_edge_drain() {
  local ws_file="$WORK/drain-ws" sse_file="$WORK/drain-sse" stomp_file="$WORK/drain-stomp" n f got stopper deadline
  create || return 1
  expect_phone scan "$EDGE2_URL" edge-2 || return 1
  start_node_watcher "$ws_file" ws --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  start_node_watcher "$sse_file" sse --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  start_node_watcher "$stomp_file" stomp --want-node=edge-1 --reconnect --until=CONFIRMED --timeout=45
  for f in "$ws_file" "$sse_file" "$stomp_file"; do
    n="$(wait_open "$f" 10)" || { echo "watcher did not open: $(tail -n 2 "$f")"; return 1; }
    [[ "$n" == edge-1 ]] || { echo "watcher landed on $n, not edge-1"; return 1; }
    wait_state "$f" SCANNED 10 >/dev/null || { echo "watcher saw no SCANNED before the drain"; return 1; }
  done
  "$HERE/ctl.sh" stop edge-1 >/dev/null 2>&1 &
  stopper=$!
  deadline=$((SECONDS + 10))
  until grep -q '"event":"drop"' "$ws_file" && grep -q '"event":"drop"' "$sse_file" && grep -q '"event":"drop"' "$stomp_file"; do
    ((SECONDS < deadline)) || { echo "watchers were not told to leave within 10s of SIGTERM"; wait "$stopper"; return 1; }
    sleep 0.1
  done
  grep -q '"reason":"closed 1012' "$ws_file" || { echo "WebSocket closed without 1012: $(grep '"drop"' "$ws_file")"; wait "$stopper"; return 1; }
  if ! grep -q '"reason":"closed 1012' "$stomp_file" || ! grep -q '"message":"draining"' "$stomp_file"; then
    echo "STOMP ended without ERROR draining and 1012: $(grep -E '"(drop|error)"' "$stomp_file" | tr '\n' ' ')"
    wait "$stopper"
    return 1
  fi
  expect_phone confirm "$EDGE2_URL" edge-2 || { wait "$stopper"; return 1; }
  for f in "$ws_file" "$sse_file" "$stomp_file"; do
    got="$(wait_state "$f" CONFIRMED 15)" || { echo "a watcher never saw CONFIRMED after the drain: $(tail -n 3 "$f" | tr '\n' ' ')"; wait "$stopper"; return 1; }
    [[ "${got#* }" == edge-2 ]] || { echo "CONFIRMED came from ${got#* }, expected edge-2"; wait "$stopper"; return 1; }
  done
  wait "$stopper"
  "$HERE/ctl.sh" start edge-1 >/dev/null 2>&1 || { echo "edge-1 did not come back"; return 1; }
  deadline=$((SECONDS + 15))
  until haproxy_server_up edge-1; do
    ((SECONDS < deadline)) || { echo "HAProxy did not mark edge-1 up again"; return 1; }
    sleep 0.2
  done
  echo "WebSocket, SSE and STOMP (watch.mjs) via HAProxy on edge-1; SIGTERM edge-1; WebSocket closed with 1012, the SSE stream ended, STOMP got ERROR draining (retry-after-ms) and 1012; all resumed via HAProxy on edge-2; confirm direct to edge-2 reached them (CONFIRMED v${got% *}); edge-1 restarted"
}

# Restart NATS while sessions wait: their state survives (JetStream file
# store), the edges reconnect, and confirms made afterwards reach the watchers.
check_nats_restart() {
  local ids=() secrets=() tokens=() files=() i got f deadline t0 down
  for i in 1 2; do
    create || return 1
    expect_phone scan "$HTTP_URL" '' || return 1
    ids+=("$SID")
    secrets+=("$SECRET")
    tokens+=("$USER_TOKEN")
    f="$WORK/nats-$i"
    files+=("$f")
    if ((i == 1)); then t="ws"; else t="sse"; fi
    start_node_watcher "$f" "$t" --reconnect --until=CONFIRMED --timeout=60
    wait_state "$f" SCANNED 10 >/dev/null || { echo "watcher $i saw no SCANNED"; return 1; }
  done
  t0=$SECONDS
  "$HERE/ctl.sh" stop nats 2>/dev/null
  down=0
  SID="${ids[0]}"
  SECRET="${secrets[0]}"
  USER_TOKEN="${tokens[0]}"
  phone confirm "$HTTP_URL"
  [[ "$STATUS" == 503 ]] && down=1
  "$HERE/ctl.sh" start nats >/dev/null 2>&1 || { echo "nats did not start again"; return 1; }
  deadline=$((SECONDS + 30))
  until component_ready edge-1 && component_ready edge-2; do
    ((SECONDS < deadline)) || { echo "edges not ready 30s after NATS came back"; return 1; }
    sleep 0.2
  done
  # HAProxy took the edges out while NATS was down; it needs two good checks.
  until haproxy_server_up edge-1 && haproxy_server_up edge-2; do
    ((SECONDS < deadline)) || { echo "HAProxy did not take the edges back within 30s"; return 1; }
    sleep 0.2
  done
  local back=$((SECONDS - t0))
  for i in 0 1; do
    SID="${ids[i]}"
    SECRET="${secrets[i]}"
    USER_TOKEN="${tokens[i]}"
    http GET "$HTTP_URL/v1/login-sessions/$SID" '' -H "$(auth_browser "$SECRET")"
    got="$(json state <<<"$BODY")"
    [[ "$got" == SCANNED || ("$i" == 0 && "$got" == CONFIRMED) ]] || { echo "session $((i + 1)) reads $got (HTTP $STATUS) after the restart"; return 1; }
    if [[ "$got" == SCANNED ]]; then
      deadline=$((SECONDS + 15))
      until phone confirm "$HTTP_URL" && [[ "$STATUS" == 200 ]]; do
        ((SECONDS < deadline)) || { echo "confirm kept failing after the restart: HTTP $STATUS $BODY"; return 1; }
        sleep 0.3
      done
    fi
  done
  for f in "${files[@]}"; do
    wait_state "$f" CONFIRMED 20 >/dev/null || { echo "a watcher never saw CONFIRMED: $(tail -n 3 "$f" | tr '\n' ' ')"; return 1; }
  done
  local during="a confirm during the outage got HTTP $STATUS"
  ((down)) && during="a confirm during the outage was refused with 503"
  echo "2 SCANNED sessions kept their state across the NATS restart (edges back in HAProxy after ${back}s); $during; confirms after it reached both watchers (WebSocket and SSE via HAProxy)"
}

# --- run ---------------------------------------------------------------------------

for c in "${COMPONENTS[@]}"; do
  if ! component_ready "$c"; then
    echo "e2e: $c is not ready; start the cluster with deploy/local/up.sh (or run e2e.sh --start)" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
done
# The WebSocket client's package (pinned in web/tests/package-lock.json).
if [[ ! -d "$ROOT/web/tests/node_modules/ws" ]]; then
  "$ROOT/tools/bootstrap.sh" --node >&2 || {
    echo "e2e: could not install web/tests packages (tools/bootstrap.sh --node)" >&2
    echo "0 passed, 1 failed"
    exit 1
  }
fi

http POST "$HTTP_URL/v1/dev/token" '{"user_id":"alice","display_name":"Alice"}'
USER_TOKEN="$(json token <<<"$BODY")"
GRPC_TOKEN="$("$AUTH_BIN" dev-token --key "$KEY_DIR/user-token.pem" --sub alice --name Alice 2>/dev/null)"
if [[ -z "$USER_TOKEN" || -z "$GRPC_TOKEN" ]]; then
  echo "e2e: could not get development user tokens (POST /v1/dev/token: HTTP $STATUS)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# A TLS cluster (up.sh --tls): NATS requires TLS, auth refuses plaintext
# and answers over TLS verified against the local CA. (Every other check
# then runs with auth and the edges on tls:// and the edges on https.)
check_tls() {
  local info out
  info="$(python3 - "$QRLOGIN_LOCAL_NATS_PORT" <<'PY'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
line = b""
while not line.endswith(b"\r\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    line += chunk
print(json.loads(line.split(b" ", 1)[1]).get("tls_required", False))
PY
  )" || { echo "cannot read NATS's INFO line"; return 1; }
  [[ "$info" == True ]] || { echo "NATS does not require TLS (tls_required: $info)"; return 1; }
  if out="$("$GRPCURL" -plaintext -connect-timeout 3 "$AUTH_ADDR" list 2>&1)"; then
    echo "auth answered a plaintext call: $out"
    return 1
  fi
  out="$("$GRPCURL" "${GRPCURL_AUTH_TLS[@]}" -connect-timeout 5 "$AUTH_ADDR" grpc.health.v1.Health/Check 2>&1)" ||
    { echo "auth over TLS: $out"; return 1; }
  [[ "$out" == *SERVING* ]] || { echo "auth over TLS: $out"; return 1; }
  echo "NATS says tls_required; a plaintext gRPC call to auth fails; over TLS (local CA) auth answers SERVING"
}

label_of() {
  case "$1" in
    poll) echo "short polling" ;; longpoll) echo "long polling" ;; sse) echo "SSE" ;;
    ws) echo "WebSocket" ;; stomp) echo "STOMP" ;; grpc) echo "gRPC watch" ;;
  esac
}
if [[ "$QRLOGIN_LOCAL_TLS" == true ]]; then
  check "TLS: NATS and auth refuse plaintext clients" check_tls
fi
if ((NATS_CLUSTERED)); then
  check "NATS cluster: members routed to each other, the session bucket at three replicas" check_nats_cluster
fi
for t in poll longpoll sse ws stomp grpc; do
  label="$(label_of "$t")"
  check "$label: watcher on edge-1 gets SCANNED and CONFIRMED made on edge-2" check_transport "$t"
  check "$label: redeem works once, a repeat gets the same token" check_redeem "$t"
done
for t in longpoll sse ws stomp grpc; do
  check "$(label_of "$t"): confirm→event latency through the balancer" check_latency "$t" 5
done
check "gRPC: confirm straight to auth reaches a watcher on edge-1" check_grpc
check "gRPC watch: grpcurl streams a login from edge-1 and the stream ends" check_grpc_watch
check "README: the grpcurl examples run as written" check_readme_grpcurl
check "cancel reaches a watcher" check_cancel
check "deny reaches a watcher" check_deny
check "expiry reaches a watcher" check_expiry
check "edge-1 killed while watchers wait: they resume on edge-2 and miss nothing" check_edge_kill
check "edge-1 drained (SIGTERM) while watchers wait: they move to edge-2" check_edge_drain
if ((NATS_CLUSTERED)); then
  check "NATS member leading the session stream killed while sessions wait: logins go on, it rejoins" check_nats_member_kill
else
  check "NATS restarted while sessions wait: nothing is lost" check_nats_restart
fi
check "attack: an observer scans first and confirms; the browser is told who, nothing redeems" check_observer_confirms
check "attack: a relayed QR code, the phone picks a wrong number: DENIED" check_wrong_match
check "attack: a replaced QR payload is refused (qr_replaced)" check_replaced_qr
check "attack: a stolen browser secret alone cannot redeem" check_stolen_secret

summary="$passed passed, $failed failed"
((skipped)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))

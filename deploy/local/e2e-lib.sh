# shellcheck shell=bash
# Helpers of deploy/local/e2e.sh: HTTP and JSON, sessions, and the watchers
# (short and long polling and SSE with curl, WebSocket, STOMP (stompjs) and
# SSE with watch.mjs, the gRPC watch stream with grpcurl). Sourced by e2e.sh after lib.sh; uses its WORK and BG_PIDS.
# Results go to globals that the checks read: STATUS NODE BODY (http), SID
# SECRET VERSION TTL QR_PAYLOAD (create), WATCH_PATH and REISSUES (watchers).
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

# create: a new session through HAProxy; sets SID, SECRET, VERSION, TTL
# (seconds to the deadline) and QR_PAYLOAD. Each session gets a phone user
# of its own (display name Alice): auth counts scans and confirms per user
# (QRLOGIN_SCAN_LIMIT, QRLOGIN_CONFIRM_LIMIT), and these checks confirm more
# logins a minute than one person would.
create() {
  local token
  token="$(curl -sS --max-time 5 -H 'Content-Type: application/json' \
    --data "{\"user_id\":\"alice-$RANDOM$RANDOM\",\"display_name\":\"Alice\"}" \
    "$HTTP_URL/v1/dev/token" | json token 2>/dev/null)"
  [[ -n "$token" ]] && USER_TOKEN="$token"
  http POST "$HTTP_URL/v1/login-sessions" '{}'
  if [[ "$STATUS" != 201 ]]; then
    echo "create returned HTTP $STATUS: $BODY"
    return 1
  fi
  { read -r SID; read -r SECRET; read -r VERSION; read -r QR_PAYLOAD; } < <(json session_id browser_secret version qr_payload <<<"$BODY")
  TTL="$(python3 -c '
import json, sys
from datetime import datetime
d = json.loads(sys.argv[1])
p = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print(round((p(d["expires_at"]) - p(d["updated_at"])).total_seconds()))' "$BODY")"
}

# phone ACTION BASE [TOKEN]: scan/confirm/deny as Alice (or TOKEN's user) on
# the given base URL, as a person does: a scan sends the QR payload on the
# browser's screen (QR_PAYLOAD, from create), a confirm picks the number the
# browser shows (shown_match_code).
phone() {
  local body='{}'
  case "$1" in
    scan) body="{\"qr_payload\":\"$QR_PAYLOAD\"}" ;;
    confirm) body="{\"match_code\":$(shown_match_code)}" ;;
  esac
  http POST "$2/v1/login-sessions/$SID/$1" "$body" -H "Authorization: Bearer ${3:-$USER_TOKEN}"
}

# shown_match_code: the number the browser shows after SCANNED, read with the
# browser secret from edge-2 (no watcher of these checks polls there, so the
# read keeps within the poll pace; a 429 slow_down waits its Retry-After).
shown_match_code() {
  local b status code i
  for i in 1 2 3; do
    b="$(curl -sS --max-time 5 -w '\n%{http_code}' -H "$(auth_browser "$SECRET")" "$EDGE2_URL/v1/login-sessions/$SID")" || b=''
    status="${b##*$'\n'}"
    if [[ "$status" == 429 ]]; then
      sleep 2
      continue
    fi
    code="$(json match_code <<<"${b%$'\n'*}" 2>/dev/null)"
    echo "${code:-0}"
    return 0
  done
  echo 0
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
    # Lines a timestamping watcher wrote start with their arrival time.
    parts = line.split(" ", 1)
    if len(parts) == 2 and parts[0].replace(".", "", 1).isdigit():
        line = parts[1].strip()
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

# Short polling of edge-1 (direct) at the pace every answer asks for
# (poll_interval_ms) until a final or CONFIRMED state.
start_short_poll() {
  local file="$1"
  (
    while :; do
      b="$(curl -sS --max-time 5 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID")" || b=''
      echo "$b" >>"$file"
      case "$b" in *'"state":"CONFIRMED"'* | *'"state":"REDEEMED"'* | *'"state":"DENIED"'* | *'"state":"CANCELLED"'* | *'"state":"EXPIRED"'*) exit 0 ;; esac
      pace="$(json poll_interval_ms <<<"$b" 2>/dev/null)"
      [[ -n "$pace" ]] || pace="$(json error.poll_interval_ms <<<"$b" 2>/dev/null)"
      sleep "$(python3 -c 'import sys; print(int(sys.argv[1] or 2000) / 1000)' "${pace:-2000}")"
    done
  ) >/dev/null 2>&1 &
  BG_PIDS+=($!)
}

# Long polling of edge-1 (direct): one plain GET for the current snapshot,
# then GETs with since=<newest version>, qr=<epoch of the QR payload held>
# (while PENDING) and wait=20s, as the browser client asks: a poll for less
# than it was answered is answered at once and paced like a short poll.
start_long_poll() {
  local file="$1"
  (
    held_qr() { json qr_payload <<<"$1" 2>/dev/null | sed -n 's/.*#\([0-9][0-9]*\)\..*/\&qr=\1/p'; }
    b="$(curl -sS --max-time 5 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID")" || b=''
    echo "$b" >>"$file"
    since="$(json version <<<"$b" 2>/dev/null)"
    [[ -n "$since" ]] || since="$VERSION"
    qr="$(held_qr "$b")"
    while :; do
      b="$(curl -sS --max-time 30 -H "$(auth_browser "$SECRET")" "$EDGE1_URL/v1/login-sessions/$SID?since=$since$qr&wait=20s")" || b=''
      echo "$b" >>"$file"
      v="$(json version <<<"$b" 2>/dev/null)" || v=''
      [[ -n "$v" ]] && since="$v" && qr="$(held_qr "$b")"
      case "$b" in *'"state":"CONFIRMED"'* | *'"state":"REDEEMED"'* | *'"state":"DENIED"'* | *'"state":"CANCELLED"'* | *'"state":"EXPIRED"'*) exit 0 ;; esac
      # Nothing or an error (slow_down included): not at once again.
      [[ -z "$v" ]] && sleep 0.5
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

# grpc_lines: grpcurl's stream of pretty-printed LoginSession messages on
# stdin -> one line per message on stdout, "ARRIVAL-SECONDS JSON" with the
# JSON snapshot's names (state without its LOGIN_STATE_ prefix).
grpc_lines() {
  python3 -u -c '
import json, sys, time
buf = []
for line in iter(sys.stdin.readline, ""):
    buf.append(line)
    if line.rstrip("\n") != "}":
        continue
    try:
        m = json.loads("".join(buf))
    except ValueError:
        buf = []
        continue
    buf = []
    state = m.get("state", "").replace("LOGIN_STATE_", "")
    out = {"state": state, "version": int(m.get("version", 0)), "node": m.get("node")}
    print(f"{time.time():.6f} {json.dumps(out)}", flush=True)
'
}

# start_grpc_watch ADDR FILE: grpcurl WatchLoginSession on ADDR (an edge's
# gRPC port or HAProxy's), the secret as authorization metadata, options
# before the address; messages go to FILE as stamped JSON lines, grpcurl's
# errors to FILE.err. Sets GRPC_PID (`wait $GRPC_PID` gives its status).
start_grpc_watch() {
  local addr="$1" file="$2"
  "$GRPCURL" -plaintext -H "authorization: Bearer $SECRET" -d "{\"session_id\":\"$SID\"}" \
    "$addr" qrlogin.watch.v1.LoginWatch/WatchLoginSession 2>"$file.err" > >(grpc_lines >>"$file") &
  GRPC_PID=$!
  BG_PIDS+=("$GRPC_PID")
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
    ws | stomp)
      local label=WebSocket
      [[ "$transport" == stomp ]] && label="STOMP (stompjs)"
      start_node_watcher "$file" "$transport" --want-node=edge-1 --until=CONFIRMED --timeout=40
      node="$(wait_open "$file" 10)" || { echo "$label did not open: $(tail -n 2 "$file")"; return 1; }
      [[ "$node" == edge-1 ]] || { echo "$label landed on $node, not edge-1"; return 1; }
      WATCH_PATH="$label via HAProxy on edge-1 ($(grep -c '"event":"retry"' "$file") re-issued)"
      ;;
    grpc)
      # A gRPC connection through HAProxy's TCP frontend cannot be steered
      # to one edge either: it goes to edge-1's own gRPC port.
      start_grpc_watch "$EDGE1_GRPC_ADDR" "$file"
      WATCH_PATH="grpcurl WatchLoginSession direct to edge-1's gRPC port"
      ;;
  esac
  wait_state "$file" PENDING 10 >/dev/null || { echo "watcher saw no first snapshot"; return 1; }
  # Give a long poll time to be held by the edge before the phone acts.
  [[ "$transport" == longpoll ]] && sleep 0.3
  return 0
}

# --- latency through the balancer ---------------------------------------------------
# Confirm→event for one transport, the whole path through HAProxy: the
# watcher, the scan and the confirm all go to $HTTP_URL and land wherever
# the balancer sends them. The watcher stamps what it reads with the time of
# arrival (curl output through `stamp`; watch.mjs's "at"); the confirm's
# send time is taken right before its request is written.

# stamp FILE: appends each line of stdin to FILE after its arrival time.
stamp() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    printf '%s %s\n' "${EPOCHREALTIME/,/.}" "$line"
  done >>"$1"
}

# arrived FILE STATE: prints "SECONDS NODE": when the first snapshot in STATE arrived, and from which edge.
arrived() {
  python3 -c '
import json, sys
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    at = None
    parts = line.split(" ", 1)
    if len(parts) == 2 and parts[0].replace(".", "", 1).isdigit():
        at, line = float(parts[0]), parts[1].strip()
    if line.startswith("data:"):
        line = line[5:].strip()
    try:
        doc = json.loads(line)
    except ValueError:
        continue
    if not isinstance(doc, dict) or doc.get("state") != sys.argv[2]:
        continue
    if at is None and "at" in doc:
        at = doc["at"] / 1000
    if at is not None:
        print(f"{at:.6f}", doc.get("node") or "-")
        sys.exit(0)
sys.exit(1)' "$1" "$2"
}

# timed_confirm BASE: confirm as Alice; sets STATUS and SENT (epoch seconds
# taken right before the request is written on an open connection; the
# answer goes to $WORK/confirm.body).
timed_confirm() {
  local out
  out="$(python3 - "$1" "$SID" "$USER_TOKEN" "$WORK/confirm.body" "$(shown_match_code)" <<'PY'
import http.client, sys, time, urllib.parse
base, sid, token, body_file, code = sys.argv[1:]
u = urllib.parse.urlsplit(base)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
c.connect()
sent = time.time()
c.request("POST", f"/v1/login-sessions/{sid}/confirm", body=('{"match_code": %d}' % int(code)).encode(),
          headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
r = c.getresponse()
open(body_file, "wb").write(r.read())
print(r.status, f"{sent:.6f}")
PY
)"
  read -r STATUS SENT <<<"$out"
}

# latency_sample TRANSPORT I: login I through HAProxy; appends "MS DELIVERING-NODE CONFIRM-NODE"
# to $WORK/latency-TRANSPORT. Every sample sends the same requests through
# round-robin, so odd samples add a short poll to change which edge the
# confirm lands on: both same-node and cross-node confirms are measured.
latency_sample() {
  local transport="$1" file="$WORK/lat-$1-$2" got since confirm_node
  create || return 1
  case "$transport" in
    sse)
      curl -sS -N --max-time 40 -H "$(auth_browser "$SECRET")" \
        "$HTTP_URL/v1/login-sessions/$SID/events" > >(stamp "$file") 2>>"$WORK/sse.err" &
      BG_PIDS+=($!)
      ;;
    ws | stomp)
      start_node_watcher "$file" "$transport" --until=CONFIRMED --timeout=30
      ;;
    grpc)
      start_grpc_watch "$GRPC_ADDR" "$file"
      ;;
  esac
  # Whether the watcher opens before or after the scan, SCANNED reaches it.
  expect_phone scan "$HTTP_URL" '' || return 1
  if [[ "$transport" == longpoll ]]; then
    since="$(json session.version <<<"$BODY")"
    curl -sS --max-time 40 -w '\n' -H "$(auth_browser "$SECRET")" \
      "$HTTP_URL/v1/login-sessions/$SID?since=$since&wait=20s" > >(stamp "$file") 2>>"$WORK/curl.err" &
    BG_PIDS+=($!)
    # Give the poll time to be held by an edge before the confirm.
    sleep 0.3
  else
    wait_state "$file" SCANNED 10 >/dev/null || { echo "$transport watcher never saw SCANNED"; return 1; }
  fi
  if (($2 % 2)); then http GET "$HTTP_URL/v1/login-sessions/$SID" '' -H "$(auth_browser "$SECRET")"; fi
  timed_confirm "$HTTP_URL"
  [[ "$STATUS" == 200 ]] || { echo "confirm returned HTTP $STATUS"; return 1; }
  confirm_node="$(json node <"$WORK/confirm.body")"
  wait_state "$file" CONFIRMED 10 >/dev/null || { echo "$transport watcher never saw CONFIRMED"; return 1; }
  got="$(arrived "$file" CONFIRMED)" || { echo "no arrival time for CONFIRMED in the $transport watcher"; return 1; }
  python3 -c 'import sys; print(f"{(float(sys.argv[1]) - float(sys.argv[2])) * 1000:.2f}", *sys.argv[3:])' \
    "${got% *}" "$SENT" "${got#* }" "${confirm_node:--}" >>"$WORK/latency-$transport"
  stop_watchers
}

# check_latency TRANSPORT SAMPLES: prints median and max confirm→event through
# HAProxy (gRPC: its TCP frontend; the rest: its HTTP frontend).
check_latency() {
  local transport="$1" n="$2" i
  rm -f "$WORK/latency-$transport"
  for i in $(seq 1 "$n"); do
    latency_sample "$transport" "$i" || return 1
  done
  python3 -c '
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
ms = sorted(float(r[0]) for r in rows)
cross = sum(1 for r in rows if r[1] != r[2])
med = statistics.median(ms)
note = "" if med < 50 else "; above 50 ms: is the balancer holding small writes? (docs/load-balancing.md)"
print(f"watcher, scan and confirm all via HAProxy; confirm->event median {med:.2f} ms, max {ms[-1]:.2f} ms over {len(ms)} logins ({cross} confirmed on another edge than the one holding the watcher){note}")
' "$WORK/latency-$transport"
}

# --- gRPC and HAProxy ----------------------------------------------------------------

# grpc METHOD: calls AuthService/METHOD for SID straight on auth, as Alice.
# grpc METHOD [FIELDS]: a phone-side call for SID, FIELDS being more JSON
# members (e.g. '"match_code":42').
grpc() {
  "$GRPCURL" "${GRPCURL_AUTH_TLS[@]}" -import-path "$ROOT/proto" -proto qrlogin/auth/v1/auth.proto \
    -H "authorization: Bearer $GRPC_TOKEN" -d "{\"session_id\":\"$SID\"${2:+,$2}}" \
    "$AUTH_ADDR" "qrlogin.auth.v1.AuthService/$1"
}

# True when HAProxy has the edge NAME up.
haproxy_server_up() { haproxy_server_up_in edges "$1"; }

# --- the README's grpcurl examples, run as written ---------------------------------
# readme_grpcurl_script: turns the README's "gRPC API (grpcurl)" block into a
# bash script that runs each line in order in one shell, from the
# repository's root, the way a reader pastes them: lines `NAME=...  # a.b
# from the answer` take field a.b of the previous command's JSON answer; a
# command followed by comment lines naming `Code: X` must fail with that
# code, every other command must succeed. The only edits are where this
# cluster differs from the README's defaults: the auth address, the
# binaries' directory and, in a TLS cluster (up.sh --tls), `-cacert <the
# local CA>` instead of `-plaintext` (every command of the block reaches auth).
# Prints the script on stdout.
readme_grpcurl_script() {
  python3 - "$ROOT/README.md" "$AUTH_ADDR" "$QRLOGIN_LOCAL_BIN_DIR" "${GRPCURL_AUTH_TLS[*]}" <<'PY'
import re, shlex, sys
readme, auth_addr, bin_dir, auth_tls = sys.argv[1:]
text = open(readme).read()
start = text.index("## gRPC API (grpcurl)")
block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
if not block:
    sys.exit("no ```sh block under '## gRPC API (grpcurl)' in README.md")
body = block.group(1).replace("127.0.0.1:50051", auth_addr)
body = body.replace("target/release/", bin_dir.rstrip("/") + "/")
# Every command of the block talks to auth.
if auth_tls != "-plaintext":
    body = body.replace("-plaintext", auth_tls)
lines, pending = [], ""
for raw in body.splitlines():
    if raw.endswith("\\"):
        pending += raw[:-1] + " "
        continue
    lines.append(pending + raw)
    pending = ""
steps = []  # [kind, text, expected code]
for line in lines:
    stripped = line.strip()
    if not stripped:
        continue
    if stripped.startswith("#"):
        code = re.search(r"Code:\s*(\w+)", stripped)
        if code and steps and steps[-1][0] == "run":
            steps[-1][2] = code.group(1)
        continue
    fill = re.match(r"^(\w+)=\.\.\.\s*#\s*(\S+)\s+from the answer", stripped)
    if fill:
        steps.append(["fill", fill.group(1), fill.group(2)])
    else:
        steps.append(["run", line, None])
out = ['cd "$1" || exit 1', 'D="$(mktemp -d)"', 'trap \'rm -rf "$D"\' EXIT', 'LAST=/dev/null',
       'ran=0; refused=0',
       'field() { python3 -c \'import json,sys\nv=json.load(open(sys.argv[1]))\nfor k in sys.argv[2].split("."): v=v.get(k) if isinstance(v,dict) else None\nprint(v if v is not None else "")\' "$@" 2>/dev/null; }',
       'fail() { echo "README grpcurl step $1 ($2): $3"; exit 1; }']
for n, (kind, a, b) in enumerate(steps, 1):
    if kind == "fill":
        out.append(f'{a}="$(field "$LAST" {shlex.quote(b)})"')
        out.append(f'[[ -n "${a}" ]] || fail {n} {shlex.quote(a + "=...")} "no {b} in the previous answer: $(head -c 300 "$LAST")"')
        continue
    label = shlex.quote(a.split("#")[0].strip()[:90])
    out.append("{ " + a + "\n} >\"$D/" + str(n) + '" 2>&1; rc=$?')
    if b:
        out.append(f'((rc != 0)) && grep -q "Code: {b}" "$D/{n}" || fail {n} {label} "expected the documented error {b}, got rc=$rc: $(tail -n 3 "$D/{n}" | tr "\\n" " ")"')
        out.append("refused=$((refused + 1))")
    else:
        out.append(f'((rc == 0)) || fail {n} {label} "rc=$rc: $(tail -n 3 "$D/{n}" | tr "\\n" " ")"')
        out.append(f'[[ -s "$D/{n}" ]] && LAST="$D/{n}"')
    out.append("ran=$((ran + 1))")
out.append('echo "$ran commands of the README'"'"'s grpcurl block ran as written against $2 ($refused refused with the documented error)"')
print("\n".join(out))
PY
}

check_readme_grpcurl() {
  readme_grpcurl_script >"$WORK/readme-grpcurl.sh" || { echo "cannot read the README's grpcurl block"; return 1; }
  bash "$WORK/readme-grpcurl.sh" "$ROOT" "$AUTH_ADDR"
}

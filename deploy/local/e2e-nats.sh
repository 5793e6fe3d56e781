# shellcheck shell=bash
# Checks of deploy/local/e2e.sh on a NATS cluster (up.sh --nats-cluster;
# sourced after e2e-lib.sh, same globals): the cluster is what it says
# (routes, the session bucket at three replicas, routes over TLS with
# --tls), and logins go on while the member that leads the session
# bucket's stream is killed and comes back.

# nats_stream_info: the session stream as its leader's monitoring port
# reports it (a follower knows little of the other followers), as JSON ({}
# when no member claims it).
nats_stream_info() {
  local m
  for m in "${NATS_MEMBERS[@]}"; do
    python3 - "$m" "$(nats_monitor_url "$m")" "$SESSION_STREAM" <<'PY' && return 0
import json, sys, urllib.request
name, url, stream = sys.argv[1:]
try:
    with urllib.request.urlopen(f"{url}/jsz?accounts=true&streams=true&config=true", timeout=2) as r:
        jsz = json.load(r)
except (OSError, ValueError):
    sys.exit(1)
for account in jsz.get("account_details") or []:
    for s in account.get("stream_detail") or []:
        if s.get("name") == stream and (s.get("cluster") or {}).get("leader") == name:
            print(json.dumps(s))
            sys.exit(0)
sys.exit(1)
PY
  done
  echo '{}'
}

# Every member routes to the two others (over verified TLS with --tls), and
# the session bucket's stream has three replicas, all current.
check_nats_cluster() {
  local m routes info replicas current leader tls=""
  for m in "${NATS_MEMBERS[@]}"; do
    routes="$(curl -fsS --max-time 2 "$(nats_monitor_url "$m")/routez" | json num_routes)" ||
      { echo "$m's /routez does not answer"; return 1; }
    ((routes >= 2)) || { echo "$m has $routes routes, expected 2 or more"; return 1; }
    if [[ "$QRLOGIN_LOCAL_TLS" == true ]]; then
      [[ "$(curl -fsS --max-time 2 "$(nats_monitor_url "$m")/varz" | json cluster.tls_required cluster.tls_verify | tr '\n' ' ')" == "True True " ]] ||
        { echo "$m's routes are not over verified TLS"; return 1; }
      tls=", over verified TLS"
    fi
  done
  info="$(nats_stream_info)"
  { read -r replicas; read -r leader; } < <(json config.num_replicas cluster.leader <<<"$info")
  [[ "$replicas" == 3 ]] || { echo "$SESSION_STREAM has ${replicas:-no} replicas configured, expected 3: $info"; return 1; }
  current="$(python3 -c '
import json, sys
c = json.loads(sys.argv[1]).get("cluster") or {}
print(sum(1 for r in c.get("replicas") or [] if r.get("current")))' "$info")"
  [[ "$current" == 2 ]] || { echo "$SESSION_STREAM has $current current followers, expected 2: $info"; return 1; }
  echo "${NATS_MEMBERS[*]} route to each other$tls; $SESSION_STREAM has 3 replicas, led by $leader, both followers current"
}

# Kill (SIGKILL) the member leading the session bucket's stream while two
# SCANNED sessions wait with watchers (WebSocket and SSE, via HAProxy).
# Another member takes over; a confirm made right after the kill goes
# through (retried while auth answers 503 during the election); a whole new
# login (create, scan, confirm, redeem) succeeds with the member down; the
# member restarts on its ports and store and is current again (/healthz);
# a confirm after that reaches its watcher too.
check_nats_member_kill() {
  local ids=() secrets=() tokens=() files=() i f t victim leader t0 took refused=() deadline
  for i in 1 2; do
    create || return 1
    expect_phone scan "$HTTP_URL" '' || return 1
    ids+=("$SID") secrets+=("$SECRET") tokens+=("$USER_TOKEN")
    f="$WORK/nats-kill-$i"
    files+=("$f")
    if ((i == 1)); then t=ws; else t=sse; fi
    start_node_watcher "$f" "$t" --reconnect --until=CONFIRMED --timeout=90
    wait_state "$f" SCANNED 10 >/dev/null || { echo "watcher $i saw no SCANNED"; return 1; }
  done
  victim="$("$HERE/ctl.sh" leader 2>/dev/null)" || { echo "no member leads $SESSION_STREAM"; return 1; }
  t0=$SECONDS
  "$HERE/ctl.sh" kill "$victim" 2>/dev/null
  SID="${ids[0]}" SECRET="${secrets[0]}" USER_TOKEN="${tokens[0]}"
  deadline=$((SECONDS + 30))
  until phone confirm "$HTTP_URL" && [[ "$STATUS" == 200 ]]; do
    ((SECONDS < deadline)) || { echo "no confirm went through within 30s of killing $victim: HTTP $STATUS $BODY"; return 1; }
    refused+=("$STATUS")
    sleep 0.3
  done
  took=$((SECONDS - t0))
  leader="$("$HERE/ctl.sh" leader 2>/dev/null)" || leader=""
  [[ -n "$leader" && "$leader" != "$victim" ]] || { echo "after killing $victim the stream is led by '${leader:-nobody}'"; return 1; }
  wait_state "${files[0]}" CONFIRMED 20 >/dev/null || { echo "watcher 1 never saw CONFIRMED: $(tail -n 3 "${files[0]}" | tr '\n' ' ')"; return 1; }
  # A whole login while the member is down.
  create || return 1
  expect_phone scan "$HTTP_URL" '' || return 1
  expect_phone confirm "$HTTP_URL" '' || return 1
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 ]] || { echo "redeem with $victim down returned HTTP $STATUS: $BODY"; return 1; }
  "$HERE/ctl.sh" start "$victim" >/dev/null 2>&1 || { echo "$victim did not come back (healthy) on its store"; return 1; }
  SID="${ids[1]}" SECRET="${secrets[1]}" USER_TOKEN="${tokens[1]}"
  deadline=$((SECONDS + 15))
  until phone confirm "$HTTP_URL" && [[ "$STATUS" == 200 ]]; do
    ((SECONDS < deadline)) || { echo "confirm after $victim came back: HTTP $STATUS $BODY"; return 1; }
    sleep 0.3
  done
  wait_state "${files[1]}" CONFIRMED 20 >/dev/null || { echo "watcher 2 never saw CONFIRMED: $(tail -n 3 "${files[1]}" | tr '\n' ' ')"; return 1; }
  echo "SIGKILL $victim (leader of $SESSION_STREAM); $leader took over; a confirm went through ${took}s after the kill (refused before: ${refused[*]:-none}); a whole login (create, scan, confirm, redeem) with $victim down; $victim back on its store and current; both watchers (WebSocket, SSE via HAProxy) got CONFIRMED"
}

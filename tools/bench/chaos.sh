#!/usr/bin/env bash
# Chaos benchmark (DESIGN.md, "One NATS node is not a cluster"): whole
# logins at a steady rate through HAProxy (create, watch, scan, confirm on
# the other edge, CONFIRMED pushed, redeem), round-robin over SSE,
# WebSocket, STOMP, the gRPC stream and long polling, while a fault
# schedule runs against the local cluster on three NATS servers
# (deploy/local/up.sh --nats-cluster). Per scenario one line: logins
# started, completed, told an outcome, lost (silent past their deadline),
# duplicated (two outcomes or two tokens), confirm→event p50/p99 inside and
# outside the fault window, recovery (fault → first completed login, and →
# p99 back to normal). A scenario passes with lost 0 and duplicated 0.
#
#   tools/bench/chaos.sh [--quick] [--no-build] [--scenario NAME ...]
#
# Scenarios (all by default, in this order):
#   none            one NATS server, no fault: the baseline that "p99
#                   outside the fault window" is compared with
#   steady          three NATS servers, no fault: the same on R3, which
#                   parts replication's cost from a fault's aftermath
#   leader-kill     SIGKILL of the member leading the session bucket's
#                   stream, started again later
#   member-kill     SIGKILL of a member the edges are connected to (a
#                   follower of the stream when one holds an edge); started
#                   again later
#   freeze          SIGSTOP of a member holding clients (a follower when
#                   one does) for longer than their ping interval
#                   (QRLOGIN_NATS_PING_INTERVAL), then SIGCONT
#                   (member-kill and freeze say so when every client sat on
#                   the stream's leader and the fault hit it)
#   lame-duck       lame duck mode on the member leading the stream (it hands
#                   over, moves its clients away and exits); restarted later
#   rolling         every component restarted in turn, as `kubectl rollout
#                   restart` does (SIGTERM, drain, start, ready, next):
#                   nats-1..3, auth-1, auth-2, edge-1, edge-2
#   edge-auth-kill  SIGKILL of an edge every few seconds (started again at
#                   once) and of an auth replica, during a leader kill
#   (a network partition is not run: see docs/benchmarks.md, "Chaos")
#
# --quick: 15 s of logins per scenario at 10/s (the test command's
# chaos-quick step); without it 60 s at 40/s. Either way logins go on
# until the last fault command has ended (a repair, a rolling restart) and
# 3 s more.
# QRLOGIN_CHAOS_RATE, QRLOGIN_CHAOS_DURATION (seconds) and
# QRLOGIN_CHAOS_DEADLINE (per login) override the preset.
#
# The cluster gets ports of its own (a free block from
# QRLOGIN_CHAOS_PORT_BASE, default 27100) and its own run directory, so it
# clashes neither with a demo cluster nor with the test command's others.
# Results: artifacts/bench/chaos/ (SCENARIO.json with every login's
# record, SCENARIO.log with the driver's and the faults' output,
# cluster/logs/ with every component's log, summary.txt). Last line:
# "N passed, N failed"; exit status 1 when a scenario lost or duplicated
# a login.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
LOCAL="$ROOT/deploy/local"
ALL=(none steady leader-kill member-kill freeze lame-duck rolling edge-auth-kill)

quick=0
build=1
scenarios=()
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --scenario)
      shift
      (($#)) || bench_die "--scenario needs a name"
      scenarios+=("$1")
      ;;
    --scenario=*) scenarios+=("${1#--scenario=}") ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) bench_die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
((${#scenarios[@]})) || scenarios=("${ALL[@]}")
for s in "${scenarios[@]}"; do
  [[ " ${ALL[*]} " == *" $s "* ]] || bench_die "unknown scenario '$s' (one of: ${ALL[*]})"
done

if ((quick)); then
  rate="${QRLOGIN_CHAOS_RATE:-10}" duration="${QRLOGIN_CHAOS_DURATION:-15}"
else
  rate="${QRLOGIN_CHAOS_RATE:-40}" duration="${QRLOGIN_CHAOS_DURATION:-60}"
fi
deadline="${QRLOGIN_CHAOS_DEADLINE:-20}"

((build)) || export QRLOGIN_BENCH_NO_BUILD=1
bench_build
OUT="${QRLOGIN_BENCH_RUN_DIR:-$ROOT/artifacts/bench}/chaos"
# A cluster left running by an interrupted run is stopped before its pid
# files go.
if [[ -d "$OUT/cluster/pids" ]]; then
  QRLOGIN_LOCAL_RUN_DIR="$OUT/cluster" "$LOCAL/down.sh" >/dev/null 2>&1 || true
fi
rm -rf "$OUT"
mkdir -p "$OUT"
machine_line | tee "$OUT/summary.txt"
started_at=$(date +%s)

# --- the cluster --------------------------------------------------------------

# The first block of 40 ports from the base that are all free.
port_base() {
  python3 - "${QRLOGIN_CHAOS_PORT_BASE:-27100}" <<'PY'
import socket, sys
base = int(sys.argv[1])
for start in range(base, 60000, 50):
    ok = True
    for p in range(start, start + 40):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(start)
        sys.exit(0)
sys.exit(1)
PY
}

base="$(port_base)" || bench_die "no block of 40 free ports from ${QRLOGIN_CHAOS_PORT_BASE:-27100}"
export QRLOGIN_LOCAL_RUN_DIR="$OUT/cluster"
export QRLOGIN_LOCAL_HTTP_PORT=$((base + 0)) QRLOGIN_LOCAL_STATS_PORT=$((base + 1))
export QRLOGIN_LOCAL_EDGE1_PORT=$((base + 2)) QRLOGIN_LOCAL_EDGE2_PORT=$((base + 3))
export QRLOGIN_LOCAL_GRPC_PORT=$((base + 4))
export QRLOGIN_LOCAL_EDGE1_GRPC_PORT=$((base + 5)) QRLOGIN_LOCAL_EDGE2_GRPC_PORT=$((base + 6))
export QRLOGIN_LOCAL_EDGE1_OPS_PORT=$((base + 7)) QRLOGIN_LOCAL_EDGE2_OPS_PORT=$((base + 8))
# auth-N on AUTH_PORT + N, its operations port on AUTH_OPS_PORT + N - 1.
export QRLOGIN_LOCAL_AUTH_PORT=$((base + 10)) QRLOGIN_LOCAL_AUTH_OPS_PORT=$((base + 14))
# nats-N on each of these + N - 1.
export QRLOGIN_LOCAL_NATS_PORT=$((base + 20)) QRLOGIN_LOCAL_NATS_MONITOR_PORT=$((base + 24))
export QRLOGIN_LOCAL_NATS_ROUTE_PORT=$((base + 28))
export QRLOGIN_LOCAL_PUBLIC_URL="http://127.0.0.1:$QRLOGIN_LOCAL_HTTP_PORT"

# Limits fit for load from one host, as the other benchmarks set them
# (lib.sh): every login comes from 127.0.0.1 and one phone user confirms
# them all. PENDING lives well past a login's deadline.
export QRLOGIN_CREATE_RATE_PER_IP=100000000 QRLOGIN_CREATE_LIMIT=0
export QRLOGIN_SCAN_LIMIT=0 QRLOGIN_CONFIRM_LIMIT=0
export QRLOGIN_MAX_CONCURRENT_REQUESTS=8192
export QRLOGIN_PENDING_TTL=120s
# A rolling restart drains each edge; 3 s is plenty for these clients.
export QRLOGIN_DRAIN_DEADLINE="${QRLOGIN_DRAIN_DEADLINE:-3s}"
export RUST_LOG="${QRLOGIN_BENCH_LOG:-info}"

ctl() { "$LOCAL/ctl.sh" "$@"; }

cluster_up() {
  local nodes="$1"
  bench_log "starting the local cluster ($nodes NATS server(s)) on ports $base-$((base + 39)) in $QRLOGIN_LOCAL_RUN_DIR"
  if ((nodes > 1)); then
    "$LOCAL/up.sh" --detach --no-build --nats-cluster >"$OUT/up-$nodes.log" 2>&1 ||
      { tail -n 30 "$OUT/up-$nodes.log" >&2; bench_die "the cluster did not start (see $OUT/up-$nodes.log)"; }
  else
    QRLOGIN_LOCAL_NATS_NODES=1 "$LOCAL/up.sh" --detach --no-build >"$OUT/up-$nodes.log" 2>&1 ||
      { tail -n 30 "$OUT/up-$nodes.log" >&2; bench_die "the cluster did not start (see $OUT/up-$nodes.log)"; }
  fi
  cluster_nodes="$nodes"
}

cluster_down() {
  "$LOCAL/down.sh" >>"$OUT/down.log" 2>&1 || true
  cluster_nodes=0
}
cluster_nodes=0
trap cluster_down EXIT
trap 'exit 130' INT TERM

# Every component running, thawed and ready, and the session stream led:
# the state each scenario starts from.
restore() {
  local c pid tries
  while read -r c _; do
    [[ -n "$c" ]] || continue
    pid="$(ctl pid "$c" 2>/dev/null || true)"
    if [[ -z "$pid" ]]; then
      ctl start "$c" >>"$OUT/restore.log" 2>&1 || bench_die "restore: $c did not start (see $OUT/restore.log)"
    elif [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == T* ]]; then
      ctl thaw "$c" >>"$OUT/restore.log" 2>&1 || true
    fi
  done < <(ctl status 2>/dev/null)
  for ((tries = 0; tries < 60; tries++)); do
    if ! ctl status 2>/dev/null | grep -Eq 'stopped|not ready|frozen'; then
      if ((cluster_nodes == 1)) || ctl leader >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 0.5
  done
  ctl status >&2 || true
  bench_die "restore: the cluster is not whole again after 30 s"
}

# A NATS member holding clients (by their CONNECT names, from each member's
# /connz): a follower of the session stream holding the most edges (then
# auth replicas) when one holds an edge or an auth replica, else the member
# holding most.
client_member() {
  local leader ports=() i
  leader="$(ctl leader 2>/dev/null || true)"
  for ((i = 1; i <= 3; i++)); do ports+=($((QRLOGIN_LOCAL_NATS_MONITOR_PORT + i - 1))); done
  python3 - "$leader" "${ports[@]}" <<'PY'
import json, sys, urllib.request
leader, ports = sys.argv[1], sys.argv[2:]
rows = []
for i, port in enumerate(ports, 1):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/connz?limit=4096" % port, timeout=2) as r:
            conns = json.load(r).get("connections") or []
    except OSError:
        continue
    names = [c.get("name") or "" for c in conns]
    edges = sum(n.startswith("qrlogin-edge") for n in names)
    auths = sum(n.startswith("qrlogin-auth") for n in names)
    rows.append((edges, auths, "nats-%d" % i))
followers = [r for r in rows if r[2] != leader and r[0] + r[1] > 0]
pick = max(followers or rows or [(0, 0, "")])
if not pick[2]:
    sys.exit(1)
print(pick[2])
PY
}

# --- scenarios ----------------------------------------------------------------

# Times (driver seconds) of the fault schedule: the first fault at `f0`,
# the repair at `f1`, leaving a stretch without faults before and after.
if ((quick)); then f0=4 f1=11; else f0=15 f1=35; fi
# The clients' ping interval (auth and edges both read it): a freeze lasts
# longer than it, and the freeze target is this plus 2 s.
export QRLOGIN_NATS_PING_INTERVAL="${QRLOGIN_NATS_PING_INTERVAL:-1s}"
freeze_for=$((quick ? 5 : 10))

# The fault arguments of scenario $1 (one AT=COMMAND a line). Victims are
# chosen here, before the run, so that a fault command does nothing but its
# fault (a lookup inside it would delay the fault past its recorded start).
faults_of() {
  local C="$LOCAL/ctl.sh" member leader
  case "$1" in
    leader-kill | lame-duck | edge-auth-kill)
      leader="$(ctl leader)" || bench_die "no NATS member leads the session stream"
      echo "chaos: $1: the session stream's leader is $leader" >>"$OUT/$1.log"
      ;;
    member-kill | freeze)
      member="$(client_member)" || bench_die "no NATS member holds a client"
      leader="$(ctl leader 2>/dev/null || echo unknown)"
      echo "chaos: $1: chose $member (holds clients; the stream's leader is $leader)" >>"$OUT/$1.log"
      # When every client sits on the leader, the fault hits the leader too:
      # the summary says so (its recovery then includes an election).
      if [[ "$member" == "$leader" ]]; then echo "$member" >"$OUT/$1.victim-leads"; fi
      ;;
  esac
  case "$1" in
    none | steady) ;;
    leader-kill)
      echo "$f0=$C kill $leader"
      echo "$f1=$C start $leader"
      ;;
    member-kill)
      echo "$f0=$C kill $member"
      echo "$f1=$C start $member"
      ;;
    freeze)
      echo "$f0=$C freeze $member"
      echo "$((f0 + freeze_for))=$C thaw $member"
      ;;
    lame-duck)
      echo "$f0=$C ldm $leader"
      echo "$f1=$C restart $leader"
      ;;
    rolling)
      echo "$f0=$C restart nats && $C restart auth && $C restart edge-1 && $C restart edge-2"
      ;;
    edge-auth-kill)
      echo "$f0=$C kill $leader"
      echo "$((f0 + 1))=$C kill edge-1 && $C start edge-1"
      echo "$((f0 + 2))=$C kill auth-1"
      echo "$((f0 + 4))=$C kill edge-2 && $C start edge-2"
      echo "$((f0 + 5))=$C start auth-1"
      echo "$((f0 + 7))=$C kill edge-1 && $C start edge-1"
      echo "$f1=$C start $leader"
      ;;
  esac
}

token=""
run_scenario() {
  local name="$1" fault_args=() line status
  ctl status >"$OUT/$name.log" 2>&1 || true
  faults_of "$name" >"$OUT/$name.faults"
  while IFS= read -r line; do
    [[ -n "$line" ]] && fault_args+=(--fault "$line")
  done <"$OUT/$name.faults"
  bench_log "scenario $name: ${rate}/s for ${duration}s, $((${#fault_args[@]} / 2)) fault(s)"
  set +e
  # Logins go on until the last fault command has ended, and 3 s more.
  # The longest a run may take: that (the driver stops at 300 s past the
  # duration), the last login's deadline, and room for the driver's work.
  timeout $((duration + 300 + deadline + 60)) "$LOADGEN_BIN" chaos \
    --scenario "$name" --rate "$rate" --duration "${duration}s" \
    --after-faults 3s --login-deadline "${deadline}s" \
    --transports sse,ws,stomp,grpc,long-poll \
    --browser-url "http://127.0.0.1:$QRLOGIN_LOCAL_HTTP_PORT" \
    --grpc-url "127.0.0.1:$QRLOGIN_LOCAL_GRPC_PORT" \
    --phone-url "http://127.0.0.1:$QRLOGIN_LOCAL_EDGE1_PORT,http://127.0.0.1:$QRLOGIN_LOCAL_EDGE2_PORT" \
    --user-token "$token" \
    "${fault_args[@]}" \
    --json-out "$OUT/$name.json" >"$OUT/$name.out" 2>>"$OUT/$name.log"
  status=$?
  set -e
  cat "$OUT/$name.out" | tee -a "$OUT/summary.txt"
  if ((status == 0)); then
    passed+=("$name")
  else
    ((status == 1)) || echo "chaos $name: the driver ended with status $status (see $OUT/$name.log)" | tee -a "$OUT/summary.txt"
    failed+=("$name")
  fi
}

passed=()
failed=()
for name in "${scenarios[@]}"; do
  want=3
  [[ "$name" == none ]] && want=1
  if ((cluster_nodes != want)); then
    ((cluster_nodes == 0)) || cluster_down
    cluster_up "$want"
    token="$("$AUTH_BIN" dev-token --key "$QRLOGIN_LOCAL_RUN_DIR/keys/user-token.pem" --sub chaos-user --name "Chaos User" --ttl 2h)"
  fi
  restore
  run_scenario "$name"
done

python3 - "$OUT" "$QRLOGIN_NATS_PING_INTERVAL" "${scenarios[@]}" <<'PY' | tee -a "$OUT/summary.txt"
import json, os, re, sys
out, ping, names = sys.argv[1], sys.argv[2], sys.argv[3:]
m = re.fullmatch(r"([0-9.]+)\s*(ms|s)", ping.strip())
ping_s = (float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)) if m else 1.0
runs = {}
for n in names:
    try:
        runs[n] = json.load(open(os.path.join(out, n + ".json")))["summary"]
    except (OSError, ValueError, KeyError):
        pass
base = runs.get("none", {}).get("outside")
steady = runs.get("steady", {}).get("outside")
def worst(s, key):
    rec = s.get("recovery") or []
    vals = [r.get(key) for r in rec]
    if not vals:
        return None
    return None if any(v is None for v in vals) else max(vals)
for n in names:
    s = runs.get(n)
    if s is None or n == "none":
        continue
    first = worst(s, "to_first_login_s")
    notes = []
    def recovered(limit):
        if first is None:
            return "recovery never to first login (target %.1f s): missed" % limit
        return "recovery %.1f s to first login (target %.1f s): %s" % (first, limit, "met" if first <= limit else "missed")
    if n in ("leader-kill", "member-kill", "lame-duck", "edge-auth-kill"):
        notes.append(recovered(5.0))
    if n == "freeze":
        notes.append(recovered(ping_s + 2.0))
    leads = os.path.join(out, n + ".victim-leads")
    if os.path.exists(leads):
        notes.append("%s held the clients and led the stream, so the fault forced an election" % open(leads).read().strip())
    o = s.get("outside")
    if o and base:
        verdict = "no worse: met" if o["p99_ms"] <= base["p99_ms"] else "worse: missed"
        note = "p99 outside the window %.1f ms vs %.1f ms on one server (%s)" % (o["p99_ms"], base["p99_ms"], verdict)
        if steady and n != "steady":
            note += ", %.1f ms on three without a fault" % steady["p99_ms"]
        notes.append(note)
    if notes:
        print("target %s: %s" % (n, "; ".join(notes)))
PY
wall=$(($(date +%s) - started_at))
echo "chaos: ${#scenarios[@]} scenario(s) in ${wall} s (clients' NATS ping interval $QRLOGIN_NATS_PING_INTERVAL); results in $OUT" | tee -a "$OUT/summary.txt"
echo "${#passed[@]} passed, ${#failed[@]} failed" | tee -a "$OUT/summary.txt"
((${#failed[@]} == 0))

#!/usr/bin/env bash
# The Pushpin peer: Debian's pushpin (runner, condure, zurl, pushpin-proxy,
# pushpin-handler) started with a config generated from the packaged one in
# a temp dir, on free loopback ports; a GRIP origin (origin.mjs) that holds
# every GET /stream/<session> as an SSE stream on channel <session>; N
# waiting SSE clients (qrlogin-peer-sse, spread over processes and source
# addresses 127.0.0.2, .3, ...); one publish per session through the
# handler's HTTP publish API at each rate. Measures publish -> deliver
# latency, memory per idle SSE connection over all Pushpin processes, bytes
# per event and the connection setup rate.
#
#   tools/bench/peers/pushpin.sh --out FILE [--quick] [--waiting N] [--rates 500,1000]
#                                [--variants stock,no-rate-limit]
#
# Variants: "stock" is the packaged /etc/pushpin/pushpin.conf with only its
# paths and ports moved ([handler] message_rate=2500: the handler sends
# published messages in batches every 25 ms); "no-rate-limit" is the same
# with message_rate=0 (no shaping). Rows: README.md "Output".
set -euo pipefail
# shellcheck source=tools/bench/peers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

out=""
waiting=10000
rates=500,1000
variants=stock,no-rate-limit
quick=0
# --quick presets; explicit flags win over them.
set_waiting=0
set_rates=0
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --waiting) waiting="$2"; set_waiting=1; shift 2 ;;
    --rates) rates="$2"; set_rates=1; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    *) peers_die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[[ -n "$out" ]] || peers_die "--out FILE is required"
if [[ "$quick" == 1 ]]; then
  ((set_waiting)) || waiting=1000
  ((set_rates)) || rates=500
fi

[[ "${QRLOGIN_PEERS_NO_BOOTSTRAP:-0}" == 1 ]] || peers_bootstrap
for b in pushpin condure zurl pushpin-proxy pushpin-handler node; do
  command -v "$b" >/dev/null || peers_die "$b missing: run tools/bootstrap.sh --peers"
done
LOAD_BIN="${QRLOGIN_BENCH_BIN_DIR:-$ROOT/target/release}/qrlogin-peer-sse"
if [[ "${QRLOGIN_BENCH_NO_BUILD:-0}" != 1 ]]; then
  "$ROOT/tools/build-release.sh" -q || peers_die "build failed"
fi
[[ -x "$LOAD_BIN" ]] || peers_die "$LOAD_BIN is missing"
peers_init pushpin
machine_line >&2

# Writes $1/pushpin.conf (and its internal.conf) from the packaged files:
# run dir, logs, ipc prefix, client port and publish port moved; the
# handler's ZeroMQ publish sockets on ipc instead of fixed TCP ports; zurl
# (which the package runs as its own system service) started by the runner
# on the run dir's sockets. message_rate=$2 ("" keeps the packaged value).
write_config() {
  local dir="$1" rate="$2"
  python3 - "$dir" "$CLIENT_PORT" "$PUBLISH_PORT" "$ORIGIN_PORT" "$rate" "${QRLOGIN_PEERS_PUSHPIN_LOG_LEVEL:-}" <<'PY'
import re, sys
d, client_port, publish_port, origin_port, rate, log_level = sys.argv[1:]

def setkey(text, section, key, value):
    out, cur, done = [], None, False
    for line in text.split("\n"):
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            if cur == section and not done:
                out.append(f"{key}={value}")
                done = True
            cur = m.group(1)
        if cur == section and not done and re.match(rf"^#?{key}=", line):
            out.append(f"{key}={value}")
            done = True
            continue
        out.append(line)
    if not done:
        if cur != section:
            out.append(f"[{section}]")
        out.append(f"{key}={value}")
    return "\n".join(out)

internal = open("/usr/lib/pushpin/internal.conf").read()
internal = internal.replace("ipc:///var/run/zurl/zurl-", "ipc://{rundir}/{ipc_prefix}zurl-")
open(f"{d}/internal.conf", "w").write(internal)

conf = open("/etc/pushpin/pushpin.conf").read()
for section, key, value in [
    ("global", "include", f"{d}/internal.conf"),
    ("global", "rundir", f"{d}/run"),
    ("global", "ipc_prefix", "qrl-"),
    ("runner", "services", "condure,zurl,pushpin-proxy,pushpin-handler"),
    ("runner", "http_port", f"127.0.0.1:{client_port}"),
    ("runner", "logdir", f"{d}/log"),
    ("proxy", "routesfile", f"{d}/routes"),
    ("handler", "push_in_spec", "ipc://{rundir}/{ipc_prefix}push-in"),
    ("handler", "push_in_sub_specs", "ipc://{rundir}/{ipc_prefix}push-in-sub"),
    ("handler", "push_in_http_port", publish_port),
    ("handler", "command_spec", "ipc://{rundir}/{ipc_prefix}command"),
]:
    conf = setkey(conf, section, key, value)
if rate != "":
    conf = setkey(conf, "handler", "message_rate", rate)
if log_level != "":
    conf = setkey(conf, "runner", "log_level", log_level)
open(f"{d}/pushpin.conf", "w").write(conf)
open(f"{d}/routes", "w").write(f"* 127.0.0.1:{origin_port}\n")
PY
  mkdir -p "$dir/run" "$dir/log"
}

start_pushpin() {
  local dir="$1"
  CLIENT_PORT="$(free_port)"
  PUBLISH_PORT="$(free_port)"
  ORIGIN_PORT="$(free_port)"
  write_config "$dir" "$2"
  peers_spawn origin node "$PEERS_DIR/origin.mjs" --port "$ORIGIN_PORT"
  wait_log "$RUN/logs/origin.log" '^ready' 20 || peers_die "origin did not start"
  peers_spawn pushpin pushpin --config "$dir/pushpin.conf"
  wait_port 127.0.0.1 "$CLIENT_PORT" 30 || peers_die "pushpin did not listen (see $dir/log)"
  wait_port 127.0.0.1 "$PUBLISH_PORT" 30 || peers_die "pushpin-handler did not listen (see $dir/log)"
  wait_log "$RUN/logs/pushpin.log" 'started$' 30 || peers_die "pushpin did not start (see $RUN/logs/pushpin.log)"
  # Requests through the whole chain (proxy, zurl, origin, handler) before
  # measuring: until one is held, then again after a second. Right after
  # the runner says "started", the first requests may be refused with 502
  # while its processes' sockets connect.
  local i round
  for round in 1 2; do
    for ((i = 0; i < 100; i++)); do
      if python3 - "$CLIENT_PORT" "$round" <<'PY' 2>/dev/null; then break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(f"GET /stream/warmup{sys.argv[2]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
data = b""
while b"event: ready" not in data:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(1)
    data += chunk
PY
      sleep 0.1
    done
    ((i < 100)) || break
    [[ "$round" == 1 ]] && sleep 1
  done
  ((i < 100)) || peers_die "pushpin does not hold streams (see $dir/log)"
}

workers=$(((waiting + 4999) / 5000))
((workers < 2)) && workers=2
files=()
status=0
IFS=, read -r -a variant_list <<<"$variants"
for variant in "${variant_list[@]}"; do
  case "$variant" in
    stock) rate_setting="" ;;
    no-rate-limit) rate_setting=0 ;;
    *) peers_die "unknown variant $variant (stock, no-rate-limit)" ;;
  esac
  dir="$RUN/$variant"
  mkdir -p "$dir"
  start_pushpin "$dir" "$rate_setting"
  peers_log "pushpin ($variant, message_rate=$(sed -n 's/^message_rate=//p' "$dir/pushpin.conf")): clients :$CLIENT_PORT, publish :$PUBLISH_PORT, origin :$ORIGIN_PORT; $waiting waiting over $workers processes, rates $rates"
  timeout 900 "$LOAD_BIN" run --target "127.0.0.1:$CLIENT_PORT" --publish "127.0.0.1:$PUBLISH_PORT" \
    --waiting "$waiting" --rates "$rates" --workers "$workers" --src-first 2 \
    --connect-timeout 240s --deliver-timeout 30s \
    --measure-tree "pushpin=$(pid_of pushpin)" --measure "origin=$(pid_of origin)" \
    --system pushpin --variant "$variant" --transport sse --json-out "$dir/rows.json" || status=1
  [[ -f "$dir/rows.json" ]] && files+=("$dir/rows.json")
  peers_stop pushpin 10
  peers_stop origin 5
done

((${#files[@]})) || peers_die "no results"
extra="$(python3 -c 'import json,sys; print(json.dumps({"versions": {"pushpin": sys.argv[1], "condure": sys.argv[2], "zurl": sys.argv[3], "node (origin)": sys.argv[4]}, "quick": sys.argv[5] == "1"}))' \
  "$(deb_version pushpin)" "$(deb_version condure)" "$(deb_version zurl)" "$(node --version)" "$quick")"
merge_rows "$out" "$extra" "${files[@]}"
peers_log "wrote $out"
exit "$status"

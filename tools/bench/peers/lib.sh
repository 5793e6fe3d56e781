# shellcheck shell=bash
# Shared by the peer harnesses (pushpin.sh, socketio.sh, run.sh): a run
# directory in a temp dir, processes started in their own process group and
# all stopped on exit, free loopback ports, bounded waits. Sourced, not run.

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS_DIR/../../.." && pwd)"

peers_log() { printf 'peers: %s\n' "$*" >&2; }
peers_die() {
  printf 'peers: error: %s\n' "$*" >&2
  exit 1
}

# Creates $RUN (a temp dir, or $QRLOGIN_PEERS_RUN_DIR/NAME) and arms the
# exit trap that stops every process started with peers_spawn. The run dir
# is removed at a successful exit unless QRLOGIN_PEERS_KEEP=1.
peers_init() {
  local name="$1"
  if [[ -n "${QRLOGIN_PEERS_RUN_DIR:-}" ]]; then
    RUN="$QRLOGIN_PEERS_RUN_DIR/$name"
    rm -rf "$RUN"
    mkdir -p "$RUN"
  else
    RUN="$(mktemp -d "${TMPDIR:-/tmp}/qrlogin-peers-$name.XXXXXX")"
  fi
  mkdir -p "$RUN/pids" "$RUN/logs"
  trap peers_exit EXIT
  trap 'exit 130' INT TERM
}

peers_exit() {
  local status=$?
  peers_stop_all
  if [[ "$status" == 0 && "${QRLOGIN_PEERS_KEEP:-0}" != 1 && -z "${QRLOGIN_PEERS_RUN_DIR:-}" ]]; then
    rm -rf "$RUN"
  elif [[ -n "${RUN:-}" ]]; then
    peers_log "logs kept in $RUN"
  fi
  exit "$status"
}

# Starts "$@" as NAME in a new session (its own process group), output to
# $RUN/logs/NAME.log.
peers_spawn() {
  local name="$1"
  shift
  setsid "$@" >>"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name"
}

# The pid of a component, empty (and success) when it is not running: under
# `set -e` a failing `pid="$(pid_of x)"` would end the caller (an exit trap
# that stops what is already stopped would turn a passed run into status 1).
pid_of() { cat "$RUN/pids/$1" 2>/dev/null || true; }

# Stops NAME's whole process group: SIGTERM, SIGKILL after $2 s (default 5).
peers_stop() {
  local name="$1" limit="${2:-5}" pid i
  pid="$(pid_of "$name")"
  [[ -n "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < limit * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/pids/$name"
}

peers_stop_all() {
  local f
  [[ -n "${RUN:-}" && -d "$RUN/pids" ]] || return 0
  for f in "$RUN"/pids/*; do
    [[ -f "$f" ]] && peers_stop "$(basename "$f")" 5
  done
  return 0
}

# A TCP port free on $1 (default 127.0.0.1) right now.
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

# Waits (at most $3 s, default 20) until $1:$2 accepts a connection.
wait_port() {
  local addr="$1" port="$2" limit="${3:-20}" i
  for ((i = 0; i < limit * 20; i++)); do
    if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# Waits (at most $3 s) until file $1 contains a line matching $2.
wait_log() {
  local file="$1" pattern="$2" limit="${3:-20}" i
  for ((i = 0; i < limit * 20; i++)); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# PIDs of $1 and all its descendants, one a line.
pid_tree() {
  local all
  all="$(ps -e -o pid=,ppid=)"
  awk -v root="$1" '{ parent[$1] = $2 } END {
    keep[root] = 1; changed = 1
    while (changed) { changed = 0
      for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
    for (p in keep) print p }' <<<"$all"
}

# `--measure NAME=PID` arguments for every process under $1 (NAME from
# /proc/PID/comm, numbered when repeated).
measure_tree_args() {
  local p name seen=" "
  for p in $(pid_tree "$1"); do
    name="$(cat "/proc/$p/comm" 2>/dev/null)" || continue
    while [[ "$seen" == *" $name "* ]]; do name="$name+"; done
    seen+="$name "
    printf -- '--measure %s=%s ' "$name" "$p"
  done
}

machine_line() {
  local os
  os="$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)"
  printf 'machine: %s cores, %s GiB RAM, %s, kernel %s; load average %s\n' "$(nproc)" \
    "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$os" "$(uname -r)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# Debian packages the peers need (installs them when missing, never starts
# their system services): tools/bootstrap.sh --peers.
peers_bootstrap() {
  "$ROOT/tools/bootstrap.sh" --peers >&2 || peers_die "tools/bootstrap.sh --peers failed"
}

# npm packages of the Socket.IO peer, from the lockfile (npm ci), skipped
# when the installed tree matches the lockfile.
peers_npm() {
  local stamp="$PEERS_DIR/node_modules/.qrlogin-lock-sum" sum
  sum="$(sha256sum "$PEERS_DIR/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$sum" ]]; then
    peers_log "installing the peers' npm packages (npm ci)"
    (cd "$PEERS_DIR" && npm ci --no-audit --no-fund --silent) || peers_die "npm ci failed"
    echo "$sum" >"$stamp"
  fi
}

# merge_rows OUT EXTRA_JSON FILE...: the rows (JSON arrays) of every FILE,
# each given the keys of EXTRA_JSON it lacks, written to OUT as one array.
merge_rows() {
  local out="$1" extra="$2"
  shift 2
  python3 - "$out" "$extra" "$@" <<'PY'
import json, sys
out, extra, files = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
rows = []
for f in files:
    with open(f) as fh:
        for row in json.load(fh):
            for k, v in extra.items():
                row.setdefault(k, v)
            rows.append(row)
with open(out, "w") as fh:
    json.dump(rows, fh, indent=1)
    fh.write("\n")
PY
}

# Installed version of Debian package $1.
deb_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }

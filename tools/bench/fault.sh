#!/usr/bin/env bash
# Runs a sequence of faults against a benchmark cluster (started by the
# other scripts here), one step after another:
#
#   tools/bench/fault.sh RUN_DIR STEP...
#
#   sleep:SECONDS      wait
#   kill:NAME          SIGKILL the component (edge-N, auth, nats, or a
#                      member nats-N of a QRLOGIN_BENCH_NATS_NODES=3 run)
#   stop:NAME          SIGTERM (SIGKILL after 10 s) and wait until it is gone
#   start:NAME         start it again with the same settings and wait until
#                      it is up (an edge: until /readyz says 200)
#   restart:NAME       SIGTERM (SIGKILL after 10 s), then start:NAME
#
# Benchmarks pass it to `qrlogin-loadgen run --on-confirm`, so the faults
# hit while confirms are flowing. Exits non-zero when a step fails.
set -euo pipefail

# shellcheck source=tools/bench/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
[[ $# -ge 1 && -f "$1/cluster.env" ]] || bench_die "usage: fault.sh RUN_DIR STEP... (RUN_DIR holds cluster.env)"
bench_load "$1"
shift

t0=$(date +%s%N)
say() { printf 'fault: +%dms %s\n' "$((($(date +%s%N) - t0) / 1000000))" "$*" >&2; }

start() {
  case "$1" in
    nats) start_nats ;;
    nats-[0-9]*)
      [[ -n "$(nats_port "$1")" ]] || bench_die "no such NATS member: $1"
      start_nats_member "$1"
      wait_nats_member "$1"
      ;;
    auth) start_auth ;;
    edge-*) [[ -n "$(edge_port "$1")" ]] || bench_die "no such edge: $1"; start_edge "$1" ;;
    *) bench_die "unknown component: $1" ;;
  esac
}

for step in "$@"; do
  action="${step%%:*}"
  arg="${step#*:}"
  case "$action" in
    sleep) sleep "$arg" ;;
    kill)
      pid="$(pid_of "$arg")"
      [[ -n "$pid" ]] || bench_die "$arg is not running"
      kill -KILL "$pid"
      while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
      rm -f "$RUN/pids/$arg"
      say "killed $arg (SIGKILL, pid $pid)"
      ;;
    stop) stop_component "$arg" 10; say "stopped $arg (SIGTERM)" ;;
    start) start "$arg"; say "started $arg (pid $(pid_of "$arg"))" ;;
    restart)
      stop_component "$arg" 10
      say "stopped $arg (SIGTERM)"
      start "$arg"
      say "started $arg again (pid $(pid_of "$arg"))"
      ;;
    *) bench_die "unknown step '$step' (sleep:S, kill:NAME, stop:NAME, start:NAME, restart:NAME)" ;;
  esac
done

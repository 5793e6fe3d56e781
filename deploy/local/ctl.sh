#!/usr/bin/env bash
# Acts on one component of the running local cluster, for demos and for the
# failure checks of e2e.sh.
#
#   deploy/local/ctl.sh status
#   deploy/local/ctl.sh kill    NAME   SIGKILL, as a crash would
#   deploy/local/ctl.sh stop    NAME   SIGTERM and wait (an edge drains first)
#   deploy/local/ctl.sh start   NAME   start it again and wait until ready
#   deploy/local/ctl.sh restart NAME   stop, then start
#   deploy/local/ctl.sh pid     NAME   print its pid (exit 1 if not running)
#
# NAME is one of nats, auth, edge-1, edge-2, haproxy.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"
name="${2:-}"
case "$cmd" in
  status)
    for c in "${COMPONENTS[@]}"; do
      if is_running "$c"; then
        ready=ready
        component_ready "$c" || ready="not ready"
        printf '%-8s running (pid %s), %s\n' "$c" "$(component_pid "$c")" "$ready"
      else
        printf '%-8s stopped\n' "$c"
      fi
    done
    ;;
  kill | stop | start | restart | pid)
    [[ -n "$name" ]] || { usage >&2; exit 2; }
    component_port_vars "$name" >/dev/null
    case "$cmd" in
      pid) pid="$(component_pid "$name")"; [[ -n "$pid" ]] || exit 1; echo "$pid" ;;
      kill) kill_component "$name"; log "$name killed" ;;
      stop) stop_component "$name"; log "$name stopped" ;;
      start | restart)
        [[ "$cmd" == restart ]] && stop_component "$name"
        is_running "$name" && die "$name is already running (pid $(component_pid "$name"))"
        check_ports_free "$name"
        start_component "$name"
        wait_ready "$name" 60 || die "$name did not become ready"
        log "$name started (pid $(component_pid "$name"))"
        ;;
    esac
    ;;
  -h | --help | "") usage ;;
  *) usage >&2; exit 2 ;;
esac

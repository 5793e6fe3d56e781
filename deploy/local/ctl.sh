#!/usr/bin/env bash
# Acts on the components of the running local cluster, for demos, for the
# failure checks of e2e.sh and for chaos runs.
#
#   deploy/local/ctl.sh status         every component: running (pid), ready,
#                                      frozen; the NATS members' roles
#   deploy/local/ctl.sh kill    NAME   SIGKILL, as a crash would
#   deploy/local/ctl.sh stop    NAME   SIGTERM and wait (an edge drains first)
#   deploy/local/ctl.sh start   NAME   start it again and wait until ready
#   deploy/local/ctl.sh restart NAME   stop, then start (a group: one member
#                                      after the other, each ready before the next)
#   deploy/local/ctl.sh freeze  NAME   SIGSTOP: it hangs with its connections open
#   deploy/local/ctl.sh thaw    NAME   SIGCONT
#   deploy/local/ctl.sh ldm     NAME   a NATS member's lame duck mode: it hands
#                                      over what it leads, its clients move
#                                      away, and it exits by itself once they
#                                      are gone (31 s at most); restart brings
#                                      it back on its ports and store
#   deploy/local/ctl.sh pid     NAME   print its pid (exit 1 if not running)
#   deploy/local/ctl.sh leader         the NATS member leading the session
#                                      bucket's stream (also: nats-leader)
#   deploy/local/ctl.sh meta-leader    the NATS member leading JetStream's meta group
#
# NAME is one of nats, auth, edge-1, edge-2, haproxy; on a cluster started
# with --nats-cluster one of nats-1, nats-2, nats-3, auth-1, auth-2, edge-1,
# edge-2, haproxy, where "nats" and "auth" name the group (every member;
# pid prints one a line). A frozen component still counts as running;
# stop and down.sh thaw it (SIGCONT after SIGTERM), kill needs no thaw.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# One line per component; a NATS member gets its roles.
status() {
  local c line roles stream meta
  roles="$(nats_roles 2>/dev/null || true)"
  stream="$(awk '$1 == "stream" { print $2 }' <<<"$roles")"
  meta="$(awk '$1 == "meta" { print $2 }' <<<"$roles")"
  for c in "${COMPONENTS[@]}"; do
    if ! is_running "$c"; then
      printf '%-8s stopped\n' "$c"
      continue
    fi
    line="running (pid $(component_pid "$c")), "
    if is_frozen "$c"; then
      line+="frozen"
    elif component_ready "$c"; then
      line+="ready"
    else
      line+="not ready"
    fi
    if [[ "$c" == nats* ]] && ((NATS_CLUSTERED)); then
      local role=""
      [[ "$c" == "$stream" ]] && role+=", $SESSION_STREAM leader"
      [[ "$c" == "$meta" ]] && role+=", meta leader"
      line+="${role:-, follower}"
    fi
    printf '%-8s %s\n' "$c" "$line"
  done
}

cmd="${1:-}"
name="${2:-}"
case "$cmd" in
  status) status ;;
  leader | nats-leader)
    nats_stream_leader || die "no NATS member names a leader of $SESSION_STREAM (no quorum, or no bucket yet)"
    ;;
  meta-leader)
    nats_meta_leader || die "no NATS member names a JetStream meta leader"
    ;;
  kill | stop | start | restart | pid | freeze | thaw | ldm)
    [[ -n "$name" ]] || { usage >&2; exit 2; }
    mapfile -t members < <(members_of "$name")
    ((${#members[@]})) || exit 1
    case "$cmd" in
      pid)
        missing=0
        for c in "${members[@]}"; do
          pid="$(component_pid "$c")"
          if [[ -n "$pid" ]]; then echo "$pid"; else missing=1; fi
        done
        exit "$missing"
        ;;
      kill)
        for c in "${members[@]}"; do kill_component "$c"; done
        log "${members[*]} killed"
        ;;
      stop)
        stop_together "${members[@]}"
        log "${members[*]} stopped"
        ;;
      freeze | thaw)
        signal=STOP done=frozen
        [[ "$cmd" == thaw ]] && signal=CONT done=thawed
        for c in "${members[@]}"; do
          pid="$(component_pid "$c")"
          [[ -n "$pid" ]] || die "$c is not running"
          kill "-$signal" "$pid"
        done
        log "${members[*]} $done"
        ;;
      ldm)
        ((${#members[@]} == 1)) || die "ldm one member at a time (one of ${members[*]})"
        [[ "$name" == nats* ]] || die "ldm is NATS's lame duck mode; $name is not a NATS member"
        is_frozen "$name" && die "$name is frozen; thaw it first"
        nats_lame_duck "$name"
        log "$name in lame duck mode: it moves its clients away and exits once they are gone, within ${NATS_LAME_DUCK_SECONDS}s (then: deploy/local/ctl.sh restart $name)"
        ;;
      start)
        for c in "${members[@]}"; do
          is_running "$c" && die "$c is already running (pid $(component_pid "$c"))"
        done
        check_ports_free "${members[@]}"
        start_and_wait 60 "${members[@]}" || die "${members[*]} did not become ready"
        log "${members[*]} started"
        ;;
      restart)
        # One member after the other: the group keeps serving.
        for c in "${members[@]}"; do
          stop_component "$c"
          check_ports_free "$c"
          start_and_wait 60 "$c" || die "$c did not become ready"
          log "$c restarted (pid $(component_pid "$c"))"
        done
        ;;
    esac
    ;;
  -h | --help | "") usage ;;
  *) usage >&2; exit 2 ;;
esac

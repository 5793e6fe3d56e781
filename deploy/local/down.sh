#!/usr/bin/env bash
# Stops the local cluster started by up.sh (foreground or --detach): HAProxy
# first, then the edges (SIGTERM: they drain), auth and NATS. Logs, keys and
# the NATS store stay in deploy/local/run/; --clean removes them too.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

clean=0
for arg in "$@"; do
  case "$arg" in
    --clean) clean=1 ;;
    -h | --help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

any=0
for c in "${COMPONENTS[@]}" prometheus; do is_running "$c" && any=1; done
if ((any)); then
  stop_all
  log "local cluster stopped; logs in $LOG_DIR"
else
  log "no local cluster is running"
fi
if ((clean)); then
  rm -rf "$RUN_DIR"
  log "removed $RUN_DIR"
fi

#!/usr/bin/env bash
# Both peers of the comparison, one after the other, into one JSON array:
# Pushpin (stock and without its publish rate limit, SSE) and Socket.IO
# with the Redis adapter (WebSocket latency and memory; long polling behind
# round-robin). tools/bench/compare.sh calls this, or the two scripts.
#
#   tools/bench/peers/run.sh [--quick] [--out FILE] [--waiting N] [--rates R1,R2] [--polling-sessions M]
#
# --quick: 1,000 waiting clients, one rate (500/s), 100 long-poll sessions,
# about a minute for both peers (after the first build). Full: 10,000
# waiting at 500/s and 1,000/s, 200 long-poll sessions. --waiting, --rates
# and --polling-sessions (passed on to both scripts) win over either.
# Default output: artifacts/bench/peers/<UTC time>/peers.json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
quick=()
scale=()
pp_scale=()
out=""
while (($#)); do
  case "$1" in
    --quick) quick=(--quick); shift ;;
    --waiting|--rates) scale+=("$1" "$2"); pp_scale+=("$1" "$2"); shift 2 ;;
    --polling-sessions) scale+=("$1" "$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$out" ]]; then
  out="$root/artifacts/bench/peers/$(date -u +%Y%m%dT%H%M%SZ)/peers.json"
fi
mkdir -p "$(dirname "$out")"
parts="$(mktemp -d "${TMPDIR:-/tmp}/qrlogin-peers-run.XXXXXX")"
trap 'rm -rf "$parts"' EXIT
"$root/tools/bootstrap.sh" --peers >&2
status=0
QRLOGIN_PEERS_NO_BOOTSTRAP=1 "$here/pushpin.sh" "${quick[@]}" "${pp_scale[@]}" --out "$parts/pushpin.json" || status=1
QRLOGIN_PEERS_NO_BOOTSTRAP=1 "$here/socketio.sh" "${quick[@]}" "${scale[@]}" --out "$parts/socketio.json" || status=1
python3 - "$out" "$parts"/*.json <<'PY'
import json, sys
rows = []
for f in sys.argv[2:]:
    rows += json.load(open(f))
json.dump(rows, open(sys.argv[1], "w"), indent=1)
open(sys.argv[1], "a").write("\n")
PY
echo "peers: wrote $out ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$out") rows)" >&2
exit "$status"

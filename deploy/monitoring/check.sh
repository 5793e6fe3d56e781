#!/usr/bin/env bash
# Offline checks of the monitoring files (no Prometheus running):
#   promtool check rules   deploy/monitoring/rules/*.yml
#   promtool test rules    deploy/monitoring/tests/*.yml (input series, expected alerts)
#   the Kubernetes PrometheusRule is generated from those rules (render-k8s.py --check)
#   the dashboard parses and every panel query names a datasource
# The queries against live series: deploy/monitoring/test-queries.sh.
# Last line: "N passed, N failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MON="$ROOT/deploy/monitoring"
PY="$ROOT/.tools/venv/bin/python"
passed=0
failed=0
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

check() {
  local name="$1"
  shift
  if "$@" >"$out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/       /' "$out" | tail -40
  fi
}

if ! command -v promtool >/dev/null; then
  echo "promtool missing: run tools/bootstrap.sh --monitoring"
  echo "0 passed, 1 failed"
  exit 1
fi
check "promtool check rules" promtool check rules "$MON"/rules/*.yml
check "promtool test rules" promtool test rules "$MON"/tests/*.yml
check "PrometheusRule generated from the rules (no drift)" "$PY" "$MON/render-k8s.py" --check
check "dashboard: every panel query names the datasource" "$PY" - "$MON/grafana/qrlogin.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
bad = [p["title"] for p in d["panels"] if p.get("type") != "row"
       and (not p.get("targets") or any(not t.get("expr") or t.get("datasource", {}).get("uid") != "${datasource}" for t in p["targets"]))]
assert not bad, bad
assert d["uid"] == "qrlogin" and any(v["name"] == "datasource" for v in d["templating"]["list"])
PY
echo "$passed passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests and the container build. No
# cluster and no container engine needed; uses the pinned tools of
# tools/bootstrap.sh (.tools/) and kubectl.
#
#   deploy/k8s/check.sh
#
# 1. `kubectl kustomize` renders base and every overlay.
# 2. Every rendered object validates (kubernetes-validate --strict) against
#    Kubernetes 1.30, the oldest version we support (lifecycle.preStop.sleep
#    is GA there), and against the newest schema the validator ships. So do
#    the Secrets make-secrets.sh would create. The monitoring component's
#    PodMonitors and PrometheusRule (overlays/prod-monitoring) are CRD
#    objects kubernetes-validate has no schema for: they are set aside here
#    and checked structurally by test_manifests.py (checks/monitoring_checks.py),
#    and the PrometheusRule must be what deploy/monitoring/render-k8s.py makes
#    of deploy/monitoring/rules/.
# 3. The invariant test deploy/k8s/test_manifests.py (see its docstring);
#    with a built qrlogin-auth it also holds every NATS ConfigMap to the
#    rules the local cluster and the tests render their nats.conf from
#    (`qrlogin-auth dev-nats-config`, services/auth/src/nats_accounts.rs):
#    drift is a failed check (checks/nats_source.py).
# 4. checkov's Kubernetes policies over the production renderings
#    (overlays/prod and overlays/prod-monitoring, as kubectl would apply
#    them): no failed check. A policy that does not fit a resource is skipped
#    there by a `checkov.io/skipN: CKV_K8S_NN=reason` annotation, each listed
#    in docs/operations.md; a skip without a reason fails, and so does a
#    rendering checkov could not parse. Offline: no API key, nothing
#    downloaded, no update check, and no .checkov.yaml: only its own flags.
# 5. Shell scripts parse (bash -n; shellcheck and hadolint too when present).
#
# Prints one line per check, then `N passed, N failed`; exits 1 on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
K8S="$ROOT/deploy/k8s"
TOOLS="$ROOT/.tools"
PY="$TOOLS/venv/bin/python"
VALIDATE="$TOOLS/bin/kubernetes-validate"
CHECKOV="$TOOLS/bin/checkov"
KUBECTL="${KUBECTL:-kubectl}"
OLDEST_K8S="1.30.0"

passed=0
failed=0
skipped=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "skip $*"; }

# check NAME -- COMMAND...: runs COMMAND, shows its output only on failure.
check() {
  local name="$1"
  shift 2
  if "$@" >"$work/out" 2>&1; then
    ok "$name"
  else
    bad "$name"
    sed 's/^/       /' "$work/out" | tail -40
  fi
}

# keys_ok DIR: the private keys are Ed25519 and readable by the owner only.
keys_ok() {
  local key
  for key in "$1/access-token.pem" "$1/user-token.pem"; do
    openssl pkey -in "$key" -noout -text | grep -q '^ED25519 Private-Key' || return 1
    [[ "$(stat -c %a "$key")" == 600 ]] || { echo "$key is not mode 600"; return 1; }
  done
  openssl pkey -pubin -in "$1/user-token.pub.pem" -noout
}

# auth_signs BINARY DIR: qrlogin-auth reads the generated key and prints a JWT.
auth_signs() {
  local token
  token="$("$1" dev-token --key "$2/user-token.pem" --sub alice --name Alice)" || return 1
  [[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || { echo "not a JWT: $token"; return 1; }
}

for tool in "$PY" "$VALIDATE" "$CHECKOV"; do
  if [[ ! -x "$tool" ]]; then
    echo "check.sh: $tool missing; run tools/bootstrap.sh" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
done
if ! command -v "$KUBECTL" >/dev/null; then
  echo "check.sh: kubectl not found" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

newest="$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')"

# 1 + 2: render and validate.
# without_crds FILE: FILE without the monitoring.coreos.com objects.
without_crds() {
  "$PY" - "$1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kept = [d for d in docs if not str(d.get("apiVersion", "")).startswith("monitoring.coreos.com/")]
with open(sys.argv[1], "w") as f:
    yaml.safe_dump_all(kept, f, sort_keys=False)
print(f"{len(docs) - len(kept)} monitoring.coreos.com object(s) set aside", file=sys.stderr)
PY
}

renderings=(base overlays/dev overlays/prod overlays/prod-monitoring)
mkdir -p "$work/checkov"
for dir in "${renderings[@]}"; do
  file="$work/$(basename "$dir").yaml"
  check "kustomize $dir" -- "$KUBECTL" kustomize "$K8S/$dir" -o "$file"
  [[ -s "$file" ]] || continue
  # checkov (4) reads the production renderings whole, CRD objects included.
  [[ "$dir" == overlays/prod* ]] && cp "$file" "$work/checkov/$(basename "$dir").yaml"
  without_crds "$file" 2>/dev/null
  for version in "$OLDEST_K8S" "$newest"; do
    check "validate $dir against Kubernetes ${version%.0} (strict)" -- \
      "$VALIDATE" --strict --quiet -k "$version" "$file"
  done
done

secrets="$work/secrets.yaml"
if "$K8S/make-secrets.sh" --out "$work/keys" --dev --dry-run >"$secrets" 2>"$work/out"; then
  for version in "$OLDEST_K8S" "$newest"; do
    check "validate make-secrets.sh Secrets against Kubernetes ${version%.0} (strict)" -- \
      "$VALIDATE" --strict --quiet -k "$version" "$secrets"
  done
  check "make-secrets.sh keys are Ed25519 and private (0600)" -- keys_ok "$work/keys"
  # The auth binary must accept the generated key format when it is built.
  auth_bin=""
  for candidate in "$ROOT/target/release/qrlogin-auth" "$ROOT/target/debug/qrlogin-auth"; do
    [[ -x "$candidate" ]] && { auth_bin="$candidate"; break; }
  done
  if [[ -n "$auth_bin" ]]; then
    check "qrlogin-auth signs with a make-secrets.sh key ($(basename "$(dirname "$auth_bin")") build)" -- \
      auth_signs "$auth_bin" "$work/keys"
  else
    skip "qrlogin-auth signs with a make-secrets.sh key (no qrlogin-auth binary built)"
  fi
else
  bad "make-secrets.sh --dry-run"
  sed 's/^/       /' "$work/out"
fi

check "PrometheusRule generated from deploy/monitoring/rules (no drift)" -- \
  "$PY" "$ROOT/deploy/monitoring/render-k8s.py" --check

# 3: invariants. Its own checks count one by one.
"$PY" "$K8S/test_manifests.py" >"$work/invariants" 2>&1
rc=$?
grep -v -E '^[0-9]+ passed, [0-9]+ failed' "$work/invariants"
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/invariants" | tail -1)"
if [[ "$summary" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)? ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
  skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
  if ((rc != 0 && BASH_REMATCH[2] == 0)); then
    bad "test_manifests.py exited $rc"
  fi
else
  bad "test_manifests.py did not finish (exit $rc)"
fi

# 4: checkov. One check; its line carries checkov's summary.
# checkov_verdict JSON: prints checkov's summary line, then each failed
# check and whatever else is wrong (a skip without a reason, a rendering
# checkov could not parse, nothing scanned); exits 1 if anything is.
checkov_verdict() {
  "$PY" - "$1" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
total = dict.fromkeys(("passed", "failed", "skipped", "parsing_errors", "resource_count"), 0)
problems = []
for report in reports:
    for key in total:
        total[key] += int((report.get("summary") or {}).get(key) or 0)
    results = report.get("results") or {}
    for item in results.get("failed_checks") or []:
        first, last = (item.get("file_line_range") or [0, 0])[:2]
        problems.append(f"{item.get('check_id')} {item.get('check_name')}: "
                        f"{item.get('resource')} ({item.get('file_path', '').lstrip('/')}:{first}-{last})")
    for item in results.get("skipped_checks") or []:
        reason = ((item.get("check_result") or {}).get("suppress_comment") or "").strip()
        if reason in ("", "No comment provided"):
            problems.append(f"{item.get('check_id')} skipped on {item.get('resource')} without a reason "
                            "(checkov.io/skipN: CHECK_ID=reason)")
    for path in results.get("parsing_errors") or []:
        problems.append(f"checkov could not parse {path}")
print(f"Passed checks: {total['passed']}, Failed checks: {total['failed']}, Skipped checks: {total['skipped']}")
if total["parsing_errors"] and not any(p.startswith("checkov could not parse") for p in problems):
    problems.append(f"{total['parsing_errors']} rendering(s) checkov could not parse")
if not total["resource_count"]:
    problems.append("checkov scanned no resource")
for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
PY
}

checkov_files=()
scanned=()
for name in prod prod-monitoring; do
  [[ -s "$work/checkov/$name.yaml" ]] || continue
  checkov_files+=(-f "$name.yaml")
  scanned+=("overlays/$name")
done
if ((${#scanned[@]} == 0)); then
  bad "checkov: no production rendering to scan"
else
  # In the scratch folder with HOME there too: no .checkov.yaml of the
  # machine or the user applies. Nothing leaves the machine: no API key,
  # --skip-download, no mapping download, no update check. The JSON report
  # (not --quiet: it would leave the skipped checks out) goes to
  # checkov_verdict.
  (
    cd "$work/checkov" &&
      env -u BC_API_KEY -u PRISMA_API_URL HOME="$work/checkov" \
        BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
        "$CHECKOV" "${checkov_files[@]}" --framework kubernetes --skip-download \
        -o json --output-file-path out
  ) >"$work/checkov.log" 2>&1
  rc=$?
  label="${scanned[*]}"
  label="checkov ${label// /, }"
  report="$work/checkov/out/results_json.json"
  verdict=""
  if [[ -s "$report" ]] && verdict="$(checkov_verdict "$report")" && ((rc == 0)); then
    ok "$label ($verdict)"
  else
    bad "$label (${verdict%%$'\n'*}${verdict:+; }checkov exited $rc)"
    if [[ "$verdict" == *$'\n'* ]]; then
      sed '1d; s/^/       /' <<<"$verdict" | head -60
    else
      sed 's/^/       /' "$work/checkov.log" | tail -40
    fi
  fi
fi

# 5: scripts and Dockerfile.
for script in "$K8S/make-secrets.sh" "$K8S/check.sh"; do
  check "bash -n ${script#"$ROOT"/}" -- bash -n "$script"
done
# find_tool NAME: the project's copy first, then PATH.
find_tool() {
  local candidate
  for candidate in "$TOOLS/bin/$1" "$TOOLS/venv/bin/$1"; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return; }
  done
  command -v "$1" || true
}
shellcheck="$(find_tool shellcheck)"
if [[ -n "$shellcheck" ]]; then
  check "shellcheck deploy/k8s/*.sh" -- "$shellcheck" "$K8S/make-secrets.sh" "$K8S/check.sh"
else
  skip "shellcheck (not installed)"
fi
hadolint="$(find_tool hadolint)"
if [[ -n "$hadolint" ]]; then
  check "hadolint deploy/docker/Dockerfile" -- "$hadolint" "$ROOT/deploy/docker/Dockerfile"
else
  skip "hadolint (not installed)"
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))

#!/usr/bin/env bash
# Runs every test of the project, from a fresh clone on a fresh Debian machine
# with only the Rust toolchain, Python 3 and Node present:
#
#   1. installs the pinned tools (tools/bootstrap.sh --all)
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. cargo test: unit and integration tests (real nats-server per test)
#   4. Kubernetes manifests: kustomize, kubernetes-validate --strict, invariants,
#      checkov over the production renderings
#   4b. the protobuf contract: buf lint, buf breaking against the released
#       contract, and self-tests that show both can fail (proto/check.sh)
#   5. monitoring rules: promtool check rules, promtool test rules, no drift
#   6. the release binaries, in one build; the local cluster (NATS, auth,
#      two edges, HAProxy): end-to-end script
#   7. browser tests (Debian's Chromium driven by playwright-core)
#   8. the dashboard's and the rules' queries against Prometheus during a short load
#   8b. the end-to-end script again with TLS on a NATS cluster (up.sh --tls
#       --nats-cluster: three NATS servers, two auth replicas)
#   9. a small load run: 200 browsers, an edge killed, nothing lost
#   9b. chaos in quick mode: whole logins over every transport while NATS
#       members, auth replicas and edges fail and restart; none lost, none
#       duplicated
#  10. the measured comparison in quick mode (every transport and peer at
#      200 browsers, throughput steps; checks its own results.json)
#
# Ends with one line `total: N passed, N failed` and exits non-zero if any
# check failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export PATH="$ROOT/.tools/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
LOGDIR="$ROOT/artifacts/test-logs"
mkdir -p "$LOGDIR"

passed=0
failed=0
failures=()
started=$(date +%s)

stage() { printf '\n=== %s (%ss)\n' "$1" "$(($(date +%s) - started))"; }

# Adds a step's own test counts (from its `N passed, N failed` lines, or
# cargo's `test result:` lines) to the totals; a step that failed without
# reporting a failed test counts as one failure.
account() {
  local name="$1" status="$2" log="$3" p=0 f=0 line
  if [[ "$name" == cargo-test ]]; then
    read -r p f < <(awk '/^test result: /{ for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
  else
    line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1 || true)
    if [[ -n "$line" ]]; then
      p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
      f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    elif [[ "$status" == 0 ]]; then
      p=1
    fi
  fi
  p=${p:-0}; f=${f:-0}
  if [[ "$status" != 0 && "$f" == 0 ]]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
  if [[ "$status" != 0 ]]; then failures+=("$name (log: ${log#"$ROOT"/})"); fi
  echo "--- $name: exit $status, $p passed, $f failed"
}

run_step() {
  local name="$1"; shift
  local log="$LOGDIR/$name.log"
  stage "$name"
  "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  account "$name" "$status" "$log"
  return "$status"
}

run_step bootstrap tools/bootstrap.sh --all || { echo "bootstrap failed; cannot go on"; exit 1; }
run_step fmt cargo fmt --all -- --check
run_step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# Six test threads on two cores: the integration tests mostly wait on the
# real processes they start (nats-server, node, grpcurl), so this cuts the
# run from about 100 s to 40 s; each test still owns its servers and ports.
# (Through the environment: the edge's benchmark target, built and run once
# as a smoke test, takes no test-harness flags.)
run_step cargo-test env RUST_TEST_THREADS=6 cargo test --workspace --locked
run_step k8s deploy/k8s/check.sh
# Offline, a few seconds: the contract that old and new components share
# during a rolling upgrade (docs/operations.md, "Upgrade the contract").
run_step proto-contract proto/check.sh
# Bounded: promtool over the rule files, offline (a few seconds).
run_step monitoring-rules timeout 120 deploy/monitoring/check.sh
# The local cluster (with a 15 s PENDING deadline so expiry is observable)
# serves both the end-to-end script and the browser tests, then stops.
# Every release binary the later steps run, in one build (tools/build-release.sh,
# the one set every script builds: cargo unifies the features of shared
# dependencies per invocation, so different sets rebuilt most of the tree).
run_step release-build tools/build-release.sh -q
run_step e2e deploy/local/e2e.sh --start --keep --no-build
run_step browser bash -c 'cd web/tests && node browser.test.mjs'
# Prometheus on the same cluster, a 10-browser load, every query finds series
# (bounded: the load stops at 90 s, the queries wait at most 30 s).
run_step monitoring-queries timeout 300 deploy/monitoring/test-queries.sh
deploy/local/down.sh >/dev/null 2>&1 || true
# The local cluster again, with TLS and three NATS servers (up.sh --tls
# --nats-cluster: NATS over tls://, routes over mutual TLS, the session
# bucket at three replicas, two auth replicas behind HAProxy, edge -> auth
# over https, a local CA), the end-to-end checks over it (among them: the
# member leading the session stream killed, logins go on), then stopped.
run_step e2e-tls-cluster bash -c 'QRLOGIN_LOCAL_TLS=true QRLOGIN_LOCAL_NATS_NODES=3 deploy/local/e2e.sh --start --no-build'
# A small load run on a throw-away cluster (release binaries from above):
# 200 browsers over two edges, one edge killed mid-way, nothing lost.
run_step load-smoke bash -c 'QRLOGIN_BENCH_NO_BUILD=1 tools/bench/smoke.sh'
# Chaos in quick mode (about 4 minutes): a local cluster of its own (ports
# from 27100, run directory artifacts/bench/chaos/cluster) on one NATS
# server for the baseline, then on three, whole logins at 10/s over SSE,
# WebSocket, STOMP, gRPC and long polling while the stream's leader is
# killed, a member is killed, frozen and put in lame duck mode, everything
# is restarted in turn, and edges and an auth replica are killed; one check
# per scenario: no login lost, none duplicated.
run_step chaos-quick tools/bench/chaos.sh --quick --no-build
# The comparison of tools/bench/compare.sh at 200 browsers (about 2 minutes,
# with the load of the machine): every transport and peer present, every event delivered.
run_step compare-quick bash -c 'QRLOGIN_BENCH_NO_BUILD=1 tools/bench/compare.sh --quick --out artifacts/bench/compare/quick'

total_secs=$(($(date +%s) - started))
echo
echo "=== summary (${total_secs}s)"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "total: $passed passed, $failed failed"
[[ "$failed" == 0 ]]

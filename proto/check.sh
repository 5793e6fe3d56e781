#!/usr/bin/env bash
# Checks the protobuf contract (proto/qrlogin/{auth,events,watch}/v1/*.proto)
# with buf, so that old and new edges, auth replicas and stored records keep
# understanding each other during a rolling upgrade. Offline; uses the pinned
# buf of tools/bootstrap.sh (.tools/bin/buf, or $BUF).
#
#   proto/check.sh
#
# 1. `buf lint`: the STANDARD rules and the exceptions of proto/buf.yaml.
# 2. `buf breaking` against the released contract,
#    proto/released/qrlogin-v1.binpb (cut by proto/release.sh), with the
#    rules of proto/buf.yaml (WIRE_JSON, no deleted package, service, RPC or
#    top-level type, no changed field type).
# 3. The checks can fail: copies of the module with one change each,
#    compared with an image of the unchanged copy (made as proto/release.sh
#    makes the released one, so that these tests do not depend on how far
#    the work tree is from the release). Each change that
#    docs/operations.md forbids (a field's number, type or name changed; a
#    field, an enum value, an RPC or a top-level message removed) must be
#    reported by `buf breaking` under the rule named; the changes it allows
#    (a new field, a removed field reserved, a new enum value) must pass
#    both checks; two lint violations must be reported.
# 4. The scripts parse (bash -n; shellcheck too when present).
#
# Prints one line per check, then `N passed, N failed, N skipped`; exits 1 on
# any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO="$ROOT/proto"
TOOLS="$ROOT/.tools"
BUF="${BUF:-$TOOLS/bin/buf}"
RELEASED="$PROTO/released/qrlogin-v1.binpb"

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

if [[ ! -x "$BUF" ]]; then
  echo "check.sh: $BUF missing; run tools/bootstrap.sh" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# inside DIR COMMAND...: COMMAND run inside DIR (buf reads DIR/buf.yaml).
inside() { (cd "$1" && shift && "$@"); }

# copy NAME: a copy of the module (buf.yaml and the .proto files) in $work/NAME.
copy() {
  rm -rf "${work:?}/$1"
  mkdir -p "$work/$1"
  cp -r "$PROTO/buf.yaml" "$PROTO/qrlogin" "$work/$1/"
}

# edit NAME FILE SED-ARGS...: edits FILE of the copy NAME with sed; fails
# when the edit changed nothing (a test of nothing).
edit() {
  local file="$work/$1/$2"
  shift 2
  cp "$file" "$work/before"
  sed -i "$@" "$file" || return 1
  if cmp -s "$work/before" "$file"; then
    echo "the edit changed nothing in ${file#"$work"/}"
    return 1
  fi
  { diff -u "$work/before" "$file" || true; } | tail -n +3
}

# reports RULE DIR BUF-ARGS...: `buf BUF-ARGS` inside DIR fails and names RULE.
reports() {
  local rule="$1" dir="$2" status=0
  shift 2
  inside "$dir" "$BUF" "$@" --error-format=json >"$work/report" 2>&1 || status=$?
  cat "$work/report"
  if [[ "$status" == 0 ]]; then
    echo "buf $1 passed; expected $rule"
    return 1
  fi
  grep -q "\"type\":\"$rule\"" "$work/report" || { echo "buf $1 did not report $rule"; return 1; }
}

# breaks RULE FILE SED-ARGS...: FILE changed as told is a breaking change
# that `buf breaking` reports under RULE.
breaks() {
  local rule="$1" file="$2"
  shift 2
  copy mutant
  edit mutant "$file" "$@" || return 1
  reports "$rule" "$work/mutant" breaking --against "$work/base.binpb"
}

# lint_refuses RULE FILE SED-ARGS...: FILE changed as told breaks lint RULE.
lint_refuses() {
  local rule="$1" file="$2"
  shift 2
  copy mutant
  edit mutant "$file" "$@" || return 1
  reports "$rule" "$work/mutant" lint
}

# allowed FILE SED-ARGS...: FILE changed as told passes lint and breaking.
allowed() {
  local file="$1"
  shift
  copy allowed
  edit allowed "$file" "$@" || return 1
  inside "$work/allowed" "$BUF" lint || return 1
  inside "$work/allowed" "$BUF" breaking --against "$work/base.binpb"
}

# 1 + 2: the contract as it is.
release="$(sed -n 's/^version=//p' "$PROTO/released/qrlogin-v1.source" 2>/dev/null)"
commit="$(sed -n 's/^commit=//p' "$PROTO/released/qrlogin-v1.source" 2>/dev/null)"
check "buf lint proto (STANDARD and the exceptions of proto/buf.yaml)" -- inside "$PROTO" "$BUF" lint
check "buf breaking proto against the released contract ${release:-?} (${commit:0:12})" -- \
  inside "$PROTO" "$BUF" breaking --against "$RELEASED"

# 3: the checks can fail.
copy base
check "self-test: an image of the unchanged copy (buf build)" -- \
  "$BUF" build "$work/base" --exclude-source-info -o "$work/base.binpb"
EVENTS=qrlogin/events/v1/events.proto
check "self-test: a field's number changed is reported (FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED)" -- \
  breaks FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED "$EVENTS" -e 's/uint64 version = 3;/uint64 version = 12;/'
check "self-test: a field removed is reported (FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED)" -- \
  breaks FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED "$EVENTS" -e '/uint32 match_code = 8;/d'
check "self-test: a field's type changed is reported (FIELD_SAME_TYPE)" -- \
  breaks FIELD_SAME_TYPE "$EVENTS" -e 's/uint32 match_code = 8;/int32 match_code = 8;/'
check "self-test: a field renamed is reported (FIELD_SAME_NAME)" -- \
  breaks FIELD_SAME_NAME "$EVENTS" -e 's/string user_display_name = 6;/string display_name = 6;/'
check "self-test: an enum value removed is reported (ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED)" -- \
  breaks ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED "$EVENTS" -e '/LOGIN_STATE_EXPIRED = 7;/d'
check "self-test: the NATS payload StoredSession removed is reported (PACKAGE_MESSAGE_NO_DELETE)" -- \
  breaks PACKAGE_MESSAGE_NO_DELETE "$EVENTS" -e '/^message StoredSession {/,/^}/d'
check "self-test: an RPC renamed is reported (RPC_NO_DELETE)" -- \
  breaks RPC_NO_DELETE qrlogin/watch/v1/watch.proto -e 's/rpc WatchLoginSession(/rpc WatchSession(/'
check "self-test: a new field, a removed field reserved and a new enum value pass" -- \
  allowed "$EVENTS" \
  -e 's/^  uint32 match_code = 8;/  reserved 8;\n  reserved "match_code";/' \
  -e 's/^  DenyReason deny_reason = 9;/&\n  string origin = 10;/' \
  -e 's/^  LOGIN_STATE_EXPIRED = 7;/&\n  LOGIN_STATE_ABANDONED = 8;/'
check "self-test: a field in camelCase is refused by lint (FIELD_LOWER_SNAKE_CASE)" -- \
  lint_refuses FIELD_LOWER_SNAKE_CASE "$EVENTS" -e 's/^  DenyReason deny_reason = 9;/&\n  string userAgent = 10;/'
check "self-test: the SERVICE_SUFFIX exception holds for watch.proto only (SERVICE_SUFFIX)" -- \
  lint_refuses SERVICE_SUFFIX "$EVENTS" -e 's/^message QrRotation {/service LoginEvents {\n  rpc GetLoginEvent(GetLoginEventRequest) returns (GetLoginEventResponse);\n}\nmessage GetLoginEventRequest {}\nmessage GetLoginEventResponse {}\n\n&/'

# 4: the scripts.
scripts=("$PROTO/check.sh" "$PROTO/release.sh")
for script in "${scripts[@]}"; do
  check "bash -n ${script#"$ROOT"/}" -- bash -n "$script"
done
shellcheck=""
for candidate in "$TOOLS/bin/shellcheck" "$TOOLS/venv/bin/shellcheck" "$(command -v shellcheck || true)"; do
  [[ -n "$candidate" && -x "$candidate" ]] && { shellcheck="$candidate"; break; }
done
if [[ -n "$shellcheck" ]]; then
  check "shellcheck proto/*.sh" -- "$shellcheck" "${scripts[@]}"
else
  skip "shellcheck (not installed)"
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))

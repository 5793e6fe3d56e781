#!/usr/bin/env bash
# Generates the Ed25519 signing keys qrlogin needs and creates (or prints) the
# Kubernetes Secrets that hold them. Nothing secret is ever written to the
# repository: keys go to the directory given with --out, which must not exist
# yet or be empty.
#
#   deploy/k8s/make-secrets.sh --out ~/qrlogin-keys            print the kubectl commands
#   deploy/k8s/make-secrets.sh --out ~/qrlogin-keys --apply    run them (current kube context)
#   deploy/k8s/make-secrets.sh --out DIR --dev --apply         also the demo phone-login key
#   deploy/k8s/make-secrets.sh --out DIR --dry-run             print the Secret manifests
#
# Keys (PEM, PKCS#8 private / SPKI public, as qrlogin-auth reads them):
#   access-token.pem / .pub.pem  auth signs the access tokens it issues on redeem;
#                                give the public half to whatever verifies them.
#   user-token.pem / .pub.pem    signs the phone users' JWTs; auth only needs the
#                                public half. In production the private half
#                                belongs to your identity provider: pass its
#                                public key with --user-token-public-key instead.
#
# Secrets (namespace "qrlogin" unless --namespace):
#   qrlogin-auth-keys        user-token.pub.pem, access-token.pem   (auth)
#   qrlogin-dev-user-token   user-token.pem                         (edge, dev overlay only)
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "make-secrets: $*" >&2
  exit 1
}

out=""
namespace="qrlogin"
dev=0
mode="print"
user_pub_in=""

while (($#)); do
  case "$1" in
    --out) out="${2:-}"; shift 2 || usage ;;
    --namespace) namespace="${2:-}"; shift 2 || usage ;;
    --user-token-public-key) user_pub_in="${2:-}"; shift 2 || usage ;;
    --dev) dev=1; shift ;;
    --apply) mode="apply"; shift ;;
    --dry-run) mode="dry-run"; shift ;;
    -h | --help) usage ;;
    *) echo "make-secrets: unknown option $1" >&2; usage ;;
  esac
done

[[ -n "$out" ]] || die "--out DIR is required (a directory outside the repository)"
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "invalid namespace: $namespace"
command -v openssl >/dev/null || die "openssl not found"
if [[ -n "$user_pub_in" ]]; then
  [[ -r "$user_pub_in" ]] || die "cannot read $user_pub_in"
  openssl pkey -pubin -in "$user_pub_in" -noout -text 2>/dev/null | grep -q '^ED25519 Public-Key' ||
    die "$user_pub_in is not an Ed25519 public key (PEM)"
  ((dev == 0)) || die "--dev needs the user-token private key; do not combine it with --user-token-public-key"
fi
if [[ "$mode" != "print" ]]; then
  command -v kubectl >/dev/null || die "kubectl not found (needed for --apply and --dry-run)"
fi

# Keys stay inside the repository only by mistake: refuse that outright.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
out="$(realpath -m -- "$out")"
case "$out/" in
  "$repo_root"/*) die "--out $out is inside the repository; choose a directory outside it" ;;
esac
if [[ -e "$out" && -n "$(ls -A "$out")" ]]; then
  die "$out is not empty; refusing to overwrite existing keys"
fi

# Private keys and their directory: owner only.
umask 077
mkdir -p "$out"

# genkey NAME: NAME.pem (private, PKCS#8) and NAME.pub.pem (public, SPKI).
genkey() {
  local name="$1"
  openssl genpkey -algorithm ed25519 -out "$out/$name.pem" 2>/dev/null ||
    die "openssl cannot generate Ed25519 keys (OpenSSL 1.1.1 or newer is needed)"
  openssl pkey -in "$out/$name.pem" -pubout -out "$out/$name.pub.pem"
  # Check what was written really is an Ed25519 pair.
  openssl pkey -in "$out/$name.pem" -noout -text 2>/dev/null | grep -q '^ED25519 Private-Key' ||
    die "$name.pem is not an Ed25519 private key"
}

genkey access-token
if [[ -n "$user_pub_in" ]]; then
  cp "$user_pub_in" "$out/user-token.pub.pem"
else
  genkey user-token
fi
echo "make-secrets: keys written to $out" >&2

auth_cmd=(kubectl create secret generic qrlogin-auth-keys --namespace "$namespace"
  "--from-file=user-token.pub.pem=$out/user-token.pub.pem"
  "--from-file=access-token.pem=$out/access-token.pem")
dev_cmd=(kubectl create secret generic qrlogin-dev-user-token --namespace "$namespace"
  "--from-file=user-token.pem=$out/user-token.pem")

case "$mode" in
  print)
    echo "# Create the Secrets (namespace $namespace must exist: kubectl create namespace $namespace):"
    printf '%q ' "${auth_cmd[@]}"
    echo
    if ((dev)); then
      printf '%q ' "${dev_cmd[@]}"
      echo
    fi
    ;;
  dry-run)
    "${auth_cmd[@]}" --dry-run=client -o yaml
    if ((dev)); then
      echo "---"
      "${dev_cmd[@]}" --dry-run=client -o yaml
    fi
    ;;
  apply)
    kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
    # create --dry-run | apply: the same command works for a first install
    # and for a key rotation.
    "${auth_cmd[@]}" --dry-run=client -o yaml | kubectl apply -f -
    if ((dev)); then
      "${dev_cmd[@]}" --dry-run=client -o yaml | kubectl apply -f -
    fi
    echo "make-secrets: secrets applied in namespace $namespace" >&2
    ;;
esac
echo "make-secrets: keep $out private; give access-token.pub.pem to whatever verifies access tokens" >&2

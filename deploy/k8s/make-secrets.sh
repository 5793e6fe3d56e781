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
#   deploy/k8s/make-secrets.sh --out DIR --tls --apply         also a private CA and the TLS
#                                                             certificates of the prod overlay
#                                                             (without cert-manager)
#
# Keys (PEM, PKCS#8 private / SPKI public, as qrlogin-auth reads them):
#   access-token.pem / .pub.pem  auth signs the access tokens it issues on redeem;
#                                give the public half to whatever verifies them.
#   user-token.pem / .pub.pem    signs the phone users' JWTs; auth only needs the
#                                public half. In production the private half
#                                belongs to your identity provider: pass its
#                                public key with --user-token-public-key instead.
#
#   record.key                   seals the private part of stored sessions (auth)
#   service-token(s)             the edges' credential towards auth (edge: the token;
#                                auth: the accepted tokens, one per line)
#
# NATS users (nkeys; the seed signs the server's challenge, the public key is
# what nats.conf lists; no password ever crosses the network):
#   nats-auth.seed / .pub        auth's user: its bucket's JetStream API only
#   nats-edge.seed / .pub        the edges' user: subscribe to session events only
#
# Secrets (namespace "qrlogin" unless --namespace):
#   qrlogin-auth-keys        user-token.pub.pem, access-token.pem, nats-auth.seed,
#                            record.key, service-tokens                              (auth)
#   qrlogin-edge-keys        nats-edge.seed, service-token                           (edge)
#   qrlogin-nats-users       nats-auth.pub, nats-edge.pub                            (NATS)
#   qrlogin-dev-user-token   user-token.pem                        (edge, dev overlay only)
#
# With --tls (the prod overlay's TLS, in the layout cert-manager writes:
# tls.crt, tls.key, ca.crt; docs/operations.md shows the cert-manager way):
#   nats-tls                 NATS servers: clients and routes (DNS names of the
#                            Services and of every pod of the StatefulSet)
#   qrlogin-auth-tls         auth's gRPC server (DNS name qrlogin-auth), also its
#                            NATS CA
#   qrlogin-edge-tls         the edges' client certificate towards auth (mTLS),
#                            also their CA for auth and NATS
# The CA's key is left in --out (tls-ca.key): keep it offline, it signs the
# next certificates.
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
tls=0
mode="print"
user_pub_in=""

while (($#)); do
  case "$1" in
    --out) out="${2:-}"; shift 2 || usage ;;
    --namespace) namespace="${2:-}"; shift 2 || usage ;;
    --user-token-public-key) user_pub_in="${2:-}"; shift 2 || usage ;;
    --dev) dev=1; shift ;;
    --tls) tls=1; shift ;;
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

# gennkey NAME: NAME.seed (nkey user seed, SU...) and NAME.pub (public, U...).
# The Ed25519 key comes from openssl; python3 only encodes it the nkeys way
# (prefix byte, CRC-16/XMODEM, base32 without padding). No trailing newline:
# nats-server reads the public key from an environment variable.
gennkey() {
  local name="$1" der="$out/.$1.der" pubder="$out/.$1.pub.der"
  openssl genpkey -algorithm ed25519 -outform DER -out "$der" 2>/dev/null ||
    die "openssl cannot generate Ed25519 keys (OpenSSL 1.1.1 or newer is needed)"
  openssl pkey -inform DER -in "$der" -pubout -outform DER -out "$pubder"
  python3 - "$der" "$pubder" "$out/$name.seed" "$out/$name.pub" <<'PY' || die "cannot encode the $name nkey"
import base64, sys
def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc
def encode(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip("=")
SEED, USER = 18 << 3, 20 << 3
seed = open(sys.argv[1], "rb").read()[-32:]
public = open(sys.argv[2], "rb").read()[-32:]
open(sys.argv[3], "w").write(encode(bytes([SEED | (USER >> 5), (USER & 31) << 3]) + seed))
open(sys.argv[4], "w").write(encode(bytes([USER]) + public))
PY
  rm -f "$der" "$pubder"
}

genkey access-token
gennkey nats-auth
gennkey nats-edge
# record.key: 32 random bytes (base64) that seal the private part of stored
# sessions (AEAD); every auth replica uses the same one.
openssl rand -base64 32 >"$out/record.key"
# service-tokens / service-token: what the edges present to auth
# (x-qrlogin-service-token). auth's file may list several (rotation).
openssl rand -hex 32 >"$out/service-token"
cp "$out/service-token" "$out/service-tokens"
if [[ -n "$user_pub_in" ]]; then
  cp "$user_pub_in" "$out/user-token.pub.pem"
else
  genkey user-token
fi
echo "make-secrets: keys written to $out" >&2

# Read through namerefs (secret_cmds below).
# shellcheck disable=SC2034
auth_cmd=(kubectl create secret generic qrlogin-auth-keys --namespace "$namespace"
  "--from-file=user-token.pub.pem=$out/user-token.pub.pem"
  "--from-file=access-token.pem=$out/access-token.pem"
  "--from-file=nats-auth.seed=$out/nats-auth.seed"
  "--from-file=record.key=$out/record.key"
  "--from-file=service-tokens=$out/service-tokens")
# shellcheck disable=SC2034
edge_cmd=(kubectl create secret generic qrlogin-edge-keys --namespace "$namespace"
  "--from-file=nats-edge.seed=$out/nats-edge.seed"
  "--from-file=service-token=$out/service-token")
# shellcheck disable=SC2034
nats_cmd=(kubectl create secret generic qrlogin-nats-users --namespace "$namespace"
  "--from-file=nats-auth.pub=$out/nats-auth.pub"
  "--from-file=nats-edge.pub=$out/nats-edge.pub")
# shellcheck disable=SC2034
dev_cmd=(kubectl create secret generic qrlogin-dev-user-token --namespace "$namespace"
  "--from-file=user-token.pem=$out/user-token.pem")
# Every Secret, in the order they are printed or applied.
secret_cmds=(auth_cmd edge_cmd nats_cmd)
((dev)) && secret_cmds+=(dev_cmd)

# gencert NAME CN EXTENSIONS: NAME.crt/.key signed by the CA (ECDSA P-256).
gencert() {
  local name="$1" cn="$2" ext="$3"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/$name.key" -subj "/CN=$cn" -out "$out/$name.csr" 2>/dev/null ||
    die "openssl cannot make a key for $name"
  printf '%s\n' "$ext" >"$out/$name.ext"
  openssl x509 -req -in "$out/$name.csr" -CA "$out/tls-ca.crt" -CAkey "$out/tls-ca.key" \
    -CAcreateserial -days 397 -sha256 -extfile "$out/$name.ext" -out "$out/$name.crt" 2>/dev/null ||
    die "openssl cannot sign $name"
  rm -f "$out/$name.csr" "$out/$name.ext"
}

if ((tls)); then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1825 \
    -keyout "$out/tls-ca.key" -subj "/CN=qrlogin internal CA" -out "$out/tls-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    die "openssl cannot make the CA (OpenSSL 1.1.1 or newer is needed)"
  svc="$namespace.svc"
  gencert nats-tls nats "subjectAltName=DNS:nats,DNS:nats.$namespace,DNS:nats.$svc,DNS:*.nats-headless,DNS:*.nats-headless.$namespace,DNS:*.nats-headless.$svc
extendedKeyUsage=serverAuth,clientAuth"
  gencert qrlogin-auth-tls qrlogin-auth "subjectAltName=DNS:qrlogin-auth,DNS:qrlogin-auth.$namespace,DNS:qrlogin-auth.$svc
extendedKeyUsage=serverAuth"
  gencert qrlogin-edge-tls qrlogin-edge "extendedKeyUsage=clientAuth"
  for name in nats-tls qrlogin-auth-tls qrlogin-edge-tls; do
    declare -a "tls_${name//-/_}_cmd=(kubectl create secret generic $name --namespace $namespace \
      --from-file=tls.crt=$out/$name.crt --from-file=tls.key=$out/$name.key --from-file=ca.crt=$out/tls-ca.crt)"
    secret_cmds+=("tls_${name//-/_}_cmd")
  done
fi

case "$mode" in
  print)
    echo "# Create the Secrets (namespace $namespace must exist: kubectl create namespace $namespace):"
    for name in "${secret_cmds[@]}"; do
      declare -n cmd="$name"
      printf '%q ' "${cmd[@]}"
      echo
      unset -n cmd
    done
    ;;
  dry-run)
    first=1
    for name in "${secret_cmds[@]}"; do
      declare -n cmd="$name"
      ((first)) || echo "---"
      first=0
      "${cmd[@]}" --dry-run=client -o yaml
      unset -n cmd
    done
    ;;
  apply)
    kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
    # create --dry-run | apply: the same command works for a first install
    # and for a key rotation.
    for name in "${secret_cmds[@]}"; do
      declare -n cmd="$name"
      "${cmd[@]}" --dry-run=client -o yaml | kubectl apply -f -
      unset -n cmd
    done
    echo "make-secrets: secrets applied in namespace $namespace" >&2
    ;;
esac
echo "make-secrets: keep $out private; give access-token.pub.pem to whatever verifies access tokens" >&2

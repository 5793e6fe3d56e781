"""One source for the NATS server configuration.

The local cluster (deploy/local/lib-nats.sh) and the tests write their
nats.conf with `qrlogin-auth dev-nats-config`, from the rules of
services/auth/src/nats_accounts.rs. The Kubernetes ConfigMap is written by
hand. This check renders a member the way the local cluster does (same
cluster name and lame duck settings, read from lib-nats.sh; routes for
every StatefulSet replica; TLS and route TLS where the ConfigMap has them)
and compares the two files block by block:

  * the top-level settings and the JetStream block: the same keys (the
    ConfigMap may add only what a pod needs: DEPLOYMENT_ONLY);
  * lame duck mode: the same duration; a grace period on both sides (its
    length is the deployment's);
  * the client `tls` block and the `cluster` block with its `tls`: the same
    keys and the same verify and timeout; as many routes as replicas;
  * the accounts: the same accounts, JetStream where the rendering has it,
    the system account, and for the users auth and edge exactly the same
    publish and subscribe rules.

Addresses, paths, names and nkeys are not compared (they differ by
design). A difference is drift: fix the ConfigMap or nats_accounts.rs so
that what runs locally is what production runs.

Needs a built qrlogin-auth (target/release or target/debug); the caller
skips the check without one.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import manifest_model as m
import nats_accounts
import nats_checks

ROOT = Path(__file__).resolve().parents[3]
LOCAL_NATS = ROOT / "deploy/local/lib-nats.sh"
RULES = "services/auth/src/nats_accounts.rs"
# The account of qrlogin's users (QRLOGIN), as the parser lower-cases keys.
ACCOUNT_KEY = "qrlogin"
# What a pod needs and the local cluster does not: the pid file the preStop
# hook signals through, and JetStream's limits under the container's.
DEPLOYMENT_ONLY = {"": {"pid_file"}, "jetstream": {"max_memory_store", "max_file_store"},
                   # The CA of the client certificates; clients are not
                   # asked for one (verify is compared).
                   "tls": {"ca_file"}}


# --- nats.conf parsing -------------------------------------------------------------

class ParseError(ValueError):
    pass


class _Parser:
    """nats-server's configuration syntax, as far as qrlogin's files use it:
    `key: value`, `key = value` or `key value`; `{ }` maps and `[ ]`
    arrays whose items are separated by newlines, commas or semicolons;
    quoted or bare values; `#` and `//` comments. Keys are lower-cased
    (nats-server reads them without regard to case)."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def _skip(self, newlines: bool = True) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c in "\n,;"):
                self.i += 1
            elif c == "#" or self.s.startswith("//", self.i):
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                break

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def parse(self) -> dict:
        tree = self._map(end="")
        if self.i < len(self.s):
            raise ParseError(f"unexpected {self.s[self.i]!r} at offset {self.i}")
        return tree

    def _map(self, end: str) -> dict:
        out = {}
        while True:
            self._skip()
            if self._peek() == end:
                if end:
                    self.i += 1
                return out
            if not self._peek():
                raise ParseError("unterminated block")
            key = self._key()
            self._skip(newlines=False)
            if self._peek() in (":", "="):
                self.i += 1
                self._skip(newlines=False)
            out[key] = self._value()

    def _key(self) -> str:
        if self._peek() in "\"'":
            return self._quoted().lower()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in " \t\r\n:={[":
            self.i += 1
        if self.i == start:
            raise ParseError(f"expected a key at offset {self.i}")
        return self.s[start:self.i].lower()

    def _quoted(self) -> str:
        quote = self.s[self.i]
        end = self.s.find(quote, self.i + 1)
        if end < 0:
            raise ParseError("unterminated string")
        text = self.s[self.i + 1:end]
        self.i = end + 1
        return text

    def _value(self):
        c = self._peek()
        if c == "{":
            self.i += 1
            return self._map(end="}")
        if c == "[":
            self.i += 1
            items = []
            while True:
                self._skip()
                if self._peek() == "]":
                    self.i += 1
                    return items
                if not self._peek():
                    raise ParseError("unterminated array")
                items.append(self._value())
        if c in "\"'":
            return self._quoted()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in "\n,;]}":
            if self.s[self.i] == "#" and self.s[self.i - 1] in " \t":
                break
            self.i += 1
        return self.s[start:self.i].strip()


def parse(text: str) -> dict:
    return _Parser(text).parse()


def seconds(value) -> float:
    """A nats-server duration ("30s", "30000ms", "2m", or bare seconds)."""
    found = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m|h)?\s*", str(value))
    if not found:
        raise ParseError(f"not a duration: {value!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[found.group(2)]
    return float(found.group(1)) * scale


# --- rendering like the local cluster -------------------------------------------------

def local_settings() -> tuple[str, list[str]]:
    """(cluster name, lame duck flags) of the local cluster's members, read
    from deploy/local/lib-nats.sh."""
    text = LOCAL_NATS.read_text()
    name = re.search(r"^NATS_CLUSTER_NAME=(\S+)", text, re.M)
    lame = re.search(r"^NATS_LAME_DUCK=\(([^)]*)\)", text, re.M)
    if not name or not lame:
        raise ParseError(f"{LOCAL_NATS.relative_to(ROOT)} no longer sets NATS_CLUSTER_NAME and NATS_LAME_DUCK")
    return name.group(1), lame.group(1).split()


def find_auth() -> Path | None:
    candidates = [p for p in (ROOT / "target/release/qrlogin-auth", ROOT / "target/debug/qrlogin-auth")
                  if p.is_file() and os.access(p, os.X_OK)]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


class Renderer:
    """`qrlogin-auth dev-nats-config` with throw-away keys, as the local cluster
    calls it for a member."""

    def __init__(self, auth_bin: Path, keys: Path):
        self.auth_bin = auth_bin
        self.keys = keys
        self.cluster_name, self.lame_duck = local_settings()
        self.roles = {(keys / f).read_text().strip(): role for f, role in nats_accounts.USER_PUB_KEYS.items()}

    def render(self, *, replicas: int, tls: bool, route_tls: bool, env: dict[str, str]) -> str:
        args = [str(self.auth_bin), "dev-nats-config", "--keys", str(self.keys),
                "--listen", "127.0.0.1:4222", "--http-port", "8222", "--server-name", "nats-1",
                "--store-dir", "/store", *self.lame_duck]
        if tls:
            args += ["--tls-cert", "/tls/cert.pem", "--tls-key", "/tls/key.pem"]
        if replicas > 1:
            args += ["--cluster-name", self.cluster_name, "--cluster-listen", "127.0.0.1:6222"]
            for i in range(replicas):
                args += ["--route", f"nats-route://127.0.0.1:{6222 + i}"]
            if route_tls:
                args += ["--cluster-tls-ca", "/tls/ca.pem"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30,
                             env={**os.environ, **env})
        if out.returncode != 0:
            raise RuntimeError(f"dev-nats-config failed: {out.stderr.strip()}")
        return out.stdout


# --- comparison ------------------------------------------------------------------

def _users(tree: dict, role_of) -> tuple[dict[str, dict], list[str]]:
    """The QRLOGIN account's users by role (auth, edge), each as its
    permission rules (sets of subjects)."""
    bad = []
    account = (tree.get("accounts") or {}).get(ACCOUNT_KEY) or {}
    found = {}
    for user in account.get("users") or []:
        role = role_of(str(user.get("nkey", "")))
        if role is None:
            bad.append(f"a user whose nkey {user.get('nkey')!r} is neither auth's nor edge's")
            continue
        rules = {}
        for direction, block in (user.get("permissions") or {}).items():
            for kind, subjects in (block or {}).items():
                rules[f"{direction}.{kind}"] = set(subjects if isinstance(subjects, list) else [subjects])
        found[role] = {"keys": set(user), "rules": rules}
    return found, bad


def _keys(block) -> set[str]:
    return set(block) if isinstance(block, dict) else set()


def compare(cm: dict, rendered: dict, cm_role, rendered_role, replicas: int) -> list[str]:
    """Differences between the ConfigMap's tree and the rendered one."""
    bad = []
    src = f"`qrlogin-auth dev-nats-config` ({RULES})"

    def keys_differ(path: str, a, b, allowed=frozenset()):
        extra = _keys(a) - _keys(b) - set(allowed)
        missing = _keys(b) - _keys(a)
        for k in sorted(extra):
            bad.append(f"{path or 'top level'}: the ConfigMap sets {k}, which {src} does not")
        for k in sorted(missing):
            bad.append(f"{path or 'top level'}: the ConfigMap lacks {k}, which {src} sets")

    keys_differ("", cm, rendered, DEPLOYMENT_ONLY[""])
    if isinstance(cm.get("jetstream"), dict) and isinstance(rendered.get("jetstream"), dict):
        keys_differ("jetstream", cm["jetstream"], rendered["jetstream"], DEPLOYMENT_ONLY["jetstream"])
    elif type(cm.get("jetstream")) is not type(rendered.get("jetstream")):
        bad.append("jetstream: not a block on both sides")
    if "lame_duck_duration" in cm and "lame_duck_duration" in rendered:
        a, b = seconds(cm["lame_duck_duration"]), seconds(rendered["lame_duck_duration"])
        if a != b:
            bad.append(f"lame_duck_duration: the ConfigMap says {a:g} s, the local cluster {b:g} s")
    for tls_path, a, b in (("tls", cm.get("tls"), rendered.get("tls")),
                           ("cluster.tls", (cm.get("cluster") or {}).get("tls"),
                            (rendered.get("cluster") or {}).get("tls"))):
        if isinstance(a, dict) and isinstance(b, dict):
            keys_differ(tls_path, a, b, DEPLOYMENT_ONLY.get(tls_path, ()))
            for k in ("verify", "timeout"):
                if str(a.get(k, "")).lower() != str(b.get(k, "")).lower():
                    bad.append(f"{tls_path}.{k}: the ConfigMap says {a.get(k)!r}, {src} {b.get(k)!r}")
    ca, cb = cm.get("cluster"), rendered.get("cluster")
    if isinstance(ca, dict) and isinstance(cb, dict):
        keys_differ("cluster", ca, cb)
        if str(ca.get("name")) != str(cb.get("name")):
            bad.append(f"cluster.name: the ConfigMap says {ca.get('name')!r}, the local cluster {cb.get('name')!r}")
        routes = ca.get("routes") or []
        if len(routes) != replicas:
            bad.append(f"cluster.routes: {len(routes)} routes for {replicas} replicas")
    # Accounts.
    aa, ab = cm.get("accounts") or {}, rendered.get("accounts") or {}
    keys_differ("accounts", aa, ab)
    for name in sorted(_keys(aa) & _keys(ab)):
        keys_differ(f"accounts.{name}", aa[name], ab[name])
        ja, jb = (aa[name] or {}).get("jetstream"), (ab[name] or {}).get("jetstream")
        if str(ja) != str(jb):
            bad.append(f"accounts.{name}.jetstream: the ConfigMap says {ja!r}, {src} {jb!r}")
    if str(cm.get("system_account")) != str(rendered.get("system_account")):
        bad.append(f"system_account: the ConfigMap says {cm.get('system_account')!r}, "
                   f"{src} {rendered.get('system_account')!r}")
    users_a, problems = _users(cm, cm_role)
    bad += [f"ConfigMap: {p}" for p in problems]
    users_b, problems = _users(rendered, rendered_role)
    bad += [f"rendering: {p}" for p in problems]
    for role in sorted(set(users_a) | set(users_b)):
        ua, ub = users_a.get(role), users_b.get(role)
        if ua is None or ub is None:
            bad.append(f"user {role}: only in the {'rendering' if ua is None else 'ConfigMap'}")
            continue
        for k in sorted(ua["keys"] ^ ub["keys"]):
            bad.append(f"user {role}: {k} is set on one side only")
        for rule in sorted(set(ua["rules"]) | set(ub["rules"])):
            ra, rb = ua["rules"].get(rule, set()), ub["rules"].get(rule, set())
            for subject in sorted(ra - rb):
                bad.append(f"user {role}: {rule} {subject} is in the ConfigMap, not in {src}")
            for subject in sorted(rb - ra):
                bad.append(f"user {role}: {rule} {subject} is in {src}, not in the ConfigMap")
    return bad


# --- the check -------------------------------------------------------------------

class _NoCode:
    code = None


def check_sts(objs, sts, renderer: Renderer) -> list[str]:
    text, problems = nats_checks.config_of(objs, sts)
    if text is None:
        return problems
    try:
        cm = parse(text)
    except ParseError as err:
        return [f"{m.name_of(sts)}: cannot read nats.conf: {err}"]
    replicas = sts["spec"].get("replicas", 1)
    tls = isinstance(cm.get("tls"), dict)
    route_tls = isinstance((cm.get("cluster") or {}).get("tls"), dict)
    env = {
        "QRLOGIN_KV_BUCKET": nats_accounts._service_env(objs, "qrlogin-auth", _NoCode, "QRLOGIN_KV_BUCKET",
                                                         "qrlogin_sessions"),
        "QRLOGIN_LIMITS_BUCKET": nats_accounts._service_env(objs, "qrlogin-auth", _NoCode,
                                                             "QRLOGIN_LIMITS_BUCKET", "qrlogin_limits"),
        "QRLOGIN_SUBJECT_PREFIX": nats_accounts._service_env(objs, "qrlogin-edge", _NoCode,
                                                              "QRLOGIN_SUBJECT_PREFIX", "qrlogin.session"),
    }
    try:
        rendered = parse(renderer.render(replicas=replicas if "cluster" in cm else 1, tls=tls,
                                         route_tls=route_tls, env=env))
    except (RuntimeError, ParseError) as err:
        return [str(err)]

    def cm_role(nkey: str):
        if not nkey.startswith("$"):
            return None
        ref = nats_accounts._secret_key_of_env(sts, nkey[1:])
        return nats_accounts.USER_PUB_KEYS.get(ref[1]) if ref else None

    problems = compare(cm, rendered, cm_role, renderer.roles.get, replicas if "cluster" in cm else 0)
    return [f"{m.name_of(sts)}: {p}" for p in problems]


def run(objs, renderer: Renderer):
    """(check name, problems) for every NATS StatefulSet in a rendering."""
    for sts in m.workload_for(objs, "nats"):
        yield (f"nats config of {m.name_of(sts)}: the local cluster's rules (dev-nats-config)",
               check_sts(objs, sts, renderer))


def _edit_conf(objs, old: str, new: str):
    cm = next(o for o in objs if o.get("kind") == "ConfigMap" and "nats.conf" in (o.get("data") or {}))
    for key, text in cm["data"].items():
        if old in text:
            cm["data"][key] = text.replace(old, new, 1)
            return
    raise LookupError(f"{old!r} is not in the NATS ConfigMap")


# Ways a hand edit of the ConfigMap drifts from the rules; each must be found.
MUTATIONS = [
    ("lame duck mode of 45 s", lambda o: _edit_conf(o, "lame_duck_duration: 30s", "lame_duck_duration: 45s")),
    ("a subject for auth inside its own bucket",
     lambda o: _edit_conf(o, '"$JS.API.INFO",', '"$JS.API.INFO",\n"$JS.API.CONSUMER.INFO.KV_qrlogin_sessions",')),
    ("a setting the local cluster does not have",
     lambda o: _edit_conf(o, "lame_duck_duration: 30s", "lame_duck_duration: 30s\n    max_payload: 8MB")),
    ("another cluster name", lambda o: _edit_conf(o, "name: qrlogin", "name: qrlogin-prod")),
    ("JetStream off for the account", lambda o: _edit_conf(o, "jetstream: enabled", "jetstream: disabled")),
    ("a route fewer than replicas", lambda o: _edit_conf(o, "nats://nats-2.nats-headless:6222", "")),
]


def self_check(prod, renderer: Renderer):
    """(name, problems): every mutation of the prod rendering is reported."""
    sts = m.workload_for(prod, "nats")[0]
    before = check_sts(prod, sts, renderer)
    for description, mutate in MUTATIONS:
        name = f"nats-one-source / {description}"
        if before:
            yield name, ["the unmodified prod rendering already fails, so this mutation proves nothing: "
                         f"{before[0]}"]
            continue
        broken = copy.deepcopy(prod)
        mutate(broken)
        yield name, [] if check_sts(broken, m.workload_for(broken, "nats")[0], renderer) \
            else ["the broken copy still passes"]


def renderer_or_none(tmp: Path) -> tuple[Renderer | None, str]:
    """A Renderer with throw-away keys in `tmp`, or why there is none."""
    auth = find_auth()
    if auth is None:
        return None, "no qrlogin-auth built (cargo build -p qrlogin-auth)"
    out = subprocess.run([str(auth), "dev-keygen", "--out", str(tmp / "keys")], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"qrlogin-auth dev-keygen failed: {out.stderr.strip()}")
    return Renderer(auth, tmp / "keys"), str(auth.relative_to(ROOT))


"""NATS accounts: who may connect to NATS and what each user may do.

Same contract as invariants.py. Reads the nats.conf of every NATS
StatefulSet (the ConfigMap its --config names) and requires what
services/auth/src/nats_accounts.rs requires in the tests and the local
cluster:

  * accounts with a system account; nobody anonymous (no `no_auth_user`),
    no passwords or tokens in the file;
  * exactly two nkey users, whose public keys come from the environment,
    filled from the Secret keys make-secrets.sh writes (nats-auth.pub,
    nats-edge.pub);
  * edge: subscribe `<prefix>.*` only (the edges' QRLOGIN_SUBJECT_PREFIX),
    publish nothing;
  * auth: subscribe its inbox prefix only; publish its buckets' JetStream
    API (sessions and create counters) and `$KV.<bucket>.>`, no wildcard over `$JS`, `$KV` or everything, and
    no event subject (NATS republishes the bucket's writes);
  * auth and edge read their own seed (QRLOGIN_NATS_NKEY_SEED_FILE) from a
    mounted Secret key of the matching name.
"""

from __future__ import annotations

import re

import manifest_model as m
import nats_checks

AUTH_INBOX = "_INBOX_qrlogin_auth.>"
FORBIDDEN_KEYS = re.compile(r"^\s*(no_auth_user|authorization|password|token)\s*[:={]", re.M)
USER_PUB_KEYS = {"nats-auth.pub": "auth", "nats-edge.pub": "edge"}
SEED_KEYS = {"qrlogin-auth": "nats-auth.seed", "qrlogin-edge": "nats-edge.seed"}
TOO_WIDE = {">", "$JS.>", "$JS.API.>", "$KV.>", "$JS.API.STREAM.>", "*.>"}


def _strings(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text)


def _rule(block: str, direction: str, kind: str) -> list[str] | None:
    found = re.search(rf"\b{direction}\s*:\s*\{{[^{{}}]*?\b{kind}\s*:\s*\[(.*?)\]", block, re.S)
    return None if found is None else _strings(found.group(1))


def users(conf: str) -> list[dict]:
    """Every `{ nkey: ..., permissions: ... }` entry of the file."""
    found = []
    parts = re.split(r"\bnkey\s*:\s*", conf)
    for part in parts[1:]:
        token = part.split(None, 1)[0].strip('"')
        found.append({
            "nkey": token,
            "publish_allow": _rule(part, "publish", "allow"),
            "publish_deny": _rule(part, "publish", "deny"),
            "subscribe_allow": _rule(part, "subscribe", "allow"),
            "subscribe_deny": _rule(part, "subscribe", "deny"),
        })
    return found


def _service_env(objs, service, ctx, var, default=None):
    for wl in m.workload_for(objs, service):
        for c in m.containers(wl, init=False):
            if m.service_of(c) == service:
                value = m.env_map(c).get(var)
                if value is None and ctx.code:
                    value = ctx.code[service].defaults.get(var)
                return value if value is not None else default
    return default


def _secret_key_of_env(sts, name: str):
    c = next(c for c in m.containers(sts, init=False) if m.is_nats(c))
    for e in c.get("env", []) or []:
        if e["name"] == name:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            return (ref["name"], ref["key"]) if ref else None
    return None


def check_nats_accounts(objs, ctx):
    bad = []
    prefix = _service_env(objs, "qrlogin-edge", ctx, "QRLOGIN_SUBJECT_PREFIX", "qrlogin.session")
    bucket = _service_env(objs, "qrlogin-auth", ctx, "QRLOGIN_KV_BUCKET", "qrlogin_sessions")
    limits = _service_env(objs, "qrlogin-auth", ctx, "QRLOGIN_LIMITS_BUCKET", "qrlogin_limits")
    stateful = m.workload_for(objs, "nats")
    if not stateful:
        return ["no NATS StatefulSet"]
    for sts in stateful:
        where = m.name_of(sts)
        conf, problems = nats_checks.config_of(objs, sts)
        if conf is None:
            bad += problems
            continue
        if not re.search(r"^\s*accounts\s*[:=]?\s*\{", conf, re.M):
            bad.append(f"{where}: nats.conf has no accounts")
        if not re.search(r"^\s*system_account\s*[:=]", conf, re.M):
            bad.append(f"{where}: nats.conf names no system_account")
        for hit in FORBIDDEN_KEYS.finditer(conf):
            bad.append(f"{where}: nats.conf sets {hit.group(1)} (anonymous access or a secret in a ConfigMap)")
        roles = {}
        for user in users(conf):
            if not user["nkey"].startswith("$"):
                bad.append(f"{where}: nkey {user['nkey']!r} is written into the ConfigMap; take it from a Secret")
                continue
            ref = _secret_key_of_env(sts, user["nkey"][1:])
            if ref is None:
                bad.append(f"{where}: {user['nkey']} does not come from a Secret")
                continue
            if ref[0] not in ctx.secrets or ref[1] not in ctx.secrets[ref[0]]:
                bad.append(f"{where}: {user['nkey']} reads Secret {ref[0]} key {ref[1]}, "
                           "which make-secrets.sh does not create")
            role = USER_PUB_KEYS.get(ref[1])
            if role is None:
                bad.append(f"{where}: a user whose key is {ref[1]} is neither auth nor edge")
                continue
            roles[role] = user
        for role in ("auth", "edge"):
            if role not in roles:
                bad.append(f"{where}: no nkey user for {role}")
        edge, auth = roles.get("edge"), roles.get("auth")
        if edge is not None:
            if edge["publish_allow"] or edge["publish_deny"] != [">"]:
                bad.append(f"{where}: the edge user may publish ({edge['publish_allow'] or edge['publish_deny']})")
            if edge["subscribe_allow"] != [f"{prefix}.*"]:
                bad.append(f"{where}: the edge user subscribes {edge['subscribe_allow']}, "
                           f"not only {prefix}.*")
        if auth is not None:
            allowed = auth["publish_allow"] or []
            if auth["subscribe_allow"] != [AUTH_INBOX]:
                bad.append(f"{where}: the auth user subscribes {auth['subscribe_allow']}, not only {AUTH_INBOX}")
            for subject in allowed:
                if subject in TOO_WIDE:
                    bad.append(f"{where}: the auth user may publish {subject}")
                elif subject.startswith("$JS.") and subject != "$JS.API.INFO" \
                        and not any(re.search(rf"\bKV_{b}(\.|$)", subject) for b in (bucket, limits)):
                    bad.append(f"{where}: the auth user may use {subject}, outside its buckets "
                               f"{bucket} and {limits}")
                elif subject.startswith("$KV.") and subject not in (f"$KV.{bucket}.>", f"$KV.{limits}.>"):
                    bad.append(f"{where}: the auth user may write {subject}, outside its buckets")
            if any(s == prefix or s.startswith(prefix + ".") or s.startswith(prefix.split(".")[0] + ".>")
                   for s in allowed):
                bad.append(f"{where}: the auth user may publish events on {prefix}; "
                           "the bucket's republish rule does that")
            if f"$KV.{bucket}.>" not in allowed:
                bad.append(f"{where}: the auth user may not write its bucket ($KV.{bucket}.>)")
    for service, key in SEED_KEYS.items():
        for wl in m.workload_for(objs, service):
            for c in m.containers(wl, init=False):
                if m.service_of(c) != service:
                    continue
                seed = m.env_map(c).get("QRLOGIN_NATS_NKEY_SEED_FILE")
                if not seed:
                    bad.append(f"{m.name_of(wl)}: QRLOGIN_NATS_NKEY_SEED_FILE is not set")
                elif seed.rsplit("/", 1)[-1] != key:
                    bad.append(f"{m.name_of(wl)}: QRLOGIN_NATS_NKEY_SEED_FILE is {seed}, not the {key} "
                               "make-secrets.sh writes for it")
    return bad

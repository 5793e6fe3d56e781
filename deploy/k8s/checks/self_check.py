"""Proof that each invariant can fail.

Every entry breaks a deep copy of the prod rendering in one way a careless
edit could, and the named invariant must then report a problem, while it
reports none on the unmodified rendering.
"""

from __future__ import annotations

import copy

import invariants
import manifest_model as m


def _one(objs, kind, role=None):
    for o in objs:
        if o.get("kind") != kind:
            continue
        if role is None or any(m.service_of(c) == role or (role == "nats" and m.is_nats(c))
                               for c in m.containers(o, init=False)):
            return o
    raise LookupError(f"no {kind} for {role}")


def _container(objs, role):
    wl = _one(objs, "StatefulSet" if role == "nats" else "Deployment", role)
    return next(c for c in m.containers(wl, init=False) if m.service_of(c) == role or m.is_nats(c))


def _set_env(container, name, value):
    env = container.setdefault("env", [])
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]


def _rename_env(container, old, new):
    for e in container["env"]:
        if e["name"] == old:
            e["name"] = new


def _policy(objs, name):
    return next(o for o in objs if o.get("kind") == "NetworkPolicy" and o["metadata"]["name"] == name)


def _ingress(objs, name="qrlogin"):
    return next(o for o in objs if o.get("kind") == "Ingress" and o["metadata"]["name"] == name)


def _nats_conf(objs, edit):
    """Applies `edit` to the NATS ConfigMap's files (nats.conf and what it
    includes); it must change one of them."""
    cm = next(o for o in objs if o.get("kind") == "ConfigMap" and "nats.conf" in (o.get("data") or {}))
    changed = False
    for key, before in list(cm["data"].items()):
        cm["data"][key] = edit(before)
        changed |= cm["data"][key] != before
    if not changed:
        raise LookupError("the mutation changed nothing in the NATS configuration")


def _annotations(objs):
    return _ingress(objs)["metadata"]["annotations"]


MUTATIONS = [
    ("resources", "edge container without resources",
     lambda o: _container(o, "qrlogin-edge").pop("resources")),
    ("resources", "NATS without a memory limit",
     lambda o: _container(o, "nats")["resources"]["limits"].pop("memory")),
    ("probes", "auth without readinessProbe",
     lambda o: _container(o, "qrlogin-auth").pop("readinessProbe")),
    ("security-context", "edge with a writable root filesystem",
     lambda o: _container(o, "qrlogin-edge")["securityContext"].update(readOnlyRootFilesystem=False)),
    ("security-context", "NATS keeping its capabilities",
     lambda o: _container(o, "nats")["securityContext"].pop("capabilities")),
    ("images-pinned", "auth image on latest",
     lambda o: _container(o, "qrlogin-auth").update(image="ghcr.io/qrlogin/qrlogin:latest")),
    ("images-pinned", "NATS image without a tag",
     lambda o: _container(o, "nats").update(image="nats")),
    ("edge-grace", "grace period shorter than preStop + drain",
     lambda o: m.pod_spec(_one(o, "Deployment", "qrlogin-edge")).update(terminationGracePeriodSeconds=12)),
    ("edge-grace", "drain deadline raised above the grace period",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_DRAIN_DEADLINE", "1m")),
    ("ingress-streaming", "proxy buffering back on",
     lambda o: _annotations(o).pop("nginx.ingress.kubernetes.io/proxy-buffering")),
    ("ingress-streaming", "read timeout of 60 s",
     lambda o: _annotations(o).update({"nginx.ingress.kubernetes.io/proxy-read-timeout": "60"})),
    ("ingress-streaming", "cookie affinity",
     lambda o: _annotations(o).update({"nginx.ingress.kubernetes.io/affinity": "cookie"})),
    ("metrics-private", "the /metrics block removed",
     lambda o: o.remove(_ingress(o, "qrlogin-metrics-denied"))),
    ("metrics-private", "the /metrics block open to the internal network",
     lambda o: _ingress(o, "qrlogin-metrics-denied")["metadata"]["annotations"]
     .update({"nginx.ingress.kubernetes.io/denylist-source-range": "10.0.0.0/8"})),
    ("network-policies", "auth gRPC opened to NATS pods",
     lambda o: _policy(o, "qrlogin-auth")["spec"]["ingress"][0]["from"][0]["podSelector"]
     .update(matchLabels={"app.kubernetes.io/name": "nats"})),
    ("network-policies", "NATS client port opened to every namespace",
     lambda o: _policy(o, "nats")["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})),
    ("network-policies", "auth policy selecting no pod",
     lambda o: _policy(o, "qrlogin-auth")["spec"]["podSelector"]
     .update(matchLabels={"app.kubernetes.io/name": "auth"})),
    ("default-deny", "the default-deny policy removed",
     lambda o: o.remove(_policy(o, "default-deny"))),
    ("egress", "no DNS for anyone",
     lambda o: o.remove(_policy(o, "dns"))),
    ("egress", "the edge allowed to connect anywhere",
     lambda o: _policy(o, "qrlogin-edge")["spec"]["egress"].append({})),
    ("egress", "auth allowed out to the edges",
     lambda o: _policy(o, "qrlogin-auth")["spec"]["egress"].append(
         {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "qrlogin-edge"}}}],
          "ports": [{"protocol": "TCP", "port": 8080}]})),
    ("egress", "NATS routes closed",
     lambda o: _policy(o, "nats")["spec"].pop("egress")),
    ("edge-ports", "the operations port opened to the ingress controller",
     lambda o: _policy(o, "qrlogin-edge")["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 9090})),
    ("edge-ports", "the public port opened to every namespace",
     lambda o: _policy(o, "qrlogin-edge")["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})),
    ("prod-tls", "edges calling auth in plaintext",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_AUTH_URL", "http://qrlogin-auth:50051")),
    ("prod-tls", "auth without client certificates (no mTLS)",
     lambda o: _container(o, "qrlogin-auth")["env"].__setitem__(
         slice(None), [e for e in _container(o, "qrlogin-auth")["env"]
                       if e["name"] != "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE"])),
    ("prod-tls", "NATS routes without verification",
     lambda o: _nats_conf(o, lambda c: c.replace("verify: true", "verify: false"))),
    ("wiring", "edge listening on another subject prefix than auth publishes to",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_SUBJECT_PREFIX", "qrlogin.events")),
    ("wiring", "auth pointed at the headless NATS monitoring port",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_NATS_URL", "nats://nats-headless:8222")),
    ("wiring", "Ingress host not the site's",
     lambda o: _ingress(o)["spec"]["rules"][0].update(host="other.example.com")),
    ("hpa-target", "HPA scaling the auth Deployment",
     lambda o: _one(o, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="qrlogin-auth")),
    ("hpa-target", "edge replicas fixed in the manifest next to the HPA",
     lambda o: _one(o, "Deployment", "qrlogin-edge")["spec"].update(replicas=4)),
    ("pdb-selectors", "edge PDB with a mistyped selector",
     lambda o: next(p for p in o if p.get("kind") == "PodDisruptionBudget"
                    and p["metadata"]["name"] == "qrlogin-edge")["spec"]["selector"]
     .update(matchLabels={"app.kubernetes.io/name": "qrlogin-egde"})),
    ("service-ports", "edge Service pointing at a port the container lacks",
     lambda o: next(s for s in o if s.get("kind") == "Service" and s["metadata"]["name"] == "qrlogin-edge")
     ["spec"]["ports"][0].update(targetPort=9999)),
    ("env-in-code", "edge variable misspelled",
     lambda o: _rename_env(_container(o, "qrlogin-edge"), "QRLOGIN_DRAIN_DEADLINE", "QRLOGIN_DRAIN_TIMEOUT")),
    ("env-values", "cookie policy the edge does not know",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_COOKIE_SECURE", "true")),
    ("env-values", "drain deadline without a unit",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_DRAIN_DEADLINE", "10")),
    ("env-values", "auth listening on a host name",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_AUTH_LISTEN", "auth:50051")),
    ("env-values", "origin with a path",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_ALLOWED_ORIGINS", "https://a.example/login")),
    ("env-in-code", "auth-only variable given to the edge",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_KV_REPLICAS", "3")),
    ("ports-match-config", "edge listening on another port than it declares",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_EDGE_LISTEN", "0.0.0.0:9000")),
    ("ports-match-config", "auth gRPC probe on the wrong port",
     lambda o: _container(o, "qrlogin-auth")["readinessProbe"]["grpc"].update(port=50052)),
    ("key-files-mounted", "auth key file outside the Secret",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_ACCESS_TOKEN_PRIVATE_KEY_FILE",
                        "/etc/qrlogin/keys/access.pem")),
    ("key-files-mounted", "a Secret committed with the manifests",
     lambda o: o.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leaked"}})),
    ("nats-accounts", "anonymous clients let in",
     lambda o: _nats_conf(o, lambda c: c.replace("system_account: SYS", "system_account: SYS\nno_auth_user: x"))),
    ("nats-accounts", "the edge user allowed to publish",
     lambda o: _nats_conf(o, lambda c: c.replace('publish: { deny: [">"] }', 'publish: { allow: [">"] }'))),
    ("nats-accounts", "the edge user subscribing to every subject",
     lambda o: _nats_conf(o, lambda c: c.replace('allow: ["qrlogin.session.*"]', 'allow: [">"]'))),
    ("nats-accounts", "the auth user with the whole JetStream API",
     lambda o: _nats_conf(o, lambda c: c.replace('"$JS.API.INFO",', '"$JS.API.>",'))),
    ("nats-accounts", "the auth user publishing events itself",
     lambda o: _nats_conf(o, lambda c: c.replace('"$JS.API.INFO",', '"$JS.API.INFO", "qrlogin.session.>",'))),
    ("nats-accounts", "the auth user writing another bucket",
     lambda o: _nats_conf(o, lambda c: c.replace('"$KV.qrlogin_limits.>"', '"$KV.other.>"'))),
    ("env-values", "a bucket size without a unit it knows",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_KV_MAX_BYTES", "1GB")),
    ("nats-accounts", "an nkey written into the ConfigMap",
     lambda o: _nats_conf(o, lambda c: c.replace("nkey: $EDGE_NKEY", "nkey: UABC"))),
    ("nats-accounts", "the edge without its NATS seed",
     lambda o: _container(o, "qrlogin-edge")["env"].__setitem__(
         slice(None), [e for e in _container(o, "qrlogin-edge")["env"]
                       if e["name"] != "QRLOGIN_NATS_NKEY_SEED_FILE"])),
    ("kv-replicas", "five bucket replicas on three servers",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_KV_REPLICAS", "5")),
    ("prod-shape", "development user-token key in production",
     lambda o: _set_env(_container(o, "qrlogin-edge"), "QRLOGIN_DEV_USER_TOKEN_KEY_FILE", "/k/u.pem")),
    ("prod-shape", "a single NATS server in production",
     lambda o: _one(o, "StatefulSet", "nats")["spec"].update(replicas=1)),
    ("prod-shape", "gRPC reflection on in production",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_GRPC_REFLECTION", "true")),
    ("prod-shape", "pretty logs in production",
     lambda o: _set_env(_container(o, "qrlogin-auth"), "QRLOGIN_LOG_FORMAT", "pretty")),
]


def run(prod: list[dict], ctx):
    checks = {**invariants.ALL, **invariants.PROD_ONLY}
    for name, description, mutate in MUTATIONS:
        check = checks[name]
        before = check(prod, ctx)
        if before:
            yield f"{name} / {description}", ["the unmodified prod rendering already fails, "
                                              f"so this mutation proves nothing: {before[0]}"]
            continue
        broken = copy.deepcopy(prod)
        mutate(broken)
        after = check(broken, ctx)
        yield f"{name} / {description}", [] if after else ["the broken copy still passes"]

"""What must hold in every rendered overlay of deploy/k8s.

Each check takes the rendered objects and a Context and returns a list of
problems (empty = holds). This file holds the checks of single workloads and
their containers; network_invariants.py those between objects. ALL and
PROD_ONLY list them all. test_manifests.py runs them on every overlay and
self_check.py proves each one can fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import code_config as cc
import manifest_model as m
import nats_accounts
import network_invariants as net

LISTEN_VARS = {"qrlogin-auth": "QRLOGIN_AUTH_LISTEN", "qrlogin-edge": "QRLOGIN_EDGE_LISTEN"}
# Where probes go when not to the main port: the edge's operations port
# (contract C4; 9090 until the code declares QRLOGIN_OPS_LISTEN) and auth's
# plaintext health port (only when QRLOGIN_AUTH_HEALTH_LISTEN is set).
OPS_VAR, OPS_DEFAULT = "QRLOGIN_OPS_LISTEN", "0.0.0.0:9090"
HEALTH_VAR = "QRLOGIN_AUTH_HEALTH_LISTEN"
DEV_KEY_VAR = "QRLOGIN_DEV_USER_TOKEN_KEY_FILE"


@dataclass
class Context:
    overlay: str
    code: dict | None  # service name -> code_config.ServiceConfig
    code_error: str | None = None
    # Secrets make-secrets.sh creates: name -> data keys.
    secrets: dict[str, set[str]] = field(default_factory=dict)


def _each_container(objs):
    for wl in m.workloads(objs):
        for c in m.containers(wl):
            yield wl, c


def _setting(ctx: Context, container: dict, service: str, var: str) -> str | None:
    """A variable's value: the manifest's, else the code's default."""
    value = m.env_map(container).get(var)
    if value is not None:
        return value
    if ctx.code:
        return ctx.code[service].defaults.get(var)
    return None


def check_resources(objs, ctx):
    bad = []
    for wl, c in _each_container(objs):
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for kind in ("cpu", "memory"):
                if not (res.get(part) or {}).get(kind):
                    bad.append(f"{m.name_of(wl)} container {c['name']}: no {part}.{kind}")
    return bad


def check_probes(objs, ctx):
    bad = []
    for wl in m.workloads(objs):
        for c in m.containers(wl, init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    bad.append(f"{m.name_of(wl)} container {c['name']}: no {probe}")
    return bad


def check_security_context(objs, ctx):
    bad = []
    for wl, c in _each_container(objs):
        pod = m.pod_spec(wl).get("securityContext") or {}
        sc = c.get("securityContext") or {}
        where = f"{m.name_of(wl)} container {c['name']}"
        if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
            bad.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            bad.append(f"{where}: runs as uid 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            bad.append(f"{where}: capabilities do not drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            bad.append(f"{where}: adds capabilities")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            bad.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
    return bad


def check_images_pinned(objs, ctx):
    bad = []
    for wl, c in _each_container(objs):
        image = c.get("image", "")
        if "@sha256:" in image:
            continue
        repo = m.image_repository(image)
        tag = image[len(repo) + 1 :] if len(image) > len(repo) else ""
        if not tag:
            bad.append(f"{m.name_of(wl)} container {c['name']}: image {image!r} has no tag")
        elif tag == "latest" or tag.startswith("latest-"):
            bad.append(f"{m.name_of(wl)} container {c['name']}: image {image!r} uses latest")
    return bad


def check_edge_grace(objs, ctx):
    bad = []
    edges = m.workload_for(objs, "qrlogin-edge")
    if not edges:
        return ["no workload runs qrlogin-edge"]
    for wl in edges:
        grace = m.pod_spec(wl).get("terminationGracePeriodSeconds", 30)
        for c in m.containers(wl, init=False):
            if m.service_of(c) != "qrlogin-edge":
                continue
            drain = m.env_map(c).get("QRLOGIN_DRAIN_DEADLINE")
            sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
            if drain is None:
                bad.append(f"{m.name_of(wl)}: QRLOGIN_DRAIN_DEADLINE is not set")
                continue
            if not sleep:
                bad.append(f"{m.name_of(wl)}: no lifecycle.preStop.sleep")
                continue
            try:
                needed = cc.parse_duration(drain) + sleep["seconds"]
            except ValueError as err:
                bad.append(f"{m.name_of(wl)}: QRLOGIN_DRAIN_DEADLINE: {err}")
                continue
            if grace <= needed:
                bad.append(
                    f"{m.name_of(wl)}: terminationGracePeriodSeconds {grace} is not above "
                    f"preStop sleep {sleep['seconds']}s + drain deadline {drain}"
                )
    return bad


def check_env_in_code(objs, ctx):
    if ctx.code is None:
        return [ctx.code_error or "configuration code not loaded"]
    bad = []
    for wl, c in _each_container(objs):
        service = m.service_of(c)
        if service is None:
            continue
        for name in m.env_map(c):
            if name.startswith("QRLOGIN_") and name not in ctx.code[service].env:
                bad.append(f"{m.name_of(wl)}: {name} is not read by {service} "
                           f"({', '.join(ctx.code[service].files)})")
    return bad


def check_env_values(objs, ctx):
    """Every literal value parses the way the service's code parses it."""
    if ctx.code is None:
        return [ctx.code_error or "configuration code not loaded"]
    bad = []
    for wl, c in _each_container(objs):
        service = m.service_of(c)
        if service is None:
            continue
        for name, value in m.env_map(c).items():
            spec = ctx.code[service].specs.get(name)
            if spec is None or value is None:
                continue
            problem = cc.validate_value(spec, value)
            if problem:
                bad.append(f"{m.name_of(wl)}: {name}: {problem}")
    return bad


def check_ports_match_config(objs, ctx):
    bad = []
    for wl, c in _each_container(objs):
        service = m.service_of(c)
        if service is None:
            continue
        where = f"{m.name_of(wl)} container {c['name']}"
        address = _setting(ctx, c, service, LISTEN_VARS[service])
        if address is None:
            bad.append(f"{where}: {LISTEN_VARS[service]} neither set nor defaulted in the code")
            continue
        try:
            port = cc.listen_port(address)
        except ValueError as err:
            bad.append(f"{where}: {LISTEN_VARS[service]}: {err}")
            continue
        if port not in m.container_ports(c).values():
            bad.append(f"{where}: listens on {port} ({LISTEN_VARS[service]}) but declares "
                       f"ports {sorted(set(m.container_ports(c).values()))}")
        # Probe ports: the edge's on its operations port, auth's on its
        # health port when it has one (readiness; liveness may stay on the
        # main port, a TCP check), else on the main port.
        probe_ports = {p: {port} for p in ("readinessProbe", "livenessProbe", "startupProbe")}
        if service == "qrlogin-edge":
            ops = cc.listen_port(_setting(ctx, c, service, OPS_VAR) or OPS_DEFAULT)
            if ops not in m.container_ports(c).values() or m.resolve_port(c, "ops") != ops:
                bad.append(f"{where}: the operations port {ops} ({OPS_VAR}) is not declared as 'ops'")
            probe_ports = {p: {ops} for p in probe_ports}
        health = m.env_map(c).get(HEALTH_VAR)
        if service == "qrlogin-auth" and health:
            health_port = cc.listen_port(health)
            if health_port not in m.container_ports(c).values():
                bad.append(f"{where}: {HEALTH_VAR} port {health_port} is not declared")
            probe_ports["readinessProbe"] = {health_port}
            probe_ports["livenessProbe"] = {port, health_port}
        for probe, allowed in probe_ports.items():
            spec = c.get(probe) or {}
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in spec and m.resolve_port(c, spec[handler]["port"]) not in allowed:
                    bad.append(f"{where}: {probe} port {spec[handler]['port']!r} is not {sorted(allowed)}")
        ann = m.pod_annotations(wl)
        if service == "qrlogin-edge":
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
                bad.append(f"{m.name_of(wl)}: Prometheus scrape annotations missing")
            if ann.get("prometheus.io/port") != str(probe_ports["readinessProbe"].copy().pop()):
                bad.append(f"{m.name_of(wl)}: prometheus.io/port is not the operations port")
    return bad


def check_key_files_mounted(objs, ctx):
    """Every *_FILE variable points into a mounted volume, and every Secret
    used is one make-secrets.sh creates, with the keys it writes."""
    bad = []
    for wl, c in _each_container(objs):
        volumes = {v["name"]: v for v in m.pod_spec(wl).get("volumes", []) or []}
        for vol in volumes.values():
            secret = vol.get("secret")
            if secret is None:
                continue
            keys = ctx.secrets.get(secret["secretName"])
            if keys is None:
                bad.append(f"{m.name_of(wl)}: Secret {secret['secretName']} is not made by make-secrets.sh")
                continue
            for item in secret.get("items") or []:
                if item["key"] not in keys:
                    bad.append(f"{m.name_of(wl)}: Secret {secret['secretName']} has no key {item['key']}")
        for name, value in m.env_map(c).items():
            if not name.endswith("_FILE") or value is None:
                continue
            mount = next((vm for vm in c.get("volumeMounts", []) or []
                          if value.startswith(vm["mountPath"].rstrip("/") + "/")), None)
            if mount is None:
                bad.append(f"{m.name_of(wl)}: {name}={value} is on no mounted volume")
                continue
            secret = (volumes.get(mount["name"]) or {}).get("secret") or {}
            relative = value[len(mount["mountPath"].rstrip("/")) + 1 :]
            items = secret.get("items")
            files = ({i["path"] for i in items} if items
                     else ctx.secrets.get(secret.get("secretName"), set()))
            if secret and relative not in files:
                bad.append(f"{m.name_of(wl)}: {name}={value}: no such file in Secret "
                           f"{secret.get('secretName')}")
    for obj in objs:
        if obj.get("kind") == "Secret":
            bad.append(f"{m.name_of(obj)}: Secrets are created by make-secrets.sh, never committed")
    return bad


def check_kv_replicas(objs, ctx):
    nats = m.workload_for(objs, "nats")
    servers = sum(w["spec"].get("replicas", 1) for w in nats)
    bad = []
    for wl in m.workload_for(objs, "qrlogin-auth"):
        for c in m.containers(wl, init=False):
            value = m.env_map(c).get("QRLOGIN_KV_REPLICAS", "1")
            if not value.isdigit() or not 1 <= int(value) <= servers:
                bad.append(f"{m.name_of(wl)}: QRLOGIN_KV_REPLICAS={value} with {servers} NATS servers")
    return bad


def check_prod_shape(objs, ctx):
    """Production only: the highly available shape and no development key."""
    bad = []
    want = {"nats": 3, "qrlogin-auth": 2, "qrlogin-edge": 3}
    for role, least in want.items():
        wls = m.workload_for(objs, role)
        count = sum(m.effective_replicas(objs, w) for w in wls)
        if count < least or (role == "nats" and count != 3):
            bad.append(f"{role}: {count} replicas, production needs {'3' if role == 'nats' else f'>= {least}'}")
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        if hpa["spec"].get("minReplicas", 1) < want["qrlogin-edge"]:
            bad.append(f"{m.name_of(hpa)}: minReplicas below {want['qrlogin-edge']}")
    for wl, c in _each_container(objs):
        service = m.service_of(c)
        env = m.env_map(c)
        if DEV_KEY_VAR in env:
            bad.append(f"{m.name_of(wl)}: {DEV_KEY_VAR} is set in production")
        if service and env.get("QRLOGIN_LOG_FORMAT") != "json":
            bad.append(f"{m.name_of(wl)}: QRLOGIN_LOG_FORMAT is not json")
        if service == "qrlogin-auth" and env.get("QRLOGIN_KV_REPLICAS") != "3":
            bad.append(f"{m.name_of(wl)}: QRLOGIN_KV_REPLICAS is not 3")
        if service == "qrlogin-auth" and _setting(ctx, c, service, "QRLOGIN_GRPC_REFLECTION") != "false":
            bad.append(f"{m.name_of(wl)}: gRPC reflection is on in production")
        for vol in m.pod_spec(wl).get("volumes", []) or []:
            if (vol.get("secret") or {}).get("secretName") == "qrlogin-dev-user-token":
                bad.append(f"{m.name_of(wl)}: mounts the development user-token key")
    return bad


def check_prod_tls(objs, ctx):
    """Production only: TLS on every hop inside the cluster. auth serves
    gRPC over mutual TLS, edges call it over https:// with a client
    certificate, both reach NATS over tls:// with a CA, and NATS runs TLS for
    clients and (verified) for routes."""
    import nats_checks

    need = {
        "qrlogin-auth": ("QRLOGIN_AUTH_TLS_CERT_FILE", "QRLOGIN_AUTH_TLS_KEY_FILE",
                         "QRLOGIN_AUTH_TLS_CLIENT_CA_FILE", "QRLOGIN_NATS_TLS_CA_FILE"),
        "qrlogin-edge": ("QRLOGIN_AUTH_TLS_CA_FILE", "QRLOGIN_AUTH_TLS_CLIENT_CERT_FILE",
                         "QRLOGIN_AUTH_TLS_CLIENT_KEY_FILE", "QRLOGIN_NATS_TLS_CA_FILE"),
    }
    bad = []
    for wl, c in _each_container(objs):
        service = m.service_of(c)
        if service is None:
            continue
        env = m.env_map(c)
        for var in need[service]:
            if not env.get(var):
                bad.append(f"{m.name_of(wl)}: {var} is not set (TLS in production)")
        urls = (env.get("QRLOGIN_NATS_URL") or "").split(",")
        if not all(u.strip().startswith("tls://") for u in urls):
            bad.append(f"{m.name_of(wl)}: QRLOGIN_NATS_URL is not tls://")
        if service == "qrlogin-edge" and not (env.get("QRLOGIN_AUTH_URL") or "").startswith("https://"):
            bad.append(f"{m.name_of(wl)}: QRLOGIN_AUTH_URL is not https://")
    for sts in m.workload_for(objs, "nats"):
        conf, problems = nats_checks.config_of(objs, sts)
        bad += problems
        if conf is None:
            continue
        cluster = conf.find("cluster")
        top = conf[:cluster] if cluster >= 0 else conf
        if not re.search(r"^\s*tls\s*[:=]?\s*\{", top, re.M):
            bad.append(f"{m.name_of(sts)}: no tls block for clients")
        if cluster >= 0 and not re.search(r"tls\s*[:=]?\s*\{[^}]*verify\s*[:=]\s*true", conf[cluster:], re.S):
            bad.append(f"{m.name_of(sts)}: cluster routes without verified TLS")
    return bad


ALL = {
    "resources": check_resources,
    "probes": check_probes,
    "security-context": check_security_context,
    "images-pinned": check_images_pinned,
    "edge-grace": check_edge_grace,
    "ingress-streaming": net.check_ingress,
    "metrics-private": net.check_metrics_private,
    "network-policies": net.check_network_policies,
    "default-deny": net.check_default_deny,
    "egress": net.check_egress,
    "edge-ports": net.check_edge_ports,
    "hpa-target": net.check_hpa,
    "pdb-selectors": net.check_pdbs,
    "service-ports": net.check_service_ports,
    "wiring": net.check_wiring,
    "env-in-code": check_env_in_code,
    "env-values": check_env_values,
    "ports-match-config": check_ports_match_config,
    "key-files-mounted": check_key_files_mounted,
    "kv-replicas": check_kv_replicas,
    "nats-accounts": nats_accounts.check_nats_accounts,
}
PROD_ONLY = {"prod-shape": check_prod_shape, "prod-tls": check_prod_tls}

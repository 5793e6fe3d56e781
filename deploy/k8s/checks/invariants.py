"""What must hold in every rendered overlay of deploy/k8s.

Each check takes the rendered objects and a Context and returns a list of
problems (empty = holds). This file holds the checks of single workloads and
their containers; network_invariants.py those between objects. ALL and
PROD_ONLY list them all. test_manifests.py runs them on every overlay and
self_check.py proves each one can fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import code_config as cc
import manifest_model as m
import nats_accounts
import network_invariants as net

LISTEN_VARS = {"qrlogin-auth": "QRLOGIN_AUTH_LISTEN", "qrlogin-edge": "QRLOGIN_EDGE_LISTEN"}
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
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            spec = c.get(probe) or {}
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in spec and m.resolve_port(c, spec[handler]["port"]) != port:
                    bad.append(f"{where}: {probe} port {spec[handler]['port']!r} is not {port}")
        ann = m.pod_annotations(wl)
        if service == "qrlogin-edge":
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
                bad.append(f"{m.name_of(wl)}: Prometheus scrape annotations missing")
            if ann.get("prometheus.io/port") != str(port):
                bad.append(f"{m.name_of(wl)}: prometheus.io/port is not {port}")
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
        for vol in m.pod_spec(wl).get("volumes", []) or []:
            if (vol.get("secret") or {}).get("secretName") == "qrlogin-dev-user-token":
                bad.append(f"{m.name_of(wl)}: mounts the development user-token key")
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
PROD_ONLY = {"prod-shape": check_prod_shape}

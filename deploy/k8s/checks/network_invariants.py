"""Invariants between objects: Ingress, NetworkPolicies, HPA, PDBs, Services.

Same contract as invariants.py: each check takes the rendered objects and a
Context and returns the problems it found.
"""

from __future__ import annotations

import code_config as cc
import manifest_model as m

AFFINITY_PREFIXES = ("affinity", "session-cookie", "upstream-hash-by")
NGINX = "nginx.ingress.kubernetes.io/"
# Intervals a proxy must outlast, with the edge's documented defaults
# (docs/protocol.md) for when neither manifest nor code says otherwise.
STREAM_INTERVALS = {
    "QRLOGIN_SSE_HEARTBEAT": "15s",
    "QRLOGIN_WS_PING": "20s",
    "QRLOGIN_LONG_POLL_MAX": "25s",
}


def _interval(ctx, container: dict, var: str) -> float:
    value = m.env_map(container).get(var)
    if value is None and ctx.code:
        value = ctx.code["qrlogin-edge"].defaults.get(var)
    return cc.parse_duration(value or STREAM_INTERVALS[var])


def denies_everyone(ing: dict) -> bool:
    """An Ingress whose denylist covers every IPv4 and IPv6 client."""
    value = (ing["metadata"].get("annotations") or {}).get(NGINX + "denylist-source-range", "")
    ranges = {r.strip() for r in value.split(",")}
    return {"0.0.0.0/0", "::/0"} <= ranges


def _covers(path: dict, target: str) -> bool:
    if path.get("pathType") == "Exact":
        return path["path"] == target
    prefix = path["path"].rstrip("/")
    return target == prefix or target.startswith(prefix + "/")


def check_metrics_private(objs, ctx):
    """/metrics shares the edge's port: where an Ingress forwards it, another
    Ingress on the same host must refuse exactly that path to everyone."""
    ingresses = [o for o in objs if o.get("kind") == "Ingress"]
    bad = []
    for ing in (i for i in ingresses if not denies_everyone(i)):
        for rule in ing["spec"].get("rules", []):
            host = rule.get("host")
            if not any(_covers(p, "/metrics") for p in rule.get("http", {}).get("paths", [])):
                continue
            blocked = any(
                r.get("host") == host and any(_covers(p, "/metrics") for p in r.get("http", {}).get("paths", []))
                for other in ingresses if denies_everyone(other) for r in other["spec"].get("rules", []))
            if not blocked:
                bad.append(f"{m.name_of(ing)}: /metrics on {host} is public")
    return bad


def check_ingress(objs, ctx):
    ingresses = [o for o in objs if o.get("kind") == "Ingress"]
    if not ingresses:
        return ["no Ingress"]
    edges = m.workload_for(objs, "qrlogin-edge")
    # Ten missed heartbeats, pings or long polls at the least, and 10 minutes.
    intervals = [600.0]
    for wl in edges:
        for c in m.containers(wl, init=False):
            if m.service_of(c) == "qrlogin-edge":
                intervals += [10 * _interval(ctx, c, var) for var in STREAM_INTERVALS]
    minimum = max(intervals)
    services = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Service"}
    bad = []
    for ing in ingresses:
        ann = ing["metadata"].get("annotations") or {}
        where = m.name_of(ing)
        if denies_everyone(ing):
            continue
        if ann.get(NGINX + "proxy-buffering") != "off":
            bad.append(f"{where}: proxy-buffering is not off (SSE would be buffered)")
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            value = ann.get(NGINX + key)
            if value is None or not value.isdigit() or int(value) < minimum:
                bad.append(f"{where}: {key} is {value!r}, needs >= {minimum:.0f} s")
        for key in ann:
            if key.startswith(NGINX) and key[len(NGINX) :].startswith(AFFINITY_PREFIXES):
                bad.append(f"{where}: {key} sets affinity; edges are stateless")
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                if svc is None:
                    bad.append(f"{where}: backend Service {backend['name']} does not exist")
                    continue
                if not any(m.service_selector_matches(svc["spec"].get("selector"), m.pod_labels(wl))
                           for wl in edges):
                    bad.append(f"{where}: backend {backend['name']} does not select the edge pods")
                port = backend.get("port", {})
                want = port.get("name", port.get("number"))
                if not any(want in (p.get("name"), p.get("port")) for p in svc["spec"]["ports"]):
                    bad.append(f"{where}: Service {backend['name']} has no port {want!r}")
    return bad


def _policies_for(objs, labels):
    return [o for o in objs if o.get("kind") == "NetworkPolicy"
            and "Ingress" in (o["spec"].get("policyTypes") or ["Ingress"])
            and m.selector_matches(o["spec"].get("podSelector"), labels)]


def _rule_allows(rule, port_number, port_name):
    ports = rule.get("ports") or []
    return not ports or any(p.get("port") in (port_number, port_name) for p in ports)


def _check_port_peers(objs, target, port_name, allowed_roles, label):
    """Every rule that opens `port_name` of `target` pods admits only pods of
    `allowed_roles`, and each allowed role is admitted by some rule."""
    bad = []
    roles = {r: m.workload_for(objs, r) for r in {"qrlogin-auth", "qrlogin-edge", "nats"}}
    for wl in target:
        c = m.containers(wl, init=False)[0]
        number = m.resolve_port(c, port_name)
        policies = _policies_for(objs, m.pod_labels(wl))
        if not policies:
            bad.append(f"no NetworkPolicy selects the {label} pods ({m.name_of(wl)})")
            continue
        admitted = set()
        for pol in policies:
            for rule in pol["spec"].get("ingress") or []:
                if not _rule_allows(rule, number, port_name):
                    continue
                peers = rule.get("from")
                if not peers:
                    bad.append(f"{m.name_of(pol)}: port {number} open to everyone")
                    continue
                for peer in peers:
                    if "ipBlock" in peer or "namespaceSelector" in peer:
                        bad.append(f"{m.name_of(pol)}: port {number} open beyond the allowed pods")
                        continue
                    hits = {r for r, wls in roles.items()
                            if any(m.selector_matches(peer.get("podSelector"), m.pod_labels(w))
                                   for w in wls)}
                    if not hits:
                        bad.append(f"{m.name_of(pol)}: a peer of port {number} selects no pods")
                    for extra in hits - set(allowed_roles):
                        bad.append(f"{m.name_of(pol)}: {extra} may reach {label} port {number}")
                    admitted |= hits
        for role in allowed_roles:
            if role not in admitted:
                bad.append(f"{role} cannot reach {label} port {port_name} ({number})")
    return bad


def check_network_policies(objs, ctx):
    auth = m.workload_for(objs, "qrlogin-auth")
    nats = m.workload_for(objs, "nats")
    if not auth or not nats:
        return ["auth or NATS workload missing"]
    bad = _check_port_peers(objs, auth, "grpc", ["qrlogin-edge"], "auth gRPC")
    bad += _check_port_peers(objs, nats, "client", ["qrlogin-auth", "qrlogin-edge"], "NATS client")
    if any(wl["spec"].get("replicas", 1) > 1 for wl in nats):
        bad += _check_port_peers(objs, nats, "cluster", ["nats"], "NATS route")
    return bad


def check_hpa(objs, ctx):
    hpas = [o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"]
    if not hpas:
        return ["no HorizontalPodAutoscaler"]
    edges = {(w["kind"], w["metadata"]["name"]) for w in m.workload_for(objs, "qrlogin-edge")}
    bad = []
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) not in edges:
            bad.append(f"{m.name_of(hpa)} targets {ref.get('kind')}/{ref.get('name')}, not the edge")
        for wl in m.workloads(objs):
            if (wl["kind"], wl["metadata"]["name"]) == (ref.get("kind"), ref.get("name")) \
                    and "replicas" in wl["spec"]:
                bad.append(f"{m.name_of(wl)} sets replicas although {m.name_of(hpa)} owns the "
                           "count (every apply would reset it)")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            bad.append(f"{m.name_of(hpa)}: minReplicas above maxReplicas")
    return bad


def check_pdbs(objs, ctx):
    pdbs = [o for o in objs if o.get("kind") == "PodDisruptionBudget"]
    bad = []
    for role in ("qrlogin-edge", "nats"):
        for wl in m.workload_for(objs, role):
            if not any(m.selector_matches(p["spec"].get("selector"), m.pod_labels(wl)) for p in pdbs):
                bad.append(f"no PodDisruptionBudget covers {m.name_of(wl)}")
    for pdb in pdbs:
        if not pdb["spec"].get("selector"):
            bad.append(f"{m.name_of(pdb)} has no selector")
        elif not any(m.selector_matches(pdb["spec"]["selector"], m.pod_labels(wl))
                     for wl in m.workloads(objs)):
            bad.append(f"{m.name_of(pdb)} selects no pods")
    return bad


def check_service_ports(objs, ctx):
    bad = []
    for svc in (o for o in objs if o.get("kind") == "Service"):
        selected = [wl for wl in m.workloads(objs)
                    if m.service_selector_matches(svc["spec"].get("selector"), m.pod_labels(wl))]
        if not selected:
            bad.append(f"{m.name_of(svc)} selects no pods")
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for wl in selected:
                if not any(m.resolve_port(c, target) for c in m.containers(wl, init=False)):
                    bad.append(f"{m.name_of(svc)} targetPort {target!r} is no container port of {m.name_of(wl)}")
    return bad


SHARED_SETTINGS = ("QRLOGIN_SUBJECT_PREFIX", "QRLOGIN_PUBLIC_BASE_URL",
                   "QRLOGIN_USER_TOKEN_ISSUER", "QRLOGIN_USER_TOKEN_AUDIENCE")


def _reaches(objs, url: str, role: str, port_name: str) -> bool:
    """Whether a cluster-internal URL (scheme://service[.ns...]:port) lands
    on the `port_name` container port of `role`'s pods."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    name = host.split(".", 1)[0]
    svc = next((o for o in objs if o.get("kind") == "Service" and o["metadata"]["name"] == name), None)
    if svc is None or not port.isdigit():
        return False
    entry = next((p for p in svc["spec"]["ports"] if p["port"] == int(port)), None)
    if entry is None:
        return False
    target = entry.get("targetPort", entry["port"])
    for wl in m.workload_for(objs, role):
        if m.service_selector_matches(svc["spec"].get("selector"), m.pod_labels(wl)):
            for c in m.containers(wl, init=False):
                wanted = m.resolve_port(c, port_name)
                if wanted is not None and m.resolve_port(c, target) == wanted:
                    return True
    return False


def check_wiring(objs, ctx):
    """auth and edge agree with each other and reach what their URLs name."""
    if ctx.code is None:
        return [ctx.code_error or "configuration code not loaded"]
    values: dict[str, dict[str, set]] = {}
    bad = []
    for wl in m.workloads(objs):
        for c in m.containers(wl, init=False):
            service = m.service_of(c)
            if service is None:
                continue
            env = m.env_map(c)
            for var in SHARED_SETTINGS:
                value = env.get(var, ctx.code[service].defaults.get(var))
                values.setdefault(var, {}).setdefault(value, set()).add(service)
            for url in (env.get("QRLOGIN_NATS_URL") or "").split(","):
                if not _reaches(objs, url.strip(), "nats", "client"):
                    bad.append(f"{m.name_of(wl)}: QRLOGIN_NATS_URL {url!r} is no NATS Service port")
            if service == "qrlogin-edge":
                if not _reaches(objs, env.get("QRLOGIN_AUTH_URL") or "", "qrlogin-auth", "grpc"):
                    bad.append(f"{m.name_of(wl)}: QRLOGIN_AUTH_URL {env.get('QRLOGIN_AUTH_URL')!r} "
                               "is no auth Service port")
                base = env.get("QRLOGIN_PUBLIC_BASE_URL") or ""
                origins = [o.strip() for o in (env.get("QRLOGIN_ALLOWED_ORIGINS") or "").split(",")]
                if base.rstrip("/") not in origins:
                    bad.append(f"{m.name_of(wl)}: QRLOGIN_ALLOWED_ORIGINS lacks the site {base}")
                host = base.split("://", 1)[-1].split("/", 1)[0]
                for ing in (o for o in objs if o.get("kind") == "Ingress"):
                    hosts = {r.get("host") for r in ing["spec"].get("rules", [])}
                    if hosts != {host}:
                        bad.append(f"{m.name_of(ing)}: hosts {sorted(map(str, hosts))} != site {host}")
                    tls_hosts = {h for t in ing["spec"].get("tls", []) for h in t.get("hosts", [])}
                    if base.startswith("https://") and host not in tls_hosts and not denies_everyone(ing):
                        bad.append(f"{m.name_of(ing)}: site is https but {host} has no TLS")
    for var, seen in values.items():
        if len(seen) > 1:
            bad.append(f"{var} differs between services: " +
                       "; ".join(f"{sorted(s)}={v!r}" for v, s in seen.items()))
    return bad


# --- default deny, egress, the edge's two ports ---------------------------------

# Where each role may open connections (besides DNS): role -> {target role: ports}.
EGRESS = {
    "qrlogin-auth": {"nats": {4222}},
    "qrlogin-edge": {"qrlogin-auth": {50051}, "nats": {4222}},
    "nats": {"nats": {6222}},
}
# Who may reach the edge's ports: port -> the one namespace allowed.
EDGE_INGRESS = {8080: "ingress-nginx", 50061: "ingress-nginx", 9090: "monitoring"}


def _policies_of_type(objs, labels, kind):
    return [o for o in objs if o.get("kind") == "NetworkPolicy"
            and kind in (o["spec"].get("policyTypes") or ["Ingress"])
            and m.selector_matches(o["spec"].get("podSelector"), labels)]


def check_default_deny(objs, ctx):
    """A policy selects every pod for ingress and egress and allows nothing:
    whatever no other policy opens is closed."""
    for pol in (o for o in objs if o.get("kind") == "NetworkPolicy"):
        spec = pol["spec"]
        if (spec.get("podSelector") in ({}, None) and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
                and not spec.get("ingress") and not spec.get("egress")):
            return []
    return ["no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"]


def _is_dns(rule) -> bool:
    ports = rule.get("ports") or []
    udp53 = any(p.get("port") == 53 and p.get("protocol", "TCP") == "UDP" for p in ports)
    peers = rule.get("to") or []
    to_dns = peers and all(
        ((p.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name") == "kube-system"
        and ((p.get("podSelector") or {}).get("matchLabels") or {}).get("k8s-app") == "kube-dns"
        for p in peers)
    return bool(udp53 and to_dns and all(p.get("port") == 53 for p in ports))


def check_egress(objs, ctx):
    """Every pod is under an egress policy; its only ways out are DNS and
    the paths of EGRESS, each of which is open."""
    roles = {r: m.workload_for(objs, r) for r in EGRESS}
    bad = []
    for role, targets in EGRESS.items():
        for wl in roles[role]:
            policies = _policies_of_type(objs, m.pod_labels(wl), "Egress")
            if not policies:
                bad.append(f"no egress NetworkPolicy selects {m.name_of(wl)}")
                continue
            opened, dns = set(), False
            for pol in policies:
                for rule in pol["spec"].get("egress") or []:
                    if _is_dns(rule):
                        dns = True
                        continue
                    peers = rule.get("to")
                    ports = {p.get("port") for p in rule.get("ports") or []}
                    if not peers or not ports:
                        bad.append(f"{m.name_of(pol)}: {role} may connect anywhere")
                        continue
                    for peer in peers:
                        if "ipBlock" in peer or "namespaceSelector" in peer:
                            bad.append(f"{m.name_of(pol)}: {role} may connect beyond the qrlogin pods")
                            continue
                        hits = {r for r, wls in roles.items()
                                if any(m.selector_matches(peer.get("podSelector"), m.pod_labels(w)) for w in wls)}
                        if not hits:
                            bad.append(f"{m.name_of(pol)}: an egress peer of {role} selects no pods")
                        for target in hits:
                            extra = ports - targets.get(target, set())
                            if extra:
                                bad.append(f"{m.name_of(pol)}: {role} may connect to {target} on {sorted(extra)}")
                            opened |= {(target, p) for p in ports & targets.get(target, set())}
            if not dns:
                bad.append(f"{m.name_of(wl)}: no egress to the cluster DNS (kube-dns, UDP 53)")
            for target, ports in targets.items():
                for port in ports:
                    if (target, port) not in opened:
                        bad.append(f"{m.name_of(wl)}: {role} cannot reach {target} on {port}")
    return bad


def check_edge_ports(objs, ctx):
    """The edge's public port and its gRPC watch port admit only the ingress
    controller's namespace, its operations port only the monitoring
    namespace."""
    bad = []
    for wl in m.workload_for(objs, "qrlogin-edge"):
        c = next(c for c in m.containers(wl, init=False) if m.service_of(c) == "qrlogin-edge")
        admitted = {port: set() for port in EDGE_INGRESS}
        for pol in _policies_of_type(objs, m.pod_labels(wl), "Ingress"):
            for rule in pol["spec"].get("ingress") or []:
                ports = {m.resolve_port(c, p.get("port")) or p.get("port") for p in rule.get("ports") or []}
                if not ports:
                    bad.append(f"{m.name_of(pol)}: an ingress rule of the edge opens every port")
                    continue
                for port in ports:
                    want = EDGE_INGRESS.get(port)
                    if want is None:
                        bad.append(f"{m.name_of(pol)}: edge port {port} is opened")
                        continue
                    for peer in rule.get("from") or [{}]:
                        ns = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {}).get(
                            "kubernetes.io/metadata.name")
                        if ns != want or "podSelector" in peer or "ipBlock" in peer:
                            bad.append(f"{m.name_of(pol)}: edge port {port} admits {peer or 'everyone'}, "
                                       f"not only the {want} namespace")
                        else:
                            admitted[port].add(ns)
        for port, ns in EDGE_INGRESS.items():
            if ns not in admitted[port]:
                bad.append(f"{m.name_of(wl)}: the {ns} namespace cannot reach edge port {port}")
    return bad

"""Checks of the monitoring component (PodMonitor, PrometheusRule).

kubernetes-validate knows no CRDs (it only warns "couldn't find schema"),
and the prometheus-operator CRDs are not shipped by any registry this
project installs from, so these objects get a structural check of our own
instead of a schema validation:

  * strict shape: every field is one the monitoring.coreos.com/v1 CRD
    defines for that place (the subset listed below, from the CRD reference
    of prometheus-operator), with the right type; required fields present;
    durations in the CRD's pattern; scrapeTimeout not above interval;
  * a PodMonitor selects pods of the rendering, whose containers declare
    the endpoint's named port, whose labels carry the jobLabel, and whose
    NetworkPolicy lets the "monitoring" namespace reach that port;
  * the PrometheusRule holds exactly the groups of deploy/monitoring/rules/
    (the files promtool checks and tests), and promtool accepts them.

run() also breaks copies of the objects one way per check and requires the
check to fail, so that none passes by accident.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

import manifest_model as m

GROUP = "monitoring.coreos.com/v1"
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

STR, INT, BOOL, MAP, LIST, DUR = "string", "integer", "boolean", "map", "list", "duration"
ANY = "any"

# Fields of monitoring.coreos.com/v1 we allow, with their types (a subset of
# the CRDs: what a PodMonitor or PrometheusRule of ours could sensibly use).
METADATA = {"name": STR, "namespace": STR, "labels": MAP, "annotations": MAP}
LABEL_SELECTOR = {"matchLabels": MAP, "matchExpressions": LIST}
POD_METRICS_ENDPOINT = {
    "port": STR, "portNumber": INT, "path": STR, "scheme": STR, "params": MAP,
    "interval": DUR, "scrapeTimeout": DUR, "honorLabels": BOOL, "honorTimestamps": BOOL,
    "trackTimestampsStaleness": BOOL, "metricRelabelings": LIST, "relabelings": LIST,
    "tlsConfig": ANY, "authorization": ANY, "basicAuth": ANY, "bearerTokenSecret": ANY,
    "oauth2": ANY, "proxyUrl": STR, "followRedirects": BOOL, "enableHttp2": BOOL,
    "filterRunning": BOOL,
}
POD_MONITOR_SPEC = {
    "jobLabel": STR, "podTargetLabels": LIST, "podMetricsEndpoints": LIST, "selector": LABEL_SELECTOR,
    "namespaceSelector": ANY, "sampleLimit": INT, "targetLimit": INT, "labelLimit": INT,
    "labelNameLengthLimit": INT, "labelValueLengthLimit": INT, "keepDroppedTargets": INT,
    "attachMetadata": ANY, "scrapeClass": STR, "scrapeProtocols": LIST, "bodySizeLimit": STR,
}
RULE_GROUP = {"name": STR, "interval": DUR, "rules": LIST, "limit": INT,
              "partial_response_strategy": STR, "query_offset": DUR, "labels": MAP}
RULE = {"record": STR, "alert": STR, "expr": ANY, "for": DUR, "keep_firing_for": DUR,
        "labels": MAP, "annotations": MAP}


def _typed(value, kind) -> bool:
    if kind == ANY or isinstance(kind, dict):
        return kind == ANY or isinstance(value, dict)
    return {
        STR: lambda v: isinstance(v, str),
        INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
        BOOL: lambda v: isinstance(v, bool),
        MAP: lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        LIST: lambda v: isinstance(v, list),
        DUR: lambda v: isinstance(v, str) and bool(DURATION.match(v)),
    }[kind](value)


def _shape(obj, fields: dict, where: str, required=()) -> list[str]:
    bad = []
    if not isinstance(obj, dict):
        return [f"{where}: not an object"]
    for key in required:
        if key not in obj:
            bad.append(f"{where}.{key}: required")
    for key, value in obj.items():
        if key not in fields:
            bad.append(f"{where}.{key}: unknown field")
        elif not _typed(value, fields[key]):
            kind = fields[key] if isinstance(fields[key], str) else "object"
            bad.append(f"{where}.{key}: not a {kind}: {value!r}")
        elif isinstance(fields[key], dict):
            bad += _shape(value, fields[key], f"{where}.{key}")
    return bad


def _seconds(d: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|[ywdhms])", d))


def _top(obj: dict, kind: str) -> list[str]:
    where = m.name_of(obj)
    bad = _shape(obj, {"apiVersion": STR, "kind": STR, "metadata": METADATA, "spec": ANY}, where,
                 required=("apiVersion", "kind", "metadata", "spec"))
    if obj.get("apiVersion") != GROUP:
        bad.append(f"{where}: apiVersion is not {GROUP}")
    if not obj.get("metadata", {}).get("name"):
        bad.append(f"{where}: metadata.name required")
    return bad


def check_pod_monitor_shape(obj: dict) -> list[str]:
    where = m.name_of(obj)
    bad = _top(obj, "PodMonitor")
    spec = obj.get("spec", {})
    bad += _shape(spec, POD_MONITOR_SPEC, f"{where}.spec", required=("selector", "podMetricsEndpoints"))
    for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
        w = f"{where}.spec.podMetricsEndpoints[{i}]"
        bad += _shape(ep, POD_METRICS_ENDPOINT, w)
        if not ep.get("port") and "portNumber" not in ep:
            bad.append(f"{w}: needs port (a container port name) or portNumber")
        if ep.get("scheme", "http") not in ("http", "https", "HTTP", "HTTPS"):
            bad.append(f"{w}.scheme: {ep['scheme']!r}")
        iv, to = ep.get("interval"), ep.get("scrapeTimeout")
        if iv and to and DURATION.match(iv) and DURATION.match(to) and _seconds(to) > _seconds(iv):
            bad.append(f"{w}: scrapeTimeout {to} above interval {iv}")
    return bad


def check_prometheus_rule_shape(obj: dict) -> list[str]:
    where = m.name_of(obj)
    bad = _top(obj, "PrometheusRule")
    spec = obj.get("spec", {})
    bad += _shape(spec, {"groups": LIST}, f"{where}.spec", required=("groups",))
    names = set()
    for i, group in enumerate(spec.get("groups") or []):
        w = f"{where}.spec.groups[{i}]"
        bad += _shape(group, RULE_GROUP, w, required=("name", "rules"))
        if group.get("name") in names:
            bad.append(f"{w}: duplicate group name {group.get('name')!r}")
        names.add(group.get("name"))
        for j, rule in enumerate(group.get("rules") or []):
            rw = f"{w}.rules[{j}]"
            bad += _shape(rule, RULE, rw, required=("expr",))
            if ("record" in rule) == ("alert" in rule):
                bad.append(f"{rw}: exactly one of record and alert")
            if "record" in rule and not METRIC_NAME.match(str(rule["record"])):
                bad.append(f"{rw}.record: not a metric name: {rule['record']!r}")
            if "record" in rule and ("for" in rule or "annotations" in rule):
                bad.append(f"{rw}: a recording rule has no for/annotations")
            for label in (rule.get("labels") or {}):
                if not LABEL_NAME.match(label):
                    bad.append(f"{rw}.labels: {label!r} is not a label name")
    return bad


def _selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _policy_allows_monitoring(objs, pod_labels: dict, port: int) -> bool:
    for pol in (o for o in objs if o.get("kind") == "NetworkPolicy"):
        if not _selects(pol["spec"].get("podSelector", {}), pod_labels):
            continue
        for rule in pol["spec"].get("ingress") or []:
            from_monitoring = any(
                (peer.get("namespaceSelector", {}).get("matchLabels") or {}).get(
                    "kubernetes.io/metadata.name") == "monitoring"
                for peer in rule.get("from") or [])
            if from_monitoring and any(p.get("port") == port for p in rule.get("ports") or []):
                return True
    return False


def check_pod_monitor_targets(objs: list[dict], pm: dict) -> list[str]:
    where = m.name_of(pm)
    spec = pm.get("spec", {})
    pods = [wl for wl in m.workloads(objs) if _selects(spec.get("selector", {}), m.pod_labels(wl))]
    if not pods:
        return [f"{where}: selects no pods of this rendering"]
    bad = []
    for wl in pods:
        labels = m.pod_labels(wl)
        if spec.get("jobLabel") and spec["jobLabel"] not in labels:
            bad.append(f"{where}: pods of {m.name_of(wl)} lack the jobLabel {spec['jobLabel']!r}")
        for ep in spec.get("podMetricsEndpoints") or []:
            ports = {name: num for c in m.containers(wl, init=False)
                     for name, num in m.container_ports(c).items()}
            port = ports.get(ep.get("port")) if ep.get("port") else ep.get("portNumber")
            if port is None:
                bad.append(f"{where}: {m.name_of(wl)} declares no port {ep.get('port')!r}")
                continue
            if not _policy_allows_monitoring(objs, labels, port):
                bad.append(f"{where}: no NetworkPolicy lets the monitoring namespace reach "
                           f"{m.name_of(wl)} on {port}")
            ann = m.pod_annotations(wl)
            if ann.get("prometheus.io/port") not in (None, str(port)):
                bad.append(f"{where}: {m.name_of(wl)} annotates prometheus.io/port "
                           f"{ann['prometheus.io/port']}, the PodMonitor scrapes {port}")
    return bad


def rule_files(repo: Path) -> list[dict]:
    groups = []
    for path in sorted((repo / "deploy" / "monitoring" / "rules").glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def check_rules_match_files(rule: dict, repo: Path) -> list[str]:
    if rule.get("spec", {}).get("groups") != rule_files(repo):
        return [f"{m.name_of(rule)}: spec.groups differ from deploy/monitoring/rules/*.yml "
                "(run deploy/monitoring/render-k8s.py)"]
    return []


def check_promtool(rule: dict) -> list[str] | None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        f.flush()
        out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    return [] if out.returncode == 0 else [f"{m.name_of(rule)}: promtool: {out.stdout}{out.stderr}"]


def _checks(objs: list[dict], repo: Path):
    pms = [o for o in objs if o.get("kind") == "PodMonitor"]
    rules = [o for o in objs if o.get("kind") == "PrometheusRule"]
    yield "PodMonitor shape (structural, strict)", [p for pm in pms for p in check_pod_monitor_shape(pm)]
    yield "PrometheusRule shape (structural, strict)", [p for r in rules for p in check_prometheus_rule_shape(r)]
    yield "PodMonitors scrape declared, reachable ops ports", [
        p for pm in pms for p in check_pod_monitor_targets(objs, pm)]
    yield "PrometheusRule is deploy/monitoring/rules/", [p for r in rules for p in check_rules_match_files(r, repo)]


def _breakages():
    """(what, how to break a copy, the check that must then fail)."""
    def first(objs, kind):
        return next(o for o in objs if o.get("kind") == kind)

    def unknown_field(objs):
        first(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["prot"] = "ops"

    def bad_duration(objs):
        first(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"

    def wrong_port(objs):
        first(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] = "metrics"

    def rule_drift(objs):
        first(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["expr"] = "vector(1)"

    def rule_unknown(objs):
        first(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["severity"] = "page"

    return [
        ("an unknown PodMonitor field", unknown_field, "PodMonitor shape (structural, strict)"),
        ("a malformed duration", bad_duration, "PodMonitor shape (structural, strict)"),
        ("a port no pod declares", wrong_port, "PodMonitors scrape declared, reachable ops ports"),
        ("an unknown rule field", rule_unknown, "PrometheusRule shape (structural, strict)"),
        ("a rule that differs from the files", rule_drift, "PrometheusRule is deploy/monitoring/rules/"),
    ]


def run(objs: list[dict], repo: Path):
    """(check name, problems) pairs; nothing when the rendering has no
    monitoring objects."""
    if not any(o.get("apiVersion") == GROUP for o in objs):
        return
    yield "monitoring objects present (2 PodMonitors, 1 PrometheusRule)", (
        [] if sorted(o["kind"] for o in objs if o.get("apiVersion") == GROUP)
        == ["PodMonitor", "PodMonitor", "PrometheusRule"] else ["expected auth's and the edge's PodMonitor and one PrometheusRule"])
    yield from _checks(objs, repo)
    rules = [o for o in objs if o.get("kind") == "PrometheusRule"]
    for rule in rules:
        problems = check_promtool(rule)
        if problems is not None:
            yield "PrometheusRule passes promtool check rules", problems
    for what, breaker, check in _breakages():
        broken = copy.deepcopy(objs)
        breaker(broken)
        caught = dict(_checks(broken, repo))[check]
        yield f"self-check: {check} catches {what}", [] if caught else [f"{what} went unnoticed"]

"""Reading rendered manifests.

The invariants work on plain dicts as `kubectl kustomize` renders them. This
module finds the pieces they look at: workloads and their containers, which
qrlogin service a container runs, label selectors and ports.
"""

from __future__ import annotations

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
SERVICES = ("qrlogin-auth", "qrlogin-edge")


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o.get("kind") in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    return workload.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(workload: dict) -> dict:
    return workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def pod_annotations(workload: dict) -> dict:
    meta = workload.get("spec", {}).get("template", {}).get("metadata", {})
    return meta.get("annotations", {}) or {}


def containers(workload: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(workload)
    found = list(spec.get("containers", []) or [])
    if init:
        found += spec.get("initContainers", []) or []
    return found


def image_repository(image: str) -> str:
    """`ghcr.io/qrlogin/qrlogin:0.1.0` -> `ghcr.io/qrlogin/qrlogin`."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


def service_of(container: dict) -> str | None:
    """Which qrlogin binary a container runs (None for third-party images).

    The image's default command is the edge, so a qrlogin image without a
    `command` runs the edge.
    """
    command = container.get("command") or []
    if command:
        binary = str(command[0]).rsplit("/", 1)[-1]
        return binary if binary in SERVICES else None
    if image_repository(container.get("image", "")).rsplit("/", 1)[-1] == "qrlogin":
        return "qrlogin-edge"
    return None


def is_nats(container: dict) -> bool:
    return image_repository(container.get("image", "")).rsplit("/", 1)[-1] == "nats"


def workload_for(objs: list[dict], role: str) -> list[dict]:
    """Workloads whose containers run `role` (a service name, or "nats")."""
    found = []
    for wl in workloads(objs):
        for c in containers(wl, init=False):
            if (role == "nats" and is_nats(c)) or service_of(c) == role:
                found.append(wl)
                break
    return found


def effective_replicas(objs: list[dict], workload: dict) -> int:
    """The replica floor: an autoscaler's minReplicas when one scales the
    workload, else spec.replicas (1 when absent, as Kubernetes defaults it)."""
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) == (workload["kind"], workload["metadata"]["name"]):
            return hpa["spec"].get("minReplicas", 1)
    return workload["spec"].get("replicas", 1)


def env_map(container: dict) -> dict[str, str | None]:
    """Literal env values by name (None for valueFrom)."""
    return {e["name"]: e.get("value") for e in container.get("env", []) or []}


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions).

    An empty selector matches everything, as in NetworkPolicy and PDB.
    """
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A Service selector is a plain map; an empty one selects nothing."""
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def container_ports(container: dict) -> dict[str, int]:
    """Port name (or the number as text) -> number."""
    ports = {}
    for p in container.get("ports", []) or []:
        ports[str(p["containerPort"])] = p["containerPort"]
        if p.get("name"):
            ports[p["name"]] = p["containerPort"]
    return ports


def resolve_port(container: dict, port) -> int | None:
    """A probe's or Service's port (number or name) as a number, if declared."""
    return container_ports(container).get(str(port))

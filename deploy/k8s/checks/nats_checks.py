"""The NATS server configuration carried in the rendered ConfigMap.

Structure (routes name every StatefulSet pod through the headless Service,
JetStream stores on the persistent volume, ports agree with the probes) is
checked in Python; syntax and meaning by the pinned nats-server itself:
`nats-server -t`, and a real start of the single-server configuration with
its ports moved to free loopback ports, until /healthz?js-enabled-only=true
answers 200 and an anonymous client is refused. The environment the server
reads (pod name, public nkeys from Secrets) is filled in from the
StatefulSet and make-secrets.sh's throw-away keys.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import code_config as cc
import manifest_model as m

NATS_SERVER = Path(__file__).resolve().parents[3] / ".tools/bin/nats-server"
ROUTES_RE = re.compile(r"\broutes\s*[:=]?\s*\[(.*?)\]", re.S)
CLUSTER_RE = re.compile(r"^\s*cluster\s*[:=]?\s*\{", re.M)
STORE_RE = re.compile(r"\bstore_dir\s*[:=]?\s*\"?([^\s\"]+)")
# nats-server's defaults when the configuration does not say.
LAME_DUCK_DEFAULTS = {"lame_duck_duration": "2m", "lame_duck_grace_period": "10s"}


INCLUDE_RE = re.compile(r"^\s*include\s+[\"']?(?:\./)?([\w.-]+)[\"']?\s*$", re.M)


def _config_files(objs, sts) -> tuple[dict[str, str] | None, str | None, list[str]]:
    """(every key of the ConfigMap holding the configuration, the key of the
    file the command reads, problems)."""
    c = next(c for c in m.containers(sts, init=False) if m.is_nats(c))
    args = (c.get("command") or []) + (c.get("args") or [])
    path = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")), None)
    if path is None:
        return None, None, [f"{m.name_of(sts)}: nats-server is started without --config"]
    mount = next((vm for vm in c.get("volumeMounts", []) if path.startswith(vm["mountPath"] + "/")), None)
    if mount is None:
        return None, None, [f"{m.name_of(sts)}: {path} is on no mounted volume"]
    volume = next(v for v in m.pod_spec(sts)["volumes"] if v["name"] == mount["name"])
    cm_name = (volume.get("configMap") or {}).get("name")
    cm = next((o for o in objs if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == cm_name), None)
    key = path[len(mount["mountPath"]) + 1 :]
    if cm is None or key not in (cm.get("data") or {}):
        return None, None, [f"{m.name_of(sts)}: ConfigMap {cm_name} has no {key}"]
    return dict(cm["data"]), key, []


def _config_of(objs, sts) -> tuple[str | None, list[str]]:
    """The nats.conf text the StatefulSet's command reads, with its
    `include`s (other keys of the same ConfigMap) written in place."""
    files, key, problems = _config_files(objs, sts)
    if files is None:
        return None, problems
    missing = []

    def inline(hit):
        name = hit.group(1)
        if name not in files:
            missing.append(f"{m.name_of(sts)}: {key} includes {name}, which the ConfigMap lacks")
            return ""
        return files[name]

    text = INCLUDE_RE.sub(inline, files[key])
    return (None, missing) if missing else (text, [])


def structure(objs, sts, conf: str) -> list[str]:
    bad = []
    replicas = sts["spec"].get("replicas", 1)
    name = sts["metadata"]["name"]
    headless = sts["spec"].get("serviceName")
    svc = next((o for o in objs if o.get("kind") == "Service" and o["metadata"]["name"] == headless), None)
    if svc is None or svc["spec"].get("clusterIP") != "None":
        bad.append(f"{m.name_of(sts)}: serviceName {headless!r} is not a headless Service")
    elif not svc["spec"].get("publishNotReadyAddresses"):
        bad.append(f"Service/{headless}: publishNotReadyAddresses must be true for the cluster to form")
    c = next(c for c in m.containers(sts, init=False) if m.is_nats(c))
    ports = m.container_ports(c)
    routes_block = ROUTES_RE.search(conf)
    if replicas > 1:
        if not CLUSTER_RE.search(conf) or routes_block is None:
            bad.append(f"{m.name_of(sts)}: {replicas} replicas but no cluster routes")
        else:
            routes = set(re.findall(r"nats://([^\s,\]]+)", routes_block.group(1)))
            want = {f"{name}-{i}.{headless}:{ports.get('cluster')}" for i in range(replicas)}
            if routes != want:
                bad.append(f"{m.name_of(sts)}: routes {sorted(routes)} != {sorted(want)}")
    elif routes_block is not None:
        bad.append(f"{m.name_of(sts)}: a single server must not wait for route peers")
    # The preStop hook starts lame duck mode; the kubelet must not kill the
    # server before it has moved its clients away.
    lame = 0.0
    for key, default in LAME_DUCK_DEFAULTS.items():
        found = re.search(rf"\b{key}\s*[:=]\s*\"?(\w+)", conf)
        lame += cc.parse_duration(found.group(1) if found else default)
    grace = m.pod_spec(sts).get("terminationGracePeriodSeconds", 30)
    if grace <= lame:
        bad.append(f"{m.name_of(sts)}: terminationGracePeriodSeconds {grace} <= lame duck mode ({lame:.0f} s)")
    if "jetstream" not in conf:
        bad.append(f"{m.name_of(sts)}: JetStream is not enabled")
    store = STORE_RE.search(conf)
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {vm["mountPath"]: vm["name"] for vm in c.get("volumeMounts", [])}
    if store is None or not any(store.group(1).startswith(p) and n in claims for p, n in mounts.items()):
        bad.append(f"{m.name_of(sts)}: JetStream store_dir is not on a volumeClaimTemplate")
    for port_name, pattern in (("client", r"\blisten\s*[:=]\s*[\d.]*:(\d+)"),
                               ("monitor", r"\bhttp\s*[:=]\s*[\d.]*:(\d+)")):
        found = re.search(pattern, conf)
        if found is None or int(found.group(1)) != ports.get(port_name):
            bad.append(f"{m.name_of(sts)}: config {port_name} port does not match containerPort {port_name}")
    return bad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(sts, pod_name: str, secret_values: dict[str, dict[str, str]]) -> tuple[dict, list[str]]:
    """The environment nats-server gets in the pod: the pod name from the
    downward API, Secret values from make-secrets.sh's (throw-away) ones."""
    c = next(c for c in m.containers(sts, init=False) if m.is_nats(c))
    env, bad = {}, []
    for e in c.get("env", []) or []:
        source = e.get("valueFrom") or {}
        if "value" in e:
            env[e["name"]] = e["value"]
        elif (source.get("fieldRef") or {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = (secret_values.get(ref["name"]) or {}).get(ref["key"])
            if value is None:
                bad.append(f"{e['name']}: Secret {ref['name']} key {ref['key']} is not made by make-secrets.sh")
            else:
                env[e["name"]] = value
    return env, bad


def materialize(objs, sts, secret_values, tmp: Path) -> tuple[Path | None, list[str]]:
    """Writes the configuration's files into `tmp`/config and the NATS
    container's mounted Secrets (make-secrets.sh's throw-away values, e.g.
    TLS certificates) under `tmp`/secrets, with the mount paths in the
    configuration rewritten to there. Returns the main file."""
    files, key, problems = _config_files(objs, sts)
    if files is None:
        return None, problems
    c = next(c for c in m.containers(sts, init=False) if m.is_nats(c))
    volumes = {v["name"]: v for v in m.pod_spec(sts).get("volumes", []) or []}
    moves = {}
    for vm in c.get("volumeMounts", []) or []:
        secret = (volumes.get(vm["name"]) or {}).get("secret")
        if not secret:
            continue
        data = secret_values.get(secret["secretName"])
        if data is None:
            problems.append(f"{m.name_of(sts)}: Secret {secret['secretName']} is not made by make-secrets.sh")
            continue
        where = tmp / "secrets" / vm["name"]
        where.mkdir(parents=True, exist_ok=True)
        for item, value in data.items():
            (where / item).write_text(value)
        moves[vm["mountPath"].rstrip("/")] = str(where)
    conf_dir = tmp / "config"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        for old, new in moves.items():
            text = text.replace(old + "/", new + "/")
        (conf_dir / name).write_text(text)
    return conf_dir / key, problems


def syntax(objs, sts, secret_values, env: dict) -> list[str]:
    if not NATS_SERVER.exists():
        return [f"{NATS_SERVER} missing (run tools/bootstrap.sh)"]
    with tempfile.TemporaryDirectory() as tmp:
        main, problems = materialize(objs, sts, secret_values, Path(tmp))
        if main is None or problems:
            return problems
        out = subprocess.run([str(NATS_SERVER), "-t", "-c", str(main)], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=30)
    return [] if out.returncode == 0 else [(out.stdout + out.stderr).strip()]


def anonymous_refused(port: int) -> list[str]:
    """A client that sends CONNECT without credentials is told
    'Authorization Violation' (raw protocol: no NATS client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.recv(4096)  # INFO
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as err:
        return [f"cannot talk to nats-server: {err}"]
    if b"Authorization Violation" not in answer:
        return [f"an anonymous client got {answer[:80]!r}, not an authorization violation"]
    return []


def move_config(conf: str, moved: dict[str, str]) -> tuple[str, list[str]]:
    """The configuration with the values of top-level `key: value` lines replaced."""
    for key, value in moved.items():
        conf, found = re.subn(rf"^(\s*{key}\s*[:=]\s*)\S+",
                              lambda hit, v=value: f'{hit.group(1)}"{v}"', conf, flags=re.M)
        if found != 1:
            return conf, [f"cannot move {key} for the test: {found} occurrences"]
    return conf, []


def boots(objs, sts, secret_values, env: dict, timeout: float = 20.0) -> list[str]:
    """Start the configuration for real, its ports, store and pid file moved
    to free loopback ports and a temporary directory, and wait for JetStream
    to report healthy."""
    with tempfile.TemporaryDirectory() as tmp:
        main, problems = materialize(objs, sts, secret_values, Path(tmp))
        if main is None or problems:
            return problems
        conf = main.read_text()
        monitor = _free_port()
        client = _free_port()
        conf, problems = move_config(conf, {
            "listen": f"127.0.0.1:{client}",
            "http": f"127.0.0.1:{monitor}",
            "store_dir": f"{tmp}/store",
            "pid_file": f"{tmp}/nats.pid",
        })
        if problems:
            return problems
        conf_path = main
        conf_path.write_text(conf)
        proc = subprocess.Popen([str(NATS_SERVER), "-c", str(conf_path)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return [f"nats-server exited: {proc.stderr.read().strip()[-500:]}"]
                try:
                    url = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        if resp.status == 200:
                            return anonymous_refused(client)
                except (urllib.error.URLError, ConnectionError):
                    pass
                time.sleep(0.1)
            return [f"JetStream not healthy after {timeout:.0f} s"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def config_of(objs, sts):
    """(nats.conf text or None, problems)."""
    return _config_of(objs, sts)


def run(objs, secret_values):
    """(check name, problems) for every NATS StatefulSet in a rendering."""
    for sts in m.workload_for(objs, "nats"):
        conf, problems = _config_of(objs, sts)
        label = f"nats config of {m.name_of(sts)}"
        if conf is None:
            yield label, problems
            continue
        pod = f"{sts['metadata']['name']}-0"
        yield f"{label}: structure", structure(objs, sts, conf)
        env, problems = server_env(sts, pod, secret_values)
        yield f"{label}: environment from make-secrets.sh", problems
        yield f"{label}: nats-server -t", syntax(objs, sts, secret_values, env)
        if sts["spec"].get("replicas", 1) == 1:
            yield f"{label}: boots, JetStream healthy, anonymous refused", boots(objs, sts, secret_values, env)

"""The manifests meet the real binaries.

Starts a real nats-server with the dev rendering's nats.conf (accounts and
nkey users; random ports, temporary store), then qrlogin-auth and
qrlogin-edge with the environment of the dev rendering's containers,
changing only what must differ outside a cluster: listen addresses (free
loopback ports), the NATS and auth URLs, the key-file paths (keys and nkey
seeds from make-secrets.sh) and the web directory. So the NATS permissions
of the manifests are proved sufficient for the real services. Then checks
what the probes and the grace periods rely on:

  * auth's gRPC health answers SERVING (the readiness probe);
  * the edge's /healthz and /readyz answer 200 and /metrics has the
    connection gauge (the probes and the scrape annotations);
  * after SIGTERM the edge reports 503 on /readyz and exits, cleanly, before
    terminationGracePeriodSeconds minus the preStop sleep; auth exits within
    its grace period.

Uses the binaries already built in target/ (release or debug, whichever is
newer); the caller skips this when there are none.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import manifest_model as m
import nats_checks
from nats_checks import _free_port

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / ".tools/bin"


def find_binaries() -> dict[str, Path] | None:
    found = {}
    for name in m.SERVICES:
        candidates = [p for p in (ROOT / "target/release" / name, ROOT / "target/debug" / name)
                      if p.is_file() and os.access(p, os.X_OK)]
        if not candidates:
            return None
        found[name] = max(candidates, key=lambda p: p.stat().st_mtime)
    return found


def _container_env(objs, service: str) -> tuple[dict, dict, dict]:
    """(literal env, container, workload) of the container running `service`."""
    wl = m.workload_for(objs, service)[0]
    c = next(c for c in m.containers(wl, init=False) if m.service_of(c) == service)
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = f"{wl['metadata']['name']}-smoke"
    return env, c, wl


def _move_key_files(env: dict, keys: Path) -> None:
    """Key files live on mounted Secrets in the cluster; here in `keys`."""
    for name, value in env.items():
        if name.endswith("_FILE"):
            env[name] = str(keys / Path(value).name)


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if predicate():
                return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    return False


def _grpc_serving(port: int) -> bool:
    out = subprocess.run([str(TOOLS / "grpcurl"), "-plaintext", "-max-time", "2", f"127.0.0.1:{port}",
                          "grpc.health.v1.Health/Check"], capture_output=True, text=True)
    return out.returncode == 0 and '"SERVING"' in out.stdout


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:] if path.exists() else ""


def _exit_after(proc: subprocess.Popen, started: float, budget: float) -> tuple[float, int | None]:
    """How long after `started` the process exited (and its code)."""
    try:
        code = proc.wait(timeout=budget + 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return float("inf"), None
    return time.monotonic() - started, code


def run(objs, binaries: dict[str, Path], secret_values, code_env: set[str] = frozenset()):
    missing = [str(t) for t in (TOOLS / "nats-server", TOOLS / "grpcurl") if not t.exists()]
    if missing:
        yield "binaries: tools", [f"{', '.join(missing)} missing (run tools/bootstrap.sh)"]
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        made = subprocess.run([str(ROOT / "deploy/k8s/make-secrets.sh"), "--out", str(keys), "--dev"],
                              capture_output=True, text=True)
        if made.returncode != 0:
            yield "binaries: keys", [made.stderr.strip()]
            return
        procs: list[subprocess.Popen] = []
        logs = []
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("QRLOGIN_", "RUST_LOG"))}

        def start(cmd, env, name):
            logs.append(open(tmp / f"{name}.log", "w"))
            proc = subprocess.Popen(cmd, env={**base_env, **env}, stdout=logs[-1], stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        try:
            # NATS as the dev rendering configures it (accounts, nkey users
            # from make-secrets.sh), its ports and store moved here.
            sts = m.workload_for(objs, "nats")[0]
            conf, problems = nats_checks.config_of(objs, sts)
            nats_port, nats_mon = _free_port(), _free_port()
            if conf is not None:
                conf, problems = nats_checks.move_config(conf, {
                    "listen": f"127.0.0.1:{nats_port}", "http": f"127.0.0.1:{nats_mon}",
                    "store_dir": str(tmp / "js"), "pid_file": str(tmp / "nats.pid")})
            # The Secrets as make-secrets.sh would fill them with this run's keys
            # (its Secret keys are the file names it writes).
            local_secrets = {name: {key: (keys / key).read_text() if (keys / key).is_file() else value
                                    for key, value in data.items()}
                             for name, data in secret_values.items()}
            nats_env, env_problems = nats_checks.server_env(sts, f"{sts['metadata']['name']}-0", local_secrets)
            if conf is None or problems or env_problems:
                yield "binaries: nats-server starts", problems + env_problems
                return
            (tmp / "nats.conf").write_text(conf)
            nats = start([str(TOOLS / "nats-server"), "-c", str(tmp / "nats.conf")], nats_env, "nats")
            if not _wait(lambda: _http(f"http://127.0.0.1:{nats_mon}/healthz?js-enabled-only=true")[0] == 200,
                         20, nats):
                yield "binaries: nats-server starts", [_tail(tmp / "nats.log")]
                return

            auth_env, _, auth_wl = _container_env(objs, "qrlogin-auth")
            auth_port = _free_port()
            _move_key_files(auth_env, keys)
            auth_env.update(QRLOGIN_AUTH_LISTEN=f"127.0.0.1:{auth_port}",
                            QRLOGIN_NATS_URL=f"nats://127.0.0.1:{nats_port}")
            auth = start([str(binaries["qrlogin-auth"]), "serve"], auth_env, "auth")
            ok = _wait(lambda: _grpc_serving(auth_port), 30, auth)
            yield "binaries: auth with the dev manifest's env reports gRPC SERVING", \
                [] if ok else [f"auth not SERVING: {_tail(tmp / 'auth.log')}"]
            if not ok:
                return

            edge_env, edge_c, edge_wl = _container_env(objs, "qrlogin-edge")
            edge_port = _free_port()
            _move_key_files(edge_env, keys)
            edge_env.update(QRLOGIN_EDGE_LISTEN=f"127.0.0.1:{edge_port}",
                            QRLOGIN_NATS_URL=f"nats://127.0.0.1:{nats_port}",
                            QRLOGIN_AUTH_URL=f"http://127.0.0.1:{auth_port}",
                            QRLOGIN_WEB_DIR=str(ROOT / "web"))
            # Probes and metrics are on the operations port (contract C4)
            # once the edge has one (QRLOGIN_OPS_LISTEN); before, on the
            # main port.
            base = f"http://127.0.0.1:{edge_port}"
            if "QRLOGIN_OPS_LISTEN" in code_env:
                ops_port = _free_port()
                edge_env["QRLOGIN_OPS_LISTEN"] = f"127.0.0.1:{ops_port}"
                base = f"http://127.0.0.1:{ops_port}"
            edge = start([str(binaries["qrlogin-edge"])], edge_env, "edge")
            ok = _wait(lambda: _http(base + "/readyz")[0] == 200, 30, edge)
            problems = [] if ok else [f"/readyz never 200: {_tail(tmp / 'edge.log')}"]
            if ok:
                if _http(base + "/healthz")[0] != 200:
                    problems.append("/healthz is not 200")
                path = m.pod_annotations(edge_wl).get("prometheus.io/path", "/metrics")
                status, text = _http(base + path)
                if status != 200 or "qrlogin_edge_connections" not in text:
                    problems.append(f"{path} has no qrlogin_edge_connections")
            yield "binaries: edge with the dev manifest's env is ready (healthz, readyz, metrics)", problems
            if not ok:
                return

            # The drain as the kubelet drives it: SIGTERM after the preStop sleep.
            sleep = edge_c["lifecycle"]["preStop"]["sleep"]["seconds"]
            budget = m.pod_spec(edge_wl).get("terminationGracePeriodSeconds", 30) - sleep
            started = time.monotonic()
            edge.terminate()
            draining = _wait(lambda: _http(base + "/readyz")[0] == 503, 3, edge)
            took, code = _exit_after(edge, started, budget)
            problems = [] if draining or took < 3 else ["/readyz did not turn 503 after SIGTERM"]
            if code != 0 or took > budget:
                problems.append(f"edge exit {code} after {took:.1f} s; the pod allows {budget} s")
            yield f"binaries: edge drains and exits within grace - preStop ({budget} s), took {took:.1f} s", problems

            grace = m.pod_spec(auth_wl).get("terminationGracePeriodSeconds", 30)
            started = time.monotonic()
            auth.terminate()
            took, code = _exit_after(auth, started, grace)
            yield f"binaries: auth exits within its grace period ({grace} s), took {took:.1f} s", \
                [] if code == 0 and took <= grace else [f"auth exit {code} after {took:.1f} s"]
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            for log in logs:
                log.close()

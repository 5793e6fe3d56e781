"""Invariant test for the Kubernetes manifests and the container image.

    .tools/venv/bin/python deploy/k8s/test_manifests.py   (from the repository root)

Renders base and every overlay with `kubectl kustomize` (offline), then:
  * runs every invariant of invariants.py on each rendering (prod-only ones
    on prod);
  * checks the NATS configuration in each rendering with the real
    nats-server (`-t`), and boots the single-server one until JetStream
    answers on /healthz;
  * when target/ holds a built qrlogin-auth: compares each rendering's
    nats.conf with what `qrlogin-auth dev-nats-config` renders for a member
    of the local cluster (checks/nats_source.py: one source for the NATS
    configuration; drift fails), and proves that comparison can fail;
  * checks the Dockerfile and .dockerignore against the manifests and the
    workspace;
  * checks the monitoring component's PodMonitors and PrometheusRule
    (overlays/prod-monitoring) structurally, against the pods they scrape and
    against deploy/monitoring/rules/ (checks/monitoring_checks.py: no CRD
    schemas are available offline);
  * self-check: breaks a copy of the prod rendering in one way per invariant
    and requires that invariant to fail, so none of them passes by accident;
  * when target/ holds built binaries: runs NATS, auth and an edge with the
    dev rendering's environment (checks/binaries.py); skipped otherwise.

The helpers live in checks/. Prints one line per check and
`N passed, N failed, N skipped`; exits 1 on any failure.
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.dont_write_bytecode = True

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE / "checks"))

import binaries  # noqa: E402
import code_config as cc  # noqa: E402
import image_checks  # noqa: E402
import invariants  # noqa: E402
import monitoring_checks  # noqa: E402
import nats_checks  # noqa: E402
import nats_source  # noqa: E402
import self_check  # noqa: E402

KUBECTL = os.environ.get("KUBECTL", "kubectl")
RENDERINGS = {"base": HERE / "base", "dev": HERE / "overlays/dev", "prod": HERE / "overlays/prod",
              "prod-monitoring": HERE / "overlays/prod-monitoring"}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"skip {name} ({why})")

    def record(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"       - {problem}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def render(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"kubectl kustomize {path} failed")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def secrets_catalog() -> dict[str, dict[str, str]]:
    """Run make-secrets.sh (dry run, throw-away keys) and read which Secrets
    and keys it creates, with their (throw-away) values."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(HERE / "make-secrets.sh"), "--out", f"{tmp}/keys", "--dev", "--tls", "--dry-run"],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"make-secrets.sh failed: {out.stderr.strip()}")
    catalog = {}
    for doc in yaml.safe_load_all(out.stdout):
        if doc and doc.get("kind") == "Secret":
            catalog[doc["metadata"]["name"]] = {
                key: base64.b64decode(value).decode() for key, value in (doc.get("data") or {}).items()}
    return catalog


def main() -> int:
    report = Report()
    try:
        code = cc.load_code_config(REPO)
        code_error = None
        for svc, cfg in code.items():
            print(f"     {svc}: {len(cfg.env)} QRLOGIN_* variables in {', '.join(cfg.files)}")
    except cc.ConfigCodeMissing as err:
        code, code_error = None, str(err)
        print(f"     configuration code missing: {err}")

    wanted = {"qrlogin-auth-keys", "qrlogin-edge-keys", "qrlogin-nats-users", "qrlogin-dev-user-token"}
    try:
        secret_values = secrets_catalog()
        report.record(f"make-secrets.sh creates {', '.join(sorted(wanted))}",
                      [] if wanted <= set(secret_values)
                      else [f"created only {sorted(secret_values)}"])
    except RuntimeError as err:
        secret_values = {}
        report.record("make-secrets.sh dry run", [str(err)])
    secrets = {name: set(data) for name, data in secret_values.items()}

    rendered = {}
    for name, path in RENDERINGS.items():
        try:
            rendered[name] = render(path)
            report.record(f"{name}: kubectl kustomize", [])
        except RuntimeError as err:
            report.record(f"{name}: kubectl kustomize", [str(err)])

    for name, objs in rendered.items():
        ctx = invariants.Context(name, code, code_error, secrets)
        checks = dict(invariants.ALL)
        if name == "prod":
            checks.update(invariants.PROD_ONLY)
        for check_name, check in checks.items():
            report.record(f"{name}: {check_name}", check(objs, ctx))
        for check_name, problems in nats_checks.run(objs, secret_values):
            report.record(f"{name}: {check_name}", problems)
        for check_name, problems in monitoring_checks.run(objs, REPO):
            report.record(f"{name}: {check_name}", problems)

    with tempfile.TemporaryDirectory() as tmp:
        renderer, why = nats_source.renderer_or_none(Path(tmp))
        if renderer is None:
            report.skip("NATS configuration: the ConfigMaps follow the local cluster's rules", why)
        else:
            print(f"     nats-one-source: rendering with {why}")
            for name, objs in rendered.items():
                for check_name, problems in nats_source.run(objs, renderer):
                    report.record(f"{name}: {check_name}", problems)
            if "prod" in rendered:
                for check_name, problems in nats_source.self_check(copy.deepcopy(rendered["prod"]), renderer):
                    report.record(f"self-check: {check_name}", problems)

    prod = rendered.get("prod")
    if prod is not None:
        for check_name, problems in image_checks.run(REPO, prod):
            report.record(f"image: {check_name}", problems)
        ctx = invariants.Context("prod", code, code_error, secrets)
        for check_name, problems in self_check.run(copy.deepcopy(prod), ctx):
            report.record(f"self-check: {check_name}", problems)

    dev = rendered.get("dev")
    if dev is not None:
        built = binaries.find_binaries()
        if built is None:
            report.skip("binaries: the dev manifests run the real services",
                        "build them first: cargo build -p qrlogin-auth -p qrlogin-edge")
        else:
            print(f"     binaries: {', '.join(str(p.relative_to(REPO)) for p in built.values())}")
            edge_env = code["qrlogin-edge"].env if code else set()
            for check_name, problems in binaries.run(dev, built, secret_values, edge_env):
                report.record(check_name, problems)

    print(f"{report.passed} passed, {report.failed} failed, {report.skipped} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

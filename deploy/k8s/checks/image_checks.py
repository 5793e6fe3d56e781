"""Static checks of deploy/docker/Dockerfile and .dockerignore.

No container engine is needed: the Dockerfile is read as text and compared
with the workspace (package and binary names, rust-version) and with the
rendered manifests (binary paths, web directory, ports).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import manifest_model as m

OCI_LABELS = ("title", "description", "source", "licenses", "version", "revision")


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def stages(instructions):
    """[(stage name, base image, [instructions])], ARG defaults substituted."""
    args, result = {}, []
    for word, rest in instructions:
        if word == "ARG" and not result:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip().strip('"')
            continue
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda x: args.get(x.group(1) or x.group(2), ""), rest)
            parts = image.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append((name, parts[0], []))
        elif result:
            result[-1][2].append((word, rest))
    return result


def workspace_bins(repo: Path) -> dict[str, set[str]]:
    """Workspace package name -> its binary target names."""
    root = tomllib.loads((repo / "Cargo.toml").read_text())
    found = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((repo / member / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        bins = {b["name"] for b in manifest.get("bin", [])}
        if (repo / member / "src/main.rs").exists():
            bins.add(name)
        bins |= {p.stem for p in (repo / member / "src/bin").glob("*.rs")}
        found[name] = bins
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def run(repo: Path, prod: list[dict]):
    path = repo / "deploy/docker/Dockerfile"
    if not path.exists():
        yield "Dockerfile exists", [f"{path} missing"]
        return
    text = path.read_text()
    st = stages(parse_dockerfile(text))
    names = {s[0] for s in st if s[0]}
    _, final_base, final = st[-1]

    bad = []
    for _, base, _ in st:
        if base in names:
            continue
        tag = base[len(m.image_repository(base)) + 1 :]
        if "@sha256:" not in base and (not tag or tag == "latest"):
            bad.append(f"FROM {base}: not pinned to a tag")
    if len(st) < 2:
        bad.append("not a multi-stage build")
    yield "multi-stage, base images pinned", bad

    bad = []
    builder = next((s for s in st if any("cargo build" in r for w, r in s[2] if w == "RUN")), None)
    if builder is None:
        bad.append("no stage runs cargo build")
    else:
        steps = builder[2]
        cook = next((i for i, (w, r) in enumerate(steps) if w == "RUN" and "cargo chef cook" in r), None)
        source = next((i for i, (w, r) in enumerate(steps) if w == "COPY" and re.match(r"(--\S+\s+)*\.\s", r)), None)
        if cook is None or source is None or cook > source:
            bad.append("dependencies are not built (cargo chef cook) before the sources are copied")
        # Follow FROM <stage> back to the image the builder really starts from.
        chef_base, by_name = builder[1], {n: b for n, b, _ in st if n}
        while chef_base in by_name:
            chef_base = by_name[chef_base]
        rust = _version(chef_base.rsplit(":", 1)[-1])
        want = _version(tomllib.loads((repo / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"])
        if not rust or rust < want:
            bad.append(f"builder image {chef_base} older than rust-version {'.'.join(map(str, want))}")
        bins = workspace_bins(repo)
        # Only the cargo commands themselves, up to the next && or ;.
        cargo = " ".join(re.findall(r"cargo (?:build|chef cook)[^&;]*", " ".join(
            r for w, r in steps if w == "RUN")))
        for flag, wanted in (("-p", bins.keys()), ("--bin", set().union(*bins.values()))):
            for value in re.findall(rf"(?:^|\s){re.escape(flag)}\s+(\S+)", cargo):
                if value not in wanted:
                    what = "package" if flag == "-p" else "binary target"
                    bad.append(f"{flag} {value}: no such {what} in the workspace")
    yield "dependency layer before sources, workspace names exist", bad

    bad = []
    instructions = {w for w, _ in final}
    if "RUN" in instructions:
        bad.append("the runtime stage runs commands (it must not need a shell)")
    if "distroless" not in final_base and final_base != "scratch":
        bad.append(f"runtime base {final_base} is not distroless")
    user = next((r for w, r in reversed(final) if w == "USER"), "")
    if not user or user.split(":")[0] in ("root", "0"):
        bad.append("no non-root USER in the runtime stage")
    if ("STOPSIGNAL", "SIGTERM") not in final:
        bad.append("no STOPSIGNAL SIGTERM")
    labels = " ".join(r for w, r in final if w == "LABEL")
    for label in OCI_LABELS:
        if f"org.opencontainers.image.{label}=" not in labels:
            bad.append(f"OCI label org.opencontainers.image.{label} missing")
    yield "runtime: distroless, non-root, STOPSIGNAL, OCI labels", bad

    bad = []
    copies = [r for w, r in final if w == "COPY"]
    installed = {}
    for args in copies:
        words = [a for a in args.split() if not a.startswith("--")]
        from_context = "--from=" not in args
        dest = words[-1]
        for src in words[:-1]:
            base = src.rstrip("/").rsplit("/", 1)[-1]
            # A directory's contents land in dest; a file lands in dest/ by name.
            if from_context and (repo / src).is_dir():
                installed[base] = dest.rstrip("/")
            else:
                installed[base] = dest.rstrip("/") + "/" + base if dest.endswith("/") else dest
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(r for w, r in final if w == "ENV")))
    exposed = {int(p) for w, r in final if w == "EXPOSE" for p in r.split()}
    for wl in m.workloads(prod):
        for c in m.containers(wl, init=False):
            service = m.service_of(c)
            if service is None:
                continue
            command = (c.get("command") or [f"/usr/local/bin/{service}"])[0]
            if installed.get(service) != command:
                bad.append(f"{m.name_of(wl)} runs {command}; the image has {installed.get(service)}")
            web = m.env_map(c).get("QRLOGIN_WEB_DIR")
            if web is not None and installed.get("web") != web.rstrip("/"):
                bad.append(f"{m.name_of(wl)}: QRLOGIN_WEB_DIR={web}; the image copies web/ to {installed.get('web')}")
            if web is not None and env.get("QRLOGIN_WEB_DIR") != web:
                bad.append(f"image ENV QRLOGIN_WEB_DIR={env.get('QRLOGIN_WEB_DIR')} != manifest {web}")
            for port in set(m.container_ports(c).values()) - exposed:
                bad.append(f"{m.name_of(wl)}: port {port} not EXPOSEd by the image")
    yield "image paths and ports match the manifests", bad

    bad = []
    ignore_file = repo / ".dockerignore"
    if not ignore_file.exists():
        yield ".dockerignore", [".dockerignore missing"]
        return
    patterns = [ln.strip() for ln in ignore_file.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p.strip("/")) or fnmatch.fnmatch(rel, p.strip("/") + "/*")
                   for p in patterns if not p.startswith("!"))

    for needed in ("target", ".git", ".tools"):
        if not ignored(needed):
            bad.append(f"{needed} is sent to the build context")
    for kept in ("Cargo.toml", "Cargo.lock", "proto/build.rs", "services/edge/Cargo.toml", "web/index.html"):
        if ignored(kept):
            bad.append(f"{kept} is excluded but the build needs it")
    yield ".dockerignore keeps the context small and complete", bad

"""The environment variables the services' configuration code declares.

Reads the clap attributes (`#[arg(long, env = "QRLOGIN_...", ...)]`) in
services/<svc>/src/config.rs (or a config/ module) with regular expressions,
so the manifest test notices a renamed variable, and validates manifest
values the way the code would parse them (enums, durations, socket
addresses, CIDR and origin lists, integers, booleans).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("qrlogin-auth", "qrlogin-edge")
# Where each service's typed configuration lives, relative to the repository.
CONFIG_SOURCES = {
    "qrlogin-auth": "services/auth/src/config",
    "qrlogin-edge": "services/edge/src/config",
}
# Settings declared outside the config module and flattened into it: each of
# the edge's transports owns its settings (services/edge/src/transport/).
SETTINGS_SOURCES = {
    "qrlogin-edge": ["services/edge/src/transport"],
}
ENV_RE = re.compile(r'\benv\s*=\s*"(QRLOGIN_[A-Z0-9_]+)"')
DEFAULT_RE = re.compile(r'\bdefault_value\s*=\s*"([^"]*)"')
PARSER_RE = re.compile(r"\bvalue_parser\s*=\s*([\w:]+)")
# After the attribute: doc comments or other attributes, then the field.
FIELD_RE = re.compile(r"\)\]\s*(?:(?:///[^\n]*|#\[[^\n]*\])\s*)*pub\s+\w+\s*:\s*([^,\n]+),")
INTEGER_TYPES = {"u8", "u16", "u32", "u64", "usize", "i32", "i64"}


class ConfigCodeMissing(Exception):
    """The services' configuration files are not there (yet)."""


@dataclass
class EnvSpec:
    name: str
    default: str | None = None
    parser: str | None = None
    field_type: str | None = None
    # Accepted values when the field is a clap ValueEnum.
    choices: list[str] | None = None


@dataclass
class ServiceConfig:
    """The environment variables one service's configuration code declares."""

    name: str
    files: list[str]
    specs: dict[str, EnvSpec] = field(default_factory=dict)

    @property
    def env(self) -> set[str]:
        return set(self.specs)

    @property
    def defaults(self) -> dict[str, str]:
        return {n: s.default for n, s in self.specs.items() if s.default is not None}


def config_files(repo: Path, service: str) -> list[Path]:
    """`config.rs`, or the files of a `config/` module, of one service, and
    the files that declare settings flattened into it."""
    stem = repo / CONFIG_SOURCES[service]
    files = []
    if stem.with_suffix(".rs").is_file():
        files.append(stem.with_suffix(".rs"))
    if stem.is_dir():
        files.extend(sorted(stem.rglob("*.rs")))
    for extra in SETTINGS_SOURCES.get(service, []):
        files.extend(sorted((repo / extra).rglob("*.rs")))
    return files


def _kebab(variant: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", variant).lower()


def _enum_choices(text: str, type_name: str) -> list[str] | None:
    body = re.search(rf"\benum\s+{re.escape(type_name)}\s*\{{(.*?)\n\}}", text, re.S)
    if body is None:
        return None
    choices, renamed = [], None
    for line in body.group(1).splitlines():
        line = line.strip()
        if (rename := re.search(r'#\[value\(name\s*=\s*"([^"]+)"', line)) is not None:
            renamed = rename.group(1)
        elif (variant := re.match(r"([A-Z]\w*)\s*,?$", line)) is not None:
            choices.append(renamed or _kebab(variant.group(1)))
            renamed = None
    return choices


def _spec(text: str, match: re.Match) -> EnvSpec:
    start = text.rfind("#[", 0, match.start())
    end = text.find(")]", match.start())
    attribute = text[start : end + 2] if start >= 0 and end >= 0 else ""
    spec = EnvSpec(match.group(1))
    if (default := DEFAULT_RE.search(attribute)) is not None:
        spec.default = default.group(1)
    if (parser := PARSER_RE.search(attribute)) is not None:
        spec.parser = parser.group(1)
    if (declared := FIELD_RE.match(text, end)) is not None:
        spec.field_type = re.sub(r"^Option<(.*)>$", r"\1", declared.group(1).strip())
        if "value_enum" in attribute:
            spec.choices = _enum_choices(text, spec.field_type)
    return spec


def load_service_config(repo: Path, service: str) -> ServiceConfig:
    files = config_files(repo, service)
    if not files:
        raise ConfigCodeMissing(
            f"{CONFIG_SOURCES[service]}.rs not found: cannot check the {service} "
            "environment variables used in the manifests"
        )
    cfg = ServiceConfig(service, [str(f.relative_to(repo)) for f in files])
    for path in files:
        text = path.read_text(encoding="utf-8")
        for match in ENV_RE.finditer(text):
            cfg.specs.setdefault(match.group(1), _spec(text, match))
    if not cfg.specs:
        raise ConfigCodeMissing(f"no env = \"QRLOGIN_...\" attribute in {', '.join(cfg.files)}")
    return cfg


def load_code_config(repo: Path) -> dict[str, ServiceConfig]:
    return {svc: load_service_config(repo, svc) for svc in SERVICES}


DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|msec|s|sec|secs|m|min|mins|h|hr|hrs)\b")
UNIT_SECONDS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "secs": 1,
                "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600}


def parse_duration(text: str) -> float:
    """humantime-style durations as the services accept them: `10s`, `1m 30s`."""
    text = text.strip()
    pos, total = 0, 0.0
    for match in DURATION_RE.finditer(text):
        if text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"not a duration: {text!r}")
    return total


def listen_port(address: str) -> int:
    """`0.0.0.0:8080` or `[::]:8080` -> 8080 (an IP literal, as SocketAddr wants)."""
    host, _, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return int(port)
    except ValueError:
        raise ValueError(f"not a socket address (IP:port): {address!r}") from None


def _origin(part: str) -> None:
    scheme, sep, rest = part.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise ValueError(f"{part!r} is not an origin like https://example.com")


def _cidr(part: str) -> None:
    try:
        ipaddress.ip_network(part, strict=False)
    except ValueError:
        raise ValueError(f"{part!r} is not a CIDR or an IP address") from None


def validate_value(spec: EnvSpec, value: str) -> str | None:
    """Why the code would refuse `value`, or None when it parses."""
    try:
        if spec.choices is not None:
            if value not in spec.choices:
                return f"{value!r} is not one of {spec.choices}"
        elif spec.parser and spec.parser.endswith(("duration", "parse_duration")):
            parse_duration(value)
        elif spec.parser == "byte_size":
            if not re.fullmatch(r"\d+\s*(B|KiB|MiB|GiB)?", value.strip()):
                return f"{value!r} is not a size like 512MiB"
        elif spec.parser in ("cidr_list", "origin_list"):
            check = _cidr if spec.parser == "cidr_list" else _origin
            for part in filter(None, (p.strip() for p in value.split(","))):
                check(part)
        elif spec.field_type == "SocketAddr":
            listen_port(value)
        elif spec.field_type in INTEGER_TYPES:
            if not re.fullmatch(r"-?\d+", value):
                return f"{value!r} is not an integer"
        elif spec.field_type == "bool" and value not in ("true", "false"):
            return f"{value!r} is not true or false"
    except ValueError as err:
        return str(err)
    return None

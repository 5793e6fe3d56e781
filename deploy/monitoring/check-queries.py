#!/usr/bin/env python3
"""Runs every PromQL expression of the Grafana dashboard and of the rules
against a live Prometheus and checks that each finds series.

- A dashboard query must return at least one series.
- A recording rule must evaluate, and its recorded series must exist.
- An alert's expression must evaluate; every metric it selects must have
  series; and, when it is one comparison against a number, the left side
  must return series (the alert need not fire, but it must be able to).

Waits (up to --wait seconds) for the expressions to pass, since rates need
two scrapes and recorded series one evaluation. Prints one line per check
and then `N passed, N failed`; exits 1 when a check failed.

    check-queries.py --prometheus http://127.0.0.1:9090 [--wait 60]
"""

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana" / "qrlogin.json"
RULES = sorted((HERE / "rules").glob("*.yml"))

# A metric name we own (or `up`), with its label matchers, if any.
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:$])((?:qrlogin[_:][A-Za-z0-9_:]*)|up)(\{[^}]*\})?")
# A trailing comparison against a number: `<expr> > 0.005`.
THRESHOLD = re.compile(r"^(?P<left>.*?)\s*(?:>=|<=|==|!=|>|<)\s*(?:bool\s+)?-?[0-9.eE+]+\s*$", re.S)


def query(base, expr):
    """The instant vector of `expr` now, or an error text."""
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except Exception as e:  # HTTP 400 carries the parse error in its body
        detail = getattr(e, "read", lambda: b"")().decode(errors="replace")
        return None, f"{e} {detail}".strip()
    if body.get("status") != "success":
        return None, body.get("error", "query failed")
    return body["data"]["result"], None


def checks():
    """(name, expression, what the result must satisfy) of every check."""
    out = []
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((f"panel '{panel['title']}' {t['refId']}", t["expr"], "series"))
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = rule["expr"].strip()
                if "record" in rule:
                    out.append((f"record {rule['record']}", expr, "evaluates"))
                    out.append((f"recorded {rule['record']}", rule["record"], "series"))
                    continue
                name = f"alert {rule['alert']}"
                out.append((name, expr, "evaluates"))
                for metric, labels in sorted(set(SELECTOR.findall(expr))):
                    out.append((f"{name} selects {metric}{labels}", metric + labels, "series"))
                m = THRESHOLD.match(expr)
                if m and not re.search(r"\b(and|or|unless)\b", expr):
                    out.append((f"{name} without its threshold", m.group("left"), "series"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--wait", type=float, default=60.0)
    args = ap.parse_args()

    todo = checks()
    results = {}
    deadline = time.monotonic() + args.wait
    while True:
        for name, expr, want in todo:
            if results.get(name, (False,))[0]:
                continue
            series, error = query(args.prometheus, expr)
            if error:
                results[name] = (False, f"error: {error}")
            elif want == "series" and not series:
                results[name] = (False, "no series")
            else:
                results[name] = (True, f"{len(series)} series")
        if all(ok for ok, _ in results.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)

    passed = failed = 0
    for name, expr, _ in todo:
        ok, detail = results[name]
        if ok:
            passed += 1
            print(f"ok   {name} ({detail})")
        else:
            failed += 1
            print(f"FAIL {name}: {detail}\n       {' '.join(expr.split())}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

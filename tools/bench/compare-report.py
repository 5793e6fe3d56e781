#!/usr/bin/env python3
"""The tables of a compare.sh results.json (markdown, as docs/transports.md
quotes them), and with --check N the checks of --quick: every transport and
peer present, every qrlogin transport delivered N of N, throughput measured,
charts drawn. Ends with "N passed, M failed" when checking.

    compare-report.py results.json [--check N --charts DIR]
"""
import json
import os
import sys

TRANSPORTS = ["short-poll-1s", "short-poll-2s", "long-poll", "sse", "ws", "stomp", "grpc"]


def f(v, fmt="{:.1f}"):
    return "–" if v is None else fmt.format(v)


def tables(rows):
    q = {r["transport"]: r for r in rows if r.get("system") == "qrlogin" and r.get("kind") != "throughput"}
    out = ["| transport | waiting | delivered | p50 ms | p95 ms | p99 ms | max ms | bytes/login | HTTP req/login | auth reads/login | edge CPU ms/login | edge KiB/waiting |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in TRANSPORTS:
        r = q.get(t)
        if not r:
            out.append(f"| {t} | missing |")
            continue
        lat = r.get("latency_ms") or {}
        out.append("| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            t, r.get("waiting"), r.get("delivered"), r.get("expected"),
            f(lat.get("p50"), "{:.2f}"), f(lat.get("p95"), "{:.2f}"), f(lat.get("p99"), "{:.2f}"), f(lat.get("max"), "{:.1f}"),
            f(r.get("bytes_per_login"), "{:.0f}"), f(r.get("requests_per_login"), "{:.2f}"),
            f(r.get("auth_reads_per_login"), "{:.2f}"), f(r.get("edge_cpu_ms_per_login"), "{:.2f}"),
            f(r.get("memory_per_conn_kib"), "{:.1f}")))
    out += ["", "| peer | variant | transport | rate | waiting | delivered | p50 ms | p95 ms | p99 ms | max ms | bytes/login | KiB/waiting |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("system") == "qrlogin":
            continue
        lat = r.get("latency_ms") or {}
        out.append("| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |".format(
            r.get("system"), r.get("variant"), r.get("transport"), f(r.get("rate"), "{:.0f}"), r.get("waiting", r.get("sessions")),
            r.get("delivered"), r.get("expected"), f(lat.get("p50"), "{:.2f}"), f(lat.get("p95"), "{:.2f}"),
            f(lat.get("p99"), "{:.2f}"), f(lat.get("max"), "{:.1f}"), f(r.get("bytes_per_login"), "{:.0f}"),
            f(r.get("memory_per_conn_kib"), "{:.1f}")))
    out += ["", "| throughput | highest rate held (logins/s, p99 ≤ limit) | steps (rate: p99 ms, held) | busiest process at the last step |",
            "|---|---|---|---|"]
    for r in rows:
        if r.get("kind") != "throughput":
            continue
        steps = ", ".join("{:.0f}: {} {}".format(s["rate"], f((s.get("completion_ms") or {}).get("p99")), "held" if s.get("held") else "NOT held")
                          for s in r.get("steps", []))
        b = r.get("busiest_process_at_end") or {}
        out.append("| {} auth replica(s) | {} | {} | {} {}% |".format(
            r.get("auth_replicas"), r.get("highest_rate_held"), steps, b.get("process"), f(b.get("cpu_percent"), "{:.0f}")))
    out += stage_table(rows)
    return "\n".join(out)


STAGES = ["create", "watch", "scan", "scanned_push", "confirm", "confirmed_push", "redeem"]


def stage_table(rows):
    """Where a login's time goes at each throughput step: p50 / p99 ms of
    each consecutive stage, and of the whole login."""
    tp = [r for r in rows if r.get("kind") == "throughput"]
    if not any(s.get("stages_ms") for r in tp for s in r.get("steps", [])):
        return []
    out = ["", "| auth replicas | rate | held | " + " | ".join(s.replace("_", " ") for s in STAGES)
           + " | whole login |", "|---|---|---|" + "---|" * (len(STAGES) + 1)]
    pair = lambda d: "{} / {}".format(f((d or {}).get("p50"), "{:.1f}"), f((d or {}).get("p99"), "{:.1f}"))
    for r in tp:
        for s in r.get("steps", []):
            st = s.get("stages_ms") or {}
            out.append("| {} | {:.0f} | {} | {} | {} |".format(
                r.get("auth_replicas"), s["rate"], "yes" if s.get("held") else "no",
                " | ".join(pair(st.get(k)) for k in STAGES), pair(s.get("completion_ms"))))
    return out


def check(rows, n, charts):
    results = []

    def ok(name, cond, detail=""):
        results.append(cond)
        print(("ok  " if cond else "FAIL") + f" {name}" + (f": {detail}" if detail and not cond else ""))

    q = {r["transport"]: r for r in rows if r.get("system") == "qrlogin" and r.get("kind") != "throughput"}
    for t in TRANSPORTS:
        r = q.get(t)
        ok(f"qrlogin {t} present", r is not None)
        if r:
            ok(f"qrlogin {t} delivered {n}/{n}", r.get("delivered") == n and r.get("expected") == n,
               f"{r.get('delivered')}/{r.get('expected')}, errors {r.get('errors')}")
            ok(f"qrlogin {t} has every figure", all(r.get(k) is not None for k in (
                "bytes_per_login", "requests_per_login", "auth_reads_per_login", "edge_cpu_ms_per_login", "memory_per_conn_kib")))
    peers = [r for r in rows if r.get("system") in ("pushpin", "socketio")]
    ok("pushpin stock row", any(r["system"] == "pushpin" and r.get("variant") == "stock" for r in peers))
    ok("pushpin no-rate-limit row", any(r["system"] == "pushpin" and r.get("variant") == "no-rate-limit" for r in peers))
    ok("socketio ws row", any(r["system"] == "socketio" and r.get("transport") == "ws" for r in peers))
    ok("socketio long-poll row", any(r["system"] == "socketio" and r.get("transport") == "long-poll" for r in peers))
    tp = [r for r in rows if r.get("kind") == "throughput"]
    for k in (1, 2):
        r = next((r for r in tp if r.get("auth_replicas") == k), None)
        ok(f"throughput with {k} auth replica(s) measured", r is not None and len(r.get("steps", [])) > 0)
        # The stages are consecutive: their means add up to the whole login's.
        steps = [st for st in (r or {}).get("steps", []) if (st.get("completion_ms") or {}).get("mean")]
        sums = [(sum(((st.get("stages_ms") or {}).get(k) or {}).get("mean") or 0 for k in STAGES),
                 st["completion_ms"]["mean"]) for st in steps]
        ok(f"throughput with {k} auth replica(s): stages add up to the login", bool(sums) and all(
            abs(a - b) <= 0.01 * b + 0.01 for a, b in sums), f"{sums}")
    for c in ("bytes-per-login.svg", "memory-per-waiting.svg", "requests-per-login.svg", "long-poll-round-robin.svg"):
        ok(f"chart {c}", os.path.getsize(os.path.join(charts, c)) > 0 if os.path.exists(os.path.join(charts, c)) else False)
    ok("latency CDF chart", any(x.startswith("latency-cdf-") for x in os.listdir(charts)) if os.path.isdir(charts) else False)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return all(results)


def main():
    args = sys.argv[1:]
    path = args[0]
    try:
        rows = json.load(open(path))
        valid = isinstance(rows, list) and all("system" in r and "transport" in r for r in rows)
    except (OSError, ValueError) as e:
        print(f"FAIL results.json is valid: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
    if "--check" not in args:
        print(tables(rows))
        return
    n = int(args[args.index("--check") + 1])
    charts = args[args.index("--charts") + 1]
    print(("ok  " if valid else "FAIL") + " results.json is a valid array of rows")
    good = check(rows, n, charts)
    if not valid:
        # Count the validity check as well.
        print("results.json invalid")
    sys.exit(0 if good and valid else 1)


if __name__ == "__main__":
    main()

"""The fault run of bench/harness.py (`--faults`): the chaos suite's scenarios against ringlb and
HAProxy side by side. Each scenario runs in its own network namespace through
tests/chaos/scenario.py (the same backends, client, tap and analysis as the chaos suite), once per
target; this module only runs them and renders the table.

HAProxy gets what the issue names (tests/chaos/procs.py haproxy_config): `mode http`, h2 on the
bind and to the servers, `check inter 1s fall 2` (a TCP connect check), `retry-on conn-failure`
with `retries 3` and `option redispatch 1`. ringlb runs with its plain defaults (no route
policy), `workers = 1`, as in the chaos suite.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "tests" / "chaos" / "scenario.py"
DEFAULT_SCENARIOS = ["kill", "sigstop", "blackhole", "unavailable"]
TARGETS = {"ringlb-io_uring": ("ringlb", "io_uring"), "ringlb-epoll": ("ringlb", "epoll"),
           "haproxy-h2": ("haproxy", "epoll")}


def run_one(binary: str, scenario: str, target: str, workdir: Path, log) -> dict:
    kind, io = TARGETS[target]
    out = workdir / f"{scenario}-{target}.json"
    cmd = ["unshare", "--net", "--pid", "--fork", "--kill-child", "/usr/bin/python3",
           str(SCENARIO), scenario, "--target", kind, "--io-backend", io, "--bin", binary,
           "--json", str(out), "--workdir", str(workdir / f"{scenario}-{target}")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if not out.exists():
        return {"scenario": scenario, "target": target,
                "error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-500:]}"}
    res = json.loads(out.read_text())
    res["target"] = target
    log(p.stdout.splitlines()[0] if p.stdout else f"{scenario} {target}: {res.get('error')}")
    return res


def fault_run(binary: str, scenarios: list[str], targets: list[str], log,
              keep: bool = False) -> list[dict]:
    if os.geteuid() != 0:
        raise SystemExit("harness --faults: needs root (unshare --net, iptables)")
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-faults-"))
    log(f"fault run: {', '.join(scenarios)} x {', '.join(targets)}; work folder {workdir}")
    out = [run_one(binary, s, t, workdir, log) for s in scenarios for t in targets]
    if keep:
        log(f"kept {workdir} (configs, logs, raw records of every run)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _fmt(v, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:g}{unit}"


def render(results: list[dict], command: str, when: str) -> str:
    lines = [f"## Fault run ({when})", "",
             f"Command: `{command}`. One client channel at 150 calls/s for 12 s, 2 s deadline, "
             "the fault at 3 s on one of three backends (`tests/chaos/scenario.py`, each run in "
             "its own network namespace). *failed*: calls that did not end OK; *outage*: from "
             "the start of the first failed call to the end of the last; *detection*: the last "
             "call attempt the proxy put on the wire to the bad backend, after the fault (seen "
             "by a tap on loopback); *late attempts*: attempts to it more than 1 s after the "
             "fault (for `unavailable`: within [1 s, 4 s) after it); p99 of the successful "
             "calls.", "",
             "| scenario | target | calls | failed | by status | outage s | detection s "
             "| late attempts | p50 ms | p99 ms |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['scenario']} | {r['target']} | | | could not run: "
                         f"{r['error'][:120].replace('|', '/')} | | | | | |")
            continue
        late = r.get("late_attempts", 0)
        status = ", ".join(f"{k} {v}" for k, v in r["failed_by_status"].items()) or "-"
        lines.append(f"| {r['scenario']} | {r['target']} | {r['calls']} | {r['failed']} | "
                     f"{status} | {_fmt(r['outage_s'])} | {_fmt(r['detection_s'])} | {late} | "
                     f"{_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} |")
    return "\n".join(lines) + "\n"

"""The attack run of bench/harness.py (`--attack`): ringlb and HAProxy side by side under the
attacks of tests/attack (attackers.py, run as a child process from 127.0.0.2), each with a
well-behaved grpcio client on its own connection (unary echo, 50 calls/s, 2 s deadline, 64-byte
payload) and the proxy's VmRSS sampled every 100 ms: tests/attack/scenario.py's timeline, the
same one the attack test suite asserts on. Here nothing is asserted: the table says what each
proxy let the attacker cost the client and itself.

Both proxies get the same single grpcio backend (tests/integration/harness.py's Backend, in this
process) and one worker thread, pinned to the proxy CPU:
  ringlb-io_uring / ringlb-epoll: bench_targets' ringlb config (workers = 1, 1024 streams,
      256 KiB / 8 MiB windows) plus memory_limit = "64MiB"; [limits] at their defaults;
  haproxy-h2: bench_targets' HAProxy config (`mode http`, `proto h2` on the bind and the
      server, nbthread 1, tune.h2.max-concurrent-streams 1024, 256 KiB initial window,
      `http-reuse always`); HAProxy has no per-process memory limit like memory_limit.

Attacks: rapid reset from 1 and from 20 connections, the HPACK bomb, slow readers (2 x 500
calls of 250,000-byte replies, windows of 0). Each proxy is started afresh for each attack.
Needs python3-grpcio, python3-h2, python3-hpack, python3-pytest (the integration harness
imports it) and haproxy; bounded: about 12 s per attack and proxy (< 2 minutes for the default
two proxies).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "attack"))

ATTACKS = {
    # name: (attackers.py attack, seconds, its arguments)
    "rapid_reset_1": ("rapid_reset", 4.0, {"conns": 1, "count": 60_000}),
    "rapid_reset_20": ("rapid_reset", 4.0, {"conns": 20, "count": 60_000}),
    "hpack_bomb": ("hpack_bomb", 4.0, {}),
    "slow_readers": ("slow_readers", 5.0, {"conns": 2, "calls": 500}),
}
TARGETS = ["ringlb-io_uring", "ringlb-epoll", "haproxy-h2"]
DEFAULT_TARGETS = ["ringlb-io_uring", "haproxy-h2"]
MEMORY_LIMIT_MIB = 64
ATTACKER = "127.0.0.2"


def preflight() -> str | None:
    """None, or what is missing."""
    missing = []
    for mod, pkg in (("grpc", "python3-grpcio"), ("h2", "python3-h2"), ("hpack", "python3-hpack"),
                     ("pytest", "python3-pytest")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if not shutil.which("haproxy"):
        missing.append("haproxy")
    if missing:
        return f"missing {', '.join(missing)} (apt-get install -y {' '.join(missing)})"
    return None


def run_one(env, backend, attack: str, target: str, log) -> dict:
    import harness
    import scenario
    from bench_targets import start_haproxy, start_ringlb

    kind, seconds, kw = ATTACKS[attack]
    name = f"{target}-{attack}"
    if target.startswith("ringlb-"):
        run = start_ringlb(env, name, target.split("-", 1)[1], [backend.port],
                           proxy_extra={"memory_limit": f'"{MEMORY_LIMIT_MIB}MiB"'})
        m = re.search(r"admin: http://127\.0\.0\.1:(\d+)/", run.proc.text())
        admin = int(m.group(1)) if m else None
    else:
        run = start_haproxy(env, name, "http", [backend.port])
        admin = None
    channels = []
    try:
        ch = harness.channel(run.port)
        channels.append(ch)

        def fresh():
            c = harness.channel(run.port)
            channels.append(c)
            stub = harness.Stub(c)
            for i in range(3):
                body = b"after-%d" % i
                if stub.unary(body, timeout=5) != body:
                    raise AssertionError("wrong echo after the attack")

        o = scenario.run_scenario(
            pid=run.proc.pid, port=run.port, admin_port=admin, good_call=harness.Stub(ch).unary,
            fresh_call=fresh, alive=run.proc.alive, workdir=env.workdir, attack=kind,
            attack_seconds=seconds, memory_limit_mib=MEMORY_LIMIT_MIB,
            attack_kw={**kw, "source": ATTACKER}, backend_total=lambda: backend.total)
    finally:
        for c in channels:
            c.close()
        run.stop()
    a = o.attacker
    res = {
        "attack": attack, "target": target,
        "client": o.client, "client_hung": o.client_hung,
        "rss_baseline_kib": o.baseline_kib, "rss_peak_kib": o.peak_kib,
        "rss_after_kib": o.final_kib, "rss_recovered_s": o.recovered_s,
        "proxy_cpu_s": o.cpu_s, "backend_calls": o.backend_calls,
        "alive_after": o.alive_after, "answering_after": o.answering_after or "ok",
        "metrics_moved": o.moved,
        "attacker": {k: a.get(k) for k in ("error", "connections", "units", "goaways",
                                           "goaway_debug", "closed_by_peer", "refused",
                                           "still_open", "resets_received", "grpc_statuses",
                                           "first_goaway_s")},
    }
    c = o.client
    log(f"attack {attack} {target}: client {c['failed']} failed of {c['calls']}, p99 "
        f"{c['p99_ms']} ms; peak RSS {o.peak_kib / 1024:.1f} MiB (baseline "
        f"{o.baseline_kib / 1024:.1f}); CPU {o.cpu_s or 0:.2f}s; backend calls "
        f"{o.backend_calls}; attacker saw {saw(res)}")
    return res


def saw(r: dict) -> str:
    a = r["attacker"]
    if a.get("error"):
        return "error: " + a["error"][:100]
    parts = []
    if a.get("goaways"):
        parts.append("GOAWAY " + ", ".join(f"0x{int(k):x} x{v}" for k, v in a["goaways"].items()))
    parts.append(f"{a.get('closed_by_peer')}/{a.get('connections')} conns closed")
    if a.get("refused"):
        parts.append(f"{a['refused']} refused")
    rst = a.get("resets_received") or {}
    if rst:
        parts.append("RST_STREAM " + ", ".join(f"0x{int(k):x} x{v}" for k, v in rst.items()))
    st = {k: v for k, v in (a.get("grpc_statuses") or {}).items() if k != "none"}
    if st:
        parts.append("grpc-status " + ", ".join(f"{k}: {v}" for k, v in st.items()))
    return "; ".join(parts)


def attack_run(env, targets: list[str], attacks: list[str], log) -> list[dict]:
    import harness
    backend = harness.Backend("attack-b0")
    out = []
    try:
        log(f"attack run: {', '.join(attacks)} x {', '.join(targets)}; backend {backend.address}")
        for attack in attacks:
            for target in targets:
                try:
                    out.append(run_one(env, backend, attack, target, log))
                except Exception as e:  # noqa: BLE001 -- one failure ends only its row
                    out.append({"attack": attack, "target": target,
                                "error": f"{type(e).__name__}: {e}"[:500]})
                    log(f"attack {attack} {target}: ERROR {out[-1]['error']}")
    finally:
        backend.stop()
    return out


def _f(v, fmt: str = "{:g}") -> str:
    return "n/a" if v is None else fmt.format(v)


def render(results: list[dict], command: str, when: str) -> str:
    lines = [f"## Attack run ({when})", "",
             f"Command: `{command}`. A well-behaved grpcio client (unary echo, 50 calls/s, 2 s "
             "deadline, 64-byte payload, its own connection) from 0.5 s before each attack to "
             "1.5 s after it; the attack from 127.0.0.2 (`tests/attack/attackers.py`); the "
             "proxy's VmRSS every 100 ms. One worker/thread each, one grpcio backend, the "
             f"proxy restarted for every row; ringlb with memory_limit = {MEMORY_LIMIT_MIB} MiB "
             "and its default [limits]. *failed*: the client's calls that did not end OK; "
             "*p99* over its successful calls; *RSS*: baseline (before the attack) / peak / "
             "after (polled up to 5 s for a return to within 20% of the baseline); *CPU*: "
             "the proxy's CPU seconds over the attack; *backend calls*: calls "
             "the backend got from the attack's start to the client's end (the client's "
             "included): what the proxy passed on.", "",
             "| attack | proxy | calls | failed | p99 ms | RSS MiB base / peak / after "
             "| CPU s | backend calls | attacker saw |",
             "|---|---|---:|---:|---:|---|---:|---:|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['attack']} | {r['target']} | | | | could not run: "
                         f"{r['error'][:120].replace('|', '/')} | | | |")
            continue
        c = r["client"]
        rss = (f"{r['rss_baseline_kib'] / 1024:.1f} / {r['rss_peak_kib'] / 1024:.1f} / "
               f"{r['rss_after_kib'] / 1024:.1f}")
        dead = "" if r["alive_after"] else " (proxy died)"
        lines.append(f"| {r['attack']} | {r['target']}{dead} | {c['calls']} | {c['failed']} | "
                     f"{_f(c['p99_ms'])} | {rss} | {_f(r['proxy_cpu_s'], '{:.2f}')} | "
                     f"{_f(r['backend_calls'])} | {saw(r).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def attack_main(args, log) -> int:
    """--attack: the table on stdout and in <out>/attack-latest.md, the figures in
    <out>/attack-<UTC timestamp>.json. Exit 1 if a row could not run."""
    import datetime
    import os

    from bench_targets import ALL_TARGETS, Env

    problem = preflight()
    if problem:
        raise SystemExit(f"harness --attack: {problem}")
    b = Path(args.bin)
    if not (b.is_file() and os.access(b, os.X_OK)):
        raise SystemExit(f"harness --attack: ringlb binary not found at {b} (ninja -C build, "
                         f"or --bin)")
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.targets == ",".join(ALL_TARGETS):   # --targets not given
        wanted = DEFAULT_TARGETS
    targets = [t for t in TARGETS if t in wanted]
    attacks = [x.strip() for x in args.attacks.split(",") if x.strip()]
    bad = [x for x in attacks if x not in ATTACKS]
    if bad or not targets:
        raise SystemExit(f"harness --attack: attacks must be among {list(ATTACKS)} (got {bad}); "
                         f"targets among {TARGETS} (got {wanted})")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-attack-"))
    env = Env(args, workdir)
    try:
        results = attack_run(env, targets, attacks, log)
    finally:
        from bench_targets import stop_all
        stop_all()
    command = os.environ.get("RINGLB_BENCH_COMMAND") or " ".join(["bench/harness.py"]
                                                                 + sys.argv[1:])
    report = render(results, command, started.strftime("%Y-%m-%d %H:%M UTC"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attack-latest.md").write_text(report)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (out_dir / f"attack-{stamp}.json").write_text(json.dumps(
        {"command": command, "nproc": os.cpu_count(), "kernel": os.uname().release,
         "duration_s": round(time.monotonic() - t0, 1),
         "memory_limit_mib": MEMORY_LIMIT_MIB, "results": results}, indent=1, default=str)
        + "\n")
    sys.stdout.write(report)
    if args.keep:
        log(f"kept {workdir} (configs, logs, attacker JSON of every run)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any("error" in r for r in results) else 0

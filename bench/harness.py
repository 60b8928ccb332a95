#!/usr/bin/python3
"""End-to-end benchmark: ringlb (io_uring and epoll) against direct, HAProxy (h2 and tcp), nginx.

Every target gets the same three `ringlb backend` echo servers, HTTP/2 on both sides, one
worker thread, no access log, 1024 concurrent streams per client connection and 256 KiB / 8 MiB
stream / connection windows. The proxy runs pinned to one CPU, h2load and the backends to
another. Stdlib only; run it with /usr/bin/python3. See bench/README.md for what every column
means; `bash bench/run.sh` installs what is missing, builds and runs this.

  bench/harness.py [--quick] [--reps N] [--no-fargate | --fargate] [--out DIR] [--targets A,B]
      [--no-container] [--container-image NAME] [--container-sweeps N]
      [--container-access off|stdout]
      the Fargate-shaped run also runs the packaging/Dockerfile image under podman
      (bench_container.py) unless --no-container
  bench/harness.py --faults [--fault-scenarios kill,sigstop,blackhole,unavailable]
      the fault run instead: chaos scenarios against ringlb and HAProxy side by side
      (bench_faults.py; root, each scenario in its own network namespace)
  bench/harness.py --attack [--attacks rapid_reset_1,rapid_reset_20,hpack_bomb,slow_readers]
      the attack run instead: tests/attack's attacks against ringlb and HAProxy side by side,
      a well-behaved client's failures and p99 and the proxy's peak RSS (bench_attack.py;
      needs python3-grpcio, python3-h2, python3-hpack, python3-pytest)
  bench/harness.py --tls [--tls-runs A,B,C,RSS] [--quick] [--reps N]
      the TLS run instead: TLS on the client side (A), to the backends (B), full handshakes
      per CPU-second (C) and idle RSS with a TLS listener, ringlb and HAProxy side by side
      (bench_tls.py; needs openssl and haproxy)
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_container import container_run  # noqa: E402
from bench_fargate import fargate_run  # noqa: E402
import bench_faults  # noqa: E402
from bench_load import (background_load, count_syscalls, h2load, h2load_cmd, rate_run,  # noqa: E402
                        syscall_method, H2)
from bench_report import (aggregate, compute_floors, compute_ratios, fmt, machine,  # noqa: E402
                          plot, render, versions)
from bench_targets import (ALL_TARGETS, CLK_TCK, REPO, T0, BenchError, Env, cpu_ticks,  # noqa: E402
                           Proc, log, rss_kb, sched_ns, start_backends, start_target, stop_all)


def measure_target(env: Env, prof: "Profile", target: str, rep: int, fast: list[int],
                   slow: list[int], sysm: str | None) -> dict[str, Any]:
    r: dict[str, Any] = {"target": target, "rep": rep}
    tag = f"r{rep}"
    bg = background_load(env)
    r["background_busy_pct"] = {str(c): round(v, 1) for c, v in bg.items()}
    if max(bg.values()) > 10:
        log(f"rep {rep + 1} {target}: other processes keep the CPUs busy "
            f"({', '.join(f'CPU {c} {v:.0f}%' for c, v in bg.items())}) - figures will suffer")
    run = start_target(env, target, fast, tag)
    try:
        if run.proc:
            time.sleep(0.3)
            r["rss_idle_kb"] = rss_kb(run.pids())
            r["pids"] = run.pids()
        if run.ready_line:
            r["ready_line"] = run.ready_line
        # Warm-up: upstream connections open, lazy allocations done.
        w = h2load(env, run.port, prof.warmup_calls, prof.conns, prof.streams)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")

        # Throughput: a fixed number of calls at full speed; proxy CPU over the run.
        pids = run.pids()
        c0, s0 = cpu_ticks(pids), sched_ns(pids)
        t = h2load(env, run.port, prof.tput_calls, prof.conns, prof.streams)
        c1, s1 = cpu_ticks(pids), sched_ns(pids)
        if not t.ok:
            raise BenchError(f"throughput: {t.problem()}")
        r["calls"] = prof.tput_calls
        r["calls_per_s"] = t.rps
        r["tput_elapsed_s"] = t.elapsed
        if run.proc:
            r["cpu_us_per_call"] = (c1 - c0) / CLK_TCK * 1e6 / prof.tput_calls
            r["cpu_us_per_call_schedstat"] = (s1 - s0) / 1e3 / prof.tput_calls
            r["cpu_ticks"] = c1 - c0

        # Fixed rate: latency percentiles.
        c0 = cpu_ticks(pids)
        t0 = time.monotonic()
        res, lat = rate_run(env, run.port, prof.rate, prof.rate_secs, f"{target}-{tag}",
                            prof.streams)
        wall = time.monotonic() - t0
        if not res.ok:
            raise BenchError(f"fixed rate: {res.problem()}")
        r.update({f"rate_{k}": v for k, v in lat.items()})
        r["rate_target"] = prof.rate
        r["rate_ok"] = lat["achieved_rate"] >= 0.95 * prof.rate
        if run.proc:
            r["cpu_pct_at_rate"] = (cpu_ticks(pids) - c0) / CLK_TCK / wall * 100

        # Syscalls per call.
        if run.proc and sysm:
            n = prof.sys_calls if sysm == "perf" else min(prof.sys_calls, 5000)
            count, res = count_syscalls(
                sysm, run.pids(), env.workdir, f"{target}-{tag}",
                lambda: h2load(env, run.port, n, prof.conns, prof.streams))
            if not res.ok:
                raise BenchError(f"syscall run: {res.problem()}")
            r["syscalls_per_call"] = count / n
            r["syscall_calls"] = n
        if run.proc and not run.proc.alive():
            raise BenchError(f"{target} died: {run.proc.tail()}")
    finally:
        run.stop()

    if target != "direct" and prof.hold_streams > 0:
        r.update(hold_test(env, prof, target, tag, slow))
    return r


def max_open(log_file: Path) -> int:
    """Most calls open at the same moment, from h2load's log (start us, status, duration us)."""
    events = []
    for line in log_file.read_text().splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            start, dur = int(f[0]), int(f[2])
            events += [(start, 1), (start + dur, -1)]
    events.sort()  # at equal times the -1 (an end) sorts first
    most = cur = 0
    for _, d in events:
        cur += d
        most = max(most, cur)
    return most


def hold_test(env: Env, prof: "Profile", target: str, tag: str, slow: list[int]) -> dict:
    """prof.hold_streams calls held open at once against backends that answer after a delay."""
    run = start_target(env, target, slow, f"{tag}-hold")
    try:
        time.sleep(0.3)
        base = rss_kb(run.pids())
        conns = max(1, math.ceil(prof.hold_streams / 1000))
        per = math.ceil(prof.hold_streams / conns)
        delay = prof.hold_delay_ms / 1000.0
        log_file = env.workdir / f"hold-{target}-{tag}.tsv"
        log_file.unlink(missing_ok=True)
        cmd = h2load_cmd(env, run.port, prof.hold_streams, conns, per, log_file=log_file)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        peak = base
        deadline = time.monotonic() + delay + 60
        try:
            while p.poll() is None and time.monotonic() < deadline:
                peak = max(peak, rss_kb(run.pids()))
                time.sleep(0.05)
            if p.poll() is None:
                raise BenchError(f"hold test: h2load still running after {delay + 60:.0f}s")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        res = H2(prof.hold_streams, p.stdout.read(), p.returncode)
        most = max_open(log_file) if log_file.exists() else 0
        out = {"hold_rss_base_kb": base, "hold_rss_peak_kb": peak,
               "rss_extra_kb": peak - base, "hold_elapsed_s": res.elapsed,
               "hold_ok": res.ok, "hold_max_open": most,
               "hold_concurrent": res.ok and most >= prof.hold_streams}
        if not res.ok:
            out["hold_problem"] = res.problem()
        return out
    finally:
        run.stop()


class Profile:
    def __init__(self, a: argparse.Namespace):
        q = a.quick
        self.quick = q
        self.reps = a.reps or (1 if q else 3)
        self.tput_calls = a.calls or (5000 if q else 100000)
        self.conns, self.streams = 4, 32
        self.warmup_calls = 500 if q else 5000
        self.rate = a.rate
        self.rate_secs = a.rate_secs or (1.0 if q else 3.0)
        self.sys_calls = 2000 if q else 20000
        self.hold_streams = a.hold_streams
        self.hold_delay_ms = a.hold_delay_ms or (3000 if q else 10000)
        self.fg_idle_rate = 200
        self.fg_idle_secs = 2.0 if q else 5.0
        self.fg_steps = [500, 1000, 2000, 4000, 8000, 11000, 14000]
        self.fg_step_secs = 1.0 if q else 3.0
        # The container sweep: finer where a 0.25 CPU task's ceiling lies.
        self.ct_steps = [500, 1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000, 14000]
        self.ct_sweeps = a.container_sweeps

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def preflight(args, targets: list[str]) -> None:
    need = ["h2load", "taskset"]
    if any(t.startswith("haproxy") for t in targets):
        need.append("haproxy")
    if "nginx" in targets:
        need.append("nginx")
    missing = [c for c in need if not shutil.which(c)]
    if missing:
        pkgs = {"h2load": "nghttp2-client", "taskset": "util-linux", "haproxy": "haproxy",
                "nginx": "nginx-light"}
        raise SystemExit(f"harness: missing {', '.join(missing)} (apt-get install "
                         f"{' '.join(pkgs[c] for c in missing)}; bash bench/run.sh does this)")
    b = Path(args.bin)
    if not (b.is_file() and os.access(b, os.X_OK)):
        raise SystemExit(f"harness: ringlb binary not found at {b} (ninja -C build, or --bin)")


def rerender(json_path: Path, out_dir: Path) -> int:
    doc = json.loads(json_path.read_text())
    targets = list(doc["targets"])
    med_ = {t: v["median"] for t, v in doc["targets"].items()}
    meta = {k: doc[k] for k in ("timestamp", "command", "profile", "machine", "versions",
                                "syscall_method", "notes")}
    floors = compute_floors(med_, meta["profile"]["hold_streams"])
    report = render(meta, targets, med_, compute_ratios(med_), floors, doc.get("fargate"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ringlb-bench-") as tmp:
        note = plot(out_dir, Path(tmp), targets, med_, f"ringlb bench {meta['timestamp']}")
    report += f"\nPlot: {note}\n" if note else (
        "\nPlot: latest.png (CPU per call and added p99 per target)\n")
    (out_dir / "latest.md").write_text(report)
    sys.stdout.write(report)
    return 0


def faults_main(args) -> int:
    """--faults: every scenario against every fault target; the table on stdout and in
    <out>/faults-latest.md, the figures in <out>/faults-<UTC timestamp>.json."""
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    targets = [t for t in bench_faults.TARGETS if t in wanted]
    scenarios = [x.strip() for x in args.fault_scenarios.split(",") if x.strip()]
    started = datetime.datetime.now(datetime.timezone.utc)
    results = bench_faults.fault_run(args.bin, scenarios, targets, log, args.keep)
    command = os.environ.get("RINGLB_BENCH_COMMAND") or " ".join(["bench/harness.py"]
                                                                 + sys.argv[1:])
    report = bench_faults.render(results, command, started.strftime("%Y-%m-%d %H:%M UTC"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "faults-latest.md").write_text(report)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (out_dir / f"faults-{stamp}.json").write_text(json.dumps(
        {"command": command, "nproc": os.cpu_count(), "kernel": os.uname().release,
         "results": results}, indent=1, default=str) + "\n")
    sys.stdout.write(report)
    return 1 if any("error" in r for r in results) else 0


def attack_main(args) -> int:
    """--attack: imported here, so the rest of the harness stays stdlib-only (grpcio, h2)."""
    import bench_attack
    return bench_attack.attack_main(args, log)


def tls_main(args) -> int:
    import bench_tls
    return bench_tls.tls_main(args, log)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, 1 repetition")
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default 3, --quick 1)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--fargate", action="store_true", help="only the Fargate-shaped run")
    g.add_argument("--no-fargate", action="store_true", help="leave the Fargate-shaped run out")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="comma-separated subset of: " + ", ".join(ALL_TARGETS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    ap.add_argument("--bin", default=os.environ.get("RINGLB_BIN", str(REPO / "build" / "ringlb")))
    ap.add_argument("--backend-bin", default=None, help="binary for the backends (default --bin)")
    ap.add_argument("--calls", type=int, default=0, help="calls in the throughput run")
    ap.add_argument("--rate", type=int, default=5000, help="fixed rate, calls/s")
    ap.add_argument("--rate-secs", type=float, default=0.0, help="fixed-rate duration")
    ap.add_argument("--hold-streams", type=int, default=10000, help="streams held open (0: skip)")
    ap.add_argument("--hold-delay-ms", type=int, default=0,
                    help="backend delay in the hold test (default 10000, --quick 3000)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECS",
                    help="first wait up to SECS for other processes to leave the CPUs idle")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    ap.add_argument("--no-container", action="store_true", help="leave the container variant "
                    "of the Fargate-shaped run out (podman, packaging/Dockerfile)")
    ap.add_argument("--container-access", choices=["off", "stdout"], default="off",
                    help="the container's access log (default off, as in the bare run)")
    ap.add_argument("--container-sweeps", type=int, default=1, metavar="N",
                    help="run the container's rate sweep N times (a step passes in a majority)")
    ap.add_argument("--container-image", metavar="NAME", help="run the container variant on "
                    "this image instead of building packaging/Dockerfile")
    ap.add_argument("--render", metavar="JSON", help="measure nothing: rebuild latest.md and "
                    "latest.png in --out from a results JSON")
    ap.add_argument("--faults", action="store_true", help="the fault run only: chaos scenarios "
                    "against ringlb and HAProxy (see bench_faults.py)")
    ap.add_argument("--fault-scenarios", default=",".join(bench_faults.DEFAULT_SCENARIOS),
                    help="scenarios of tests/chaos/scenario.py for --faults")
    ap.add_argument("--attack", action="store_true", help="the attack run only: rapid reset, "
                    "HPACK bomb, slow readers against ringlb and HAProxy (see bench_attack.py); "
                    "--targets among ringlb-io_uring, ringlb-epoll, haproxy-h2 (default "
                    "ringlb-io_uring,haproxy-h2)")
    ap.add_argument("--attacks", default="rapid_reset_1,rapid_reset_20,hpack_bomb,slow_readers",
                    help="attacks of bench_attack.py for --attack")
    ap.add_argument("--tls", action="store_true", help="the TLS run only: ringlb and HAProxy with "
                    "TLS on the client side, to the backends, full handshakes, idle RSS (see "
                    "bench_tls.py); --targets among ringlb-io_uring, ringlb-epoll, haproxy-h2 "
                    "(default ringlb-io_uring,haproxy-h2)")
    ap.add_argument("--tls-runs", default="A,B,C,RSS", help="runs of bench_tls.py for --tls")
    ap.add_argument("--tls-handshakes", type=int, default=0, metavar="N",
                    help="connections in --tls run C (default 2000, --quick 500)")
    ap.add_argument("--tls-hs-rate", type=int, default=2000, metavar="N",
                    help="connections/s h2load is asked for in --tls run C")
    args = ap.parse_args()
    if args.tls:
        return tls_main(args)
    if args.attack:
        return attack_main(args)
    if args.render:
        return rerender(Path(args.render), Path(args.out))
    if args.faults:
        return faults_main(args)

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in ALL_TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {ALL_TARGETS}")
    if "direct" not in targets and not args.fargate:
        targets.insert(0, "direct")  # the latency baseline
    targets = [t for t in ALL_TARGETS if t in targets]
    if args.fargate:
        targets = []
    preflight(args, targets)

    prof = Profile(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-bench-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    env = Env(args, workdir)
    if "nginx" in targets and prof.hold_streams and hard < prof.hold_streams + 1000:
        env.notes.append(f"open-file limit {hard} is low for {prof.hold_streams} held streams "
                         f"(nginx opens one upstream connection per call)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    if args.wait_quiet > 0:
        deadline = time.monotonic() + args.wait_quiet
        while True:
            bg = background_load(env, 1.0)
            if max(bg.values()) < 10 or time.monotonic() > deadline:
                break
            log(f"waiting for quiet CPUs: {', '.join(f'CPU {c} {v:.0f}%' for c, v in bg.items())}")
        log(f"background load: {', '.join(f'CPU {c} {v:.0f}%' for c, v in bg.items())}")
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    sysm, sys_desc = syscall_method() if targets else (None, "n/a")
    log(f"work folder {workdir}; targets {', '.join(targets) or '(none)'}; "
        f"{prof.reps} rep(s); syscalls via {sys_desc}")
    meta = {"timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": os.environ.get("RINGLB_BENCH_COMMAND")
                       or " ".join(["bench/harness.py"] + sys.argv[1:]),
            "profile": prof.as_dict(), "machine": machine(env), "versions": versions(env),
            "syscall_method": sys_desc, "notes": env.notes, "workdir": str(workdir)}
    reps: dict[str, list[dict]] = {t: [] for t in targets}
    fargate = None
    rc = 0
    backends: list[tuple[Proc, int]] = []
    try:
        backends = start_backends(env, "fast", 3, 0)
        fast = [p for _, p in backends]
        # Four SO_REUSEPORT listeners each: nginx opens one upstream connection per held call,
        # and 3,300 connects at once overflow a single listener's SYN queue (1 s retransmits).
        slow_b = (start_backends(env, "slow", 3, prof.hold_delay_ms, threads=4)
                  if targets and prof.hold_streams > 0 else [])
        backends += slow_b
        slow = [p for _, p in slow_b]
        log(f"backends: fast {fast}, slow {slow} (delay {prof.hold_delay_ms} ms)")
        proxies = [t for t in targets if t != "direct"]
        for rep in range(prof.reps):
            # direct first (the baseline of this repetition), then the proxies, rotated so no
            # target always runs in the same slot.
            k = rep % max(1, len(proxies))
            order = (["direct"] if "direct" in targets else []) + proxies[k:] + proxies[:k]
            for t in order:
                t0 = time.monotonic()
                try:
                    r = measure_target(env, prof, t, rep, fast, slow, sysm)
                except Exception as e:  # noqa: BLE001 -- one target failing ends only its row
                    what = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
                    r = {"target": t, "rep": rep, "error": what}
                    log(f"rep {rep + 1} {t}: ERROR {what}")
                else:
                    log(f"rep {rep + 1} {t}: {r['calls_per_s']:,.0f} calls/s, "
                        f"CPU {fmt(r.get('cpu_us_per_call'), 2)} us/call, "
                        f"p99 {fmt(r.get('rate_p99_us'), 0)} us @ "
                        f"{r.get('rate_achieved_rate', 0):,.0f}/s, "
                        f"RSS {fmt(r.get('rss_idle_kb'), 0)} kB "
                        f"+{fmt(r.get('rss_extra_kb'), 0)} kB, "
                        f"{fmt(r.get('syscalls_per_call'), 2)} syscalls/call "
                        f"({time.monotonic() - t0:.0f}s)")
                reps[t].append(r)
        if not args.no_fargate:
            try:
                fargate = fargate_run(env, prof, fast)
            except Exception as e:  # noqa: BLE001 -- report it with the rest
                fargate = {"error": f"{type(e).__name__}: {e}"}
                log(f"fargate: ERROR {fargate['error']}")
            if not args.no_container:
                try:
                    # Pinned to the proxy's CPU, as the bare process is: same placement.
                    fargate["container"] = container_run(env, prof, fast, args.container_image,
                                                         env.proxy_cpu, args.container_access)
                except Exception as e:  # noqa: BLE001 -- report it with the rest
                    fargate["container"] = {"error": f"{type(e).__name__}: {e}"}
                    log(f"container: ERROR {fargate['container']['error']}")
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        rc = 130
    finally:
        stop_all()

    if rc:
        return rc
    med_ = aggregate(targets, reps)
    ratios = compute_ratios(med_)
    floors = compute_floors(med_, prof.hold_streams)
    if sysm == "strace":
        env.notes.append("syscalls counted with strace -c (perf stat could not count "
                         "raw_syscalls:sys_enter); strace slows the proxy a lot, counts stay "
                         "exact")
    if "ringlb-io_uring" in targets and sysm:
        env.notes.append("io_uring operations completed inside the kernel are not syscalls: "
                         "syscalls/call counts io_uring_enter, not the I/O it carries")
    for t in targets:
        for e in med_[t]["errors"]:
            env.notes.append(f"{t}: {e[:300]}")
        if not med_[t]["rate_ok"] and med_[t]["reps_ok"]:
            env.notes.append(f"{t}: achieved rate below 95% of {prof.rate}/s in a repetition")
    bgs = [v for t in targets for r in reps[t] for v in r.get("background_busy_pct", {}).values()]
    if bgs and max(bgs) > 5:
        env.notes.append(
            f"other processes were busy on the benchmark CPUs (sampled for 0.5 s before each "
            f"target, nothing of ours running): median {statistics.median(bgs):.0f}%, max "
            f"{max(bgs):.0f}%; throughput and latency suffer from it, CPU/call much less")
    steal = [r.get("rate_steal_ms", 0) for t in targets for r in reps[t] if "error" not in r]
    if steal and sum(steal) > 0:
        runs = len(steal) * prof.rate_secs
        env.notes.append(
            f"hypervisor steal during the fixed-rate runs: {sum(steal):,.0f} ms over {runs:g} s "
            f"of runs (max {max(steal):,.0f} ms in one run); calls caught in a stolen slice wait "
            f"milliseconds, which sets p99/p99.9 here more than any proxy does")
    total = time.monotonic() - T0
    meta["duration_s"] = round(total, 1)
    env.notes.append(f"run took {total:.0f} s")
    report = render(meta, targets, med_, ratios, floors, fargate)

    note = plot(out_dir, workdir, targets, med_,
                f"ringlb bench {meta['timestamp']}") if targets else "no targets: no plot"
    if note:
        report += f"\nPlot: {note}\n"
    else:
        report += "\nPlot: latest.png (CPU per call and added p99 per target)\n"
    (out_dir / "latest.md").write_text(report)
    doc = {"schema": 1, **meta, "targets": {t: {"reps": reps[t], "median": med_[t]}
                                            for t in targets},
           "ratios": ratios, "floors": floors, "fargate": fargate}
    json_path = out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    sys.stdout.write(report)
    sys.stdout.write(f"\nWrote {out_dir / 'latest.md'}, {json_path}"
                     f"{'' if note else ', ' + str(out_dir / 'latest.png')}\n")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"kept {workdir}")
    failed = any(med_[t]["reps_ok"] == 0 for t in targets)
    container_failed = fargate is not None and "error" in (fargate.get("container") or {})
    return 1 if failed or container_failed or (fargate is not None and "error" in fargate) else 0


if __name__ == "__main__":
    sys.exit(main())

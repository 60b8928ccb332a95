"""Load generation with h2load (full speed, paced, held open), latency percentiles from its
per-request log, syscall counting with perf or strace, CPU busy/steal from /proc/stat.
Part of bench/harness.py."""
from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from bench_targets import (CLK_TCK, CONN_WINDOW, RESP_DATA, RPC_PATH, STREAM_WINDOW, BenchError,
                           Env)


class H2:
    """Parsed h2load summary."""

    def __init__(self, n: int, out: str, rc: int):
        self.n, self.raw, self.rc = n, out, rc
        m = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out)
        unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
        self.elapsed = float(m.group(1)) * unit[m.group(2)] if m else math.nan
        self.rps = float(m.group(3)) if m else math.nan
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        self.done, self.succeeded, self.failed = ((int(m.group(3)), int(m.group(4)),
                                                   int(m.group(5))) if m else (0, 0, n))
        m = re.search(r"status codes: (\d+) 2xx", out)
        self.s2xx = int(m.group(1)) if m else 0
        m = re.search(r"\((\d+)\) data", out)
        self.data = int(m.group(1)) if m else 0

    @property
    def ok(self) -> bool:
        # Every call a 200 carrying the echoed message: a trailers-only gRPC error (HTTP 200, no
        # DATA) would count as success in h2load, the DATA byte count catches it.
        return (self.rc == 0 and self.succeeded == self.n and self.s2xx == self.n
                and self.data == self.n * RESP_DATA)

    def problem(self) -> str:
        return (f"h2load rc {self.rc}: {self.succeeded}/{self.n} succeeded, {self.s2xx} 2xx, "
                f"{self.data} DATA bytes (want {self.n * RESP_DATA}): {self.raw[-600:]}")


def h2load_cmd(env: Env, port: int, n: int, conns: int, streams: int, rps: float | None = None,
               log_file: Path | None = None, stagger_ms: int = 0) -> list[str]:
    cmd = ["taskset", "-c", str(env.client_cpu), "h2load", "-n", str(n), "-c", str(conns),
           "-m", str(streams), "-t", "1", "-d", str(env.body),
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           "-w", str(STREAM_WINDOW.bit_length() - 1), "-W", str(CONN_WINDOW.bit_length() - 1)]
    if rps:
        cmd += ["--rps", f"{rps:g}"]
    if stagger_ms:  # connect one client per stagger_ms (h2load rate mode)
        cmd += ["-r", "1", "--rate-period", f"{stagger_ms}ms"]
    if log_file:
        cmd += ["--log-file", str(log_file)]
    return cmd + [f"http://127.0.0.1:{port}{RPC_PATH}"]


def h2load(env: Env, port: int, n: int, conns: int, streams: int, rps: float | None = None,
           log_file: Path | None = None, timeout: float = 120.0, stagger_ms: int = 0) -> H2:
    cmd = h2load_cmd(env, port, n, conns, streams, rps, log_file, stagger_ms)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"h2load did not finish within {timeout}s: {' '.join(cmd)}") from e
    return H2(n, r.stdout + r.stderr, r.returncode)


def pctl(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return math.nan
    k = max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def latency_from_log(path: Path, warm_frac: float = 0.05) -> dict[str, float]:
    """h2load --log-file rows: start (us since epoch), status, duration (us)."""
    rows = []
    for line in path.read_text().splitlines():
        f = line.split("\t")
        if len(f) >= 3:
            rows.append((int(f[0]), int(f[1]), int(f[2])))
    if not rows:
        raise BenchError(f"empty h2load log {path}")
    good = [r for r in rows if r[1] == 200]
    first = min(r[0] for r in rows)
    last_start = max(r[0] for r in rows)
    last_end = max(r[0] + r[2] for r in rows)
    warm = first + warm_frac * (last_start - first)
    lat = sorted(r[2] for r in good if r[0] >= warm)
    span = (last_end - first) / 1e6
    return {"calls": len(rows), "ok_calls": len(good), "achieved_rate": len(rows) / span,
            "p50_us": pctl(lat, 50), "p99_us": pctl(lat, 99), "p999_us": pctl(lat, 99.9),
            "max_us": lat[-1] if lat else math.nan}


def cpu_busy(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) ticks from /proc/stat; busy = all but idle and iowait."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu" and int(f[0][3:]) in cpus:
            v = [int(x) for x in f[1:9]]
            out[int(f[0][3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def background_load(env: Env, secs: float = 0.5) -> dict[int, float]:
    """Busy % of the two benchmark CPUs while none of our load runs: other people's work."""
    cpus = sorted({env.client_cpu, env.proxy_cpu})
    a = cpu_busy(cpus)
    time.sleep(secs)
    b = cpu_busy(cpus)
    return {c: 100.0 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in cpus}


def steal_ticks() -> int:
    """Time the hypervisor gave this VM's CPUs to someone else (/proc/stat, all CPUs)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            f = line.split()
            return int(f[8]) if len(f) > 8 else 0
    return 0


RATE_CONNS = 10  # h2load --rps ticks every 10 ms (max(0.01, 1/rps)), so each client sends its
                 # calls in 10 ms bursts; ten clients connected 1 ms apart spread them out.


def rate_run(env: Env, port: int, rate: int, secs: float, tag: str,
             streams: int = 32) -> tuple[H2, dict[str, float]]:
    """Open-loop paced load: h2load --rps per connection; latency percentiles from its log."""
    n = int(rate * secs)
    log_file = env.workdir / f"rate-{tag}.tsv"
    log_file.unlink(missing_ok=True)  # h2load appends
    st0 = steal_ticks()
    res = h2load(env, port, n, RATE_CONNS, streams, rps=rate / RATE_CONNS, log_file=log_file,
                 timeout=secs * 3 + 30, stagger_ms=10 // RATE_CONNS)
    lat = latency_from_log(log_file) if log_file.exists() else {}
    lat["steal_ms"] = (steal_ticks() - st0) * 1000.0 / CLK_TCK
    return res, lat


# ---------------------------------------------------------------------------------------------
# Syscalls per call
# ---------------------------------------------------------------------------------------------
def syscall_method() -> tuple[str | None, str]:
    if shutil.which("perf"):
        try:
            r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--",
                                "/bin/true"], capture_output=True, text=True, timeout=20)
            for line in r.stderr.splitlines():
                f = line.split(",")
                if "raw_syscalls:sys_enter" in line and f[0].isdigit() and int(f[0]) > 0:
                    return "perf", "perf stat -e raw_syscalls:sys_enter -p PIDS"
            why = f"perf stat cannot count raw_syscalls:sys_enter here: {r.stderr.strip()[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"perf stat failed: {e}"
    else:
        why = "perf not installed"
    if shutil.which("strace"):
        return "strace", f"strace -c -f -p PIDS ({why}; strace slows the proxy)"
    return None, f"no syscall counter: {why}; strace not installed"


def count_syscalls(method: str, pids: list[int], workdir: Path, tag: str,
                   load: Callable[[], H2]) -> tuple[int, H2]:
    out = workdir / f"syscalls-{tag}.txt"
    if method == "perf":
        cmd = ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-o", str(out),
               "-p", ",".join(map(str, pids))]
    else:
        cmd = ["strace", "-c", "-f", "-q", "-o", str(out)]
        for pid in pids:
            cmd += ["-p", str(pid)]
    counter = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        time.sleep(0.5)  # attach
        if counter.poll() is not None:
            raise BenchError(f"{method} exited: {counter.stderr.read().decode()[-400:]}")
        res = load()
        time.sleep(0.05)
    finally:
        if counter.poll() is None:
            counter.send_signal(signal.SIGINT)
        try:
            counter.wait(15)
        except subprocess.TimeoutExpired:
            counter.kill()
            counter.wait(5)
    text = out.read_text() if out.exists() else ""
    if method == "perf":
        for line in text.splitlines():
            f = line.split(",")
            if "raw_syscalls:sys_enter" in line and f[0].isdigit():
                return int(f[0]), res
    else:
        for line in text.splitlines():
            f = line.split()
            if f and f[-1] == "total" and len(f) >= 5:
                return int(f[3]), res
    raise BenchError(f"could not read a syscall count from {method}: {text[-400:]}")

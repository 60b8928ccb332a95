"""The Fargate-shaped run: ringlb alone in a cgroup limited to 0.25 CPU and 512 MB (cgroup v2,
else systemd-run, else cgroup v1), CPU at a low rate and the highest rate with p99 < 5 ms.
Part of bench/harness.py."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_load import h2load, rate_run
from bench_targets import (CLK_TCK, BenchError, Env, cpu_ticks, log, rss_kb, start_haproxy,
                           start_ringlb)

FARGATE_P99_MS = 5.0


class Limit:
    """Puts one process in a cgroup limited to `cpu` CPUs and `mem` bytes. Tries, in order:
    cgroup v2 (at the v2 root), systemd-run --scope, cgroup v1 (cpu, cpuacct, memory)."""

    PERIOD = 100000

    def __init__(self, cpu: float, mem: int):
        self.cpu, self.mem = cpu, mem
        self.quota = int(cpu * self.PERIOD)
        self.mode: str | None = None
        self.reasons: list[str] = []
        self.dirs: list[Path] = []      # created by us, removed in cleanup
        self.join_files: list[Path] = []
        self.prefix: list[str] | None = None
        self.usage_file: Path | None = None
        self.usage_scale = 1.0          # to microseconds
        self.stat_file: Path | None = None
        self.peak_file: Path | None = None
        self.name = f"ringlb-bench-{os.getpid()}"

    @staticmethod
    def _mounts() -> list[tuple[str, str, list[str]]]:
        out = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            f = line.split()
            if len(f) >= 4 and f[2] in ("cgroup", "cgroup2"):
                out.append((f[1], f[2], f[3].split(",")))
        return out

    def setup(self) -> str | None:
        for fn in (self._v2, self._systemd, self._v1):
            try:
                if fn():
                    return self.mode
            except OSError as e:
                self.reasons.append(f"{fn.__name__[1:]}: {e}")
                self.cleanup()
        return None

    def _v2(self) -> bool:
        v2 = [m for m in self._mounts() if m[1] == "cgroup2"]
        if not v2:
            self.reasons.append("cgroup v2: no cgroup2 file system mounted")
            return False
        root = Path(v2[0][0])
        ctrls = (root / "cgroup.controllers").read_text().split()
        missing = [c for c in ("cpu", "memory") if c not in ctrls]
        if missing:
            v1 = sorted({o for m in self._mounts() if m[1] == "cgroup" for o in m[2]
                         if o in ("cpu", "cpuacct", "memory")})
            self.reasons.append(
                f"cgroup v2 ({root}) offers controllers [{' '.join(ctrls) or 'none'}]: "
                f"{'/'.join(missing)} missing" +
                (f", bound to cgroup v1 hierarchies ({', '.join(v1)}) - a hybrid layout, so "
                 f"no v2 cgroup can limit CPU or memory" if v1 else ""))
            return False
        sub = (root / "cgroup.subtree_control").read_text().split()
        for c in ("cpu", "memory"):
            if c not in sub:
                (root / "cgroup.subtree_control").write_text(f"+{c}")
        d = root / self.name
        d.mkdir()
        self.dirs.append(d)
        (d / "cpu.max").write_text(f"{self.quota} {self.PERIOD}")
        (d / "memory.max").write_text(str(self.mem))
        self.join_files = [d / "cgroup.procs"]
        self.usage_file, self.usage_scale = d / "cpu.stat", 1.0
        self.stat_file = d / "cpu.stat"
        self.peak_file = d / "memory.peak" if (d / "memory.peak").exists() else None
        self.mode = f"cgroup v2 {d} (cpu.max \"{self.quota} {self.PERIOD}\", memory.max {self.mem})"
        return True

    def _systemd(self) -> bool:
        init = Path("/proc/1/comm").read_text().strip()
        if not shutil.which("systemd-run"):
            self.reasons.append("systemd-run: not installed")
            return False
        if init != "systemd":
            self.reasons.append(f"systemd-run --scope: needs systemd as PID 1 (PID 1 here is "
                                f"'{init}')")
            return False
        r = subprocess.run(["systemd-run", "--scope", "-q", "-p", "CPUQuota=25%", "--",
                            "/bin/true"], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            self.reasons.append(f"systemd-run --scope failed: {r.stderr.strip()[-200:]}")
            return False
        pct = int(round(self.cpu * 100))
        self.prefix = ["systemd-run", "--scope", "-q", "-p", f"CPUQuota={pct}%",
                       "-p", f"MemoryMax={self.mem}", "--"]
        self.mode = f"systemd-run --scope -p CPUQuota={pct}% -p MemoryMax={self.mem}"
        return True

    def locate_scope(self, pid: int) -> None:
        """systemd-run: find the scope's v2 cgroup for the counters."""
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                root = next(Path(m[0]) for m in self._mounts() if m[1] == "cgroup2")
                d = root / line[3:].lstrip("/")
                self.usage_file = self.stat_file = d / "cpu.stat"
                self.peak_file = d / "memory.peak" if (d / "memory.peak").exists() else None

    def _v1(self) -> bool:
        mounts = {}
        for mnt, fstype, opts in self._mounts():
            if fstype == "cgroup":
                for c in ("cpu", "cpuacct", "memory"):
                    if c in opts:
                        mounts[c] = Path(mnt)
        missing = [c for c in ("cpu", "cpuacct", "memory") if c not in mounts]
        if missing:
            self.reasons.append(f"cgroup v1: no {'/'.join(missing)} hierarchy mounted")
            return False
        mine = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(","):
                mine[c] = path
        made: dict[Path, Path] = {}
        for c in ("cpu", "cpuacct", "memory"):
            d = mounts[c] / mine.get(c, "/").lstrip("/") / self.name
            if mounts[c] not in made:
                d.mkdir()
                self.dirs.append(d)
                made[mounts[c]] = d
        cpu_d, acct_d, mem_d = (made[mounts[c]] for c in ("cpu", "cpuacct", "memory"))
        (cpu_d / "cpu.cfs_period_us").write_text(str(self.PERIOD))
        (cpu_d / "cpu.cfs_quota_us").write_text(str(self.quota))
        (mem_d / "memory.limit_in_bytes").write_text(str(self.mem))
        self.join_files = [d / "cgroup.procs" for d in made.values()]
        self.usage_file, self.usage_scale = acct_d / "cpuacct.usage", 1e-3
        self.stat_file = cpu_d / "cpu.stat"
        self.peak_file = mem_d / "memory.max_usage_in_bytes"
        self.mode = (f"cgroup v1 {', '.join(str(d) for d in made.values())} "
                     f"(cpu.cfs_quota_us {self.quota} / cpu.cfs_period_us {self.PERIOD}, "
                     f"memory.limit_in_bytes {self.mem})")
        return True

    def preexec(self) -> None:
        """Runs in the child between fork and exec: ringlb starts inside the cgroup."""
        for f in self.join_files:
            with open(f, "w") as fh:
                fh.write(str(os.getpid()))

    def usage_us(self) -> float | None:
        if not self.usage_file:
            return None
        text = self.usage_file.read_text()
        if self.usage_file.name == "cpu.stat":
            return float(re.search(r"usage_usec (\d+)", text).group(1))
        return float(text.split()[0]) * self.usage_scale

    def throttled(self) -> int | None:
        if not self.stat_file:
            return None
        m = re.search(r"nr_throttled (\d+)", self.stat_file.read_text())
        return int(m.group(1)) if m else None

    def mem_peak(self) -> int | None:
        try:
            return int(self.peak_file.read_text().split()[0]) if self.peak_file else None
        except OSError:
            return None

    def cleanup(self) -> None:
        for d in reversed(self.dirs):
            deadline = time.monotonic() + 3
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        log(f"could not remove cgroup {d}: {e}")
                        break
                    time.sleep(0.05)
        self.dirs = []


def measure_limited(env: Env, lim: Limit, run: Any, rate: int, secs: float,
                    tag: str) -> dict[str, Any]:
    """Paced load at `rate` for `secs` against `run` (inside `lim`): CPU as a share of the
    quota (the cgroup's own counter, else /proc ticks), throttled periods, latency."""
    u0, th0, c0 = lim.usage_us(), lim.throttled(), cpu_ticks(run.pids())
    t0 = time.monotonic()
    res, lat = rate_run(env, run.port, rate, secs, f"fargate-{tag}", 100)
    wall = time.monotonic() - t0
    u1, th1, c1 = lim.usage_us(), lim.throttled(), cpu_ticks(run.pids())
    used_us = (u1 - u0) if u0 is not None else (c1 - c0) / CLK_TCK * 1e6
    d = {"rate": rate, "secs": secs, "ok": res.ok, **lat,
         "cpu_pct_of_quota": used_us / (wall * 1e6 * lim.cpu) * 100,
         "cpu_us_per_call": used_us / max(1, int(rate * secs)),
         "nr_throttled_delta": (th1 - th0) if th0 is not None else None}
    if not res.ok:
        d["problem"] = res.problem()
    return d


def peer_at_rate(env: Env, prof: Any, fast: list[int]) -> dict[str, Any]:
    """HAProxy h2 in the same limits at the same low rate: what any event-loop proxy pays per
    call on this machine when every call wakes it from sleep."""
    out: dict[str, Any] = {"target": "haproxy-h2"}
    lim = Limit(0.25, 512 * 1024 * 1024)
    lim.name += "-peer"
    if lim.setup() is None:
        out["error"] = "no way to limit CPU here: " + "; ".join(lim.reasons)
        return out
    run = None
    try:
        run = start_haproxy(env, "haproxy-fargate", "http", fast,
                            preexec=None if lim.prefix else lim.preexec, prefix=lim.prefix)
        if lim.prefix:
            lim.locate_scope(run.proc.pid)
        w = h2load(env, run.port, 200, 4, 32)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")
        out.update(measure_limited(env, lim, run, prof.fg_idle_rate, prof.fg_idle_secs,
                                   "peer-200"))
    except BenchError as e:
        out["error"] = str(e)
    finally:
        if run:
            run.stop()
        lim.cleanup()
    return out


def fargate_run(env: Env, prof: Any, fast: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"cpu_limit": 0.25, "mem_limit": 512 * 1024 * 1024,
                           "io_backend": "epoll", "p99_limit_ms": FARGATE_P99_MS}
    lim = Limit(0.25, 512 * 1024 * 1024)
    mode = lim.setup()
    out["limit_mode"] = mode
    out["limit_reasons"] = lim.reasons
    if mode is None:
        out["error"] = "no way to limit CPU here: " + "; ".join(lim.reasons)
        log(f"fargate: {out['error']}")
        return out
    log(f"fargate: {mode}")
    run = None
    try:
        # Fargate's seccomp profile denies io_uring, so this is the epoll backend; workers
        # "auto" is what a task definition would use.
        run = start_ringlb(env, "ringlb-fargate", "epoll", fast, workers='"auto"',
                           preexec=None if lim.prefix else lim.preexec, prefix=lim.prefix)
        pid = run.proc.pid
        if lim.prefix:  # systemd-run execs taskset execs ringlb: same pid
            lim.locate_scope(pid)
        out["ready_line"] = run.ready_line
        out["cgroup_of_ringlb"] = Path(f"/proc/{pid}/cgroup").read_text().strip().splitlines()
        time.sleep(0.3)
        out["rss_idle_kb"] = rss_kb(run.pids())
        w = h2load(env, run.port, 200, 4, 32)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")

        idle = measure_limited(env, lim, run, prof.fg_idle_rate, prof.fg_idle_secs, "200")
        out["at_200"] = idle
        log(f"fargate: {prof.fg_idle_rate}/s uses {idle['cpu_pct_of_quota']:.1f}% of the quota, "
            f"nr_throttled +{idle['nr_throttled_delta']}")
        steps = []
        best = None
        for rate in prof.fg_steps:
            s = measure_limited(env, lim, run, rate, prof.fg_step_secs, str(rate))
            s["pass"] = (s["ok"] and s.get("achieved_rate", 0) >= 0.95 * rate
                         and s.get("p99_us", math.inf) < FARGATE_P99_MS * 1000)
            steps.append(s)
            log(f"fargate: {rate}/s -> achieved {s.get('achieved_rate', 0):.0f}/s, "
                f"p99 {s.get('p99_us', math.nan) / 1000:.2f} ms, "
                f"{s['cpu_pct_of_quota']:.0f}% of quota, throttled +{s['nr_throttled_delta']}: "
                f"{'pass' if s['pass'] else 'FAIL'}")
            if s["pass"]:
                best = rate
            # Every step runs: on a shared VM one stall can fail a low step that a higher one
            # passes. Only a step that falls well short of its rate ends the climb.
            if not s["ok"] or s.get("achieved_rate", 0) < 0.8 * rate:
                break
        out["steps"] = steps
        out["max_rate_p99_under_5ms"] = best
        out["all_steps_passed"] = (len(steps) == len(prof.fg_steps)
                                   and all(s["pass"] for s in steps))
        out["mem_peak_bytes"] = lim.mem_peak()
        out["rss_end_kb"] = rss_kb(run.pids())
    except BenchError as e:
        out["error"] = str(e)
        log(f"fargate: {e}")
    finally:
        if run:
            run.stop()
        lim.cleanup()
    if "error" not in out:
        peer = peer_at_rate(env, prof, fast)
        out["peer_at_200"] = peer
        if "error" in peer:
            log(f"fargate: peer {peer['target']}: {peer['error']}")
        else:
            log(f"fargate: peer {peer['target']} at {prof.fg_idle_rate}/s uses "
                f"{peer['cpu_pct_of_quota']:.1f}% of the quota")
    return out

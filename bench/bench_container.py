"""The Fargate-shaped run in a container: the packaging/Dockerfile image under podman with
--cpus 0.25 --memory 512m and a seccomp profile that denies io_uring (as Fargate's and
Docker >= 25's do), so ringlb's io_backend "auto" takes its epoll fallback as it would on
Fargate. Measured from the container's own cgroup: CPU per call and as a share of the quota,
throttled periods, RSS and the cgroup's memory; then a rate sweep for what one 0.25 vCPU
container carries. Part of bench/harness.py (the bare-process run is bench_fargate.py).
"""
from __future__ import annotations

import json
import math
import re
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_fargate import FARGATE_P99_MS, measure_limited
from bench_load import h2load, rate_run
from bench_targets import REPO, BenchError, Env, free_port, log, ringlb_config, rss_kb

CPUS = 0.25
MEM = 512 * 1024 * 1024
TAG = "localhost/ringlb:bench"
DENIED = ("io_uring_setup", "io_uring_enter", "io_uring_register")
# A step "carries" its rate when p99 stays under FARGATE_P99_MS, at least 95% of the offered
# rate is achieved, every call is answered, and at most this share of the CFS periods in the
# step were throttled (a throttled period stalls every call for the rest of it, up to 75 ms).
MAX_THROTTLED_SHARE = 0.01
STEP_TRIES = 3
IDLE_SECS = 3.0


def runtime_args() -> list[str]:
    # crun refuses a v1/v2 hybrid cgroup layout; runc takes both.
    return ["--runtime", "runc"] if shutil.which("runc") else []


def ulimit_args() -> list[str]:
    # Explicit: podman's defaults can exceed what this process may grant (runc then fails).
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def podman(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def podman_problem() -> str | None:
    """Why podman cannot run a container here, or None."""
    if not shutil.which("podman"):
        return "podman is not installed (apt-get install podman runc)"
    base = subprocess.run(["bash", str(REPO / "packaging" / "base-image.sh")], capture_output=True,
                          text=True, timeout=900)
    if base.returncode != 0:
        return f"packaging/base-image.sh failed: {base.stderr.strip()[-400:]}"
    r = podman("run", *runtime_args(), *ulimit_args(), "--rm", "--network", "none",
               base.stdout.strip(), "true", timeout=120)
    if r.returncode != 0:
        return f"podman cannot run a container here: {r.stderr.strip()[-400:]}"
    return None


def build_image(env: Env) -> tuple[str, float]:
    t0 = time.monotonic()
    out = env.workdir / "podman-build.log"
    with open(out, "w") as f:
        r = subprocess.run(["podman", "build", *runtime_args(), *ulimit_args(), "--format",
                            "docker", "-f", "packaging/Dockerfile", "-t", TAG, "."], cwd=REPO,
                           stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    if r.returncode != 0:
        raise BenchError(f"podman build failed: {out.read_text()[-1500:]}")
    return TAG, time.monotonic() - t0


class ContainerCgroup:
    """The container's cgroup, found from its process: the counters bench_fargate.Limit reads for
    a bare process (cgroup v2 cpu.stat/memory.current, or v1 cpuacct/cpu/memory)."""

    def __init__(self, pid: int, cpu: float):
        self.cpu = cpu
        mounts = [(ln.split()[1], ln.split()[2], ln.split()[3].split(","))
                  for ln in Path("/proc/self/mounts").read_text().splitlines()
                  if ln.split()[2] in ("cgroup", "cgroup2")]
        paths: dict[str, str] = {}
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in (ctrls.split(",") if ctrls else ["<v2>"]):
                paths[c] = path.lstrip("/")

        def v1(ctrl: str) -> Path | None:
            for mnt, fstype, opts in mounts:
                if fstype == "cgroup" and ctrl in opts and ctrl in paths:
                    return Path(mnt) / paths[ctrl]
            return None
        cpu_d, acct_d, mem_d = v1("cpu"), v1("cpuacct"), v1("memory")
        if cpu_d and acct_d and mem_d:
            self.mode = f"cgroup v1 ({cpu_d})"
            self.usage_file, self.scale = acct_d / "cpuacct.usage", 1e-3
            self.stat_file = cpu_d / "cpu.stat"
            self.mem_file = mem_d / "memory.usage_in_bytes"
            self.peak_file = mem_d / "memory.max_usage_in_bytes"
            self.quota = (int((cpu_d / "cpu.cfs_quota_us").read_text()),
                          int((cpu_d / "cpu.cfs_period_us").read_text()))
        else:
            v2 = next(Path(m[0]) for m in mounts if m[1] == "cgroup2")
            d = v2 / paths["<v2>"]
            self.mode = f"cgroup v2 ({d})"
            self.usage_file, self.scale = d / "cpu.stat", 1.0
            self.stat_file = d / "cpu.stat"
            self.mem_file = d / "memory.current"
            self.peak_file = d / "memory.peak" if (d / "memory.peak").exists() else None
            q, p = (d / "cpu.max").read_text().split()
            self.quota = (-1 if q == "max" else int(q), int(p))

    def _stat(self, key: str) -> int | None:
        m = re.search(rf"^{key} (\d+)$", self.stat_file.read_text(), re.M)
        return int(m.group(1)) if m else None

    def usage_us(self) -> float:
        text = self.usage_file.read_text()
        if self.usage_file.name == "cpu.stat":
            return float(re.search(r"usage_usec (\d+)", text).group(1))
        return float(text.split()[0]) * self.scale

    def throttled(self) -> int | None:
        return self._stat("nr_throttled")

    def periods(self) -> int | None:
        return self._stat("nr_periods")

    def mem_current(self) -> int:
        return int(self.mem_file.read_text().split()[0])

    def mem_peak(self) -> int | None:
        return int(self.peak_file.read_text().split()[0]) if self.peak_file else None


class ContainerRun:
    """One ringlb container (host network, its listener on 127.0.0.1:port)."""

    def __init__(self, env: Env, image: str, name: str, ports: list[int], profile: Path,
                 cpuset: int | None, access: str = "off"):
        self.name = f"{name}-{env.workdir.name}"
        self.port, admin = free_port(), free_port()
        cfg = ringlb_config("auto", ports, workers='"auto"', access=access)
        cfg = cfg.replace('address = "127.0.0.1:0"\n\n[log]', f'address = "127.0.0.1:{admin}"'
                          f'\n\n[log]', 1).replace('address = "127.0.0.1:0"',
                                                   f'address = "127.0.0.1:{self.port}"')
        path = env.workdir / f"{name}.toml"
        path.write_text(cfg)
        path.chmod(0o644)
        self.args = ["--cpus", str(CPUS), "--memory", str(MEM), "--network", "host",
                     "--security-opt", f"seccomp={profile}",
                     "-v", f"{path}:/etc/ringlb/ringlb.toml:ro,Z"]
        if cpuset is not None:
            self.args += ["--cpuset-cpus", str(cpuset)]
        r = podman("run", *runtime_args(), *ulimit_args(), "-d", "--name", self.name,
                   *self.args, image, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"podman run: {r.stderr.strip()[-600:]}")
        self.pid = self._wait_ready()
        self.cgroup = ContainerCgroup(self.pid, CPUS)

    def logs(self) -> str:
        r = podman("logs", self.name)
        return r.stdout + r.stderr

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.logs()
            m = re.search(r"ready:[^\n]*", text)
            if m:
                self.ready_line = m.group(0)
                io = re.search(r"io backend: [^\n]*", text)
                self.io_line = io.group(0) if io else ""
                info = json.loads(podman("inspect", self.name).stdout)[0]
                return int(info["State"]["Pid"])
            st = podman("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip()
            if st != "true":
                raise BenchError(f"container {self.name} exited: {text[-1000:]}")
            time.sleep(0.1)
        raise BenchError(f"container {self.name}: no ready: line in 30 s: {self.logs()[-1000:]}")

    def pids(self) -> list[int]:
        return [self.pid]

    def stop(self) -> None:
        podman("stop", "-t", "10", self.name, timeout=40)
        podman("rm", "-f", "-t", "0", self.name, timeout=40)


def measure(env: Env, run: ContainerRun, rate: int, secs: float, tag: str) -> dict[str, Any]:
    cg = run.cgroup
    p0, t0 = cg.periods(), cg.throttled()
    d = measure_limited(env, cg, run, rate, secs, f"container-{tag}")
    p1, t1 = cg.periods(), cg.throttled()
    d["nr_periods_delta"] = (p1 - p0) if p0 is not None else None
    d["throttled_share"] = ((t1 - t0) / (p1 - p0)) if p0 is not None and p1 > p0 else None
    d["rss_kb"] = rss_kb(run.pids())
    d["mem_current_bytes"] = cg.mem_current()
    return d


def passes(s: dict[str, Any]) -> bool:
    return bool(s["ok"] and s.get("achieved_rate", 0) >= 0.95 * s["rate"]
                and s.get("p99_us", math.inf) < FARGATE_P99_MS * 1000
                and (s["throttled_share"] or 0) <= MAX_THROTTLED_SHARE)


def sweep_step(env: Env, run: ContainerRun, rate: int, secs: float,
               direct_port: int) -> dict[str, Any]:
    """One rate: up to STEP_TRIES tries (a stall of this shared VM can fail one; throttling
    fails every one), the first that passes or else the last is kept. Before the tries, the same
    load straight at one backend: the machine's own p99 at this rate, the floor to read the
    container's p99 against."""
    _, direct = rate_run(env, direct_port, rate, secs, f"container-direct-{rate}", 100)
    for k in range(STEP_TRIES):
        s = measure(env, run, rate, secs, f"{rate}-{k}")
        s["tries"] = k + 1
        s["direct_p99_us"] = direct.get("p99_us")
        s["pass"] = passes(s)
        log(f"container: {rate}/s try {k + 1} -> achieved {s.get('achieved_rate', 0):.0f}/s, "
            f"p99 {s.get('p99_us', math.nan) / 1000:.2f} ms (direct "
            f"{direct.get('p99_us', math.nan) / 1000:.2f}), {s['cpu_pct_of_quota']:.0f}% of "
            f"quota, {s['cpu_us_per_call']:.1f} us/call, throttled {s['nr_throttled_delta']}/"
            f"{s['nr_periods_delta']} periods: {'pass' if s['pass'] else 'FAIL'}")
        if s["pass"] or not s["ok"]:
            break
    return s


def carried_rate(steps: list[dict[str, Any]]) -> int | None:
    """The highest rate that passed with every lower step passing too."""
    carried = None
    for st in steps:
        if not st["pass"]:
            break
        carried = st["rate"]
    return carried


def summarize(sweeps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per rate over the sweeps: passes in a majority of them; medians of the figures, the
    throttled and total periods summed."""
    out = []
    for rate in sorted({st["rate"] for sw in sweeps for st in sw}):
        xs = [st for sw in sweeps for st in sw if st["rate"] == rate]

        def med(key: str) -> float | None:
            v = [x[key] for x in xs if x.get(key) is not None]
            return statistics.median(v) if v else None
        n_pass = sum(1 for x in xs if x["pass"])
        out.append({"rate": rate, "runs": len(xs), "passed": n_pass,
                    "pass": n_pass * 2 > len(sweeps),
                    "ok": all(x["ok"] for x in xs),
                    **{k: med(k) for k in ("achieved_rate", "p50_us", "p99_us", "p999_us",
                                           "direct_p99_us", "cpu_pct_of_quota",
                                           "cpu_us_per_call", "mem_current_bytes",
                                           "steal_ms", "tries")},
                    "nr_throttled_delta": sum(x["nr_throttled_delta"] or 0 for x in xs),
                    "nr_periods_delta": sum(x["nr_periods_delta"] or 0 for x in xs)})
    return out


def container_run(env: Env, prof: Any, fast: list[int], image: str | None,
                  cpuset: int | None, access: str = "off") -> dict[str, Any]:
    """access: the access log ("off" as in the bare run, or "stdout" as the image's default
    config has it: podman's conmon then carries every line, outside the container's cgroup)."""
    out: dict[str, Any] = {"access_log": access, "cpu_limit": CPUS, "mem_limit": MEM, "seccomp": "io_uring denied "
                           "(EPERM), everything else allowed", "cpuset": cpuset,
                           "max_throttled_share": MAX_THROTTLED_SHARE,
                           "p99_limit_ms": FARGATE_P99_MS}
    why = podman_problem()
    if why:
        out["unavailable"] = why
        log(f"container: {why}")
        return out
    if image is None:
        image, secs = build_image(env)
        out["build_s"] = round(secs, 1)
        log(f"container: image {image} built in {secs:.0f} s")
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    out["image"], out["image_bytes"] = image, info["Size"]
    profile = env.workdir / "deny-io_uring.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    run = None
    try:
        run = ContainerRun(env, image, "ringlb-bench-container", fast, profile, cpuset, access)
        out["podman_args"] = " ".join(run.args).replace(str(env.workdir), "WORKDIR")
        out["ready_line"], out["io_line"] = run.ready_line, run.io_line
        out["cgroup"] = run.cgroup.mode
        out["quota"] = run.cgroup.quota
        if "epoll" not in run.io_line:
            raise BenchError(f"io_uring was not denied: {run.io_line}")
        time.sleep(0.3)
        out["rss_idle_kb"] = rss_kb(run.pids())
        out["mem_idle_bytes"] = run.cgroup.mem_current()
        # No calls at all: what the control thread's timers (keepalive PINGs to each endpoint,
        # DNS, the admin) cost on their own.
        u0, t0 = run.cgroup.usage_us(), time.monotonic()
        time.sleep(IDLE_SECS)
        out["idle_cpu_pct_of_quota"] = ((run.cgroup.usage_us() - u0)
                                        / ((time.monotonic() - t0) * 1e6 * CPUS) * 100)
        w = h2load(env, run.port, 200, 4, 32)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")
        a = measure(env, run, prof.fg_idle_rate, prof.fg_idle_secs, "200")
        out["at_200"] = a
        log(f"container: {prof.fg_idle_rate}/s: {a['cpu_us_per_call']:.0f} us CPU/call, "
            f"{a['cpu_pct_of_quota']:.1f}% of the quota, nr_throttled +{a['nr_throttled_delta']}, "
            f"RSS {a['rss_kb'] / 1024:.1f} MiB, memory {a['mem_current_bytes'] / 2**20:.1f} MiB")
        sweeps = []
        for k in range(prof.ct_sweeps):
            steps = []
            for rate in prof.ct_steps:
                st = sweep_step(env, run, rate, prof.fg_step_secs, fast[0])
                st["sweep"] = k + 1
                steps.append(st)
                if not st["ok"] or st.get("achieved_rate", 0) < 0.8 * rate:
                    break
            sweeps.append(steps)
            log(f"container: sweep {k + 1}: carries {carried_rate(steps)} calls/s")
        out["sweeps"] = sweeps
        out["steps"] = summarize(sweeps)
        out["carried_per_sweep"] = [carried_rate(x) for x in sweeps]
        out["max_rate_all_below_passing"] = carried_rate(out["steps"])
        passing = [x["rate"] for x in out["steps"] if x["pass"]]
        out["max_rate_passing"] = max(passing) if passing else None
        out["mem_peak_bytes"] = run.cgroup.mem_peak()
        out["rss_end_kb"] = rss_kb(run.pids())
        out["oom_killed"] = json.loads(podman("inspect", run.name).stdout)[0]["State"].get(
            "OOMKilled")
    except BenchError as e:
        out["error"] = str(e)
        log(f"container: {e}")
    finally:
        if run:
            run.stop()
    return out

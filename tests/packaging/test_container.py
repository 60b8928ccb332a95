"""The container image (packaging/Dockerfile) under podman: built once per session from the repo
root (tag localhost/ringlb:test), then run the way Fargate and Docker >= 25 run it.

- a seccomp profile that denies io_uring (EPERM, as Docker >= 25): the epoll fallback line, and
  real gRPC calls from a grpcio client on the host through ringlb in the container to grpcio
  backends on the host, spread over every backend;
- --cpus 0.25 --memory 512m (a 0.25 vCPU / 512 MB task): workers = "auto" resolves to 1; a
  `podman stop` (SIGTERM) in the middle of a steady 100 calls/s stream (grpcio, retries off)
  fails no call and the container exits 0 within the stop timeout;
- the image's HEALTHCHECK (`ringlb ready`) reports healthy once ringlb serves;
- the image's size (printed as `image size: N MB`), its user (uid 65532), its default config.

Containers use --network host (the backends listen on the host's 127.0.0.1) or --network none
(the health check, in a namespace of its own), never a bridge. Each container is removed at the
end. Environment: RINGLB_IMAGE=NAME runs the tests against that image instead of building one;
RINGLB_PODMAN_RUNTIME (default runc where installed: crun refuses a hybrid cgroup layout).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, need

sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness  # noqa: E402  (grpcio backends and clients)
from harness import Stub, channel, closed_port, cluster, render_config  # noqa: E402

TAG = "localhost/ringlb:test"
MAX_IMAGE_MB = 40.0
UID = 65532
BUILD_TIMEOUT = 3600.0       # a cold build on a 2-core machine takes 5 to 10 minutes
READY_TIMEOUT = 30.0
RATE = 100.0                 # calls/s of the steady stream in the stop test
CALL_DELAY_MS = 200          # each call waits this long in the backend: ~20 always in flight
STOP_TIMEOUT = 15            # podman stop -t; the config's drain_timeout is shorter
DRAIN_TIMEOUT = "8s"

READY_RE = re.compile(r"ready: (\d+) workers? \(([^)]*)\)")
EPOLL_RE = re.compile(r"io backend: epoll \((.*)\)")
SHARD_RE = re.compile(r"shard (\d+) stopped: (\d+) connections, (\d+) calls")
DENIED = ("io_uring_setup", "io_uring_enter", "io_uring_register")


# ---------------------------------------------------------------------------------------------
# podman
# ---------------------------------------------------------------------------------------------
def runtime_args() -> list[str]:
    rt = os.environ.get("RINGLB_PODMAN_RUNTIME") or ("runc" if shutil.which("runc") else "")
    return ["--runtime", rt] if rt else []


def ulimit_args() -> list[str]:
    """Explicit limits: podman's defaults can exceed what this process may grant, and runc then
    fails. Open files: our hard limit (at most 65536); processes: 4096 (ringlb has a handful of
    threads)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return r


def podman_run_args() -> list[str]:
    return ["run", *runtime_args(), *ulimit_args()]


@pytest.fixture(scope="session")
def image(base_image, repo_root) -> str:
    """The image, built once per session (layers cached by podman between sessions)."""
    probe = subprocess.run(["podman", *podman_run_args(), "--rm", "--network", "none",
                            base_image, "true"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run containers here ({' '.join(runtime_args()) or 'default'}"
                    f" runtime): {probe.stderr.strip()[-600:]}")
    if os.environ.get("RINGLB_IMAGE"):
        return os.environ["RINGLB_IMAGE"]
    t0 = time.monotonic()
    log = repo_root / "build" / "packaging" / "podman-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        r = subprocess.run(["podman", "build", *runtime_args(), *ulimit_args(), "--format",
                            "docker", "-f", "packaging/Dockerfile", "-t", TAG, "."],
                           cwd=repo_root, stdout=f, stderr=subprocess.STDOUT, text=True,
                           timeout=BUILD_TIMEOUT)
    if r.returncode != 0:
        pytest.fail(f"podman build failed ({log}):\n{log.read_text()[-4000:]}", pytrace=False)
    print(f"\nimage build: {time.monotonic() - t0:.1f} s (log {log})")
    return TAG


class Container:
    """One detached container of ours, force-removed at the end of the test."""

    seq = 0

    def __init__(self, image: str, args: list[str], cmd: list[str] | None = None):
        Container.seq += 1
        self.name = f"ringlb-test-{os.getpid()}-{Container.seq}"
        r = podman(*podman_run_args(), "-d", "--name", self.name, *args, image, *(cmd or []),
                   timeout=120)
        self.id = r.stdout.strip().splitlines()[-1]

    def logs(self) -> str:
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def wait_log(self, regex: re.Pattern, timeout: float = READY_TIMEOUT) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            text = self.logs()
            m = regex.search(text)
            if m:
                return m
            if time.monotonic() > end or not self.running():
                pytest.fail(f"{self.name}: no /{regex.pattern}/ within {timeout:g} s "
                            f"(running: {self.running()}):\n{text[-3000:]}", pytrace=False)
            time.sleep(0.1)

    def remove(self):
        podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def containers(image):
    made: list[Container] = []

    def start(args: list[str], cmd: list[str] | None = None) -> Container:
        c = Container(image, args, cmd)
        made.append(c)
        return c

    yield start
    for c in made:
        c.remove()


@pytest.fixture
def backends():
    pool = harness.BackendPool()
    yield pool
    pool.close()


def host_config(tmp_path: Path, bs, port: int, admin_port: int, name: str = "ringlb.toml",
                **proxy) -> Path:
    """A config for --network host: the listener and admin on the host's loopback."""
    cfg = {"proxy": {"workers": "auto", **proxy},
           "admin": {"address": f"127.0.0.1:{admin_port}"},
           "log": {"access": "off"},
           "listener": [{"address": f"127.0.0.1:{port}", "cluster": "main"}],
           "cluster": [cluster("main", bs)]}
    path = tmp_path / name
    path.write_text(render_config(cfg))
    path.chmod(0o644)  # read by uid 65532 in the container
    return path


def mount(path: Path) -> list[str]:
    return ["-v", f"{path}:/etc/ringlb/ringlb.toml:ro,Z"]


def metrics(admin_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def spread_calls(port: int, n: int) -> dict[str, int]:
    """n calls on one channel (retries off); every one must succeed. Returns calls per backend."""
    stub = Stub(channel(port))
    per: dict[str, int] = {}
    try:
        for i in range(n):
            name = stub.unary_delay(b"0", timeout=10).decode()
            per[name] = per.get(name, 0) + 1
    finally:
        stub.ch.close()
    return per


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_image_size_user_and_metadata(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    mb = info["Size"] / 1e6
    print(f"\nimage size: {mb:.1f} MB ({info['Size']} bytes, uncompressed)")
    assert mb <= MAX_IMAGE_MB, f"image is {mb:.1f} MB, over {MAX_IMAGE_MB:g} MB"
    cfg = info["Config"]
    user = cfg.get("User", "")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"image user {user!r}"
    assert cfg.get("StopSignal") in ("SIGTERM", "15"), cfg.get("StopSignal")
    assert cfg["Entrypoint"] == ["/usr/bin/ringlb"], cfg["Entrypoint"]
    assert cfg["Cmd"] == ["--config", "/etc/ringlb/ringlb.toml"], cfg["Cmd"]
    assert set(cfg.get("ExposedPorts", {})) == {"50051/tcp", "9901/tcp"}, cfg.get("ExposedPorts")
    hc = info.get("Healthcheck") or cfg.get("Healthcheck") or {}  # podman: top level
    assert hc.get("Test") == ["CMD", "/usr/bin/ringlb", "ready", "--admin", "127.0.0.1:9901"], \
        f"HEALTHCHECK lost or changed (built without --format docker?): {hc}"
    # The shipped config validates in the image itself.
    r = podman(*podman_run_args(), "--rm", "--network", "none", image, "check",
               "/etc/ringlb/ringlb.toml", check=False)
    assert r.returncode == 0 and ": ok (1 listeners, 1 clusters)" in r.stdout, r.stdout + r.stderr


@pytest.fixture
def dns():
    import dns_server
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    d = dns_server.DnsServer()
    yield d
    d.stop()


def test_seccomp_denying_io_uring_falls_back_to_epoll_and_proxies(containers, backends, dns,
                                                                     tmp_path):
    """Docker >= 25's default profile (and Fargate's) deny io_uring: ringlb must say it falls
    back to epoll and proxy real gRPC calls, spread over every backend. The backends come from
    DNS (SRV records from a DNS server on the host's loopback), as the shipped config's do: c-ares
    in the image's bare root file system finds them."""
    profile = tmp_path / "deny-io_uring.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    bs = backends(3)
    srv = "_grpc._tcp.backend.test.local"
    for i in range(3):
        dns.set_a(f"b{i}.test.local", ["127.0.0.1"], ttl=5)
    dns.set_srv(srv, [(10, 1, b.port, f"b{i}.test.local") for i, b in enumerate(bs)], ttl=5)
    port, admin = closed_port(), closed_port()
    cfg = tmp_path / "ringlb.toml"
    cfg.write_text(render_config({
        "proxy": {"workers": 2}, "admin": {"address": f"127.0.0.1:{admin}"},
        "log": {"access": "off"}, "discovery": {"resolvers": [dns.address]},
        "listener": [{"address": f"127.0.0.1:{port}", "cluster": "main"}],
        "cluster": [{"name": "main", "dns": srv, "record": "SRV", "connect_timeout": "1s"}]}))
    cfg.chmod(0o644)
    c = containers(["--network", "host", "--security-opt", f"seccomp={profile}", *mount(cfg)])
    c.wait_log(READY_RE)
    m = EPOLL_RE.search(c.logs())
    assert m, f"no epoll fallback line:\n{c.logs()[-2000:]}"
    # EPERM is this profile's answer (podman's own default profile answers ENOSYS).
    assert "EPERM" in m.group(1) and "falling back to epoll" in m.group(1), m.group(0)
    assert dns.queries(srv, "SRV") >= 1, "ringlb never asked the DNS server"
    per = spread_calls(port, 90)
    print(f"\nseccomp: {m.group(0)}; 90 calls per backend {per}")
    assert sum(per.values()) == 90
    assert len(per) == 3 and min(per.values()) >= 20, f"calls not spread: {per}"
    assert 'ringlb_io_backend{backend="epoll"} 1' in metrics(admin)


class SteadyLoad:
    """RATE calls/s on one grpcio channel with retries off (every failure shows), each call
    held CALL_DELAY_MS in a backend; futures, so a slow call does not hold the next back."""

    def __init__(self, port: int):
        self.stub = Stub(channel(port))
        self.stop_flag = threading.Event()
        self.calls: list[tuple[float, object]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        assert self.stub.unary_delay(b"0", timeout=10)  # the connection is up
        self.thread.start()

    def _run(self):
        next_t = time.monotonic()
        while not self.stop_flag.is_set():
            f = self.stub.unary_delay.future(str(CALL_DELAY_MS).encode(), timeout=10)
            self.calls.append((time.monotonic(), f))
            next_t += 1.0 / RATE
            time.sleep(max(0.0, next_t - time.monotonic()))

    def finish(self) -> tuple[int, list[tuple[float, str]], dict[str, int]]:
        self.stop_flag.set()
        self.thread.join(10)
        failures, per = [], {}
        for t, f in self.calls:
            try:
                name = f.result(timeout=20).decode()
                per[name] = per.get(name, 0) + 1
            except Exception as e:  # noqa: BLE001 -- grpc.RpcError, reported with its status
                failures.append((t, f"{getattr(e, 'code', lambda: e)()} "
                                    f"{getattr(e, 'details', lambda: '')()}"))
        self.stub.ch.close()
        return len(self.calls), failures, per


def test_quarter_cpu_task_one_worker_and_sigterm_loses_no_call(containers, backends, tmp_path):
    """A 0.25 vCPU / 512 MB task. workers = "auto" resolves to 1. Then the ECS replacement on
    one host: a second container on the same port (host network, SO_REUSEPORT, same uid) takes
    over, and `podman stop` sends the first SIGTERM while a client sends 100 calls/s with
    ~20 calls always in flight: no call fails, and the first exits 0 within the stop timeout."""
    bs = backends(3)
    port = closed_port()
    admin_a, admin_b = closed_port(), closed_port()
    limits = ["--cpus", "0.25", "--memory", "512m", "--network", "host"]
    cfg_a = host_config(tmp_path, bs, port, admin_a, "a.toml", drain_timeout=DRAIN_TIMEOUT)
    a = containers([*limits, *mount(cfg_a)])
    m = a.wait_log(READY_RE)
    assert m.group(1) == "1", f"workers resolved to {m.group(1)} ({m.group(2)}) under --cpus 0.25"
    assert re.search(r"^ringlb_workers 1$", metrics(admin_a), re.M), "ringlb_workers is not 1"
    print(f"\n0.25 CPU: `{m.group(0)}`")
    per = spread_calls(port, 30)
    assert sum(per.values()) == 30 and len(per) == 3, per

    load = SteadyLoad(port)
    load.start()
    time.sleep(1.5)
    cfg_b = host_config(tmp_path, bs, port, admin_b, "b.toml", drain_timeout=DRAIN_TIMEOUT)
    b = containers([*limits, *mount(cfg_b)])
    b.wait_log(READY_RE)
    assert "another process listens on" in b.logs(), \
        f"the second container did not share the first one's port:\n{b.logs()[-2000:]}"
    time.sleep(1.0)
    t0 = time.monotonic()
    r = podman("stop", "-t", str(STOP_TIMEOUT), a.name, timeout=STOP_TIMEOUT + 30, check=False)
    stop_s = time.monotonic() - t0
    time.sleep(1.5)
    calls, failures, per = load.finish()
    state = a.inspect()["State"]
    served = {int(s): int(n) for s, _, n in SHARD_RE.findall(a.logs())}
    print(f"podman stop took {stop_s:.1f} s, exit code {state['ExitCode']}; {calls} calls, "
          f"{len(failures)} failed; per backend {per}; the stopped container served "
          f"{sum(served.values())} calls")
    assert r.returncode == 0, r.stderr
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} after SIGTERM:\n" \
                                   f"{a.logs()[-2000:]}"
    assert stop_s < STOP_TIMEOUT, f"podman stop took {stop_s:.1f} s (SIGKILL at {STOP_TIMEOUT})"
    assert not failures, f"{len(failures)} of {calls} calls failed: {failures[:5]}"
    assert calls >= RATE * 3, f"only {calls} calls in the stream"
    assert served and sum(served.values()) > 0, f"no `shard N stopped` line:\n{a.logs()[-2000:]}"
    assert b.running(), "the successor died"
    m_b = re.search(r'^ringlb_cluster_calls_started_total\{cluster="main"\} (\d+)$',
                    metrics(admin_b), re.M)
    total = calls + 1 + 30  # the stream, its first call, the spread check
    assert m_b and int(m_b.group(1)) + sum(served.values()) == total, \
        f"calls served: first container {sum(served.values())}, successor " \
        f"{m_b.group(1) if m_b else '?'}; sent {total}"
    assert int(m_b.group(1)) >= RATE * 1.0, "the successor took less than the last second's calls"


def test_healthcheck_reports_healthy_once_ready(containers, tmp_path):
    """The image's own HEALTHCHECK (ringlb ready --admin 127.0.0.1:9901), in a network namespace
    of the container's own (--network none: port 9901 is free there). The config comes from an
    environment variable (--config-env), the other way to override the shipped file."""
    cfg = render_config({"admin": {"address": "0.0.0.0:9901"}, "log": {"access": "off"},
                         "listener": [{"address": "0.0.0.0:50051", "cluster": "main"}],
                         "cluster": [cluster("main", ["127.0.0.1:1"])]})
    c = containers(["--network", "none", "-e", f"RINGLB_CONFIG={cfg}"],
                   ["--config-env", "RINGLB_CONFIG"])
    c.wait_log(READY_RE)
    end = time.monotonic() + 20
    while True:
        r = podman("healthcheck", "run", c.name, check=False)
        if r.returncode == 0 or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert r.returncode == 0 and "unhealthy" not in r.stdout, \
        f"healthcheck: exit {r.returncode} {r.stdout} {r.stderr}\n{c.logs()[-2000:]}"
    health = c.inspect()["State"].get("Health") or c.inspect()["State"].get("Healthcheck")
    print(f"\nhealthcheck: {r.stdout.strip()!r}, inspect: {health['Status']}")
    assert health["Status"] == "healthy", health
    # Non-root: every uid and gid of the process, as the host's kernel sees them.
    pid = c.inspect()["State"]["Pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
    assert set(uids) == {str(UID)} and set(gids) == {str(UID)}, (uids, gids)

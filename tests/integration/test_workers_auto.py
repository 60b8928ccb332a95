"""workers = "auto" under a 0.25 vCPU ECS task: the task metadata endpoint's task-level
Limits.CPU caps the workers (a fake ECS agent on 127.0.0.1 serves /v4/x/task), an unreachable
or silent endpoint is a warning and start-up goes on within its 1 s budget, and a real cgroup
CPU quota (v1 cfs or v2 cpu.max, a child cgroup this test makes) caps them too. The ready: line
says where the count came from, and /metrics' ringlb_workers agrees."""
from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

import harness
from harness import cluster, closed_port

URI_VAR = "ECS_CONTAINER_METADATA_URI_V4"


class FakeEcsAgent:
    """The ECS container agent's metadata endpoint: GET /v4/x/task -> a task document."""

    def __init__(self, cpu: float | None):
        self.cpu = cpu
        self.paths: list[str] = []
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                agent.paths.append(self.path)
                if self.path != "/v4/x/task":
                    self.send_error(404)
                    return
                # Shaped like a Fargate answer: the containers carry Limits of their own.
                doc = {"Cluster": "default", "TaskARN": "arn:aws:ecs:us-west-2:1:task/default/x",
                       "Family": "ringlb", "Revision": "1",
                       "Containers": [{"Name": "ringlb", "Limits": {"CPU": 0, "Memory": 0}}],
                       "AvailabilityZone": "us-west-2a"}
                if agent.cpu is not None:
                    doc["Limits"] = {"CPU": agent.cpu, "Memory": 512}
                body = json.dumps(doc, indent=4).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v4/x"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent():
    made = []

    def make(cpu):
        a = FakeEcsAgent(cpu)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()


def _need_proxy():
    if harness.direct_mode():
        pytest.fail("workers = auto needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)


def _start(ringlb, backends, name, env, workers="auto", launcher=None):
    cfg = ringlb.config([cluster("main", backends)], workers=workers)
    rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name=name, env=env,
                        launcher=launcher)
    ringlb.instances.append(rl)
    return rl


def _ready_line(rl) -> str:
    m = re.search(r"ready: .*", rl.log_text())
    assert m, rl.log_text()
    return m.group(0)


def _metrics_workers(rl) -> int:
    st, body, _ = rl.admin("/metrics")
    assert st == 200
    m = re.search(rb"^ringlb_workers (\d+)$", body, re.M)
    assert m, "no ringlb_workers gauge in /metrics"
    return int(m.group(1))


def _calls_work(rl):
    stub = harness.Stub(harness.channel(rl.port))
    for i in range(4):
        assert stub.unary(b"%d" % i, timeout=10) == b"%d" % i


def test_ecs_task_limit_quarter_cpu_gives_one_worker(backends, ringlb, agent):
    _need_proxy()
    bs = backends(1)
    ecs = agent(0.25)
    rl = _start(ringlb, bs, "ringlb-ecs-quarter", {URI_VAR: ecs.uri})
    line = _ready_line(rl)
    assert rl.ready_workers == 1, line
    assert "auto from ECS task metadata Limits.CPU=0.25" in line, line
    assert ecs.paths == ["/v4/x/task"], ecs.paths
    assert _metrics_workers(rl) == 1
    _calls_work(rl)

    # workers set in the config: the metadata is not asked.
    rl2 = _start(ringlb, bs, "ringlb-ecs-configured", {URI_VAR: ecs.uri}, workers=2)
    assert rl2.ready_workers == 2
    assert "ready: 2 workers (configured)" in rl2.log_text()
    assert ecs.paths == ["/v4/x/task"], "the metadata was asked although workers is set"


def test_ecs_unreachable_warns_then_two_cpus_cap_at_two(backends, ringlb, agent):
    _need_proxy()
    bs = backends(1)
    # Nothing listens: a warning, and the affinity and cgroup decide as without ECS.
    port = closed_port()
    rl = _start(ringlb, bs, "ringlb-ecs-down", {URI_VAR: f"http://127.0.0.1:{port}/v4/x"})
    log = rl.log_text()
    assert re.search(r"workers auto: ECS task metadata \(http://127\.0\.0\.1:%d/v4/x/task\): "
                     r"cannot connect to 127\.0\.0\.1:%d: Connection refused; the task's CPU "
                     r"limit is not applied" % (port, port), log), log
    line = _ready_line(rl)
    assert "Limits.CPU" not in line, line
    baseline = rl.ready_workers
    assert baseline >= 1
    assert _metrics_workers(rl) == baseline
    _calls_work(rl)
    rl.stop()

    # Limits.CPU = 2 on this machine: min(2, what the machine allows).
    ecs = agent(2.0)
    rl = _start(ringlb, bs, "ringlb-ecs-two", {URI_VAR: ecs.uri + "/"})  # a trailing slash too
    line = _ready_line(rl)
    assert rl.ready_workers == min(2, baseline), (line, baseline)
    assert "ECS task metadata Limits.CPU=2" in line, line
    assert _metrics_workers(rl) == min(2, baseline)

    # A task document without a task size (EC2): no cap, no warning.
    ecs_none = agent(None)
    rl = _start(ringlb, bs, "ringlb-ecs-nosize", {URI_VAR: ecs_none.uri})
    assert rl.ready_workers == baseline
    assert "has no task-level Limits.CPU" in rl.log_text()
    assert "ringlb[warn]" not in rl.log_text(), rl.log_text()


def test_ecs_silent_endpoint_costs_at_most_a_second(backends, ringlb):
    """An agent that accepts and never answers: start-up waits 1 s for it, then goes on."""
    _need_proxy()
    bs = backends(1)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        rl = _start(ringlb, bs, "ringlb-ecs-silent",
                    {URI_VAR: f"http://127.0.0.1:{srv.getsockname()[1]}/v4/x"})
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    log = rl.log_text()
    assert "timed out after 1s waiting for the answer" in log, log
    assert took > 0.9, f"started in {took:.2f}s: the metadata GET did not wait"
    # The process log's own clock: from the line before the GET to its warning, about 1 s.
    stamps = {}
    for key, pat in (("io", r"ringlb\[info\] io backend:"),
                     ("warn", r"ringlb\[warn\] workers auto: ECS task")):
        m = re.search(rf"^(\S+)Z {pat}", log, re.M)
        assert m, log
        stamps[key] = datetime.datetime.fromisoformat(m.group(1))
    waited = (stamps["warn"] - stamps["io"]).total_seconds()
    assert 0.95 <= waited < 1.5, f"the metadata GET took {waited:.3f}s (budget 1 s)"
    _calls_work(rl)


# ---------------------------------------------------------------------------------------------
# A real cgroup quota: a child cgroup of this test's own with 0.9 CPU, ringlb moved into it.
# ceil(0.9) = 1 worker, as 0.25 is; 0.9 keeps a sanitizer build (run.sh runs this suite under
# ASan and TSan) from crawling. tests/packaging/test_workers_container.py runs 0.25 in a container.
# ---------------------------------------------------------------------------------------------
QUOTA_V1, QUOTA_V2 = "90000", "90000 100000"
def _cgroup_for_quota() -> tuple[Path, str, str] | None:
    """(new cgroup dir, quota file, its 0.25 CPU text) under a cpu-controller hierarchy we may
    write, or None."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    cg = Path("/proc/self/cgroup").read_text().splitlines()
    name = f"ringlb-test-{uuid.uuid4().hex[:8]}"
    for line in mounts:
        f = line.split()
        dash = f.index("-")
        fstype, opts, root, point = f[dash + 1], f[dash + 3].split(","), f[3], f[4]
        if fstype == "cgroup" and "cpu" in opts and root == "/":
            path = next((c.split(":", 2)[2] for c in cg if "cpu" in c.split(":")[1].split(",")),
                        None)
            if path is not None:
                return Path(point + path.rstrip("/")) / name, "cpu.cfs_quota_us", QUOTA_V1
        if fstype == "cgroup2" and root == "/":
            path = next((c.split(":", 2)[2] for c in cg if c.startswith("0::")), None)
            parent = Path(point + path.rstrip("/")) if path is not None else None
            ctl = parent / "cgroup.subtree_control" if parent else None
            if ctl and ctl.exists() and "cpu" in ctl.read_text().split():
                return parent / name, "cpu.max", QUOTA_V2
    return None


def test_real_cgroup_quota_quarter_cpu_gives_one_worker(backends, ringlb):
    _need_proxy()
    found = _cgroup_for_quota()
    if found is None:
        pytest.skip("no writable cgroup hierarchy with the cpu controller here (v1 cpu mount or "
                    "v2 with cpu in cgroup.subtree_control)")
    d, quota_file, quota = found
    try:
        d.mkdir()
        (d / quota_file).write_text(quota)
    except OSError as e:
        pytest.skip(f"cannot make a cgroup with a CPU quota at {d}: {e} (needs root and a "
                    f"writable cgroup mount)")
    try:
        bs = backends(1)
        launcher = ["sh", "-c", f'echo $$ > {d}/cgroup.procs && exec "$@"', "sh"]
        rl = _start(ringlb, bs, "ringlb-cgroup", {}, launcher=launcher)
        line = _ready_line(rl)
        assert rl.ready_workers == 1, line
        kind = "cgroup v1 cfs quota at " if quota_file.startswith("cpu.cfs") else \
            "cgroup v2 cpu.max at "
        assert f"auto from {kind}{d}: {QUOTA_V1}" in line, line
        assert _metrics_workers(rl) == 1
        _calls_work(rl)
        rl.stop()
    finally:
        for _ in range(50):  # the process has left once it exited; rmdir may race its reaping
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)

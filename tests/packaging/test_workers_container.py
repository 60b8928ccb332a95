"""workers = "auto" inside a real container with a CPU quota (podman --cpus, runc): the
container sees its own cgroup only (bind-mounted on cgroup v1, a namespace on v2) and ringlb
must read the quota there: --cpus=0.25 -> 1 worker, --cpus=1.5 -> 2 (on a machine with 2 CPUs
or more). The config comes from an environment variable (--config-env, as on Fargate), and
`ringlb ready` inside the container is the health check a HEALTHCHECK would run.

The binary is the one built on this machine, mounted with the host's shared libraries (the same
Debian 12) into the debian:bookworm-slim stand-in, so no image build is needed here.
Packages: podman, runc (and mmdebstrap for the base image)."""
from __future__ import annotations

import os
import re
import resource
import subprocess
import time
import uuid

import pytest

from conftest import need

CONFIG = """\
[proxy]
workers = "auto"
io_backend = "epoll"
drain_timeout = "1s"

[admin]
address = "127.0.0.1:9901"

[log]
access = "off"

[[listener]]
address = "127.0.0.1:8080"
cluster = "main"

[[cluster]]
name = "main"
endpoints = ["127.0.0.1:1"]
"""
LIBDIR = "/usr/lib/x86_64-linux-gnu"
READY = re.compile(r"ready: (\d+) workers \((.*)\)")


def _podman(*args, timeout=60, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])}...: rc {r.returncode}\n{r.stderr[-2000:]}")
    return r


def _run_with_cpus(base_image, ringlb_bin, cpus: str) -> tuple[int, str, subprocess.CompletedProcess]:
    name = f"ringlb-cpus-{uuid.uuid4().hex[:8]}"
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    _podman("run", "-d", "--name", name, f"--cpus={cpus}", "--network=none",
            f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}",
            "-v", f"{ringlb_bin.resolve()}:/usr/local/bin/ringlb:ro",
            "-v", f"{LIBDIR}:{LIBDIR}:ro", "-e", f"RINGLB_CONFIG={CONFIG}",
            base_image, "/usr/local/bin/ringlb", "--config-env", "RINGLB_CONFIG")
    try:
        logs = ""
        end = time.monotonic() + 20
        while time.monotonic() < end:
            logs = _podman("logs", name, check=False).stderr
            if READY.search(logs):
                break
            state = _podman("inspect", "-f", "{{.State.Running}}", name, check=False).stdout
            if state.strip() == "false":
                break
            time.sleep(0.1)
        m = READY.search(logs)
        assert m, f"no ready: line from ringlb in the container:\n{logs[-3000:]}"
        probe = _podman("exec", name, "/usr/local/bin/ringlb", "ready", "--admin",
                        "127.0.0.1:9901", check=False)
        return int(m.group(1)), m.group(2), probe
    finally:
        _podman("stop", "-t", "5", name, check=False)
        _podman("rm", "-f", name, check=False)


# --cpus -> the quota runc writes (period 100000), the workers it means.
@pytest.mark.parametrize("cpus,quota,want", [("0.25", 25000, 1), ("1.5", 150000, 2)])
def test_container_cpu_quota_sets_workers(base_image, ringlb_bin, cpus, quota, want):
    need("podman", "runc")
    if want > len(os.sched_getaffinity(0)):
        pytest.skip(f"--cpus={cpus} wants {want} workers; this machine has fewer CPUs")
    workers, why, probe = _run_with_cpus(base_image, ringlb_bin, cpus)
    assert workers == want, why
    # The container's own cgroup at the mount point (v1: cpu or cpu,cpuacct; v2: the root of
    # its namespace). With 2 CPUs, 1.5 -> 2 ties with the affinity, which is then named first.
    seen = re.search(r"cgroup v1 cfs quota at /sys/fs/cgroup/cpu(,cpuacct)?: (\d+)/100000|"
                     r"cgroup v2 cpu\.max at /sys/fs/cgroup/cpu\.max: (\d+) 100000", why)
    assert seen and int(seen.group(2) or seen.group(3)) == quota, why
    if want < len(os.sched_getaffinity(0)):
        assert why.startswith("auto from cgroup"), why
    assert probe.returncode == 0, f"`ringlb ready` in the container: rc {probe.returncode}\n" \
                                  f"{probe.stdout}{probe.stderr}"
    assert probe.stdout == "ready\n"

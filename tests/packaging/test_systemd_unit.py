"""packaging/ringlb.service: systemd accepts it (`systemd-analyze verify`, no warning), its
sandbox lets ringlb do everything it does (every syscall and socket family a real run makes,
traced with strace, is inside the unit's SystemCallFilter and RestrictAddressFamilies), its
stop timeout covers the packaged drain_timeout, and `systemd-analyze security` rates it OK.
Running it under the host's systemd needs systemd as PID 1 (skipped otherwise); test_deb.py
boots it under Debian 12's systemd in a container."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import need
from unit_file import allowed_syscalls, expand, strace_summary, syscall_groups, unit_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "ringlb.service"
PACKAGED_CONFIG = ROOT / "packaging" / "deb" / "ringlb.toml"
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min|m)?", text.strip())
    assert m, f"cannot read a duration from {text!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60}[m.group(2)]


def unit_for(tmp_path: Path, ringlb_bin: Path) -> Path:
    """The unit with its ringlb path pointed at the binary under test: verify checks that every
    Exec*= command exists, and /usr/bin/ringlb is not installed on a build machine."""
    text = UNIT.read_text().replace("/usr/bin/ringlb", str(ringlb_bin.resolve()))
    out = tmp_path / "ringlb.service"
    out.write_text(text)
    return out


def man_path(tmp_path: Path, ringlb_bin: Path) -> Path:
    """ringlb(1) as the .deb ships it (help2man), for verify's Documentation=man: check."""
    need("help2man")
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    subprocess.run(["help2man", "--no-info", "--name=gRPC load balancer",
                    f"--include={ROOT / 'packaging' / 'deb' / 'ringlb.h2m'}",
                    f"--output={man1 / 'ringlb.1'}", str(ringlb_bin.resolve())],
                   check=True, timeout=60)
    return tmp_path / "man"


def test_systemd_analyze_verify_is_clean(tmp_path, ringlb_bin):
    need("systemd-analyze", "man")
    unit = unit_for(tmp_path, ringlb_bin)
    env = dict(os.environ, MANPATH=str(man_path(tmp_path, ringlb_bin)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=yes", str(unit)], env=env,
                       capture_output=True, text=True, timeout=60)
    print(f"systemd-analyze verify: exit {r.returncode}\n{r.stdout}{r.stderr}")
    assert r.returncode == 0, r.stderr
    # verify exits 0 on unknown keys and bad values it ignores: any line is a finding.
    assert r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_the_unit_says_what_the_package_needs():
    s = unit_settings(UNIT)
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert s["ExecStart"] == ["/usr/bin/ringlb --config /etc/ringlb/ringlb.toml"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one["KillSignal"] == "SIGTERM" and one["Restart"] == "on-failure"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "MemoryDenyWriteExecute", "LockPersonality", "RestrictRealtime",
                "RestrictNamespaces", "DynamicUser"):
        assert one.get(key) == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == one["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    # SIGKILL must not come before ringlb's drain ends: drain_timeout + 1 s (README).
    drain = seconds(tomllib.loads(PACKAGED_CONFIG.read_text())["proxy"]["drain_timeout"])
    stop = seconds(one["TimeoutStopSec"])
    print(f"drain_timeout {drain:g}s, TimeoutStopSec {stop:g}s")
    assert stop >= drain + 5, f"TimeoutStopSec={stop:g}s leaves no room after a {drain:g}s drain"
    # One fd per client connection per worker, 16 workers at the packaged max_connections.
    max_conns = tomllib.loads(PACKAGED_CONFIG.read_text())["proxy"]["max_connections"]
    assert int(one["LimitNOFILE"]) >= 16 * max_conns + 16 * 100 + 100


def test_syscall_filter_allows_io_uring():
    need("systemd-analyze")
    allowed = allowed_syscalls(unit_settings(UNIT), syscall_groups())
    for call in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert call in allowed, call
    # Whether Debian 12's @system-service has them without the explicit line (it does, via @aio).
    groups = syscall_groups()
    print("@system-service has io_uring_setup:",
          "io_uring_setup" in expand(["@system-service"], groups))


@pytest.mark.parametrize("io_backend", ["io_uring", "epoll"])
def test_a_real_run_stays_inside_the_sandbox(tmp_path, ringlb_bin, io_backend):
    """ringlb under strace through start-up (DNS and static clusters, health checks, admin,
    a file access log, NOTIFY_SOCKET), calls, every admin page, a reload and a drain: each
    syscall it made must be one the unit allows, each socket family one it may open."""
    need("strace", "systemd-analyze")
    import dns_server
    import harness
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    settings = unit_settings(UNIT)
    allowed = allowed_syscalls(settings, syscall_groups())
    families = set(settings["RestrictAddressFamilies"][-1].split())

    backend = harness.Backend("b0")
    dns = dns_server.DnsServer()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    proc = None
    try:
        dns.set_a("svc.test.local", ["127.0.0.1"], ttl=1)
        cfg = {
            "proxy": {"workers": 2, "io_backend": io_backend, "drain_timeout": "2s"},
            "listener": [{"address": "127.0.0.1:0", "cluster": "static"},
                         {"address": "127.0.0.1:0", "cluster": "dns"}],
            "cluster": [harness.cluster("static", [backend],
                                        health_check={"interval": "200ms", "timeout": "1s"}),
                        {"name": "dns", "lb": "p2c", "dns": "svc.test.local", "record": "A",
                         "port": backend.port, "connect_timeout": "1s"}],
            "discovery": {"resolvers": [dns.address]},
            "admin": {"address": "127.0.0.1:0"},
            "log": {"access": str(tmp_path / "access.log")},
        }
        config = tmp_path / "ringlb.toml"
        config.write_text(harness.render_config(cfg))
        trace = tmp_path / "strace.txt"
        stderr = tmp_path / "stderr.txt"
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace),
                                     str(ringlb_bin.resolve()), "--config", str(config)],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        log = lambda: stderr.read_text(errors="replace")  # noqa: E731
        assert harness.wait_until(lambda: harness.READY_RE.search(log()), 15.0), log()
        assert f"io backend: {io_backend}" in log(), log()
        ports = sorted({int(p) for _, p in harness.LISTEN_RE.findall(log())})
        admin = int(harness.ADMIN_RE.search(log()).group(2))
        for port in ports:
            stub = harness.Stub(harness.channel(port))
            for i in range(3):
                assert stub.unary(b"x%d" % i, timeout=5) == b"x%d" % i
        import http.client
        for method, path in (("GET", "/metrics"), ("GET", "/ready"), ("GET", "/live"),
                             ("GET", "/endpoints"), ("GET", "/config"), ("POST", "/reload")):
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
            c.request(method, path)
            assert c.getresponse().status == 200, path
            c.close()
        ringlb_pid = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        before = len(log())
        os.kill(ringlb_pid, signal.SIGHUP)
        assert harness.wait_until(lambda: "reload: applied" in log()[before:], 5.0), log()
        time.sleep(1.2)  # a DNS refresh (ttl 1 s) and a few health checks
        os.kill(ringlb_pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log()
        proc = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        dns.stop()
        backend.stop()

    calls, used_families = strace_summary(trace)
    print(f"{io_backend}: {len(calls)} distinct syscalls: {' '.join(sorted(calls))}")
    print(f"{io_backend}: socket families: {' '.join(sorted(used_families))}")
    assert "socket" in calls and {"sendto", "sendmsg"} & calls
    if io_backend == "io_uring":
        assert "io_uring_setup" in calls
    # execve is strace's own start of ringlb: systemd execs it before the filter applies.
    outside = sorted(calls - allowed - {"execve"})
    assert not outside, f"syscalls the unit's SystemCallFilter would deny: {outside}"
    assert used_families <= families, \
        f"socket families outside RestrictAddressFamilies: {sorted(used_families - families)}"


def test_io_uring_needs_no_memlock(tmp_path, ringlb_bin):
    """Why the unit sets no LimitMEMLOCK: since Linux 5.12 io_uring charges
    its rings to the memory cgroup, so ringlb serves on io_uring with RLIMIT_MEMLOCK 0."""
    import harness
    config = tmp_path / "ringlb.toml"
    config.write_text(harness.render_config({
        "proxy": {"workers": 2, "io_backend": "io_uring"},
        "listener": [{"address": "127.0.0.1:0", "cluster": "main"}],
        "cluster": [harness.cluster("main", ["127.0.0.1:1"])]}))
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "wb") as err:
        # prlimit (util-linux) sets the limit and execs ringlb, same pid. Not preexec_fn: a
        # Python-level fork after grpcio is loaded (test_container.py) aborts the interpreter.
        proc = subprocess.Popen(
            ["prlimit", "--memlock=0:0", "--", str(ringlb_bin), "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        ready = harness.wait_until(
            lambda: harness.READY_RE.search(stderr.read_text()) or proc.poll() is not None, 10.0)
        log = stderr.read_text()
        if proc.poll() is not None and "io_uring" in log and "ENOSYS" in log:
            pytest.skip("this kernel has no io_uring: " + log[-500:])
        assert ready and proc.poll() is None, log
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(r"Max locked memory\s+0\s+0\s", limits), limits
        assert "io backend: io_uring" in log, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        else:
            proc.wait()


def test_security_exposure_is_ok():
    need("systemd-analyze")
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    tail = (r.stdout + r.stderr).strip().splitlines()[-1]
    print(tail)
    m = re.search(r"exposure level for ringlb\.service: (\d+\.\d+) (\S+)", tail)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0 and m.group(2) == "OK", tail


def test_runs_under_systemd_here(ringlb_bin):
    """The unit as shipped (its ringlb path and config swapped for temporary ones) started by
    the host's systemd: READY=1 arrives (start returns), the sandbox holds, stop is clean."""
    comm = Path("/proc/1/comm").read_text().strip()
    if comm != "systemd" or not Path("/run/systemd/system").is_dir():
        pytest.skip(f"PID 1 here is {comm!r}, not systemd: no host systemd to start the unit "
                    "(test_deb.py::test_service_under_systemd_in_a_container boots it in a "
                    "Debian 12 container instead)")
    need("systemctl", "journalctl")
    import harness
    backend = harness.Backend("b0")
    name = f"ringlb-test-{os.getpid()}"
    unit_path = Path("/run/systemd/system") / f"{name}.service"
    # Not under tmp_path: the unit's dynamic user cannot enter pytest's 0700 folders, and its
    # PrivateTmp hides /tmp. /run is readable to it (read-only, as ProtectSystem=strict has it).
    files = Path("/run") / name
    try:
        files.mkdir(mode=0o755)
        config = files / "ringlb.toml"
        config.write_text(harness.render_config({
            "proxy": {"workers": 1, "drain_timeout": "2s"},
            "listener": [{"address": "127.0.0.1:0", "cluster": "main"}],
            "cluster": [harness.cluster("main", [backend])]}))
        config.chmod(0o644)
        binary = files / "ringlb"
        shutil.copy(ringlb_bin, binary)  # wherever the build is, this copy is readable
        binary.chmod(0o755)
        text = UNIT.read_text().replace("/usr/bin/ringlb", str(binary)) \
                               .replace("/etc/ringlb/ringlb.toml", str(config))
        unit_path.write_text(text)
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
        subprocess.run(["systemctl", "start", name], check=True, timeout=60)
        show = subprocess.run(["systemctl", "show", name, "-p", "ActiveState", "-p",
                               "StatusText"], capture_output=True, text=True, timeout=30).stdout
        assert "ActiveState=active" in show and "StatusText=serving" in show, show
        subprocess.run(["systemctl", "reload", name], check=True, timeout=60)
        subprocess.run(["systemctl", "stop", name], check=True, timeout=60)
        show = subprocess.run(["systemctl", "show", name, "-p", "Result", "-p",
                               "ExecMainStatus"], capture_output=True, text=True).stdout
        journal = subprocess.run(["journalctl", "-u", name, "--no-pager"], capture_output=True,
                                 text=True).stdout
        print(journal[-3000:])
        assert "Result=success" in show and "ExecMainStatus=0" in show, show
        assert "reload: applied" in journal
    finally:
        subprocess.run(["systemctl", "stop", name], capture_output=True, timeout=60)
        unit_path.unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, timeout=60)
        shutil.rmtree(files, ignore_errors=True)
        backend.stop()

"""ringlb under a seccomp filter that denies io_uring, as Fargate, Docker >= 25 and containerd
>= 2.0 do: io_backend = "auto" falls back to epoll and says why; "io_uring" refuses to start.

The filter is loaded by a tiny python launcher (python3-seccomp) that then execs ringlb, so the
child's pid is ringlb's and the filter (inherited across exec) covers every ringlb thread.
"""
from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from harness import Stub, channel, cluster, md_dict

DENIED = ("io_uring_setup", "io_uring_enter", "io_uring_register")

# argv: launcher BIN ARGS...; denies the io_uring syscalls with EPERM, allows the rest, execs.
LAUNCHER = """
import errno, os, sys
import seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in %r:
    f.add_rule(seccomp.ERRNO(errno.EPERM), name)
f.load()
os.execv(sys.argv[1], sys.argv[1:])
""" % (DENIED,)

EPOLL_FALLBACK_RE = re.compile(r"io backend: epoll \((.*)\)")


@pytest.fixture(params=["auto"], ids=["auto"])
def io_backend(request):
    """Overrides conftest's per-backend parameter: under the filter the choice is ringlb's."""
    return request.param


def require_seccomp() -> list[str]:
    """The launcher argv. No python3-seccomp is a failure, never a skip."""
    try:
        import seccomp  # noqa: F401
    except ImportError as e:
        pytest.fail(f"python3-seccomp cannot be imported ({e}): install it with "
                    f"`apt-get install -y python3-seccomp` (packaging/setup-debian.sh lists it) "
                    f"and run the tests with /usr/bin/python3", pytrace=False)
    return [sys.executable, "-c", LAUNCHER]


def test_filter_really_denies_io_uring(tmp_path):
    """The launcher itself works: a child under it gets EPERM from io_uring_setup."""
    launcher = require_seccomp()
    probe = tmp_path / "probe.py"
    # io_uring_setup is syscall 425 on x86_64 and aarch64 alike (the unified table).
    probe.write_text("import ctypes, os\n"
                     "libc = ctypes.CDLL(None, use_errno=True)\n"
                     "params = ctypes.create_string_buffer(120)\n"
                     "rc = libc.syscall(425, 4, params)\n"
                     "print(rc, ctypes.get_errno())\n")
    r = subprocess.run([*launcher, sys.executable, str(probe)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    rc, err = r.stdout.split()
    assert int(rc) == -1 and int(err) == 1, f"io_uring_setup under the filter: {r.stdout!r}"


def test_auto_falls_back_to_epoll_and_proxies(backends, ringlb):
    launcher = require_seccomp()
    if harness.direct_mode():
        pytest.fail("the seccomp test needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    bs = backends(2)
    cfg = ringlb.config([cluster("main", bs)], io_backend="auto", workers=2)
    rl = harness.Ringlb(cfg, "auto", ringlb.tmp_path, name="seccomp-auto", launcher=launcher,
                        expect_io="epoll")
    ringlb.instances.append(rl)

    m = EPOLL_FALLBACK_RE.search(rl.log_text())
    assert m, "no `io backend: epoll (...)` line"
    why = m.group(1)
    assert "EPERM" in why or "Operation not permitted" in why, \
        f"the fallback line does not name the errno: {m.group(0)!r}"

    stubs = [Stub(channel(rl.port)) for _ in range(4)]

    def work(k):
        seen = set()
        for j in range(25):
            payload = b"seccomp %d-%d" % (k, j)
            resp, call = stubs[k].unary.with_call(payload, timeout=10)
            assert resp == payload
            seen.add(md_dict(call.initial_metadata()).get("x-backend"))
        return seen

    with ThreadPoolExecutor(4) as ex:
        seen = set().union(*ex.map(work, range(4)))
    assert seen == {b.name for b in bs}, f"calls reached {seen}"
    assert sum(b.calls["Unary"] for b in bs) == 100
    assert rl.stop() == 0, f"exit status {rl.returncode} after SIGTERM under the filter"


def test_strict_io_uring_refuses_to_start(backends, ringlb):
    launcher = require_seccomp()
    bs = backends(1)
    cfg = ringlb.config([cluster("main", bs)], io_backend="io_uring")
    path = ringlb.tmp_path / "seccomp-strict.toml"
    path.write_text(harness.render_config(cfg))
    b = harness.require_binary()
    try:
        r = subprocess.run([*launcher, str(b), "--config", str(path)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, errors="replace", timeout=20)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"io_backend = \"io_uring\" under a filter that denies io_uring did not exit "
                    f"within 20s (stderr so far: {e.stderr!r})", pytrace=False)
    out = r.stderr + r.stdout
    assert r.returncode != 0, f"ringlb exited 0 without io_uring:\n{out}"
    assert r.returncode > 0, f"ringlb died of signal {-r.returncode} instead of exiting:\n{out}"
    assert "ready:" not in out and "listening on" not in out, \
        f"ringlb bound or served before failing:\n{out}"
    assert re.search(r"io_uring", out) and ("EPERM" in out or "Operation not permitted" in out), \
        f"the error does not say io_uring was denied (EPERM):\n{out}"
    assert "io_backend" in out, f"the error does not point at the io_backend setting:\n{out}"
    assert bs[0].total == 0

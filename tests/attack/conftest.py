"""Fixtures for the attack suite (tests/attack): the integration harness's Backend, Ringlb and
render_config (imported from tests/integration, not copied), a watchdog, and a summary of every
test's figures at the end of the run (passed or failed)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402

TEST_WATCHDOG = 90.0  # seconds; a hung test dumps stacks, kills its ringlb and aborts the run
REPORTS: list[tuple[str, str]] = []  # (test id, report text), shown at the end of the run


@pytest.fixture
def backends():
    """backends(n) -> list[harness.Backend]; all stopped at teardown."""
    pool = harness.BackendPool()
    yield pool
    pool.close()


class NativeBackend:
    """`ringlb backend` (the C++ echo backend of the benchmarks) in its own process: the
    well-behaved client's latency then measures ringlb, not a grpcio backend that shares the
    test process (and its GIL) with that client while it serves the attacker's streams."""

    def __init__(self, tmp_path):
        self.log = tmp_path / "native-backend.log"
        self.proc = subprocess.Popen(
            [str(harness.ringlb_bin()), "backend", "--listen", "127.0.0.1:0", "--name", "nb",
             "--threads", "1"], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        port = None
        while port is None and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.read_text())
            port = int(m.group(1)) if m else None
            if port is None:
                time.sleep(0.02)
        if port is None:
            self.stop()
            raise RuntimeError(f"ringlb backend did not start: {self.log.read_text()[-500:]}")
        self.address = f"127.0.0.1:{port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def native_backend(tmp_path):
    """A NativeBackend, stopped at teardown."""
    b = NativeBackend(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def ringlb(request, io_backend, tmp_path):
    """ringlb(clusters, listeners=None, **proxy) -> a started ringlb. The test parametrizes
    io_backend. Teardown: SIGTERM, 10 s, then SIGKILL and an error."""
    factory = harness.RinglbFactory(io_backend, tmp_path)
    request.node._ringlb_factory = factory
    yield factory
    problems = factory.close()
    if problems:
        logs = "\n".join(f"--- {r.stderr_path} ---\n{r.stderr_text()[-3000:]}"
                         for r in factory.instances)
        pytest.fail("ringlb teardown: " + "; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def report(request):
    """report(text): keeps the test's figures for the end-of-run summary."""
    def add(text: str):
        REPORTS.append((request.node.nodeid.split("::")[-1], text))
    return add


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    factory = getattr(item, "_ringlb_factory", None)
    if factory is None or rep.passed:
        return
    for r in factory.instances:
        rep.sections.append((f"ringlb stderr {r.config_path.name} (pid {r.pid}, rc {r.returncode})",
                             r.stderr_text()[-4000:] or "(empty)"))


def pytest_terminal_summary(terminalreporter):
    if not REPORTS:
        return
    terminalreporter.section("attack figures")
    for nodeid, text in REPORTS:
        terminalreporter.write_line(f"{nodeid}: {text}")


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Bounded loops are the rule; this is the backstop if something still hangs."""
    yield from harness.watchdog(request, TEST_WATCHDOG)

"""Fixtures for the attack suite (tests/attack): the integration harness's Backend, Ringlb and
render_config (imported from tests/integration, not copied), a watchdog, and a summary of every
test's figures at the end of the run (passed or failed)."""
from __future__ import annotations

import os
import sys

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

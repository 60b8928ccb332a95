"""Fixtures for the ringlb integration suite. Every test runs once per reactor backend."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

TEST_WATCHDOG = 120.0  # seconds; a hung test dumps stacks, kills its ringlb and aborts the run


@pytest.fixture(autouse=True, params=["io_uring", "epoll"], ids=["uring", "epoll"])
def io_backend(request):
    return request.param


@pytest.fixture
def backends():
    """backends(n, delays=[...]) -> list[harness.Backend]; all stopped at teardown."""
    pool = harness.BackendPool()
    yield pool
    pool.close()


@pytest.fixture
def ringlb(request, io_backend, tmp_path):
    """ringlb(clusters, listeners=None, **proxy) -> a started ringlb (or a stand-in under
    RINGLB_DIRECT=1). Teardown: SIGTERM, 10 s, then SIGKILL and an error."""
    factory = harness.RinglbFactory(io_backend, tmp_path)
    request.node._ringlb_factory = factory
    yield factory
    problems = factory.close()
    if problems:
        logs = "\n".join(f"--- {r.stderr_path} ---\n{r.stderr_text()[-3000:]}"
                         for r in factory.instances)
        pytest.fail("ringlb teardown: " + "; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    factory = getattr(item, "_ringlb_factory", None)
    if factory is None or rep.passed:
        return
    for r in factory.instances:
        rep.sections.append((f"ringlb stderr {r.config_path.name} (pid {r.pid}, rc {r.returncode})",
                             r.stderr_text()[-6000:] or "(empty)"))


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Bounded loops are the rule; this is the backstop if something still hangs."""
    yield from harness.watchdog(request, TEST_WATCHDOG)

"""Fixtures for the chaos suite: which reactor backends can run here, and the closing table of
figures (one line per scenario run, printed at the end so CI logs show them)."""
from __future__ import annotations

import ctypes
import os

import pytest


def io_uring_denied() -> str | None:
    """None when io_uring_setup works here; else why not (seccomp, old kernel, sysctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 1, params)  # io_uring_setup: 425 on x86_64 and aarch64
    if fd >= 0:
        os.close(fd)
        return None
    err = ctypes.get_errno()
    return f"io_uring_setup failed here: {os.strerror(err)} (errno {err})"


@pytest.fixture(params=["io_uring", "epoll"], ids=["uring", "epoll"])
def io_backend(request):
    if request.param == "io_uring":
        why = io_uring_denied()
        if why:
            pytest.skip(f"io_uring cases skipped: {why}")
    return request.param


@pytest.fixture
def summaries(request) -> list[str]:
    """Lines for the closing "chaos figures" section (kept on the session's config)."""
    if not hasattr(request.config, "_chaos_figures"):
        request.config._chaos_figures = []
    return request.config._chaos_figures


def pytest_terminal_summary(terminalreporter, config):
    lines = getattr(config, "_chaos_figures", [])
    if lines:
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)

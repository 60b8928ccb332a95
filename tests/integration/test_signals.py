"""Signals that must not stop ringlb (SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE), and SIGTERM, which
must still drain and exit 0 after them."""
from __future__ import annotations

import json
import re
import signal
import time

import grpc

from harness import Stub, channel, cluster, wait_until

# SIGHUP reloads the config file (test_reload.py); here the file is unchanged.
HUP_RE = re.compile(r"reload: applied: 0 listeners added, 0 removed; 0 clusters added, 0 changed")
SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)


def _calls_flow(stubs, tag: str, n: int = 10):
    for i in range(n):
        payload = f"{tag} {i}".encode()
        assert stubs[i % len(stubs)].unary(payload, timeout=10) == payload, tag


def test_harmless_signals_keep_ringlb_serving(backends, ringlb):
    bs = backends(2)
    rl = ringlb([cluster("main", bs)], workers=2)
    stubs = [Stub(channel(rl.port)) for _ in range(3)]
    _calls_flow(stubs, "before")
    # Calls in flight across all the signals must finish normally.
    slow = [stubs[i % 3].slow.future(json.dumps({"id": f"s{i}", "ms": 1500}).encode(),
                                     timeout=20) for i in range(6)]
    assert wait_until(lambda: sum(b.active for b in bs) == 6, 5.0), "slow calls not in flight"

    for sig in SIGNALS:
        log_before = len(rl.log_text())
        rl.signal(sig)
        if sig == signal.SIGHUP:
            said = wait_until(lambda: HUP_RE.search(rl.log_text()[log_before:]), 5.0)
            assert said, "no log line saying the SIGHUP reload applied (nothing changed)"
        # A fatal signal is delivered at once; give it every chance to show before calling.
        died = wait_until(lambda: not rl.alive(), 0.3)
        assert not died, f"ringlb died of {sig.name} (exit status {rl.proc.returncode})"
        _calls_flow(stubs, sig.name)
        assert rl.alive(), f"ringlb died after {sig.name} (exit status {rl.proc.returncode})"

    for i, f in enumerate(slow):
        try:
            assert f.result(timeout=15) == b"done", i
        except grpc.RpcError as e:
            raise AssertionError(f"in-flight call {i} failed across the signals: "
                                 f"{e.code()} {e.details()}") from None
    # A second round: the first of each was no one-off.
    for sig in SIGNALS:
        rl.signal(sig)
    assert wait_until(lambda: len(HUP_RE.findall(rl.log_text())) >= 2, 5.0), \
        "the second SIGHUP was not logged"
    _calls_flow(stubs, "second round")
    assert rl.alive()

    # SIGTERM still drains: a call in flight finishes, then ringlb exits 0.
    last = stubs[0].slow.future(json.dumps({"id": "term", "ms": 800}).encode(), timeout=20)
    assert wait_until(lambda: any(b.slow.get("term") == "running" for b in bs), 5.0)
    t0 = time.monotonic()
    rl.signal(signal.SIGTERM)
    assert last.result(timeout=15) == b"done", "the call in flight at SIGTERM did not finish"
    rc = rl.wait(10)
    assert rc is not None, "ringlb still running 10s after SIGTERM and a drained call"
    assert rc == 0, f"exit status {rc} after SIGTERM"
    assert time.monotonic() - t0 < 10
    assert "draining" in rl.log_text()

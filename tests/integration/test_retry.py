"""Retries by policy and hedging against real grpcio backends.

A backend that answers UNAVAILABLE to everything costs the client nothing: ringlb reads the status
(from a trailers-only answer, or from the trailers after headers it held back) and sends the call
to another endpoint, which learns from grpc-previous-rpc-attempts that it is a retry. A backend
that is slow is cut off by the per-try timeout, or raced by a hedged attempt, so calls finish in
time.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import harness
from harness import Stub, channel, cluster

CALLS = 200
IN_FLIGHT = 8
CALL_TIMEOUT = 5.0   # seconds per call; a hung call fails with DEADLINE_EXCEEDED
RUN_BUDGET = 60.0    # seconds for all the calls of one test; what is left is counted as failed
PREVIOUS = "grpc-previous-rpc-attempts"


class RecordingBackend(harness.Backend):
    """harness.Backend that records, per call, the grpc-previous-rpc-attempts it was sent, and
    can fail every Unary call with `fail_code` (trailers-only, or after initial metadata when
    `headers_first`)."""

    def __init__(self, name: str, delay: float = 0.0, fail_code: grpc.StatusCode | None = None,
                 headers_first: bool = False):
        self.fail_code = fail_code
        self.headers_first = headers_first
        self.previous: list[str | None] = []  # one entry per call, in arrival order
        super().__init__(name, delay=delay)

    def _record(self, ctx):
        md = dict(ctx.invocation_metadata())
        with self.lock:
            self.previous.append(md.get(PREVIOUS))

    def _unary(self, req: bytes, ctx):
        self._record(ctx)
        if self.fail_code is None:
            return super()._unary(req, ctx)
        self._enter("Unary")
        try:
            if self.headers_first:
                ctx.send_initial_metadata((("x-backend", self.name),))
            ctx.abort(self.fail_code, f"{self.name} is down")
        finally:
            self._leave()

    def _unary_delay(self, req: bytes, ctx):
        self._record(ctx)
        return super()._unary_delay(req, ctx)

    def retries_seen(self) -> int:
        with self.lock:
            return sum(1 for p in self.previous if p is not None)


@pytest.fixture
def make_backend():
    made: list[RecordingBackend] = []

    def make(name: str, **kw) -> RecordingBackend:
        b = RecordingBackend(name, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def _run(n: int, in_flight: int, one) -> list[str]:
    deadline = time.monotonic() + RUN_BUDGET

    def guarded(i: int) -> str:
        if time.monotonic() > deadline:
            return f"call {i}: not run, {RUN_BUDGET:.0f}s budget spent"
        return one(i)

    with ThreadPoolExecutor(max_workers=in_flight) as ex:
        return [r for r in ex.map(guarded, range(n)) if r]


@pytest.mark.parametrize("headers_first", [False, True], ids=["trailers-only", "held-headers"])
def test_unavailable_backend_costs_no_calls(make_backend, ringlb, headers_first):
    """One of three backends answers UNAVAILABLE to every call: 0 of 200 calls fail. The
    failing backend answers trailers-only, or sends its headers first and the status in trailers
    with no message between (which ringlb holds back, so it can still retry)."""
    bad = make_backend("bad", fail_code=grpc.StatusCode.UNAVAILABLE, headers_first=headers_first)
    good = [make_backend("good0"), make_backend("good1")]
    # Outlier detection off and a budget above the failing share (a third of the calls), so this
    # test sees retries alone: with the default 20% budget a third of the calls failing on
    # their first attempt would, by design, not all be retried.
    rl = ringlb([cluster("rr", [bad, *good], outlier=False, retry={"budget_percent": 50})],
                workers=1)
    stub = Stub(channel(rl.port))

    def one(i: int) -> str:
        body = harness.pattern(i, 64)
        try:
            resp, call = stub.unary.with_call(body, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            return f"call {i}: {e.code().name} {e.details()!r}"
        if resp != body:
            return f"call {i}: echo differs"
        backend = harness.md_dict(call.initial_metadata()).get("x-backend")
        if backend not in ("good0", "good1"):
            return f"call {i}: answered by {backend!r}"
        return ""

    failures = _run(CALLS, IN_FLIGHT, one)
    assert not failures, \
        f"{len(failures)} of {CALLS} calls failed:\n  " + "\n  ".join(failures[:10])
    served = sum(g.calls["Unary"] for g in good)
    assert served == CALLS, f"the healthy backends served {served} calls for {CALLS}"
    assert bad.total > 0, "the failing backend got no call: the test proved nothing"
    # First attempts carry no grpc-previous-rpc-attempts; each retry carries "1" (the failing
    # backend is the only one that fails, and a retry avoids the endpoint it failed on).
    assert bad.retries_seen() == 0, f"the failing backend got retries: {bad.previous}"
    retried = sum(g.retries_seen() for g in good)
    assert retried == bad.total, \
        f"{bad.total} calls failed on the bad backend, {retried} retries reached good ones"
    for g in good:
        assert all(p in (None, "1") for p in g.previous), f"{g.name}: {set(g.previous)}"


def test_per_try_timeout_cuts_off_a_slow_backend(make_backend, ringlb):
    """A backend that takes 3 s per call, a 200 ms per-try timeout and a 2 s deadline: every
    call succeeds, well within its deadline, answered by the fast backend."""
    slow = make_backend("slow", delay=3.0)
    fast = make_backend("fast")
    rl = ringlb([cluster("rr", [slow, fast], outlier=False,
                         retry={"per_try_timeout": "200ms", "budget_percent": 100})], workers=1)
    stub = Stub(channel(rl.port))
    calls = 12
    latencies = []
    for i in range(calls):
        t0 = time.monotonic()
        try:
            resp = stub.unary_delay(b"", timeout=2.0)  # empty: the backend's own delay
        except grpc.RpcError as e:
            pytest.fail(f"call {i}: {e.code().name} {e.details()!r}")
        latencies.append(time.monotonic() - t0)
        assert resp == b"fast", f"call {i} answered by {resp!r}"
    assert slow.total > 0, "the slow backend got no call: the test proved nothing"
    # Each call the slow backend started was retried on the fast one (a reset that beat the
    # slow handler's start would be retried too, uncounted there).
    assert fast.retries_seen() >= slow.total, (fast.previous, slow.total)
    assert fast.calls["UnaryDelay"] == calls
    # 200 ms per try, a backoff of at most 25 ms, and a fast answer: far below the slow 3 s.
    assert max(latencies) < 1.5, f"latencies: {[round(x, 3) for x in latencies]}"


def test_hedging_bounds_latency_by_the_fast_backend(make_backend, ringlb):
    """A backend that takes 2 s and a route that hedges after 100 ms: every call returns in about
    100 ms plus the fast backend's time; the hedged attempt says it is one."""
    slow = make_backend("slow", delay=2.0)
    fast = make_backend("fast")
    path = f"/{harness.SERVICE}/UnaryDelay"
    routes = [{"prefix": path, "cluster": "rr", "hedge": {"after": "100ms", "methods": [path]}}]
    rl = ringlb([cluster("rr", [slow, fast], outlier=False)],
                listeners=[{"cluster": "rr", "routes": routes}], workers=1)
    stub = Stub(channel(rl.port))
    calls = 12
    latencies = []
    for i in range(calls):
        t0 = time.monotonic()
        try:
            resp = stub.unary_delay(b"", timeout=5.0)
        except grpc.RpcError as e:
            pytest.fail(f"call {i}: {e.code().name} {e.details()!r}")
        latencies.append(time.monotonic() - t0)
        assert resp == b"fast", f"call {i} answered by {resp!r}"
    assert slow.total > 0, "the slow backend got no call: the test proved nothing"
    # Calls that went to the slow backend first reached the fast one as hedges.
    assert fast.retries_seen() >= slow.total, (fast.previous, slow.total)
    assert fast.calls["UnaryDelay"] == calls
    assert all(p in (None, "1") for p in fast.previous), fast.previous
    # 100 ms and a fast answer; the slow backend alone would take 2 s.
    assert max(latencies) < 1.0, f"latencies: {[round(x, 3) for x in latencies]}"
    # The same method under another service is not on the hedged route: a call that goes to
    # the slow backend waits for it (round robin sends one of two calls in a row there).
    hedged = fast.retries_seen()
    other = Stub(stub.ch, service="other.Echo")
    took = []
    for _ in range(2):
        t0 = time.monotonic()
        other.unary_delay(b"", timeout=5.0)
        took.append(time.monotonic() - t0)
    assert max(took) >= 1.5, f"an unlisted method was hedged? latencies {took}"
    assert fast.retries_seen() == hedged

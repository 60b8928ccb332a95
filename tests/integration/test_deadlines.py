"""Deadlines that only ringlb enforces: a raw HTTP/2 client (python3-h2) sends `grpc-timeout`
but never cancels, so whatever ends the call must come from ringlb; and the deadline ringlb
passes upstream in `grpc-timeout` is the tighter of the client's and the route's."""
from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

import harness
from harness import cluster
from raw_h2 import RawH2Backend, grpc_frame, h2_request

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
NS_PER_UNIT = {"H": 3600 * 10**9, "M": 60 * 10**9, "S": 10**9, "m": 10**6, "u": 10**3, "n": 1}
CANCEL = 0x8  # RST_STREAM error code


def parse_grpc_timeout(v: str) -> float:
    """`grpc-timeout` value -> seconds (at most 8 digits and a unit, per the gRPC spec)."""
    assert 2 <= len(v) <= 9 and v[:-1].isdigit() and v[-1] in NS_PER_UNIT, \
        f"malformed grpc-timeout {v!r}"
    return int(v[:-1]) * NS_PER_UNIT[v[-1]] / 1e9


class WaitingBackend:
    """A grpcio server whose /test.Deadline/Wait handler waits up to 5 s for its call to end
    (context.add_callback), i.e. for a cancellation, and reports what happened."""

    def __init__(self):
        self.entered = threading.Event()
        self.cancelled = threading.Event()
        self.completed = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=harness.SERVER_OPTIONS)
        handler = grpc.unary_unary_rpc_method_handler(self._wait)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Deadline", {"Wait": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise RuntimeError("WaitingBackend: could not bind 127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait(self, req: bytes, ctx):
        ended = threading.Event()
        if not ctx.add_callback(ended.set):
            ended.set()  # the call had already terminated
        self.entered.set()
        if ended.wait(5.0):
            self.cancelled.set()
        else:
            self.completed.set()
        return b"late"

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def waiting_backend():
    b = WaitingBackend()
    yield b
    b.stop()


@pytest.fixture
def raw_backend():
    made = []

    def make(mode: str = "hang") -> RawH2Backend:
        b = RawH2Backend(mode)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def test_client_grpc_timeout_is_enforced_and_cancels_backend(waiting_backend, ringlb):
    rl = ringlb([cluster("main", [waiting_backend.address])])
    r = h2_request(rl.port, "/test.Deadline/Wait",
                   headers=GRPC_HEADERS + [("grpc-timeout", "300m")], body=grpc_frame(b"x"),
                   timeout=8.0)
    assert r.ended, f"no end of stream within 8s (reset {r.reset}, goaway {r.goaway}, " \
                    f"headers {r.headers}); the 300 ms grpc-timeout was not enforced"
    assert r.status == "200", r.headers
    assert r.grpc("grpc-status") == "4", f"want DEADLINE_EXCEEDED: {r.headers} {r.trailers}"
    assert r.grpc("grpc-message"), "DEADLINE_EXCEEDED without a grpc-message"
    assert 0.25 <= r.elapsed < 3.0, f"DEADLINE_EXCEEDED after {r.elapsed:.3f}s (asked 300 ms)"
    assert waiting_backend.entered.is_set(), "the call never reached the backend"
    assert waiting_backend.cancelled.wait(3.0), "the backend never saw the call end before 5s"
    assert not waiting_backend.completed.is_set()


def test_deadline_resets_upstream_stream(raw_backend, ringlb):
    """A backend that never answers: the deadline answer can only be ringlb's, and ringlb must
    cancel the upstream stream (RST_STREAM CANCEL) rather than leave it open."""
    rb = raw_backend("hang")
    rl = ringlb([cluster("main", [rb.address])])
    r = h2_request(rl.port, "/test.Echo/Unary",
                   headers=GRPC_HEADERS + [("grpc-timeout", "300m")], body=grpc_frame(b"x"),
                   timeout=8.0)
    assert r.ended, f"no end of stream within 8s (reset {r.reset}, headers {r.headers})"
    assert r.grpc("grpc-status") == "4", f"{r.headers} {r.trailers}"
    msg = r.grpc("grpc-message") or ""
    assert msg.startswith("ringlb"), f"grpc-message is not ringlb's: {msg!r}"
    assert 0.25 <= r.elapsed < 3.0, f"DEADLINE_EXCEEDED after {r.elapsed:.3f}s (asked 300 ms)"
    assert rb.got_request.is_set(), "the call never reached the backend"
    assert rb.got_reset.wait(3.0), "the backend never got RST_STREAM for the expired call"
    with rb.lock:
        codes = [code for _, _, code in rb.resets]
    assert codes == [CANCEL], f"RST_STREAM codes seen by the backend: {codes}"


@pytest.mark.parametrize("client, route, lo, hi", [
    ("10S", "200ms", 0.0, 0.2),    # the route is tighter: upstream sees <= 200 ms
    ("200m", "10s", 0.1, 0.2),     # the client is tighter: upstream sees the client's
    (None, "200ms", 0.0, 0.2),     # no client deadline: the route's is the only one
], ids=["route-tighter", "client-tighter", "route-only"])
def test_upstream_grpc_timeout_is_tightened(raw_backend, ringlb, client, route, lo, hi):
    rb = raw_backend("hang")
    rl = ringlb([cluster("main", [rb.address])], listeners=[{
        "cluster": "main",
        "routes": [{"prefix": "/test.Echo/", "cluster": "main", "timeout": route}]}])
    headers = GRPC_HEADERS + ([("grpc-timeout", client)] if client else [])
    r = h2_request(rl.port, "/test.Echo/Unary", headers=headers, body=grpc_frame(b"x"),
                   timeout=15.0)
    assert rb.got_request.wait(2.0), "the call never reached the backend"
    with rb.lock:
        seen = rb.requests[0][1].get("grpc-timeout")
    assert seen is not None, \
        f"upstream request carries no grpc-timeout (client {client}, route {route})"
    secs = parse_grpc_timeout(seen)
    assert lo <= secs <= hi, (f"upstream grpc-timeout {seen!r} = {secs:.3f}s; want "
                              f"[{lo}, {hi}]s for client {client} and route {route}")
    # and the call itself ends with DEADLINE_EXCEEDED at the tighter deadline
    assert r.ended and r.grpc("grpc-status") == "4", f"{r.headers} {r.trailers} {r.reset}"
    assert r.elapsed < 3.0, f"DEADLINE_EXCEEDED after {r.elapsed:.3f}s"

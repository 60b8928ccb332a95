"""Knowing a backend is gone, fast: upstream keepalive PINGs and connection readiness.

A backend process that is SIGSTOPped keeps its sockets: its kernel still completes TCP
handshakes and takes bytes, nobody answers. ringlb must notice within 1 s at 150 calls/s (a
PING unanswered for keepalive.timeout after keepalive.interval of silence), and once it has,
no new call may fail: a new connection to the stopped backend gets no SETTINGS within
connect_timeout, and its calls, which never reached it, move to another endpoint.

Also: a quiet call on a real grpcio server (default ping policy) is not killed by our PINGs,
and a server's GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") doubles that endpoint's interval.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import h2.events
import pytest
from h2.errors import ErrorCodes

import harness
from h2_peers import H2Server

RATE = 150            # calls per second through ringlb
STOP_AFTER = 1.0      # seconds of load before the SIGSTOP
RUN_AFTER = 3.0       # seconds of load after it
DETECT_WITHIN = 1.0   # the floor: the stopped backend is known dead this soon after SIGSTOP

# A grpcio backend in its own process, so that it can be stopped (harness backends are threads
# of the test process). It prints its port, then serves /test.Echo/Unary (echo) until killed.
STOPPABLE_BACKEND = r"""
import sys, time
from concurrent import futures
import grpc

def unary(req, ctx):
    ctx.send_initial_metadata((("x-backend", "stopped"),))
    return req

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
while True:
    time.sleep(3600)
"""


class StoppableBackend:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", STOPPABLE_BACKEND],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            pytest.fail(f"the stoppable backend did not print its port (got {line!r})",
                        pytrace=False)
        self.port = int(line)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def stoppable():
    b = StoppableBackend()
    yield b
    b.close()


class Load:
    """Unary calls at a steady rate on one client channel; each call's start, end and outcome."""

    def __init__(self, port: int, rate: float):
        self.ch = harness.channel(port)
        self.stub = harness.Stub(self.ch)
        self.rate = rate
        self.lock = threading.Lock()
        self.calls: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rec = {"i": i, "start": time.monotonic(), "end": None, "code": None,
                   "details": "", "backend": None}
            with self.lock:
                self.calls.append(rec)
            f = self.stub.unary.future(b"x" * 32, timeout=5.0)
            f.add_done_callback(lambda f, rec=rec: self._done(f, rec))
            i += 1

    def _done(self, f, rec):
        end = time.monotonic()
        code = f.code()
        md = dict(f.initial_metadata() or ()) if code == grpc.StatusCode.OK else {}
        with self.lock:
            rec["end"] = end
            rec["code"] = code
            rec["details"] = f.details() or ""
            rec["backend"] = md.get("x-backend")

    def stop(self, drain: float = 8.0):
        self._stop.set()
        self._thread.join(5)
        harness.wait_until(lambda: all(c["end"] is not None for c in self.snapshot()), drain)
        self.ch.close()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(c) for c in self.calls]


def wait_for_log(r, needle: str, timeout: float, interval: float = 0.005):
    """Polls ringlb's log for `needle`; returns when it first appeared (monotonic), or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in r.log_text():
            return time.monotonic()
        time.sleep(interval)
    return None


def test_sigstopped_backend_detected_within_1s_and_no_new_call_fails(ringlb, backends,
                                                                     stoppable):
    live = backends(2)
    # No retries by policy: every call the stopped backend had taken fails when ringlb gives up
    # on its connection, so the last failure marks the detection (and nothing hides a failure).
    r = ringlb([harness.cluster("main", [*live, stoppable.address], connect_timeout="250ms",
                                retry={"attempts": 1})])
    load = Load(r.port, RATE)
    load.start()
    time.sleep(STOP_AFTER)
    stoppable.stop()
    t_stop = time.monotonic()
    t_logged = wait_for_log(r, "PING timeout", RUN_AFTER)
    time.sleep(max(0.0, t_stop + RUN_AFTER - time.monotonic()))
    load.stop()
    calls = load.snapshot()

    before = [c for c in calls if c["end"] is not None and c["end"] < t_stop]
    assert before and all(c["code"] == grpc.StatusCode.OK for c in before), \
        "calls failed before the SIGSTOP"
    assert any(c["backend"] == "stopped" for c in before), "the stoppable backend took no calls"
    unfinished = [c for c in calls if c["end"] is None]
    assert not unfinished, f"{len(unfinished)} calls never finished"

    failed = [c for c in calls if c["code"] != grpc.StatusCode.OK]
    assert t_logged is not None, "ringlb never logged a PING timeout for the stopped backend"
    log = r.log_text()
    assert f"upstream {stoppable.address}: PING timeout" in log, log[-2000:]
    # The calls that fail are the ones the stopped backend had taken: ringlb fails them when it
    # gives up on the connection, so the last failure marks the detection.
    for c in failed:
        assert c["code"] == grpc.StatusCode.UNAVAILABLE, (c["code"], c["details"])
        assert "PING timeout" in c["details"], c["details"]
        assert c["start"] >= t_stop - 0.2, f"a call from before the stop failed: {c}"
    detected = max((c["end"] for c in failed), default=t_stop) - t_stop
    print(f"\n{len(calls)} calls; {len(failed)} failed; detected {detected * 1000:.0f} ms after "
          f"SIGSTOP (log line seen after {(t_logged - t_stop) * 1000:.0f} ms)")
    assert detected <= DETECT_WITHIN, f"detection took {detected:.3f}s"
    assert t_logged - t_stop <= DETECT_WITHIN + 0.2, \
        f"the log line came {t_logged - t_stop:.3f}s after SIGSTOP"

    # After detection no new call fails: those that pick the stopped backend wait for its
    # SETTINGS (connect_timeout) and move to another endpoint.
    t_detected = t_stop + detected
    after = [c for c in calls if c["start"] > t_detected]
    assert len(after) >= RATE * (RUN_AFTER - DETECT_WITHIN) * 0.5, f"only {len(after)} calls"
    bad = [c for c in after if c["code"] != grpc.StatusCode.OK]
    assert not bad, f"{len(bad)} calls started after detection failed: {bad[:3]}"
    assert all(c["backend"] != "stopped" for c in after)


def test_quiet_call_on_a_default_grpc_server_is_not_killed_by_pings(ringlb, backends):
    """grpc-core (grpcio) closes a connection with GOAWAY(too_many_pings) at its fourth PING
    with no HEADERS or DATA in between: a call quiet for 3 s through keepalive 250 ms stays up."""
    (b,) = backends(1)
    r = ringlb([harness.cluster("main", [b])])
    stub = harness.Stub(harness.channel(r.port))
    reply = stub.slow(json.dumps({"id": "quiet", "ms": 3000}).encode(), timeout=10)
    assert reply == b"done"
    log = r.log_text()
    assert "too_many_pings" not in log and "GOAWAY" not in log, log[-2000:]
    stub.ch.close()


class TooManyPingsServer(H2Server):
    """Holds every request; answers the first PING of each connection as a strict gRPC server
    does: GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and the connection closed. Records when
    each request and PING came, per connection."""

    def __init__(self):
        super().__init__("too-many-pings")
        self.requests: dict[int, float] = {}
        self.pings: dict[int, float] = {}

    def on_request(self, c, st):
        with self.lock:
            self.requests.setdefault(c.index, time.monotonic())

    def _dispatch(self, c, ev):
        if isinstance(ev, h2.events.PingReceived):
            with self.lock:
                if c.index in self.pings:
                    return
                self.pings[c.index] = time.monotonic()
            last = max(c.streams) if c.streams else 0
            c.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM,
                                  additional_data=b"too_many_pings", last_stream_id=last)
            c.flush()
            c.close(linger=0.1)
            return
        super()._dispatch(c, ev)


def test_too_many_pings_doubles_the_endpoints_interval(ringlb):
    with TooManyPingsServer() as srv:
        # One attempt per call (no retries by policy): each call is one connection.
        r = ringlb([harness.cluster("main", [srv.address], retry={"attempts": 1})])
        stub = harness.Stub(harness.channel(r.port))
        for expect_ms in (250, 500):
            with pytest.raises(grpc.RpcError) as e:
                stub.unary(b"x", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
            conn = srv.connections - 1
            with srv.lock:
                gap = srv.pings[conn] - srv.requests[conn]
            # Pinged after the interval of silence (the PING goes before the new one's).
            assert expect_ms / 1000 - 0.02 <= gap <= expect_ms / 1000 + 0.3, \
                f"connection {conn}: PING {gap * 1000:.0f} ms after the request"
            assert harness.wait_until(
                lambda: f"keepalive interval goes from {expect_ms} to {2 * expect_ms} ms"
                in r.log_text(), 5), r.log_text()[-2000:]
        stub.ch.close()


def test_first_call_after_an_idle_spell_keeps_its_deadline(ringlb, backends):
    """A shard that waited idle must not date the next call's arrival to the start of its wait:
    its deadline (and any silence keepalive measures) would be off by the idle time."""
    (b,) = backends(1)
    r = ringlb([harness.cluster("main", [b])])
    stub = harness.Stub(harness.channel(r.port))
    assert stub.unary(b"warm", timeout=5) == b"warm"
    time.sleep(2.0)
    assert stub.unary(b"after idle", timeout=0.5) == b"after idle"
    stub.ch.close()

"""Calls a backend refused or never processed are sent elsewhere, request bodies included.

A backend may refuse a stream after reading it (RST_STREAM REFUSED_STREAM), stop taking streams
with a GOAWAY whose last-stream-id is below streams already sent to it, or not be there at all
(connection refused). None of those calls was processed, so ringlb must replay each one, body
and all, on another endpoint: the client sees zero failed calls.
"""
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from h2_peers import GoawayServer, RefusingServer, grpc_messages
from harness import Stub, channel, closed_port, cluster, pattern

CALLS = 200
BODY = 1024
CALL_TIMEOUT = 5.0   # seconds per call; a hung call fails with DEADLINE_EXCEEDED
RUN_BUDGET = 60.0    # seconds for all the calls of one test; what is left is counted as failed


def _run_calls(stub: Stub, n: int, in_flight: int) -> list[str]:
    """n unary calls with distinct BODY-byte bodies, at most in_flight at once. Returns the
    failures (wrong code, wrong echo, or not run because the budget was spent)."""
    deadline = time.monotonic() + RUN_BUDGET

    def one(i: int) -> str:
        if time.monotonic() > deadline:
            return f"call {i}: not run, {RUN_BUDGET:.0f}s budget spent"
        body = pattern(i, BODY)
        try:
            resp = stub.unary(body, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            return f"call {i}: {e.code().name} {e.details()!r}"
        if resp != body:
            return f"call {i}: echo differs ({len(resp)} bytes back for {len(body)})"
        return ""

    with ThreadPoolExecutor(max_workers=in_flight) as ex:
        return [r for r in ex.map(one, range(n)) if r]


def _failed(failures: list[str], extra: str = "") -> str:
    return (f"{len(failures)} of {CALLS} calls failed{extra}; first ones:\n  "
            + "\n  ".join(failures[:10]))


def test_refused_stream_with_body_is_replayed(backends, ringlb):
    healthy = backends(1)[0]
    with RefusingServer("refuser") as bad:
        rl = ringlb([cluster("rr", [healthy, bad.address])], workers=1)
        stub = Stub(channel(rl.port))
        failures = _run_calls(stub, CALLS, in_flight=8)
        refused = [s for s in bad.streams if s.fate == "refused"]
        errors = list(bad.errors)
    assert not failures, _failed(failures, f" ({len(refused)} streams refused by the backend)")
    assert refused, "the refusing backend never got a stream: the test proved nothing"
    # What was refused had its body on the wire: the replay had to carry the body again.
    for s in refused:
        msgs = grpc_messages(s.body)
        assert len(msgs) == 1 and len(msgs[0]) == BODY, \
            f"refused stream {s.sid}: body {s.body_bytes} bytes, not one {BODY}-byte message"
    assert not errors, f"the refusing backend saw HTTP/2 protocol errors: {errors}"
    assert healthy.calls["Unary"] == CALLS, \
        f"healthy backend served {healthy.calls['Unary']} calls, expected each of {CALLS} once"


def test_goaway_below_sent_streams_is_replayed(backends, ringlb):
    healthy = backends(1)[0]
    with GoawayServer("goaway", goaway_after=8, hold=0.2, close_after=0.2) as gw:
        rl = ringlb([cluster("rr", [healthy, gw.address])], workers=1)
        stub = Stub(channel(rl.port))
        failures = _run_calls(stub, CALLS, in_flight=32)
        goaways = list(gw.goaways)
        ignored = gw.count("ignored")
        answered = gw.count("answered")
        errors = list(gw.errors)
        conns = gw.connections
    summary = (f" (GOAWAY backend: {conns} connections, {len(goaways)} GOAWAYs, "
               f"{answered} streams answered, {ignored} above the last-stream-id)")
    assert not failures, _failed(failures, summary)
    assert goaways and ignored, "no stream was ever above a GOAWAY's last-stream-id: " \
                                "the test proved nothing" + summary
    assert not errors, f"the GOAWAY backend saw HTTP/2 protocol errors: {errors}"
    # Streams at or below the last-stream-id were processed there; replaying one would run it
    # twice. Every call ran exactly once, on one backend or the other.
    served = healthy.calls["Unary"] + answered
    assert served == CALLS, f"{served} executions for {CALLS} calls" + summary


def test_refused_connect_with_body_is_replayed(backends, ringlb):
    healthy = backends(1)[0]
    dead = f"127.0.0.1:{closed_port()}"
    rl = ringlb([cluster("rr", [dead, healthy])], workers=1)
    stub = Stub(channel(rl.port))
    failures = _run_calls(stub, CALLS, in_flight=8)
    assert not failures, _failed(failures, f" (endpoint {dead} refuses connections)")
    assert healthy.calls["Unary"] == CALLS

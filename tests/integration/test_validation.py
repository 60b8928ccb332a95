"""One client's bad call never fails another's.

Backends share one ringlb->backend connection between many clients' calls, so whatever one
client sends that makes a backend close that connection fails everybody's calls on it. ringlb
therefore validates what it forwards:
  - a malformed grpc-timeout is answered locally (INTERNAL, as grpc-go and grpc-core servers
    answer it) and never forwarded; a valid but huge one (99999999H) is capped at 100 days;
  - a request header list past the backend's SETTINGS_MAX_HEADER_LIST_SIZE is answered
    RESOURCE_EXHAUSTED and never sent;
  - when a backend does close a shared connection with GOAWAY, the calls above its
    last-stream-id (never processed) are replayed elsewhere;
  - a backend answer without grpc-status (non-200 HTTP, or 200 with none) becomes a gRPC error
    that names what came instead, coded per gRPC's HTTP-to-gRPC mapping.
Raw HTTP/2 peers (python3-h2) play the client or backend wherever grpcio would not misbehave.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import GoAwayFrame

from h2_peers import H2Server, grpc_frame, grpc_messages
from harness import Stub, channel, cluster, pattern
from raw_h2 import h2_request

CALL_TIMEOUT = 10.0  # seconds per call: a hung call fails the test, it does not hang it
CAP_S = 100 * 24 * 3600  # kMaxGrpcTimeout (proto/grpc.h), in seconds
UNITS_NS = {"H": 3600 * 10**9, "M": 60 * 10**9, "S": 10**9, "m": 10**6, "u": 10**3, "n": 1}


def _timeout_ns(v: str) -> int:
    return int(v[:-1]) * UNITS_NS[v[-1]]


def _grpc_call(port: int, headers=(), body: bytes = b"ping", path="/test.Echo/Unary",
               timeout: float = CALL_TIMEOUT):
    return h2_request(port, path, [("content-type", "application/grpc"), ("te", "trailers"),
                                   *headers], grpc_frame(body), timeout=timeout)


def _list_size(headers) -> int:
    """RFC 9113's header list size: names + values + 32 per field."""
    return sum(len(k.encode()) + len(v.encode()) + 32 for k, v in headers)


def _advertised_max_header_list(port: int) -> int | None:
    """What the HTTP/2 server at 127.0.0.1:port advertises as SETTINGS_MAX_HEADER_LIST_SIZE
    (None if it advertises nothing), read from its first SETTINGS frame."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        end = time.monotonic() + 5
        while time.monotonic() < end:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    ch = ev.changed_settings.get(h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE)
                    return ch.new_value if ch else None
    pytest.fail(f"the server on port {port} sent no SETTINGS within 5 s", pytrace=False)


class EchoServer(H2Server):
    """Answers every request with a gRPC echo once it has ended; records headers (ServerStream).
    `hold`: seconds to wait before answering, so calls are in flight together."""

    def __init__(self, name: str = "echo", hold: float = 0.0):
        super().__init__(name)
        self.hold = hold

    def on_data(self, c, st, data, flow_len):
        if flow_len:
            c.h2.acknowledge_received_data(flow_len, st.sid)

    def on_end(self, c, st):
        if self.hold <= 0:
            c.answer_echo(st)
        else:
            c.state.setdefault("due", []).append((time.monotonic() + self.hold, st))

    def on_tick(self, c, now):
        due = c.state.get("due", [])
        while due and due[0][0] <= now:
            _, st = due.pop(0)
            if st.reset is None:
                c.answer_echo(st)


class StrictServer(EchoServer):
    """Advertises SETTINGS_MAX_HEADER_LIST_SIZE = `limit` and, like the gRPC C++ backend in the
    issue, treats a request header list past it as a connection error: GOAWAY with the highest
    stream id it has seen (so nothing is replayable) and a close, dropping every call in flight
    on the connection."""

    def __init__(self, limit: int, hold: float):
        super().__init__("strict", hold)
        self.limit = limit
        self.too_big: list[int] = []  # sizes of the lists that closed a connection

    def _serve(self, c):
        c.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limit,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
        })
        super()._serve(c)

    def on_request(self, c, st):
        size = _list_size(st.headers.items())
        if size <= self.limit:
            return
        with self.lock:
            self.too_big.append(size)
        c.send_raw(GoAwayFrame(0, last_stream_id=max(c.streams), error_code=0xB).serialize())
        c.close()


class ScriptedServer(H2Server):
    """Answers every request with `headers` (END_STREAM on them if no `body`), then `body` as
    DATA with END_STREAM: whatever a broken backend or a sidecar in front of it sends."""

    def __init__(self, headers: list[tuple[str, str]], body: bytes = b""):
        super().__init__("scripted")
        self.headers = headers
        self.body = body

    def on_end(self, c, st):
        c.h2.send_headers(st.sid, self.headers, end_stream=not self.body)
        if self.body:
            c.h2.send_data(st.sid, self.body, end_stream=True)
        st.fate = "answered"


class FirstOnlyGoawayServer(EchoServer):
    """On its first connection: waits until `n` requests have arrived in full (or `hold` seconds
    passed), then sends GOAWAY(NO_ERROR) with the first stream's id as last-stream-id, answers
    that stream if `answer_first` (else leaves it), and closes. Later connections: plain echo."""

    def __init__(self, n: int, answer_first: bool, hold: float = 2.0):
        super().__init__("goaway-first")
        self.n = n
        self.answer_first = answer_first
        self.hold_for_n = hold
        self.goaway: tuple[int, int] | None = None  # (last stream id, streams seen then)

    def on_request(self, c, st):
        c.state.setdefault("first_at", time.monotonic())

    def on_end(self, c, st):
        if c.index > 0:
            c.answer_echo(st)
        elif sum(1 for x in c.streams.values() if x.ended) >= self.n:
            self._goaway(c)

    def on_tick(self, c, now):
        if c.index == 0 and "done" not in c.state and c.streams \
                and now - c.state["first_at"] >= self.hold_for_n:
            self._goaway(c)

    def _goaway(self, c):
        if "done" in c.state:
            return
        c.state["done"] = True
        ids = sorted(c.streams)
        first = ids[0]
        with self.lock:
            self.goaway = (first, len(ids))
            for x in c.streams.values():
                x.fate = "ignored" if x.sid > first else x.fate
        c.send_raw(GoAwayFrame(0, last_stream_id=first, error_code=0).serialize())
        if self.answer_first and c.streams[first].ended:
            c.answer_echo(c.streams[first])
        c.flush()
        c.close(linger=1.0)


# ---------------------------------------------------------------------------------------------
# grpc-timeout
# ---------------------------------------------------------------------------------------------
BAD_TIMEOUTS = ["1x", "-1S", "123456789S", "1s", "1.5S", "S", "1 S"]


def test_malformed_grpc_timeout_is_answered_locally_never_forwarded(ringlb):
    with EchoServer() as backend:
        rl = ringlb([cluster("c", [backend.address])])
        for bad in BAD_TIMEOUTS:
            r = _grpc_call(rl.port, [("grpc-timeout", bad)])
            assert r.ended, f"grpc-timeout {bad!r}: no answer (reset {r.reset}, goaway {r.goaway})"
            assert r.status == "200" and r.grpc("grpc-status") == "13", \
                f"grpc-timeout {bad!r}: :status {r.status}, headers {r.headers}, trailers {r.trailers}"
            msg = unquote(r.grpc("grpc-message") or "")
            assert f'malformed grpc-timeout "{bad}"' in msg and "not forwarded" in msg, \
                f"grpc-timeout {bad!r}: grpc-message {msg!r} does not name it"
        # A valid one on the same listener is forwarded, re-encoded.
        good = _grpc_call(rl.port, [("grpc-timeout", "5S")])
        with backend.lock:
            seen = [dict(s.headers) for s in backend.streams]
    assert good.grpc("grpc-status") == "0", f"a valid call failed: {good.headers} {good.trailers}"
    assert len(seen) == 1, f"the backend got {len(seen)} requests; only the valid one may reach it"
    assert 4 * 10**9 < _timeout_ns(seen[0]["grpc-timeout"]) <= 5 * 10**9, seen[0]


def test_huge_grpc_timeout_is_capped_and_the_call_succeeds(ringlb):
    with EchoServer() as backend:
        rl = ringlb([cluster("c", [backend.address])])
        t0 = time.monotonic()
        r = _grpc_call(rl.port, [("grpc-timeout", "99999999H")], body=b"huge")
        took = time.monotonic() - t0
        with backend.lock:
            seen = [dict(s.headers) for s in backend.streams]
    assert r.grpc("grpc-status") == "0", \
        f"99999999H failed the call after {took:.3f}s: {r.headers} {r.trailers}"
    assert grpc_messages(r.body) == [b"huge"]
    assert len(seen) == 1
    sent = seen[0].get("grpc-timeout", "")
    # Capped at 100 days, minus what the call spent in ringlb (rounded up to the unit).
    assert sent and CAP_S * 10**9 - 10**9 <= _timeout_ns(sent) <= CAP_S * 10**9, \
        f"the backend got grpc-timeout {sent!r}, not ~100 days"


# ---------------------------------------------------------------------------------------------
# Header list size
# ---------------------------------------------------------------------------------------------
OTHER_CLIENTS = 11
CALLS_EACH = 4


def _run_others(port: int, big_md: tuple, big_after: float):
    """OTHER_CLIENTS clients, each on its own connection, run CALLS_EACH sequential calls while
    one more client sends a call with `big_md` after `big_after` seconds. Returns (failures of
    the others, the big call's RpcError or None)."""
    stubs = [Stub(channel(port)) for _ in range(OTHER_CLIENTS + 1)]

    def other(i: int) -> list[str]:
        out = []
        for k in range(CALLS_EACH):
            body = pattern(i * 100 + k, 64)
            try:
                if stubs[i].unary(body, timeout=CALL_TIMEOUT) != body:
                    out.append(f"client {i} call {k}: wrong echo")
            except grpc.RpcError as e:
                out.append(f"client {i} call {k}: {e.code().name} {e.details()!r}")
        return out

    def big():
        time.sleep(big_after)
        try:
            stubs[-1].unary(b"big", timeout=CALL_TIMEOUT, metadata=[big_md])
        except grpc.RpcError as e:
            return e
        return None

    with ThreadPoolExecutor(max_workers=OTHER_CLIENTS + 1) as ex:
        fut_big = ex.submit(big)
        failures = [f for fs in ex.map(other, range(OTHER_CLIENTS)) for f in fs]
        err = fut_big.result()
    for s in stubs:
        s.ch.close()
    return failures, err


def _check_big_refused(err, limit: int):
    assert err is not None, "the call with the oversized header list succeeded"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, \
        f"oversized header list: {err.code().name} {err.details()!r}"
    assert f"the {limit} that upstream" in err.details() and "bytes" in err.details() \
        and "not sent" in err.details(), f"message does not name the sizes: {err.details()!r}"


def test_header_list_past_grpcio_backend_limit_is_refused(backends, ringlb):
    """A real grpcio backend: whatever it advertises, a list past it never reaches it."""
    b = backends(1)[0]
    limit = _advertised_max_header_list(b.port)
    if limit is None:
        pytest.fail(f"grpcio {grpc.__version__} advertised no SETTINGS_MAX_HEADER_LIST_SIZE; "
                    "this test needs a backend that does", pytrace=False)
    rl = ringlb([cluster("c", [b])])
    big_md = ("x-big", "a" * (limit + 1000))  # 9,000+ bytes against grpcio's 8 KiB
    failures, err = _run_others(rl.port, big_md, big_after=0.05)
    assert not failures, f"{len(failures)} other calls failed:\n  " + "\n  ".join(failures[:10])
    _check_big_refused(err, limit)
    assert b.calls["Unary"] == OTHER_CLIENTS * CALLS_EACH, \
        f"backend served {b.calls['Unary']} calls; the oversized one must not be among them"


def test_header_list_past_limit_never_closes_a_shared_connection(ringlb):
    """A backend that closes the connection on an oversized header list (as gRPC C++ did in the
    issue): 11 other clients' calls in flight on the same connection all succeed."""
    with StrictServer(limit=8192, hold=0.3) as backend:
        rl = ringlb([cluster("c", [backend.address])])
        failures, err = _run_others(rl.port, ("x-big", "a" * 9000), big_after=0.15)
        with backend.lock:
            too_big = list(backend.too_big)
            errors = list(backend.errors)
        conns = backend.connections
    assert not too_big, f"the backend got header lists of {too_big} bytes (limit 8192)"
    assert not failures, f"{len(failures)} other calls failed:\n  " + "\n  ".join(failures[:10])
    _check_big_refused(err, 8192)
    assert conns == 1, f"{conns} connections to the backend; the first should have served all"
    assert not errors, f"backend saw HTTP/2 errors: {errors}"


# ---------------------------------------------------------------------------------------------
# GOAWAY on a shared connection
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer_first,retry", [(True, True), (False, False), (False, True)],
                         ids=["first-answered", "first-dropped-no-retry", "first-dropped-retried"])
def test_goaway_after_first_stream_replays_the_rest(backends, ringlb, answer_first, retry):
    """GOAWAY(last-stream-id = the first stream) on a connection carrying several calls, then a
    close: the calls above it were never processed and are replayed on the other backend. The
    first was processed: it gets its answer, or (dropped) a gRPC error that says why, which the
    default retry policy (UNAVAILABLE, 3 attempts) may then retry as it would any lost call."""
    healthy = backends(1)[0]
    n = 6
    extra = {} if retry else {"retry": {"attempts": 1}}
    with FirstOnlyGoawayServer(n=n, answer_first=answer_first) as gw:
        rl = ringlb([cluster("rr", [gw.address, healthy], **extra)])
        stub = Stub(channel(rl.port))
        bodies = [pattern(i, 256) for i in range(2 * n)]  # round robin: n of them go to gw

        def one(i):
            try:
                resp = stub.unary(bodies[i], timeout=CALL_TIMEOUT)
                return "ok" if resp == bodies[i] else "wrong echo"
            except grpc.RpcError as e:
                return f"{e.code().name}: {e.details()}"

        with ThreadPoolExecutor(max_workers=2 * n) as ex:
            results = list(ex.map(one, range(2 * n)))
        with gw.lock:
            goaway = gw.goaway
            ignored = sum(1 for s in gw.streams if s.fate == "ignored")
            answered = sum(1 for s in gw.streams if s.fate == "answered")
            first_conn = [(s.sid, s.fate) for s in gw.streams if s.conn == 0]
    assert goaway, "the backend never sent its GOAWAY: the test proved nothing"
    assert ignored >= 1, f"no stream was above the GOAWAY's last-stream-id ({goaway})"
    failed = [r for r in results if r != "ok"]
    if answer_first or retry:
        assert not failed, f"calls failed: {failed} (first connection: {first_conn})"
    else:
        # Processed, never answered: not replayed transparently (it may have run); the client
        # gets a gRPC error naming the upstream, not a hang or a bare reset.
        assert len(failed) == 1, f"expected exactly the dropped first call to fail: {results}"
        assert failed[0].startswith("UNAVAILABLE: ringlb: upstream"), failed[0]
    # Executions: one per call, plus one for a dropped first call that the policy retried.
    served = healthy.calls["Unary"] + answered
    expect = 2 * n - len(failed)
    assert served == expect, f"{served} executions for {expect} successful calls " \
                             f"(first connection streams: {first_conn})"


# ---------------------------------------------------------------------------------------------
# Answers without grpc-status (the integrator wires proto::status_for_http and
# proto::missing_status_message into Call::on_response_headers)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status,code", [("503", "14"), ("404", "12"), ("401", "16"),
                                         ("400", "13"), ("500", "2")])
def test_non_200_answer_becomes_mapped_grpc_error(ringlb, status, code):
    page = b"<html><body>upstream is down</body></html>"
    with ScriptedServer([(":status", status), ("content-type", "text/html")], page) as backend:
        rl = ringlb([cluster("c", [backend.address])])
        r = _grpc_call(rl.port)
    assert r.ended, f"no answer (reset {r.reset})"
    assert r.status == "200", f"the client got HTTP {r.status}, not a gRPC answer: {r.headers}"
    assert r.grpc("grpc-status") == code, f"HTTP {status}: {r.headers} {r.trailers}"
    msg = unquote(r.grpc("grpc-message") or "")
    assert f"HTTP {status}" in msg and backend.address in msg, msg


def test_non_200_answer_message_names_what_came_instead(ringlb):
    page = b"<html><body>upstream is down</body></html>"
    with ScriptedServer([(":status", "503"), ("content-type", "text/html")], page) as backend:
        rl = ringlb([cluster("c", [backend.address], retry={"attempts": 1})])
        r = _grpc_call(rl.port)
    msg = unquote(r.grpc("grpc-message") or "")
    assert msg == f'ringlb: upstream {backend.address} answered HTTP 503 (Service Unavailable) ' \
                  f'without grpc-status (content-type "text/html")', msg


@pytest.mark.parametrize("shape", ["headers-only", "with-body"])
def test_answer_without_grpc_status_becomes_unknown_with_message(ringlb, shape):
    headers = [(":status", "200"), ("content-type", "application/grpc")]
    body = grpc_frame(b"reply") if shape == "with-body" else b""
    with ScriptedServer(headers, body) as backend:
        rl = ringlb([cluster("c", [backend.address])])
        r = _grpc_call(rl.port)
    assert r.ended, f"no answer (reset {r.reset})"
    assert r.grpc("grpc-status") == "2", f"{r.headers} {r.trailers}"
    msg = unquote(r.grpc("grpc-message") or "")
    assert "without grpc-status" in msg and backend.address in msg, msg

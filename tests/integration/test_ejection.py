"""Passive outlier ejection, end to end: the real binary, real grpcio backends.

An endpoint that fails (connects refused, or UNAVAILABLE to every call) is ejected after
outlier.consecutive_* failures in a row: one log line says so, and it gets no new calls until
base_ejection has passed; then it is back (one line says that too). With every endpoint failing
the cluster is in panic and calls still go to the members (they get the members' errors, never
"no endpoints").

Calls that hit a failing endpoint are not retried by policy on this branch (retries come with the
call rewrite), so UNAVAILABLE answers reach the client: these tests assert ejection and
per-backend counts, not client success, except where ringlb replays transparently (a refused
connect never reached a backend).
"""
import re
import socket
import threading
import time

import grpc
import pytest

from harness import Backend, Stub, channel, closed_port, cluster, wait_until

EJECTION_S = 4        # base_ejection: long enough to count calls inside it on loaded machines
LOG_WAIT_S = 10.0     # for a log line that should come at once (or when an ejection ends)
CALL_TIMEOUT = 5.0


def _outlier(**extra) -> dict:
    o = {"base_ejection": f"{EJECTION_S}s", "max_ejection": "60s"}
    o.update(extra)
    return o


def _wait_log(rl, pattern: str, timeout: float = LOG_WAIT_S) -> re.Match:
    m = wait_until(lambda: re.search(pattern, rl.log_text()), timeout, interval=0.02)
    assert m, f"no log line matching {pattern!r} within {timeout}s; log:\n{rl.log_text()[-3000:]}"
    return m


def _call(stub: Stub, i: int) -> grpc.StatusCode:
    try:
        stub.unary(b"call-%d" % i, timeout=CALL_TIMEOUT)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_refused_connects_eject_the_endpoint_until_base_ejection(backends, ringlb):
    good = backends(2)
    port = closed_port()
    dead = f"127.0.0.1:{port}"
    rl = ringlb([cluster("main", good + [dead], outlier=_outlier())], workers=2)
    stubs = [Stub(channel(rl.port)) for _ in range(4)]  # likely on both shards

    # A refused connect never reached a backend: ringlb replays the call elsewhere.
    codes = [_call(stubs[i % 4], i) for i in range(40)]
    assert codes == [grpc.StatusCode.OK] * 40, codes
    m = _wait_log(rl, rf"cluster main: endpoint {re.escape(dead)} ejected for {EJECTION_S}s: "
                      r"3 consecutive local-origin failures")
    ejected_at = time.monotonic()

    # Something listens there now; while the ejection lasts it gets nothing.
    revived = Backend("revived", port=port)
    try:
        n = 0
        while time.monotonic() < ejected_at + EJECTION_S / 2:
            assert _call(stubs[n % 4], 1000 + n) == grpc.StatusCode.OK
            n += 1
        assert n >= 4, f"only {n} calls in {EJECTION_S / 2}s: the machine is too slow to judge"
        assert revived.total == 0, \
            f"ejected endpoint got {revived.total} of {n} calls during its ejection"
        assert sum(b.calls["Unary"] for b in good) >= 40 + n

        _wait_log(rl, rf"cluster main: endpoint {re.escape(dead)} un-ejected after",
                  timeout=EJECTION_S + LOG_WAIT_S)
        # Back in rotation on every shard.
        for i in range(60):
            assert _call(stubs[i % 4], 2000 + i) == grpc.StatusCode.OK
        assert revived.calls["Unary"] > 0, "the endpoint never came back after its ejection"
    finally:
        revived.stop()
    assert m.group(0) in rl.log_text()


def test_unavailable_backend_is_ejected_and_comes_back(backends, ringlb):
    bs = backends(3)
    sick = bs[1]
    sick.fail_code = grpc.StatusCode.UNAVAILABLE
    rl = ringlb([cluster("main", bs, outlier=_outlier())], workers=1)
    stub = Stub(channel(rl.port))

    for i in range(30):
        _call(stub, i)
    _wait_log(rl, rf"cluster main: endpoint {re.escape(sick.address)} ejected for "
                  rf"{EJECTION_S}s: 3 consecutive UNAVAILABLE")
    # One shard: it took exactly three answers to decide, then no more calls.
    assert sick.calls["Unary"] == 3, dict(sick.calls)
    for i in range(30):
        assert _call(stub, 100 + i) == grpc.StatusCode.OK
    assert sick.calls["Unary"] == 3, dict(sick.calls)

    sick.fail_code = None
    _wait_log(rl, rf"cluster main: endpoint {re.escape(sick.address)} un-ejected after",
              timeout=EJECTION_S + LOG_WAIT_S)
    for i in range(30):
        assert _call(stub, 200 + i) == grpc.StatusCode.OK
    assert sick.calls["Unary"] > 3, "the endpoint never came back after its ejection"


class _Slammer:
    """Accepts TCP connections and closes them at once, counting them: an endpoint that is
    reachable but never serves. Every call ringlb sends there fails (connection lost)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.accepted += 1
            c.close()

    def count(self) -> int:
        with self.lock:
            return self.accepted

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def test_all_endpoints_failing_is_panic_calls_still_go_to_them(ringlb):
    slammers = [_Slammer(), _Slammer()]
    try:
        rl = ringlb([cluster("main", [s.address for s in slammers],
                             outlier=_outlier(max_ejected_percent=100))], workers=1)
        stub = Stub(channel(rl.port))
        for i in range(12):
            _call(stub, i)
            if len(re.findall(r"cluster main: endpoint \S+ ejected for", rl.log_text())) >= 2:
                break
        for s in slammers:
            _wait_log(rl, rf"cluster main: endpoint {re.escape(s.address)} ejected for")

        # Both out: panic. Calls still go to the members and fail with what they do.
        before = sum(s.count() for s in slammers)
        details = []
        for i in range(6):
            try:
                stub.unary(b"panic-%d" % i, timeout=CALL_TIMEOUT)
                pytest.fail("a call through two endpoints that close every connection succeeded")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
                details.append(e.details() or "")
        after = sum(s.count() for s in slammers)
        assert after > before, "no connection reached any endpoint in panic mode"
        for d in details:
            assert "no endpoints" not in d, d
            assert any(s.address in d for s in slammers), d
    finally:
        for s in slammers:
            s.close()

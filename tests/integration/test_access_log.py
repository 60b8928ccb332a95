"""The access log: one JSON line per call, with the fields and flags of each kind of end.

Real ringlb, real grpcio backends and clients. Each line is parsed with json.loads; a call is
found by its x-request-id (each call sends its own).
"""
from __future__ import annotations

import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import dns_server
import harness
from harness import Stub, channel, cluster
from raw_h2 import RawH2Backend, grpc_frame, h2_request

CALL_TIMEOUT = 10.0
DROPPED_RE = re.compile(r"access log: (\d+) lines dropped \(buffer full\)")


def start(ringlb, tmp_path, io_backend, clusters, listeners=None, log=None, name=None,
          discovery=None, **proxy):
    """A ringlb with a [log] table (the factory knows [proxy] only)."""
    cfg = ringlb.config(clusters, listeners, **proxy)
    cfg["log"] = log if log is not None else {"access": "stdout"}
    if discovery:
        cfg["discovery"] = discovery
    r = harness.Ringlb(cfg, io_backend, tmp_path, name=name or f"ringlb{len(ringlb.instances)}")
    ringlb.instances.append(r)
    return r


def stop_and_read(r, path=None) -> list[dict]:
    """SIGTERM; every queued line is written before exit. The lines of the access log."""
    assert r.stop() == 0, r.stderr_text()[-3000:]
    text = open(path, encoding="utf-8").read() if path else r.stdout_text()
    lines = [l for l in text.split("\n") if l]
    return [json.loads(l) for l in lines]


def by_id(entries: list[dict]) -> dict[str, dict]:
    out = {}
    for e in entries:
        rid = e.get("request_id")
        assert rid not in out, f"two lines for request {rid}: {out.get(rid)} and {e}"
        out[rid] = e
    return out


def md(rid: str, extra=()):
    return (("x-request-id", rid), *extra)


def call(fn, req, rid, timeout=CALL_TIMEOUT, extra=()):
    try:
        fn(req, timeout=timeout, metadata=md(rid, extra))
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_one_line_per_call_with_fields_and_flags(ringlb, backends, io_backend, tmp_path):
    ok, failing = backends(2)
    failing.fail_code = grpc.StatusCode.UNAVAILABLE
    flaky_port = harness.closed_port()
    hang, reset = RawH2Backend("hang"), RawH2Backend("reset")
    clusters = [
        cluster("ok", [ok]),
        # attempts = 1: an UNAVAILABLE is forwarded as it is (no retry policy in play).
        cluster("down", [failing], retry={"attempts": 1}),
        # A DNS name that does not exist (NXDOMAIN): the cluster has no endpoints (UH).
        {"name": "empty", "dns": "nothing.test.local", "port": 1, "record": "A"},
        cluster("closed", [f"127.0.0.1:{flaky_port}"], retry={"attempts": 1}),
        # Every attempt gets UNAVAILABLE: retried until the attempts run out (URX).
        cluster("exhaust", [failing], retry={"attempts": 2, "backoff": "1ms"}),
        # One endpoint down, one up: the first attempt that fails is retried on the other.
        cluster("retry", [failing, ok], lb="round_robin", retry={"attempts": 3, "backoff": "1ms"}),
        cluster("hang", [hang.address], retry={"attempts": 1}),
        cluster("reset", [reset.address], retry={"attempts": 1}),
    ]
    # One listener per cluster (the backends serve test.Echo and other.Echo only).
    listeners = [{"cluster": c} for c in ("ok", "down", "empty", "closed", "exhaust", "retry")]
    # ringlb's own deadline on a backend that never answers: DT.
    listeners.append({"cluster": "hang",
                      "routes": [{"prefix": "/", "cluster": "hang", "timeout": "200ms"}]})
    listeners.append({"cluster": "reset"})  # a backend that resets every stream: UR
    # No default cluster: a path no route takes is NR.
    listeners.append({"routes": [{"prefix": "/only.", "cluster": "ok"}]})
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    dns = dns_server.DnsServer()
    try:
        r = start(ringlb, tmp_path, io_backend, clusters, listeners,
                  discovery={"resolvers": [dns.address], "query_timeout": "500ms"})
        _check_each_kind(r, ok, failing, flaky_port)
    finally:
        dns.stop()
        hang.close()
        reset.close()


def _check_each_kind(r, ok, failing, flaky_port):
    ports = dict(zip(("ok", "down", "empty", "closed", "exhaust", "retry", "hang", "reset", "nr"),
                     r.ports))
    chans = {k: channel(p) for k, p in ports.items()}
    ch = chans["ok"]
    results = {}

    def u(listener):
        return Stub(chans[listener]).unary

    s = Stub(ch)
    results["ok"] = call(s.unary, b"hello", "ok")
    results["down"] = call(u("down"), b"x", "down")
    results["empty"] = call(u("empty"), b"x", "empty")
    results["closed"] = call(u("closed"), b"x", "closed")
    results["exhaust"] = call(u("exhaust"), b"x", "exhaust")
    results["deadline"] = call(u("hang"), b"x", "deadline")
    results["reset"] = call(u("reset"), b"x", "reset")
    # The retry cluster alternates: whichever endpoint comes first, the call succeeds, and at
    # least one of two calls needed a retry.
    results["retry1"] = call(u("retry"), b"x", "retry1")
    results["retry2"] = call(u("retry"), b"x", "retry2")
    results["nr"] = call(chans["nr"].unary_unary("/nowhere.Svc/Get"), b"x", "nr")
    # Client cancel: a slow call cancelled by the client while the backend works.
    fut = s.slow.future(json.dumps({"id": "c", "ms": 5000}).encode(), timeout=CALL_TIMEOUT,
                            metadata=md("cancel"))
    assert harness.wait_until(lambda: ok.slow.get("c") == "running", 5.0)
    fut.cancel()
    assert harness.wait_until(lambda: ok.slow.get("c") == "cancelled", 5.0)
    for c in chans.values():
        c.close()

    assert results["ok"] == grpc.StatusCode.OK
    assert results["down"] == grpc.StatusCode.UNAVAILABLE
    assert results["empty"] == grpc.StatusCode.UNAVAILABLE
    assert results["closed"] == grpc.StatusCode.UNAVAILABLE
    assert results["exhaust"] == grpc.StatusCode.UNAVAILABLE
    assert results["deadline"] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert results["reset"] == grpc.StatusCode.INTERNAL
    assert results["retry1"] == grpc.StatusCode.OK and results["retry2"] == grpc.StatusCode.OK
    assert results["nr"] == grpc.StatusCode.UNIMPLEMENTED

    lines = by_id(stop_and_read(r))
    assert set(lines) == {"ok", "down", "empty", "closed", "exhaust", "deadline", "reset",
                          "retry1", "retry2", "nr", "cancel"}, lines.keys()

    e = lines["ok"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
    assert e["listener"] == "127.0.0.1:0"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", e["peer"]) and e["peer"] != f"127.0.0.1:{ports['ok']}"
    assert e["authority"] == f"127.0.0.1:{ports['ok']}"
    assert (e["service"], e["method"]) == ("test.Echo", "Unary") and "path" not in e
    assert (e["http_status"], e["grpc_status"], e["grpc_message"]) == (200, 0, None)
    assert e["flags"] == "-"
    assert e["cluster"] == "ok" and e["endpoints"] == [ok.address]
    assert (e["attempts"], e["retries"], e["hedges"], e["replays"]) == (1, 0, 0, 0)
    assert e["request_bytes"] == 5 + 5 and e["response_bytes"] == 5 + 5  # gRPC framing
    assert e["duration_ms"] >= e["upstream_ms"] > 0
    assert e["user_agent"].startswith("grpc-python")

    e = lines["down"]
    assert (e["grpc_status"], e["flags"], e["cluster"]) == (14, "-", "down")
    assert e["grpc_message"] == f"{failing.name} is failing on purpose"
    assert e["endpoints"] == [failing.address] and e["attempts"] == 1

    e = lines["empty"]
    assert (e["grpc_status"], e["flags"], e["cluster"], e["endpoints"]) == (14, "UH", "empty", [])
    assert e["attempts"] == 0 and "has no endpoints" in e["grpc_message"]
    assert e["upstream_ms"] == 0

    e = lines["closed"]
    assert e["grpc_status"] == 14 and "UF" in e["flags"].split(",")
    assert e["endpoints"][0] == f"127.0.0.1:{flaky_port}"
    # Connect failures are replayed transparently until the deadline or replays run out.
    assert e["attempts"] == e["replays"] + 1 and e["retries"] == 0

    e = lines["exhaust"]
    assert e["grpc_status"] == 14 and e["flags"] == "URX"
    assert (e["attempts"], e["retries"]) == (2, 1)
    assert e["endpoints"] == [failing.address, failing.address]

    e = lines["deadline"]
    assert (e["grpc_status"], e["flags"], e["cluster"]) == (4, "DT", "hang")
    assert e["grpc_message"] == "ringlb: deadline exceeded before the backend answered"
    assert e["duration_ms"] >= 200

    e = lines["reset"]
    assert (e["grpc_status"], e["cluster"]) == (13, "reset") and "UR" in e["flags"].split(",")

    retried = [lines["retry1"], lines["retry2"]]
    assert all(x["grpc_status"] == 0 for x in retried)
    once = [x for x in retried if x["attempts"] == 2]
    assert once, retried
    for x in once:
        assert x["retries"] == 1 and x["endpoints"] == [failing.address, ok.address]
        assert x["flags"] == "-"

    e = lines["nr"]
    assert (e["grpc_status"], e["flags"], e["cluster"]) == (12, "NR", None)
    assert (e["service"], e["method"]) == ("nowhere.Svc", "Get")
    assert e["listener"] == "127.0.0.1:0" and e["endpoints"] == []

    e = lines["cancel"]
    assert "DC" in e["flags"].split(",") and e["grpc_status"] is None
    assert e["endpoints"] == [ok.address]


def test_file_target_counts_every_call(ringlb, backends, io_backend, tmp_path):
    """log.access = a file: N calls, N lines (well under the ring); appended, never truncated."""
    (b,) = backends(1)
    path = tmp_path / "access.log"
    path.write_text("")  # existing content stays: opened for append
    with open(path, "w") as f:
        f.write('{"earlier":true}\n')
    r = start(ringlb, tmp_path, io_backend, [cluster("c", [b])],
              log={"access": str(path), "access_buffer": 1024}, workers=2)
    n = 300
    ch = channel(r.port)
    s = Stub(ch)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: call(s.unary, b"x" * 10, f"f{i}"), range(n)))
    ch.close()
    assert codes.count(grpc.StatusCode.OK) == n
    entries = stop_and_read(r, path)
    assert entries[0] == {"earlier": True}
    got = by_id(entries[1:])
    assert set(got) == {f"f{i}" for i in range(n)}
    assert r.stdout_text() == ""  # nothing to stdout with a file target
    assert not DROPPED_RE.search(r.stderr_text())


def test_sampling_zero_logs_failures_only(ringlb, backends, io_backend, tmp_path):
    ok, failing = backends(2)
    failing.fail_code = grpc.StatusCode.UNAVAILABLE
    r = start(ringlb, tmp_path, io_backend,
              [cluster("ok", [ok]), cluster("down", [failing], retry={"attempts": 1})],
              [{"cluster": "ok", "routes": [{"prefix": "/other.", "cluster": "down"}]}],
              log={"access": "stdout", "access_sample": 0.0})
    ch = channel(r.port)
    s = Stub(ch)
    for i in range(20):
        assert call(s.unary, b"x", f"ok{i}") == grpc.StatusCode.OK
    for i in range(5):
        assert call(Stub(ch, "other.Echo").unary, b"x", f"bad{i}") == \
            grpc.StatusCode.UNAVAILABLE
    ch.close()
    got = by_id(stop_and_read(r))
    assert set(got) == {f"bad{i}" for i in range(5)}


def test_off_writes_nothing(ringlb, backends, io_backend, tmp_path):
    (b,) = backends(1)
    r = start(ringlb, tmp_path, io_backend, [cluster("c", [b])], log={"access": "off"})
    ch = channel(r.port)
    for i in range(5):
        assert call(Stub(ch).unary, b"x", f"o{i}") == grpc.StatusCode.OK
    ch.close()
    assert stop_and_read(r) == []


def test_full_ring_drops_are_counted(ringlb, backends, io_backend, tmp_path):
    """The writer blocks on a FIFO nobody reads: the shard's small ring fills and drops lines,
    never the calls. Once read: lines written + lines reported dropped == calls."""
    (b,) = backends(1)
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    # Opened for reading (not read) first, so ringlb's open for writing does not block.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = start(ringlb, tmp_path, io_backend, [cluster("c", [b])],
                  log={"access": str(fifo), "access_buffer": 16})
        n = 1500  # about 300 KiB of lines: several times the pipe (64 KiB) and the ring
        ch = channel(r.port)
        s = Stub(ch)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: call(s.unary, b"x", f"p{i}"), range(n)))
        ch.close()
        assert codes.count(grpc.StatusCode.OK) == n  # the log never held a call up
        # Now read: the writer unblocks, writes what its ring holds, reports the drops.
        data = bytearray()
        os.set_blocking(rfd, True)
        r.signal(signal.SIGTERM)
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:  # ringlb closed it (exit)
                break
            data += chunk
        assert r.wait(harness.STOP_TIMEOUT) == 0
    finally:
        os.close(rfd)
    lines = [json.loads(l) for l in data.decode().split("\n") if l]
    ids = [e["request_id"] for e in lines]
    assert len(ids) == len(set(ids))
    dropped = sum(int(m) for m in DROPPED_RE.findall(r.stderr_text()))
    assert dropped > 0, "the ring never filled: the test did not test drops"
    assert len(lines) + dropped == n, (len(lines), dropped)


def test_per_try_timeout_invalid_request_and_plain_http(ringlb, io_backend, tmp_path):
    """UT (and URX once the attempts are used up) on a backend that never answers; IR for a
    malformed grpc-timeout, with a user agent that needs escaping (it round-trips through
    json.loads); a plain HTTP/2 request logs its path and no grpc_status."""
    hang = RawH2Backend("hang")
    try:
        r = start(ringlb, tmp_path, io_backend,
                  [cluster("hang", [hang.address],
                           retry={"attempts": 2, "per_try_timeout": "150ms", "backoff": "1ms"})],
                  [{"cluster": "hang"}, {"routes": [{"prefix": "/only.", "cluster": "hang"}]}])
        ch = channel(r.ports[0])
        assert call(Stub(ch).unary, b"x", "ut") == grpc.StatusCode.DEADLINE_EXCEEDED
        ch.close()
        agent = 'tester "quoted" \\ back\tslash \u00e9'
        resp = h2_request(r.ports[0], "/test.Echo/Unary",
                          [("content-type", "application/grpc"), ("te", "trailers"),
                           ("grpc-timeout", "soon"), ("x-request-id", "ir"),
                           ("user-agent", agent)], grpc_frame(b"x"))
        assert resp.headers.get("grpc-status") == "13", resp.headers
        plain = h2_request(r.ports[1], "/index.html", [("x-request-id", "plain")],
                           method="GET")
        assert plain.status == "404"
    finally:
        hang.close()
    lines = by_id(stop_and_read(r))
    assert set(lines) == {"ut", "ir", "plain"}

    e = lines["ut"]
    assert (e["grpc_status"], e["flags"]) == (4, "UT,URX")
    assert (e["attempts"], e["retries"]) == (2, 1)
    assert e["endpoints"] == [hang.address, hang.address]
    assert "per-try timeout" in e["grpc_message"]

    e = lines["ir"]
    assert (e["grpc_status"], e["flags"], e["attempts"]) == (13, "IR", 0)
    assert e["user_agent"] == agent
    assert "malformed grpc-timeout" in e["grpc_message"]

    e = lines["plain"]
    assert e["path"] == "/index.html" and "service" not in e
    assert (e["http_status"], e["grpc_status"], e["grpc_message"]) == (404, None, None)
    assert e["flags"] == "NR" and e["cluster"] is None


def test_drain_ends_a_call_sd(ringlb, backends, io_backend, tmp_path):
    """A call still running when drain_timeout ends is ended by ringlb: SD, UNAVAILABLE, and its
    line is written before the process exits."""
    (b,) = backends(1)
    r = start(ringlb, tmp_path, io_backend, [cluster("c", [b])], drain_timeout="1s")
    ch = channel(r.port)
    fut = Stub(ch).slow.future(json.dumps({"id": "sd", "ms": 8000}).encode(),
                               timeout=CALL_TIMEOUT, metadata=md("sd"))
    assert harness.wait_until(lambda: b.slow.get("sd") == "running", 5.0)
    r.signal(signal.SIGTERM)
    assert fut.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()
    assert r.wait(harness.STOP_TIMEOUT) == 0
    lines = by_id([json.loads(l) for l in r.stdout_text().split("\n") if l])
    e = lines["sd"]
    assert (e["grpc_status"], e["flags"], e["method"]) == (14, "SD", "Slow")
    assert e["endpoints"] == [b.address] and e["duration_ms"] >= 1000


def test_header_list_too_large_uo(ringlb, backends, io_backend, tmp_path):
    """A request header list past proxy.max_header_list_size: RESOURCE_EXHAUSTED from ringlb,
    flagged UO, and the oversized value never makes the line pass its bound."""
    (b,) = backends(1)
    r = start(ringlb, tmp_path, io_backend, [cluster("c", [b])], max_header_list_size="4KiB")
    resp = h2_request(r.port, "/test.Echo/Unary",
                      [("content-type", "application/grpc"), ("te", "trailers"),
                       ("x-request-id", "uo"), ("user-agent", "u" * 3000),
                       ("x-big", "b" * 3000)], grpc_frame(b"x"))
    assert resp.headers.get("grpc-status") == "8", (resp.status, resp.headers, resp.reset)
    text = r.stop() == 0 and r.stdout_text()
    (line,) = [l for l in text.split("\n") if l]
    assert len(line) + 1 <= 2048
    e = json.loads(line)
    assert (e["request_id"], e["grpc_status"], e["flags"], e["attempts"]) == ("uo", 8, "UO", 0)
    assert e["user_agent"] == "u" * len(e["user_agent"]) and 0 < len(e["user_agent"]) < 3000

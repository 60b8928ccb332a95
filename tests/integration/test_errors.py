"""Statuses, metadata, deadlines and the errors ringlb itself must answer with."""
import json
import time

import grpc
import pytest

from harness import (STATUS_BY_VALUE, Stub, channel, closed_port, cluster, encode_md, md_dict,
                     wait_until)

MESSAGE = "ünïcødé ✓ 日本語 — 100% sûr, tab\tand %41 stays"
BIN_ALL = bytes(range(256))


def _status_request(code, initial, trailing, send_initial=True):
    return json.dumps({"code": code, "message": f"{MESSAGE} #{code}", "send_initial": send_initial,
                       "initial": encode_md(initial), "trailing": encode_md(trailing)}).encode()


def test_status_codes_and_metadata(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)])
    stub = Stub(channel(rl.port))
    for code in range(1, 17):
        initial = [("x-init-text", f"hello {code}, a=b; c"),
                   ("x-init-data-bin", BIN_ALL + bytes([code]))]
        trailing = [("x-trail-text", f"bye {code}"),
                    ("x-trail-data-bin", bytes([0, 255, code, 10, 13, 0]) * 40)]
        client_md = (("x-client-text", "from client"),
                     ("x-client-data-bin", b"\x00\xff\r\n" + BIN_ALL[::-1]))
        with pytest.raises(grpc.RpcError) as ei:
            stub.status.with_call(_status_request(code, initial, trailing), metadata=client_md,
                                  timeout=5)
        e = ei.value
        assert e.code() == STATUS_BY_VALUE[code], f"code {code}: got {e.code()} {e.details()!r}"
        assert e.details() == f"{MESSAGE} #{code}"
        im = md_dict(e.initial_metadata())
        assert im.get("x-init-text") == f"hello {code}, a=b; c", (code, im)
        assert im.get("x-init-data-bin") == BIN_ALL + bytes([code]), code
        # request metadata reached the backend unchanged (echoed back in its initial metadata)
        assert im.get("echo-x-client-text") == "from client", (code, im)
        assert im.get("echo-x-client-data-bin") == b"\x00\xff\r\n" + BIN_ALL[::-1], code
        tm = md_dict(e.trailing_metadata())
        assert tm.get("x-trail-text") == f"bye {code}", (code, tm)
        assert tm.get("x-trail-data-bin") == bytes([0, 255, code, 10, 13, 0]) * 40, code
    # Every status reached the client as the backend sent it; UNAVAILABLE (14) only after the
    # default retry policy's 3 attempts (one backend: each went to it).
    assert bs[0].calls["Status"] == 16 + 2


def test_trailers_only_responses(backends, ringlb):
    """No initial metadata from the backend: a trailers-only response must pass as such."""
    bs = backends(1)
    rl = ringlb([cluster("main", bs)])
    stub = Stub(channel(rl.port))
    for code in (2, 5, 14, 16):
        trailing = [("x-only-text", "t"), ("x-only-bin", b"\x00\x01\x02\xfe")]
        with pytest.raises(grpc.RpcError) as ei:
            stub.status(_status_request(code, [], trailing, send_initial=False), timeout=5)
        e = ei.value
        assert e.code() == STATUS_BY_VALUE[code]
        assert e.details() == f"{MESSAGE} #{code}"
        tm = md_dict(e.trailing_metadata())
        assert tm.get("x-only-text") == "t" and tm.get("x-only-bin") == b"\x00\x01\x02\xfe", tm
    # and OK with trailing metadata
    resp, call = stub.status.with_call(_status_request(0, [("x-i", "1")], [("x-t-bin", b"\x00")]),
                                       timeout=5)
    assert resp == b"ok" and call.code() == grpc.StatusCode.OK
    assert md_dict(call.initial_metadata()).get("x-i") == "1"
    assert md_dict(call.trailing_metadata()).get("x-t-bin") == b"\x00"


def test_client_deadline_cancels_backend(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)])
    stub = Stub(channel(rl.port))
    stub.unary(b"warm-up", timeout=5)  # connection up; measure the call only
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        stub.slow(json.dumps({"id": "d1", "ms": 1000}).encode(), timeout=0.1)
    elapsed = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
    assert elapsed < 0.2, f"DEADLINE_EXCEEDED after {elapsed:.3f}s"
    state = wait_until(lambda: bs[0].slow.get("d1") != "running" and bs[0].slow.get("d1"), 2.0)
    assert state == "cancelled", f"backend never saw the cancellation (state {state!r})"
    assert stub.unary(b"after", timeout=5) == b"after"


def test_route_timeout_without_client_deadline(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)], listeners=[{
        "cluster": "main",
        "routes": [{"prefix": "/test.Echo/Slow", "cluster": "main", "timeout": "100ms"}]}])
    stub = Stub(channel(rl.port))
    stub.unary(b"warm-up", timeout=5)
    t0 = time.monotonic()
    fut = stub.slow.future(json.dumps({"id": "r1", "ms": 1000}).encode())  # no deadline
    try:
        fut.result(timeout=3)
        pytest.fail("Slow(1s) under a 100ms route timeout succeeded")
    except grpc.FutureTimeoutError:
        fut.cancel()
        pytest.fail("no answer within 3s: route timeout not enforced (call hung)")
    except grpc.RpcError as e:
        elapsed = time.monotonic() - t0
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
        assert 0.09 <= elapsed < 0.6, f"route timeout fired after {elapsed:.3f}s"
    state = wait_until(lambda: bs[0].slow.get("r1") != "running" and bs[0].slow.get("r1"), 2.0)
    assert state == "cancelled", f"backend never saw the cancellation (state {state!r})"
    # a call that fits the route timeout still works, as do calls outside the route
    assert stub.slow(json.dumps({"id": "r2", "ms": 20}).encode()) == b"done"
    assert stub.unary(b"x") == b"x"


def test_no_endpoint_listening_is_unavailable(backends, ringlb):
    live = backends(1)
    dead = f"127.0.0.1:{closed_port()}"
    rl = ringlb([cluster("dead", [dead]), cluster("live", live)], listeners=[{
        "cluster": "dead",
        "routes": [{"prefix": "/other.", "cluster": "live"}]}])
    ch = channel(rl.port)
    stub, other = Stub(ch), Stub(ch, "other.Echo")
    assert other.unary(b"before", timeout=5) == b"before"
    for i in range(3):
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            stub.unary(b"x", timeout=5)
        elapsed = time.monotonic() - t0
        e = ei.value
        assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
        assert e.details(), "UNAVAILABLE without a grpc-message"
        assert elapsed < 1.5, f"UNAVAILABLE after {elapsed:.2f}s (connect_timeout 1s)"
    # the connection to ringlb survived; other routes still work
    assert other.unary(b"after", timeout=5) == b"after"
    assert live[0].calls["Unary"] == 2


def test_unrouted_path_is_unimplemented(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("other", bs)], listeners=[{
        "routes": [{"prefix": "/other.", "cluster": "other"}]}])  # no default cluster
    ch = channel(rl.port)
    with pytest.raises(grpc.RpcError) as ei:
        Stub(ch).unary(b"x", timeout=5)
    e = ei.value
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED, (e.code(), e.details())
    assert e.details(), "UNIMPLEMENTED without a grpc-message"
    assert bs[0].total == 0
    # the routed prefix works on the same connection
    resp, call = Stub(ch, "other.Echo").unary.with_call(b"y", timeout=5)
    assert resp == b"y" and md_dict(call.initial_metadata()).get("x-backend") == bs[0].name

"""Streaming in every direction, content verified, and 8 MiB messages."""
import hashlib
import json
import queue
import threading

from harness import MIB, Stub, channel, cluster, md_dict, pattern

N = 1000


def _proxy(backends, ringlb, n=1):
    bs = backends(n)
    rl = ringlb([cluster("main", bs)])
    return bs, Stub(channel(rl.port))


def test_server_stream_1000(backends, ringlb):
    bs, stub = _proxy(backends, ringlb)
    call = stub.server_stream(json.dumps({"id": "s", "count": N, "size": 1000}).encode(),
                              timeout=30)
    got = 0
    for i, m in enumerate(call):
        assert m == pattern(i, 1000), f"message {i} corrupted"
        got += 1
    assert got == N
    assert md_dict(call.initial_metadata()).get("x-backend") == bs[0].name
    assert bs[0].stream_state["s"] == "done"


def test_client_stream_1000(backends, ringlb):
    bs, stub = _proxy(backends, ringlb)
    msgs = [pattern(i, (i * 37) % 3000) for i in range(N)]  # sizes 0..2999, incl. empty
    h = hashlib.sha256()
    for m in msgs:
        h.update(len(m).to_bytes(8, "big"))
        h.update(m)
    resp = json.loads(stub.client_stream(iter(msgs), timeout=30))
    assert resp["count"] == N
    assert resp["bytes"] == sum(map(len, msgs))
    assert resp["sha256"] == h.hexdigest()


def test_bidi_lockstep_1000(backends, ringlb):
    """One message out, its echo back, 1000 times: proves messages flow both ways while the
    stream is open (nothing waits for end-of-stream)."""
    bs, stub = _proxy(backends, ringlb)
    q: queue.Queue = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    call = stub.bidi(requests(), timeout=60)
    try:
        for i in range(N):
            m = pattern(i, 1 + (i * 131) % 4000)
            q.put(m)
            assert next(call) == m, f"echo {i} differs"
    finally:
        q.put(None)
    assert list(call) == []


def test_bidi_pipelined_2000(backends, ringlb):
    bs, stub = _proxy(backends, ringlb)
    msgs = [pattern(i, 1 + (i * 71) % 20000) for i in range(2 * N)]
    out = list(stub.bidi(iter(msgs), timeout=60))
    assert len(out) == len(msgs)
    for i, (a, b) in enumerate(zip(out, msgs)):
        assert a == b, f"echo {i} differs"


def test_unary_8mib(backends, ringlb):
    bs, stub = _proxy(backends, ringlb)
    big = pattern(7, 8 * MIB)
    assert stub.unary(big, timeout=60) == big
    big2 = pattern(8, 8 * MIB - 5)  # not a multiple of any frame size
    assert stub.unary(big2, timeout=60) == big2


def test_stream_8mib_messages(backends, ringlb):
    bs, stub = _proxy(backends, ringlb)
    # server stream of 3 x 8 MiB
    call = stub.server_stream(json.dumps({"id": "b", "count": 3, "size": 8 * MIB}).encode(),
                              timeout=60)
    n = 0
    for i, m in enumerate(call):
        assert len(m) == 8 * MIB and m == pattern(i, 8 * MIB), f"message {i} corrupted"
        n += 1
    assert n == 3
    # bidi with 8 MiB messages interleaved with small ones
    msgs = [pattern(100, 8 * MIB), b"small", pattern(101, 8 * MIB + 1), b"", pattern(102, 3)]
    out = list(stub.bidi(iter(msgs), timeout=60))
    assert [len(x) for x in out] == [len(x) for x in msgs]
    assert out == msgs


def test_concurrent_streams_one_connection(backends, ringlb):
    """Several streams multiplexed on one connection at once, each intact."""
    bs, stub = _proxy(backends, ringlb, n=2)
    errors = []

    def worker(k):
        try:
            msgs = [pattern(k * 10000 + i, 500 + k) for i in range(300)]
            out = list(stub.bidi(iter(msgs), timeout=60))
            if out != msgs:
                errors.append(f"stream {k}: echo differs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"stream {k}: {e!r}")

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "streams hung"
    assert not errors, errors

"""No head-of-line blocking: streams stalled by flow control never hold up other calls.

One shard (`workers = 1`), so every call shares the shard's one upstream connection per endpoint
(and, in the mirror case, the client's one downstream connection). 40 stalled streams hold up to
`stream_buffer` (256 KiB) each in ringlb: more than the 8 MiB connection window. A proxy that
only hands connection window back when bytes leave its buffers stalls the whole connection.

Each test measures the normal latency of 200 unary calls first, in the same run (so the margin
scales with ASan/TSan and a loaded machine), then stalls 40 streams and runs 200 more: all must
succeed, none slower than the slowest normal call plus 100 ms. ringlb's VmRSS before and with the
stalls is printed and recorded as test properties, for information.
"""
import json
import time

import grpc

from h2_peers import BlackholeServer, H2Client, grpc_frame
from harness import Stub, channel, cluster, pattern, wait_until

STALLED = 40
UNARY = 200
MARGIN = 0.100       # seconds over the slowest baseline call
BODY = 1024          # unary request size
MSG = 64 * 1024      # streamed message size
SMALL_WINDOW = 1024  # what the stalled client advertises per stream
STALL_TIMEOUT = 20.0  # seconds for the stalls to set in
MAX_BAD = 5          # stop a unary run after this many failed or slow calls (bounded run time)
# Spelled out (today's defaults) so that a larger default window cannot hide a stall:
# STALLED x stream_buffer must exceed connection_window.
WINDOWS = {"stream_buffer": "256KiB", "connection_window": "8MiB"}
assert STALLED * 256 > 8 * 1024


def _unary_run(call, n: int, limit: float | None, timeout: float):
    """n sequential calls of call(i, body, timeout) -> problem or "". Returns (latencies, bad).
    With a limit, a call slower than it is bad too; the run stops after MAX_BAD bad calls."""
    lat, bad = [], []
    for i in range(n):
        body = pattern(i, BODY)
        t0 = time.monotonic()
        problem = call(i, body, timeout)
        dt = time.monotonic() - t0
        lat.append(dt)
        if not problem and limit is not None and dt > limit:
            problem = f"took {dt * 1000:.1f} ms, limit {limit * 1000:.1f} ms"
        if problem:
            bad.append(f"call {i}: {problem}")
            if len(bad) >= MAX_BAD:
                bad.append(f"(stopped after {i + 1} of {n} calls)")
                break
    return lat, bad


def _grpc_call(stub: Stub):
    def call(i, body, timeout):
        try:
            resp = stub.unary(body, timeout=timeout)
        except grpc.RpcError as e:
            return f"{e.code().name} {e.details()!r}"
        return "" if resp == body else f"echo differs ({len(resp)} bytes)"
    return call


def _raw_call(client: H2Client):
    def call(i, body, timeout):
        status, msgs, err = client.unary("/test.Echo/Unary", body, timeout)
        if err:
            return err
        if status != 0:
            return f"grpc-status {status}"
        return "" if msgs == [body] else f"echo differs ({[len(m) for m in msgs]})"
    return call


def _stats(lat: list[float]) -> str:
    s = sorted(lat)
    return (f"p50 {s[len(s) // 2] * 1000:.1f} ms, max {s[-1] * 1000:.1f} ms"
            if s else "no calls")


def _report(record_property, rl, before_kib: int, during_kib: int, base, loaded):
    line = (f"ringlb VmRSS {before_kib} KiB before, {during_kib} KiB with {STALLED} stalled "
            f"streams ({(during_kib - before_kib) / 1024:+.1f} MiB); unary baseline "
            f"{_stats(base)}, under stalls {_stats(loaded)}")
    print(line)
    record_property("ringlb_vmrss_kib_before", before_kib)
    record_property("ringlb_vmrss_kib_stalled", during_kib)
    record_property("summary", line)
    return line


def _stable(progress, settle: float, timeout: float):
    """Waits until progress() stops changing for `settle` seconds; returns the last value, or
    None if it still moved at the timeout."""
    end = time.monotonic() + timeout
    last, since = progress(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return last
    return None


def test_stalled_server_streams_do_not_block_unary(backends, ringlb, record_property):
    """40 server streams whose client never reads, and 200 unary calls on another client
    connection, all to the same single backend."""
    b = backends(1)[0]
    rl = ringlb([cluster("main", [b])], workers=1, **WINDOWS)
    stub = Stub(channel(rl.port))
    call = _grpc_call(stub)
    _, bad = _unary_run(call, 20, None, 5.0)  # warm-up: connections up on both sides
    assert not bad, f"warm-up failed: {bad}"
    base, bad = _unary_run(call, UNARY, None, 5.0)
    assert not bad, f"baseline calls failed: {bad}"
    limit = max(base) + MARGIN
    before_kib = rl.rss_kib()

    # Enough to stream for minutes; flow control must stop it after a few hundred KiB a stream.
    spec = lambda k: json.dumps({"id": f"s{k}", "count": 2048, "size": MSG}).encode()  # noqa: E731
    client = H2Client(rl.port, initial_window=SMALL_WINDOW, name="stalled")
    try:
        streams = [client.open("/test.Echo/ServerStream", grpc_frame(spec(k)), ack=False,
                               keep_body=False) for k in range(STALLED)]
        ids = [f"s{k}" for k in range(STALLED)]
        started = wait_until(lambda: all(b.stream_state.get(i) == "running" for i in ids)
                             and all(s.headers is not None for s in streams), STALL_TIMEOUT)
        assert started, (f"only {sum(b.stream_state.get(i) == 'running' for i in ids)} of "
                         f"{STALLED} server streams started at the backend, "
                         f"{sum(s.headers is not None for s in streams)} answered the client")
        sent = _stable(lambda: sum(b.stream_sent.get(i, 0) for i in ids), 1.0, STALL_TIMEOUT)
        assert sent is not None, "the backend kept streaming: the streams never stalled"
        stalled_kib = rl.rss_kib()

        loaded, bad = _unary_run(call, UNARY, limit, limit + 2.0)
        during_kib = max(stalled_kib, rl.rss_kib())
        line = _report(record_property, rl, before_kib, during_kib, base, loaded)

        # The stalls held all along: nothing was reset or finished to make room.
        assert client.error is None, f"stalled client connection failed: {client.error}"
        held = [s for s in streams if not s.ended and s.reset is None]
        running = [i for i in ids if b.stream_state.get(i) == "running"]
        over = [s.sid for s in streams if s.data_bytes > SMALL_WINDOW]
        assert not over, f"streams {over} got more than the {SMALL_WINDOW}-byte window"
        assert not bad, (f"{len(bad)} unary calls failed or took longer than the slowest "
                         f"baseline call + {MARGIN * 1000:.0f} ms while {STALLED} streams "
                         f"were stalled ({sent} x {MSG // 1024} KiB messages sent by the "
                         f"backend); {line}:\n  " + "\n  ".join(bad))
        assert len(held) == STALLED and len(running) == STALLED, \
            f"stalls did not hold: {len(held)} client streams open, {len(running)} backend " \
            f"streams running"
    finally:
        client.close()
    assert stub.unary(b"after", timeout=5) == b"after"
    _released(record_property, rl)


def _released(record_property, rl):
    """VmRSS once the stalled streams are gone, for information."""
    time.sleep(0.5)
    kib = rl.rss_kib()
    print(f"ringlb VmRSS {kib} KiB after the stalled streams were cancelled")
    record_property("ringlb_vmrss_kib_released", kib)


def test_unread_request_bodies_do_not_block_unary(backends, ringlb, record_property):
    """40 client streams with large bodies to a backend that never reads them, and 200 unary
    calls routed to a healthy backend, all on the same client connection."""
    healthy = backends(1)[0]
    with BlackholeServer("blackhole") as hole:
        rl = ringlb([cluster("healthy", [healthy]), cluster("hole", [hole.address])],
                    listeners=[{"cluster": "healthy",
                                "routes": [{"prefix": "/other.", "cluster": "hole"}]}],
                    workers=1, **WINDOWS)
        with H2Client(rl.port, name="shared") as client:
            call = _raw_call(client)
            _, bad = _unary_run(call, 20, None, 5.0)
            assert not bad, f"warm-up failed: {bad}"
            base, bad = _unary_run(call, UNARY, None, 5.0)
            assert not bad, f"baseline calls failed: {bad}"
            limit = max(base) + MARGIN
            before_kib = rl.rss_kib()

            body = b"".join(grpc_frame(pattern(i, MSG)) for i in range(16))  # ~1 MiB a stream
            streams = [client.open("/other.Echo/ClientStream", body) for _ in range(STALLED)]
            # Stalled: the backend has every stream, and ringlb lets the client send no more
            # on any of them (its stream windows are spent, or the connection's is).
            stalled = wait_until(lambda: len(hole.streams) == STALLED
                                 and all(client.window(s) == 0 and client.unsent(s) > 0
                                         for s in streams), STALL_TIMEOUT)
            accepted = sum(len(body) - client.unsent(s) for s in streams)
            assert stalled, (f"no stall after {STALL_TIMEOUT}s: the backend has "
                             f"{len(hole.streams)} of {STALLED} streams, windows "
                             f"{sorted(client.window(s) for s in streams)[-5:]} (largest)")
            stalled_kib = rl.rss_kib()

            loaded, bad = _unary_run(call, UNARY, limit, limit + 2.0)
            during_kib = max(stalled_kib, rl.rss_kib())
            line = _report(record_property, rl, before_kib, during_kib, base, loaded)
            line += (f"; ringlb took {accepted / 1048576:.1f} MiB of request bodies, the "
                     f"backend {sum(s.body_bytes for s in hole.streams) / 1024:.0f} KiB")

            assert client.error is None, f"client connection failed: {client.error}"
            held = [s for s in streams if not s.ended and s.reset is None and client.unsent(s)]
            assert not bad, (f"{len(bad)} unary calls failed or took longer than the slowest "
                             f"baseline call + {MARGIN * 1000:.0f} ms while {STALLED} request "
                             f"bodies were stalled; {line}:\n  " + "\n  ".join(bad))
            assert len(held) == STALLED, f"stalls did not hold: {len(held)} streams still open"
            for s in streams:
                client.reset(s)
            # the connection still works once the stalled streams are gone
            status, msgs, err = client.unary("/test.Echo/Unary", b"after", 5.0)
            assert (status, msgs, err) == (0, [b"after"], "")
            _released(record_property, rl)

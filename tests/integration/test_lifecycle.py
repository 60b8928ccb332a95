"""Start-up, graceful drain on SIGTERM, and several shards."""
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from harness import Stub, channel, cluster, md_dict, wait_until


LISTENER_CLOSE_S = 2.0  # SIGTERM -> new connections refused


def _connect_refused(port: int) -> bool:
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_sigterm_drains_in_flight_calls(backends, ringlb):
    bs = backends(2)
    rl = ringlb([cluster("main", bs)], drain_timeout="5s")
    stubs = [Stub(channel(rl.port)) for _ in range(4)]
    for s in stubs:
        s.unary(b"warm-up", timeout=5)
    futs = [stubs[i % 4].slow.future(json.dumps({"id": f"t{i}", "ms": 1000}).encode(), timeout=15)
            for i in range(100)]
    in_flight = wait_until(lambda: sum(b.active for b in bs) == 100, 3.0)
    assert in_flight, f"only {sum(b.active for b in bs)} of 100 calls reached the backends"

    t0 = time.monotonic()
    rl.signal(signal.SIGTERM)
    # The listeners close within a loop turn of the signal; the margin is for a loaded 2-core
    # CI machine (seen once: still accepting 0.5 s after SIGTERM while a sanitizer tree built).
    refused = wait_until(lambda: _connect_refused(rl.port), LISTENER_CLOSE_S, interval=0.02)
    refused_after = time.monotonic() - t0
    assert refused, f"new TCP connections still accepted {LISTENER_CLOSE_S}s after SIGTERM"

    failures = []
    for i, f in enumerate(futs):
        try:
            r = f.result(timeout=10)
            if r != b"done":
                failures.append((i, r))
        except grpc.RpcError as e:
            failures.append((i, e.code(), e.details()))
    assert not failures, f"{len(failures)} of 100 in-flight calls failed during drain: " \
                         f"{failures[:5]}"
    rc = rl.wait(10)
    assert rc is not None, "ringlb still running 10s after the drained calls finished"
    assert rc == 0, f"ringlb exit status {rc} after SIGTERM"
    assert refused_after < LISTENER_CLOSE_S
    assert all(b.slow.get(f"t{i}") == "completed" for b in bs for i in range(100)
               if f"t{i}" in b.slow)


def test_two_workers_spread_connections(backends, ringlb):
    bs = backends(2)
    rl = ringlb([cluster("main", bs)], workers=2)
    assert rl.ready_workers == 2
    stubs = [Stub(channel(rl.port, own_connection=True)) for _ in range(16)]

    def work(k):
        for j in range(20):
            payload = b"%d-%d" % (k, j)
            resp, call = stubs[k].unary.with_call(payload, timeout=5)
            assert resp == payload
            assert md_dict(call.initial_metadata()).get("x-backend") in {b.name for b in bs}
        return k

    with ThreadPoolExecutor(16) as ex:
        assert sorted(ex.map(work, range(16))) == list(range(16))
    assert sum(b.calls["Unary"] for b in bs) == 320
    for s in stubs:
        s.ch.close()
    rc = rl.stop()
    assert rc == 0, f"exit status {rc}"
    stats = rl.shard_stats()
    assert sorted(stats) == [0, 1], f"want `shard 0 stopped` and `shard 1 stopped`, got {stats}"
    conns = {k: c for k, (c, _) in stats.items()}
    calls = {k: n for k, (_, n) in stats.items()}
    assert all(c > 0 for c in conns.values()), f"a shard took no connections: {stats}"
    assert sum(conns.values()) >= 16, stats
    assert sum(calls.values()) >= 320, stats


def test_logs_and_clean_exit(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)])
    assert Stub(channel(rl.port)).unary(b"x", timeout=5) == b"x"
    assert rl.stop() == 0
    stats = rl.shard_stats()
    assert list(stats) == [0], stats
    assert stats[0][0] >= 1 and stats[0][1] >= 1, stats

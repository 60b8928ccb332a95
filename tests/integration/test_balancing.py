"""Per-call balancing over one client connection: round_robin and p2c least-request."""
import collections
from concurrent.futures import ThreadPoolExecutor

from harness import Stub, channel, cluster, md_dict


def test_round_robin_one_channel_300_calls(backends, ringlb):
    bs = backends(3)
    rl = ringlb([cluster("main", bs, lb="round_robin")])
    stub = Stub(channel(rl.port))
    seen = collections.Counter()
    for i in range(300):
        payload = b"call-%d" % i
        resp, call = stub.unary.with_call(payload, timeout=5)
        assert resp == payload
        seen[md_dict(call.initial_metadata()).get("x-backend")] += 1
    counts = {b.name: b.calls["Unary"] for b in bs}
    assert sum(counts.values()) == 300, counts
    assert dict(seen) == {k: v for k, v in counts.items() if v}, (seen, counts)
    for name, n in counts.items():
        assert 90 <= n <= 110, f"round_robin over one channel: {counts} (want 100 +- 10 each)"


def test_p2c_avoids_slow_backend(backends, ringlb):
    # b0, b1 answer in 10 ms, b2 in 100 ms: 10x slower, with enough absolute margin that a
    # loaded machine's scheduling noise does not blur it.
    bs = backends(3, delays=[0.010, 0.010, 0.100])
    rl = ringlb([cluster("main", bs, lb="p2c")])
    stub = Stub(channel(rl.port))
    stub.unary(b"warm-up", timeout=5)
    for b in bs:
        b.reset()

    def one(_):
        return stub.unary_delay(b"", timeout=10)

    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(300)))
    assert len(results) == 300
    counts = [b.calls["UnaryDelay"] for b in bs]
    assert sum(counts) == 300, counts
    fast_avg = (counts[0] + counts[1]) / 2
    # Both fast backends must share the load (a single-backend path would not)...
    assert min(counts[0], counts[1]) >= 60, f"fast backends unevenly used: {counts}"
    # ...and the slow one gets markedly fewer calls.
    assert counts[2] < fast_avg / 2, f"p2c sent {counts[2]} calls to the 10x slower backend " \
                                     f"vs {fast_avg:.0f} average on the fast ones: {counts}"

"""GET /metrics after a known mix of calls through the real binary: exact counts per cluster,
endpoint, route/method and grpc_code; each histogram's _count equals its calls; the method label
bounded by metrics.max_methods; `promtool check metrics` (Debian's prometheus package) accepts the
whole text.

One worker, so every count is this process's (the sums over shards are the renderer's unit test).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import grpc
import pytest

import dns_server
import harness
from harness import Stub, channel, cluster

PROMTOOL = "/usr/bin/promtool"
SETTLE = 10.0  # seconds for the last calls' records to reach the counters (normally at once)
EMPTY_NAME = "empty.test.local"

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, frozenset(labels.items())): value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {}
        for k, v in _LABEL.findall(m.group(3) or ""):
            labels[k] = v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        key = (m.group(1), frozenset(labels.items()))
        assert key not in out, f"sample listed twice: {line!r}"
        out[key] = float(m.group(4))
    return out


def value(samples: dict, name: str, **labels) -> float:
    """A sample's value; 0 when absent (counters by grpc_code list only the codes seen)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: dict, name: str, **labels) -> dict:
    """Every sample of `name` whose labels include `labels`: {frozenset(labels): value}."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= k[1]}


def scrape(rl) -> tuple[str, dict]:
    status, body, headers = rl.admin("/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    text = body.decode("utf-8")
    return text, parse(text)


def settled(rl, want_calls: int) -> tuple[str, dict]:
    """Scrapes until ringlb_calls_total adds up to `want_calls` (bounded), then once more."""
    end = time.monotonic() + SETTLE
    while True:
        text, s = scrape(rl)
        got = sum(series(s, "ringlb_calls_total").values())
        if got >= want_calls or time.monotonic() > end:
            return text, s
        time.sleep(0.05)


def promtool_check(text: str):
    if not shutil.which(PROMTOOL):
        pytest.fail("promtool is missing: install it with `apt-get install -y prometheus`",
                    pytrace=False)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}"
    assert (r.stdout + r.stderr).strip() == "", r.stdout + r.stderr


def histogram_counts_match(s: dict):
    """Each route/method's histogram: _count equals its calls, +Inf equals _count, and the
    buckets never decrease."""
    calls: dict = {}
    for labels, v in series(s, "ringlb_calls_total").items():
        d = dict(labels)
        key = (d["route"], d["method"])
        calls[key] = calls.get(key, 0) + v
    counts = {(dict(l)["route"], dict(l)["method"]): v
              for l, v in series(s, "ringlb_call_duration_seconds_count").items()}
    assert counts == calls
    for (route, method), n in counts.items():
        buckets = series(s, "ringlb_call_duration_seconds_bucket", route=route, method=method)
        ordered = sorted(buckets.items(),
                         key=lambda kv: float(dict(kv[0])["le"].replace("+Inf", "inf")))
        values = [v for _, v in ordered]
        assert values == sorted(values), (route, method, values)
        assert dict(ordered[-1][0])["le"] == "+Inf" and values[-1] == n, (route, method)
        assert len(values) == 15


class FlakyBackend(harness.Backend):
    """harness.Backend whose first `failures` UnaryDelay calls answer UNAVAILABLE."""

    def __init__(self, name: str, failures: int = 1):
        self.failures = failures
        super().__init__(name)

    def _unary_delay(self, req: bytes, ctx):
        with self.lock:
            fail = self.failures > 0
            self.failures -= 1 if fail else 0
        if fail:
            self._enter("UnaryDelay")
            try:
                ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: first call fails")
            finally:
                self._leave()
        return super()._unary_delay(req, ctx)


@pytest.fixture
def dns():
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    d = dns_server.DnsServer()
    yield d
    d.stop()


def start(factory, clusters, listeners=None, sections: dict | None = None, **proxy):
    """The `ringlb` fixture's factory, with extra config tables (`sections`: name -> dict)."""
    if harness.direct_mode():
        pytest.fail("/metrics needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    cfg = factory.config(clusters, listeners, **proxy)
    cfg.update(sections or {})
    r = harness.Ringlb(cfg, factory.io_backend, factory.tmp_path,
                       name=f"ringlb{len(factory.instances)}")
    factory.instances.append(r)
    return r


def code_of(fn, *args, **kw) -> grpc.StatusCode:
    try:
        fn(*args, **kw)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_metrics_count_a_known_mix_of_calls(ringlb, dns):
    good = harness.Backend("good")
    down = harness.Backend("down")
    down.fail_code = grpc.StatusCode.UNAVAILABLE
    flaky = FlakyBackend("flaky", failures=1)
    made = [good, down, flaky]
    dns.set_rcode(EMPTY_NAME, "NXDOMAIN")
    try:
        rl = start(ringlb, [
            cluster("ok", [good], retry={"attempts": 1}),
            cluster("down", [down], retry={"attempts": 1}, outlier=False),
            cluster("flaky", [flaky], retry={"attempts": 2, "budget_percent": 100}),
            {"name": "empty", "dns": EMPTY_NAME, "port": 50051, "connect_timeout": "1s"},
        ], [{"routes": [  # no default cluster: a path no route takes is UNIMPLEMENTED
            {"prefix": "/test.Echo/Slow", "cluster": "ok", "timeout": "300ms"},
            {"prefix": "/test.Echo/", "cluster": "ok"},
            {"prefix": "/other.Echo/UnaryDelay", "cluster": "flaky"},
            {"prefix": "/other.Echo/Unary", "cluster": "down"},
            {"prefix": "/other.Echo/Status", "cluster": "empty"},
        ]}], sections={"discovery": {"resolvers": [dns.address], "query_timeout": "500ms"}},
            workers=1)
        ch = channel(rl.port)
        test, other = Stub(ch), Stub(ch, "other.Echo")
        nope = ch.unary_unary("/nope.Svc/Call")
        t = 10.0
        C = grpc.StatusCode
        for _ in range(5):
            assert code_of(test.unary, b"hi", timeout=t) == C.OK
        for _ in range(2):
            assert code_of(test.status, json.dumps({"code": 5}).encode(), timeout=t) == C.NOT_FOUND
        for _ in range(3):
            assert code_of(other.unary, b"x", timeout=t) == C.UNAVAILABLE
        # The route's 300 ms timeout ends it (the client would wait 10 s): ringlb's own answer.
        assert code_of(test.slow, json.dumps({"id": "s1", "ms": 3000}).encode(),
                       timeout=t) == C.DEADLINE_EXCEEDED
        for _ in range(2):
            assert code_of(nope, b"x", timeout=t) == C.UNIMPLEMENTED
        for _ in range(2):
            assert code_of(other.status, b"{}", timeout=t) == C.UNAVAILABLE  # no endpoints
        assert code_of(other.unary_delay, b"", timeout=t) == C.OK  # UNAVAILABLE, retried, OK
        total = 5 + 2 + 3 + 1 + 2 + 2 + 1
        ch.close()

        text, s = settled(rl, total)
        promtool_check(text)
        histogram_counts_match(s)

        def calls(cluster_name, code):
            return value(s, "ringlb_cluster_calls_total", cluster=cluster_name, grpc_code=code)

        # Per cluster, by the code the client got.
        assert series(s, "ringlb_cluster_calls_total", cluster="ok") == {
            frozenset({("cluster", "ok"), ("grpc_code", "OK")}): 5,
            frozenset({("cluster", "ok"), ("grpc_code", "NOT_FOUND")}): 2,
            frozenset({("cluster", "ok"), ("grpc_code", "DEADLINE_EXCEEDED")}): 1,
        }
        assert value(s, "ringlb_cluster_calls_started_total", cluster="ok") == 8
        assert calls("down", "UNAVAILABLE") == 3
        assert len(series(s, "ringlb_cluster_calls_total", cluster="down")) == 1
        assert calls("flaky", "OK") == 1
        assert len(series(s, "ringlb_cluster_calls_total", cluster="flaky")) == 1
        assert value(s, "ringlb_cluster_retries_total", cluster="flaky", reason="status") == 1
        assert value(s, "ringlb_cluster_retries_total", cluster="ok", reason="status") == 0
        assert calls("empty", "UNAVAILABLE") == 2
        assert value(s, "ringlb_cluster_no_endpoint_picks_total", cluster="empty") == 2
        assert value(s, "ringlb_cluster_endpoints", cluster="empty") == 0
        assert value(s, "ringlb_dns_refreshes_total", cluster="empty", result="nxdomain") >= 1
        assert value(s, "ringlb_dns_refreshes_total", cluster="empty", result="ok") == 0

        # Per endpoint: attempts started and ended by what each got.
        def attempts(b, code=None):
            if code is None:
                return value(s, "ringlb_endpoint_attempts_started_total", cluster=b[0],
                             endpoint=b[1].address)
            return value(s, "ringlb_endpoint_attempts_total", cluster=b[0],
                         endpoint=b[1].address, grpc_code=code)

        g, d, f = ("ok", good), ("down", down), ("flaky", flaky)
        assert attempts(g) == 8
        assert attempts(g, "OK") == 5 and attempts(g, "NOT_FOUND") == 2
        # The deadline: ringlb's timer resets the attempt (CANCELLED), unless the backend, told
        # the time left in grpc-timeout, gave up first and answered DEADLINE_EXCEEDED itself.
        assert attempts(g, "CANCELLED") + attempts(g, "DEADLINE_EXCEEDED") == 1
        assert len(series(s, "ringlb_endpoint_attempts_total", cluster="ok")) == 3
        assert attempts(d) == 3 and attempts(d, "UNAVAILABLE") == 3
        assert attempts(f) == 2 and attempts(f, "UNAVAILABLE") == 1 and attempts(f, "OK") == 1
        for b in (g, d, f):
            lbl = {"cluster": b[0], "endpoint": b[1].address}
            assert value(s, "ringlb_endpoint_connects_total", **lbl) == 1
            assert value(s, "ringlb_endpoint_connect_failures_total", **lbl) == 0
            assert value(s, "ringlb_endpoint_connections_open", **lbl) == 1
            assert value(s, "ringlb_endpoint_calls_in_flight", **lbl) == 0
            assert value(s, "ringlb_endpoint_state", state="healthy", **lbl) == 1
            assert value(s, "ringlb_endpoint_state", state="ejected", **lbl) == 0

        # Per route and method.
        def mcalls(route, method, code):
            return value(s, "ringlb_calls_total", route=route, method=method, grpc_code=code)

        assert mcalls("/test.Echo/", "/test.Echo/Unary", "OK") == 5
        assert mcalls("/test.Echo/", "/test.Echo/Status", "NOT_FOUND") == 2
        assert mcalls("/test.Echo/Slow", "/test.Echo/Slow", "DEADLINE_EXCEEDED") == 1
        assert mcalls("/other.Echo/Unary", "/other.Echo/Unary", "UNAVAILABLE") == 3
        assert mcalls("/other.Echo/Status", "/other.Echo/Status", "UNAVAILABLE") == 2
        assert mcalls("/other.Echo/UnaryDelay", "/other.Echo/UnaryDelay", "OK") == 1
        assert mcalls("none", "other", "UNIMPLEMENTED") == 2  # unrouted paths take no label
        assert sum(series(s, "ringlb_calls_total").values()) == total
        # The deadline call took about 300 ms: not in the 0.25 s bucket, in the 0.5 s one.
        slow = {"route": "/test.Echo/Slow", "method": "/test.Echo/Slow"}
        assert value(s, "ringlb_call_duration_seconds_bucket", le="0.25", **slow) == 0
        assert value(s, "ringlb_call_duration_seconds_bucket", le="0.5", **slow) == 1
        assert 0.29 <= value(s, "ringlb_call_duration_seconds_sum", **slow) < 0.5

        # The listener: one client connection, accepted, closed by now or soon.
        lst = [dict(l)["listener"] for l in series(s, "ringlb_listener_connections_accepted_total")]
        assert len(lst) == 1
        assert value(s, "ringlb_listener_connections_accepted_total", listener=lst[0]) == 1
        assert sum(series(s, "ringlb_listener_connections_rejected_total").values()) == 0

        # The process.
        assert value(s, "ringlb_workers") == 1
        assert value(s, "ringlb_shards_answered") == 1 and value(s, "ringlb_shards_missing") == 0
        assert value(s, "ringlb_io_backend", backend=rl.io_backend) == 1
        assert value(s, "process_resident_memory_bytes") > 1 << 20
        assert value(s, "process_open_fds") > 5
        assert value(s, "process_start_time_seconds") > time.time() - 600
        assert len(series(s, "ringlb_build_info")) == 1
    finally:
        for b in made:
            b.stop()


def test_metrics_method_label_is_bounded_by_max_methods(ringlb, backends):
    (b,) = backends(1)
    rl = start(ringlb, [cluster("main", [b])], sections={"metrics": {"max_methods": 2}},
               workers=1)
    ch = channel(rl.port)
    test, other = Stub(ch), Stub(ch, "other.Echo")
    # Per shard the first two methods seen keep their names; over the merged set the busiest.
    calls = ((test.unary, 3), (other.unary, 2), (test.unary_delay, 1), (other.unary_delay, 1))
    for fn, n in calls:
        for _ in range(n):
            fn(b"", timeout=10)
    ch.close()
    text, s = settled(rl, 7)
    promtool_check(text)
    got = {dict(l)["method"]: v for l, v in series(s, "ringlb_calls_total", route="default").items()}
    assert got == {"/test.Echo/Unary": 3, "/other.Echo/Unary": 2, "other": 2}
    histogram_counts_match(s)

"""DNS discovery (c-ares): ringlb follows A / SRV names served by a scripted DNS server.

A records carry addresses only, so the A-record tests give every backend its own loopback
address 127.77.T.N (all of 127/8 is loopback on Linux), all on one port, and set `port` to it.
SRV tests use 127.0.0.1 and different ports.
"""
from __future__ import annotations

import collections
import json
import re
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

import dns_server
import harness
from harness import Stub, channel, md_dict, wait_until

NAME = "svc.test.local"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def dns():
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    d = dns_server.DnsServer()
    yield d
    d.stop()


class HostBackend(harness.Backend):
    """harness.Backend bound to host:port instead of 127.0.0.1:0 (same handlers and counters).
    harness.Backend's constructor hard-codes 127.0.0.1:0, hence this copy of its set-up."""

    def __init__(self, name: str, host: str, port: int, max_workers: int = 64):
        self.name = name
        self.host = host
        self.delay = 0.0
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.active = 0
        self.slow, self.stream_sent, self.stream_state, self.metadata = {}, {}, {}, {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=harness.SERVER_OPTIONS)
        h = grpc
        handlers = {
            "Unary": h.unary_unary_rpc_method_handler(self._unary),
            "UnaryDelay": h.unary_unary_rpc_method_handler(self._unary_delay),
            "Slow": h.unary_unary_rpc_method_handler(self._slow),
        }
        self.server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(svc, handlers) for svc in harness.SERVICES))
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(f"backend {name}: could not bind {host}:{port}")
        self.server.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
def host_backends():
    """host_backends(n, net) -> n backends on 127.77.<net>.2, .3, ... all on one port."""
    made: list[HostBackend] = []

    def make(n: int, net: int) -> list[HostBackend]:
        for attempt in range(10):
            out: list[HostBackend] = []
            try:
                first = HostBackend(f"h{net}-0", f"127.77.{net}.2", 0)
                out.append(first)
                for i in range(1, n):
                    out.append(HostBackend(f"h{net}-{i}", f"127.77.{net}.{i + 2}", first.port))
            except OSError:
                for b in out:
                    b.stop()
                continue
            made.extend(out)
            return out
        pytest.fail(f"could not bind {n} backends on 127.77.{net}.x with one common port")

    yield make
    for b in made:
        try:
            b.stop()
        except Exception:
            pass


def dns_cluster(dns_name: str, port: int | None = None, record: str = "A", name: str = "main",
                lb: str = "round_robin", **extra) -> dict:
    c = {"name": name, "lb": lb, "dns": dns_name, "record": record}
    if port is not None:
        c["port"] = port
    c["connect_timeout"] = "1s"
    c.update(extra)
    return c


def start_ringlb(factory, dns, clusters, listeners=None, discovery=None, **proxy):
    """Like the `ringlb` fixture's factory, plus a [discovery] section naming our DNS server."""
    if harness.direct_mode():
        pytest.fail("DNS discovery needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    cfg = factory.config(clusters, listeners, **proxy)
    d = {"resolvers": [dns.address], "query_timeout": "500ms"}
    d.update(discovery or {})
    cfg["discovery"] = d
    r = harness.Ringlb(cfg, factory.io_backend, factory.tmp_path,
                       name=f"ringlb{len(factory.instances)}")
    factory.instances.append(r)
    return r


class Load:
    """Client threads, each on its own connection to ringlb, making calls back to back until
    stop(). Every call is recorded as (start, end, backend or None, status code or None, details)."""

    HARD_LIMIT = 60.0  # seconds; a forgotten stop() cannot spin for ever

    def __init__(self, port: int, threads: int = 1, method: str = "unary", ms: int = 300,
                 timeout: float = 5.0):
        self.port, self.method, self.ms, self.timeout = port, method, ms, timeout
        self.lock = threading.Lock()
        self.results: list[tuple] = []
        self.stop_ev = threading.Event()
        self.end = time.monotonic() + self.HARD_LIMIT
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, idx: int):
        ch = channel(self.port)
        stub = Stub(ch)
        i = 0
        try:
            while not self.stop_ev.is_set() and time.monotonic() < self.end:
                i += 1
                t0 = time.monotonic()
                try:
                    if self.method == "slow":
                        req = json.dumps({"id": f"{idx}-{i}", "ms": self.ms}).encode()
                        _, call = self.stub_call(stub.slow, req)
                    else:
                        _, call = self.stub_call(stub.unary, b"x%d" % i)
                    rec = (t0, time.monotonic(), md_dict(call.initial_metadata()).get("x-backend"),
                           None, "")
                except grpc.RpcError as e:
                    rec = (t0, time.monotonic(), None, e.code(), e.details())
                    time.sleep(0.005)
                with self.lock:
                    self.results.append(rec)
        finally:
            ch.close()

    def stub_call(self, method, req):
        return method.with_call(req, timeout=self.timeout)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 5)
            assert not t.is_alive(), "a client thread did not finish its call"

    def snapshot(self) -> list[tuple]:
        with self.lock:
            return list(self.results)

    def errors(self) -> list[tuple]:
        return [r for r in self.snapshot() if r[3] is not None]

    def backends(self, since: float = 0.0) -> collections.Counter:
        """Backend -> calls that started at or after `since` and succeeded."""
        return collections.Counter(r[2] for r in self.snapshot() if r[3] is None and r[0] >= since)


def fmt_errors(errs: list[tuple], t_base: float, limit: int = 5) -> str:
    return f"{len(errs)} failed calls, first: " + "; ".join(
        f"[start +{e[0] - t_base:.2f}s, {e[1] - e[0]:.2f}s] {e[3]}: {e[4]!r}" for e in errs[:limit])


def ss_connections(peers: set[str]) -> set[tuple[str, str]]:
    """Established TCP connections (local, peer) whose peer is one of `peers` ("ip:port")."""
    out = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, f"ss failed: {out.stderr}"
    conns = set()
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and f[3] in peers:
            conns.add((f[2], f[3]))
    return conns


def sanitizer_report(rl) -> str:
    """The head of an ASan/UBSan report in ringlb's stderr ("" if none): the log's tail is
    mostly `publishing` lines, so the report's first frames would otherwise be cut off."""
    text = rl.stderr_text()
    m = re.search(r"==\d+==ERROR: \w+Sanitizer.*|\S+:\d+:\d+: runtime error:.*", text)
    if not m:
        return ""
    report = "\n".join(l for l in text[m.start():].splitlines() if "publishing" not in l)
    return "\n--- sanitizer report ---\n" + report[:3000]


PUBLISH_RE = re.compile(r"cluster main: publishing (\d+) endpoints")
OK_RE = r"cluster {c}: DNS {n} {t}: ok: (\d+) records?, ttl \S+; (\d+) members"


# ---------------------------------------------------------------------------------------------
# 1. A records: add one, remove one, under load
# ---------------------------------------------------------------------------------------------
def test_a_records_add_and_remove_without_failed_calls(dns, host_backends, ringlb):
    bs = host_backends(4, net=1)
    b0, b1, b2, b3 = bs
    dns.set_a(NAME, [b.host for b in bs[:3]], ttl=1)
    # ttl 1 s clamped to max_refresh: a re-query every 0.5 s. hold 0 s: strict membership.
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=b0.port, min_refresh="200ms",
                                                max_refresh="500ms", stale_after="2s",
                                                hold="0s")])
    stub = Stub(channel(rl.port))
    seen = collections.Counter()
    for i in range(60):
        _, call = stub.unary.with_call(b"a%d" % i, timeout=5)
        seen[md_dict(call.initial_metadata()).get("x-backend")] += 1
    assert sorted(seen) == sorted(b.name for b in bs[:3]) and min(seen.values()) >= 15, \
        f"60 calls over three A records: {dict(seen)}"

    # -- add a fourth record while calls flow
    t_base = time.monotonic()
    unary = Load(rl.port, threads=2)
    slow = None
    try:
        time.sleep(0.3)
        dns.set_a(NAME, [b.host for b in bs], ttl=1)
        t_add = time.monotonic()
        # TTL 1 s (the cached answer is at most 0.5 s old: max_refresh) + margin
        got = wait_until(lambda: unary.backends(t_add)[b3.name], timeout=1.0 + 0.5 + 2.5)
        assert got, f"new A record {b3.host} took no call within 4 s of the change; calls since: " \
                    f"{dict(unary.backends(t_add))}; DNS queries: {dns.queries(NAME)}"
        took = time.monotonic() - t_add

        # -- remove b1 while slow calls are in flight on it
        # 1.2 s calls: those in flight at the change outlive the refresh that drops b1.
        slow = Load(rl.port, threads=6, method="slow", ms=1200)

        def running_on_b1():
            with b1.lock:
                return [c for c, st in b1.slow.items() if st == "running"]

        in_flight = wait_until(running_on_b1, timeout=3)
        assert in_flight, "no slow call reached b1"
        dns.set_a(NAME, [b0.host, b2.host, b3.host], ttl=1)
        t_rm = time.monotonic()
        q_rm = dns.queries(NAME)
        # the next query after t_rm sees the new set; then publish
        assert wait_until(lambda: dns.queries(NAME) > q_rm, timeout=3), "no DNS query after removal"
        t_q = time.monotonic()
        time.sleep(1.0)
        n_b1 = b1.total
        time.sleep(1.0)
        n_b1_later = b1.total
    finally:
        unary.stop()
        if slow:
            slow.stop()
    errs = unary.errors() + slow.errors()
    assert not errs, fmt_errors(errs, t_base)
    with b1.lock:
        ends = {c: b1.slow.get(c) for c in in_flight}
    assert all(v == "completed" for v in ends.values()), \
        f"slow calls in flight on b1 when it left the DNS answer did not complete there: {ends}"
    finished_on_b1 = [r for r in slow.snapshot() if r[2] == b1.name and r[1] > t_rm]
    assert finished_on_b1, "no slow call that was in flight on b1 at its removal completed"
    late = [r for r in unary.snapshot() + slow.snapshot()
            if r[2] == b1.name and r[0] > t_q + 0.5]
    assert not late, (f"{len(late)} calls started > 0.5 s after the first DNS answer without b1 "
                      f"still went to b1 (first started {late[0][0] - t_q:.2f}s after it)")
    assert n_b1_later == n_b1, f"b1 got {n_b1_later - n_b1} new calls 1-2 s after the DNS answer"
    assert b0.total and b2.total and b3.total
    assert took < 4.0


# ---------------------------------------------------------------------------------------------
# 2. SRV records: ports (and weights) from the records; glue and separate target lookups
# ---------------------------------------------------------------------------------------------
def test_srv_records_ports_weights_and_target_lookups(dns, backends, ringlb):
    bs = backends(3)
    for i in range(3):
        dns.set_a(f"glue{i}.test.local", ["127.0.0.1"], ttl=5)
        dns.set_a(f"look{i}.test.local", ["127.0.0.1"], ttl=5)
    weights = [1, 1, 2]
    dns.set_srv("_grpc._tcp.glue.test.local",
                [(10, weights[i], b.port, f"glue{i}.test.local") for i, b in enumerate(bs)],
                ttl=1, glue=True)
    dns.set_srv("_grpc._tcp.look.test.local",
                [(10, 1, b.port, f"look{i}.test.local") for i, b in enumerate(bs)],
                ttl=1, glue=False)
    clusters = [
        dns_cluster("_grpc._tcp.glue.test.local", record="SRV", name="glue", min_refresh="200ms",
                    max_refresh="1s"),
        dns_cluster("_grpc._tcp.look.test.local", record="SRV", name="look", min_refresh="200ms",
                    max_refresh="1s"),
    ]
    rl = start_ringlb(ringlb, dns, clusters,
                      listeners=[{"cluster": "glue",
                                  "routes": [{"prefix": "/other.", "cluster": "look"}]}])
    glue_stub = Stub(channel(rl.port))
    look_stub = Stub(channel(rl.port), service="other.Echo")

    def spread(stub, n):
        c = collections.Counter()
        for i in range(n):
            _, call = stub.unary.with_call(b"s%d" % i, timeout=5)
            c[md_dict(call.initial_metadata()).get("x-backend")] += 1
        return c

    # The targets of the `look` name need their own A queries; give them a moment.
    wait_until(lambda: all(dns.queries(f"look{i}.test.local", "A") for i in range(3)), timeout=3)
    time.sleep(0.3)
    g = spread(glue_stub, 200)
    assert set(g) == {b.name for b in bs}, f"SRV (glue) calls: {dict(g)}"
    light = (g[bs[0].name] + g[bs[1].name]) / 2
    assert min(g[bs[0].name], g[bs[1].name]) >= 20 and g[bs[2].name] >= 1.5 * light, \
        f"SRV weights 1:1:2 not honoured over 200 calls: {dict(g)}"
    assert dns.queries("glue0.test.local") == 0, \
        "ringlb looked up an SRV target whose A record was in the additional section"

    lk = spread(look_stub, 150)
    assert set(lk) == {b.name for b in bs} and min(lk.values()) >= 35, \
        f"SRV (targets looked up separately) calls: {dict(lk)}; target A queries: " \
        f"{[dns.queries(f'look{i}.test.local', 'A') for i in range(3)]}"


# ---------------------------------------------------------------------------------------------
# 3. 12 backends behind a name that answers a rotating 8: all used, no connection churn
# ---------------------------------------------------------------------------------------------
def test_rotating_subset_uses_all_and_keeps_connections(dns, host_backends, ringlb):
    bs = host_backends(12, net=3)
    dns.set_a(NAME, [b.host for b in bs], ttl=0, rotate=8)  # 8 of 12, a different 8 each query
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=bs[0].port, min_refresh="200ms",
                                                max_refresh="200ms", hold="3s")])
    peers = {b.address for b in bs}
    t_base = time.monotonic()
    load = Load(rl.port, threads=4)
    try:
        all12 = wait_until(lambda: len(load.backends()) == 12, timeout=4)
        assert all12, f"after {dns.queries(NAME)} DNS answers of 8 of 12, calls reached only " \
                      f"{len(load.backends())} backends: {dict(load.backends())}"
        time.sleep(0.3)  # a connection to each is open
        before = ss_connections(peers)
        q0, t0 = dns.queries(NAME), time.monotonic()
        time.sleep(1.6)  # ~8 refreshes
        after = ss_connections(peers)
        q1 = dns.queries(NAME)
        second = load.backends(t0 + 0.1)
    finally:
        load.stop()
    errs = load.errors()
    assert not errs, fmt_errors(errs, t_base)
    assert q1 - q0 >= 4, f"only {q1 - q0} DNS queries in 1.6 s with a 200 ms refresh"
    assert {p for _, p in before} == peers, \
        f"ringlb had connections to {len({p for _, p in before})} of 12 backends (hold = 3s " \
        f"should keep all 12 members while each answer names 8): {sorted(before)}"
    closed = before - after
    assert not closed, (f"{len(closed)} upstream connections were closed between refreshes "
                        f"(a backend absent from one 8-of-12 answer must be held, hold = 3s): "
                        f"{sorted(closed)}")
    assert len(second) == 12, f"calls in the later window reached only {dict(second)}"
    published = [int(n) for n in PUBLISH_RE.findall(rl.stderr_text())]
    assert published and published[-1] == 12, \
        f"endpoints published (`cluster main: publishing N endpoints`): {published[-10:]}"


# ---------------------------------------------------------------------------------------------
# 4. Resolver down / failing: keep the last set; NXDOMAIN past stale_after: UNAVAILABLE
# ---------------------------------------------------------------------------------------------
def test_dns_outage_keeps_last_set_and_nxdomain_goes_stale(dns, host_backends, ringlb):
    bs = host_backends(3, net=4)
    b0, b1, b2 = bs
    dns.set_a(NAME, [b0.host, b1.host], ttl=1)
    stale = 1.0
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=b0.port, min_refresh="200ms",
                                                max_refresh="500ms", stale_after="1s",
                                                hold="1s")],
                      discovery={"query_timeout": "300ms"})
    t_base = time.monotonic()
    load = Load(rl.port, threads=2)
    try:
        assert wait_until(lambda: len(load.backends()) == 2, timeout=3), dict(load.backends())
        # -- outage: stopped (port unreachable), then no reply, then SERVFAIL, then REFUSED:
        # longer than stale_after + hold together.
        t_out = time.monotonic()
        q_out = dns.queries()
        dns.stop()
        time.sleep(0.8)
        dns.mode = "drop"
        dns.start()
        time.sleep(0.8)
        dns.mode = "SERVFAIL"
        time.sleep(0.8)
        dns.mode = "REFUSED"
        time.sleep(0.6)
        t_out_end = time.monotonic()
        during = load.backends(t_out_end - 0.6)
        q_during = dns.queries() - q_out
        assert not load.errors(), "calls failed during the DNS outage: " + \
            fmt_errors(load.errors(), t_out)
        assert during[b0.name] and during[b1.name], \
            f"last set not kept through a {t_out_end - t_out:.1f}s DNS outage (> stale_after + " \
            f"hold): calls in its last 0.6 s went to {dict(during)}"
        assert q_during >= 2, f"ringlb stopped querying during the outage ({q_during} queries)"

        # -- the server is back with a changed set
        dns.set_a(NAME, [b1.host, b2.host], ttl=1)
        dns.mode = None
        t_back = time.monotonic()
        assert wait_until(lambda: load.backends(t_back)[b2.name], timeout=3), \
            f"record change not picked up within 3 s of the DNS server recovering: " \
            f"{dict(load.backends(t_back))}"

        # -- NXDOMAIN: keep serving until stale_after, then UNAVAILABLE naming the DNS name
        dns.set_rcode(NAME, "NXDOMAIN")
        t_nx = time.monotonic()
        failed = wait_until(lambda: [r for r in load.errors() if r[0] >= t_nx],
                            timeout=stale + 2 * 0.5 + 2.5)
        t_fail = time.monotonic()
        time.sleep(0.2)
    finally:
        load.stop()
    early = [r for r in load.errors() if r[0] < t_nx + stale - 0.1]
    assert not early, "calls failed before stale_after ran out: " + fmt_errors(early, t_base)
    assert failed, f"still no failed call {t_fail - t_nx:.1f}s after NXDOMAIN (stale_after 1s)"
    first = failed[0]
    assert first[3] == grpc.StatusCode.UNAVAILABLE, f"after NXDOMAIN past stale_after: {first}"
    assert NAME in first[4], f"UNAVAILABLE details do not name the DNS name: {first[4]!r}"
    later = [r for r in load.snapshot() if r[0] > first[1] + 0.1]
    assert later and all(r[3] == grpc.StatusCode.UNAVAILABLE for r in later), \
        f"after the cluster emptied, not every call was UNAVAILABLE: " \
        f"{collections.Counter((r[2], r[3]) for r in later)}"
    assert rl.alive()


# ---------------------------------------------------------------------------------------------
# 5. Churn: snapshots swapped hundreds of times a second under 8 client threads
# ---------------------------------------------------------------------------------------------
def test_snapshot_churn_under_load(dns, host_backends, ringlb):
    bs = host_backends(4, net=5)
    h = [b.host for b in bs]
    dns.set_a(NAME, [[h[0], h[1], h[2]], [h[1], h[2], h[3]]], ttl=0, alternate=True)
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=bs[0].port, min_refresh="1ms",
                                                max_refresh="1ms", hold="0s", stale_after="5s")],
                      workers=2)
    pub0 = rl.stderr_text().count("publishing")
    q0 = dns.queries(NAME)
    t_base = time.monotonic()
    load = Load(rl.port, threads=8)
    try:
        time.sleep(3.0)
        alive = rl.alive()
    finally:
        load.stop()
    elapsed = time.monotonic() - t_base
    pubs = rl.stderr_text().count("publishing") - pub0
    queries = dns.queries(NAME) - q0
    res = load.snapshot()
    errs = load.errors()
    assert alive and rl.alive(), (f"ringlb died under snapshot churn (rc {rl.proc.poll()}) "
                                  f"after {pubs} publishes{sanitizer_report(rl)}")
    assert not errs, fmt_errors(errs, t_base) + f" (of {len(res)} calls, {pubs} publishes)"
    assert len(res) >= 200, f"only {len(res)} calls in {elapsed:.1f}s"
    used = load.backends()
    assert len(used) == 4, f"calls reached {dict(used)}"
    assert pubs >= 300, (f"only {pubs} `publishing` lines in {elapsed:.1f}s of alternating "
                         f"answers ({queries} DNS queries, min_refresh 1ms)")


# ---------------------------------------------------------------------------------------------
# 6. The first DNS answer gates readiness
# ---------------------------------------------------------------------------------------------
def test_first_answer_gates_readiness(dns, host_backends, ringlb):
    bs = host_backends(2, net=6)
    dns.set_a(NAME, [b.host for b in bs], ttl=1)
    dns.delay = 0.3  # the first answer arrives well after the listeners are up
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=bs[0].port, min_refresh="200ms",
                                                max_refresh="1s")])
    stub = Stub(channel(rl.port))
    try:
        stub.unary(b"first", timeout=5)
    except grpc.RpcError as e:
        pytest.fail(f"the first call right after `ready:` failed: {e.code()} {e.details()!r}",
                    pytrace=False)
    text = rl.stderr_text()
    ok = re.search(OK_RE.format(c="main", n=re.escape(NAME), t="A"), text)
    ready = harness.READY_RE.search(text)
    assert ok and ready and ok.start() < ready.start(), \
        "expected `cluster main: DNS svc.test.local A: ok: ...` before `ready:`"
    seen = {md_dict(stub.unary.with_call(b"n", timeout=5)[1].initial_metadata())["x-backend"]
            for _ in range(10)}
    assert seen == {b.name for b in bs}, seen


def test_no_dns_answer_ready_after_5s_and_calls_name_the_dns_name(dns, host_backends, ringlb):
    bs = host_backends(2, net=7)
    dns.set_a(NAME, [b.host for b in bs], ttl=1)
    dns.set_drop(NAME)  # no reply at all
    t0 = time.monotonic()
    rl = start_ringlb(ringlb, dns, [dns_cluster(NAME, port=bs[0].port, min_refresh="200ms",
                                                max_refresh="500ms")])
    waited = time.monotonic() - t0
    # Contract: `ready:` after the first DNS *answer*, or after 5 s without one. A query that
    # timed out is not an answer: going ready on it opens the listener with an empty cluster.
    assert 4.0 <= waited <= 8.0, (f"`ready:` after {waited:.1f}s while the DNS server never "
                                  f"answered (want ~5 s: ready waits for the first answer or 5 s)")
    stub = Stub(channel(rl.port))
    with pytest.raises(grpc.RpcError) as ei:
        stub.unary(b"no-answer", timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert NAME in (ei.value.details() or ""), \
        f"UNAVAILABLE before any DNS answer does not name the DNS name: {ei.value.details()!r}"
    dns.clear(NAME)
    t_back = time.monotonic()

    def answered():
        try:
            stub.unary(b"back", timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_until(answered, timeout=4, interval=0.05), \
        f"no successful call within 4 s of the DNS server answering again " \
        f"({dns.queries(NAME)} queries in all)"
    assert time.monotonic() - t_back < 4


# ---------------------------------------------------------------------------------------------
# 7. SRV targets are looked up as AAAA too: an IPv6-only target reaches a backend on [::1]
# ---------------------------------------------------------------------------------------------
def ipv6_loopback_reason() -> str:
    """"" when ::1 can be bound here, else why not (the test is then skipped, saying so)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"IPv6 loopback ::1 is not usable on this host ({e})"
    return ""


def test_srv_targets_looked_up_as_aaaa_reach_ipv6_backends(dns, ringlb):
    reason = ipv6_loopback_reason()
    if reason:
        pytest.skip(reason)
    made: list[HostBackend] = []
    try:
        # v6only.test.local: an AAAA record only. dual.test.local: A and AAAA, one port, with a
        # backend on each address (so both lookups of one target must be merged).
        b6 = HostBackend("v6only", "[::1]", 0)
        made.append(b6)
        d6 = d4 = None
        for _ in range(10):
            d6 = HostBackend("dual6", "[::1]", 0)
            made.append(d6)
            try:
                d4 = HostBackend("dual4", "127.0.0.1", d6.port)
                made.append(d4)
                break
            except OSError:
                continue
        assert d4 is not None, "could not bind one port on both ::1 and 127.0.0.1 in 10 tries"
        dns.set_aaaa("v6only.test.local", ["::1"], ttl=5)
        dns.set_a("dual.test.local", ["127.0.0.1"], ttl=5)
        dns.set_aaaa("dual.test.local", ["::1"], ttl=5)
        srv = "_grpc._tcp.v6.test.local"
        dns.set_srv(srv, [(10, 1, b6.port, "v6only.test.local"),
                          (10, 1, d6.port, "dual.test.local")], ttl=1, glue=False)
        rl = start_ringlb(ringlb, dns, [dns_cluster(srv, record="SRV", min_refresh="200ms",
                                                    max_refresh="1s")])
        stub = Stub(channel(rl.port))
        seen = collections.Counter()
        for i in range(90):
            _, call = stub.unary.with_call(b"v6-%d" % i, timeout=5)
            seen[md_dict(call.initial_metadata()).get("x-backend")] += 1
        lookups = {(n, t): dns.queries(n, t) for n in ("v6only.test.local", "dual.test.local")
                   for t in ("A", "AAAA")}
        assert set(seen) == {"v6only", "dual6", "dual4"} and min(seen.values()) >= 20, \
            f"90 calls over SRV targets resolved by A and AAAA lookups: {dict(seen)}; " \
            f"target queries: {lookups}"
        assert all(lookups.values()), f"each SRV target must be asked for A and AAAA: {lookups}"
        text = rl.stderr_text()
        ok = re.search(OK_RE.format(c="main", n=re.escape(srv), t="SRV"), text)
        assert ok and ok.group(2) == "3", \
            f"expected `DNS {srv} SRV: ok: 3 records ...; 3 members` in ringlb's log"
    finally:
        for b in made:
            try:
                b.stop()
            except Exception:
                pass


# ---------------------------------------------------------------------------------------------
# 8. A failed SRV target lookup fails the refresh (last set kept); NXDOMAIN removes the target
# ---------------------------------------------------------------------------------------------
def test_srv_target_lookup_failure_keeps_last_set(dns, backends, ringlb):
    b0, b1 = backends(2)
    srv = "_grpc._tcp.fail.test.local"
    t0, t1 = "t0.fail.test.local", "t1.fail.test.local"
    dns.set_a(t0, ["127.0.0.1"], ttl=1)
    dns.set_a(t1, ["127.0.0.1"], ttl=1)
    dns.set_srv(srv, [(10, 1, b0.port, t0), (10, 1, b1.port, t1)], ttl=1, glue=False)
    # hold 0: a target whose lookup counted as "no address" would leave at once; stale_after 1s:
    # the SERVFAIL spell below outlasts it, and failures must not count as empty answers.
    rl = start_ringlb(ringlb, dns, [dns_cluster(srv, record="SRV", min_refresh="200ms",
                                                max_refresh="500ms", hold="0s",
                                                stale_after="1s")],
                      discovery={"query_timeout": "300ms"})
    t_base = time.monotonic()
    load = Load(rl.port, threads=2)
    try:
        assert wait_until(lambda: len(load.backends()) == 2, timeout=4), \
            f"calls before the failure reached only {dict(load.backends())}"
        # -- t1's lookups get SERVFAIL: the refresh fails as a whole, b1 stays a member
        dns.set_rcode(t1, "SERVFAIL")
        t_fail = time.monotonic()
        q_fail = dns.queries(t1)
        time.sleep(2.0)  # several refreshes: backoff 0.25 s, 0.5 s, then 0.5 s (max_refresh)
        t_fail_end = time.monotonic()
        q_during = dns.queries(t1) - q_fail
        during = load.backends(t_fail + 0.5)
        errs = load.errors()
        assert not errs, "calls failed while an SRV target's lookup got SERVFAIL: " + \
            fmt_errors(errs, t_base)
        assert q_during >= 2, f"ringlb stopped retrying the failing target ({q_during} queries)"
        assert during[b1.name] and during[b0.name], \
            f"last good set not kept while {t1} got SERVFAIL for {t_fail_end - t_fail:.1f}s " \
            f"(hold 0s): calls went to {dict(during)}"
        text = rl.stderr_text()
        assert re.search(rf"DNS {re.escape(srv)} SRV: SRV target {re.escape(t1)} A+: .*keeping 2 "
                         rf"members", text), \
            "expected a warning naming the failed target lookup and keeping 2 members"

        # -- NXDOMAIN for t1: an answer, so b1 has no address and leaves (hold 0)
        dns.set_rcode(t1, "NXDOMAIN")
        q_nx = dns.queries(t1)
        assert wait_until(lambda: dns.queries(t1) > q_nx, timeout=3), "no lookup of t1 after NXDOMAIN"
        t_q = time.monotonic()
        time.sleep(1.2)
        late_b1 = [r for r in load.snapshot() if r[2] == b1.name and r[0] > t_q + 0.7]
        assert not late_b1, (f"{len(late_b1)} calls went to b1 more than 0.7 s after its SRV target "
                             f"answered NXDOMAIN")
        assert load.backends(t_q + 0.7)[b0.name], "b0 got no calls after t1 went away"

        # -- t1 resolves again: b1 is back
        dns.clear(t1)
        t_back = time.monotonic()
        assert wait_until(lambda: load.backends(t_back)[b1.name], timeout=3), \
            f"b1 not used within 3 s of its target resolving again: {dict(load.backends(t_back))}"
    finally:
        load.stop()
    errs = load.errors()
    assert not errs, fmt_errors(errs, t_base)
    assert rl.alive()

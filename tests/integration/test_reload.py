"""Live reload (SIGHUP): the config file is read again and applied without dropping anything.

Under a steady load from a few client threads (well under 200 calls/s): an endpoint added and
another removed, a route moved to another cluster, a listener added, the LB policy changed. No
call fails across any of it, and the connections to endpoints that stayed are the same TCP
connections before and after (ss). A bad file changes nothing and the log names
FILE:LINE:COLUMN. Every wait is for an event (a log line, a backend's counter).
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import grpc
import pytest

import harness
from harness import Stub, channel, cluster, render_config, wait_until

APPLIED = "reload: applied"
FAILED = "reload failed"
WAIT = 20.0  # generous: a loaded 2-core machine under ASan/TSan
# Where the test checks that connections are kept: no keepalive PINGs, whose timeout (500 ms) a
# starved backend can miss on a loaded machine, closing a connection for reasons of its own.
STEADY = {"keepalive": False}


def reload(r, cfg: dict | None = None, raw: str | None = None, expect: str = APPLIED) -> str:
    """Rewrites the config file in place, sends SIGHUP, waits for the next reload line."""
    before = r.log_text().count(APPLIED) + r.log_text().count(FAILED)
    r.config_path.write_text(raw if raw is not None else render_config(cfg))
    r.signal(signal.SIGHUP)
    wait_until(lambda: r.log_text().count(APPLIED) + r.log_text().count(FAILED) > before, WAIT)
    lines = [ln for ln in r.log_text().splitlines() if APPLIED in ln or FAILED in ln]
    last = lines[before]
    assert expect in last, last
    return last


def upstream_tuples(ports: set[int]) -> set[tuple[str, str]]:
    """Established TCP connections whose peer is one of `ports` (ringlb's side of its
    connections to those backends: only ringlb connects to them)."""
    out = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        local, peer = f[-2], f[-1]
        if int(peer.rsplit(":", 1)[1]) in ports:
            found.add((local, peer))
    return found


def endpoint_connects(r, cluster_name: str, endpoint: str) -> int:
    """ringlb_endpoint_connects_total for one endpoint, summed over workers, from /metrics."""
    status, body, _ = r.admin("/metrics")
    assert status == 200
    pat = re.compile(r'^ringlb_endpoint_connects_total\{cluster="%s",endpoint="%s"\} (\d+)$'
                     % (re.escape(cluster_name), re.escape(endpoint)), re.M)
    m = pat.search(body.decode())
    assert m, f"no connects counter for {cluster_name}/{endpoint} in /metrics"
    return int(m.group(1))


class Load:
    """A few client threads calling Unary in a loop (each at most ~50 calls/s) on one or more
    ports and services; every failure is kept."""

    def __init__(self, targets: list[tuple[int, str]], threads_per_target: int = 2):
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(port, svc, i), daemon=True)
                        for port, svc in targets for i in range(threads_per_target)]
        for t in self.threads:
            t.start()

    def _run(self, port: int, service: str, i: int):
        ch = channel(port)
        stub = Stub(ch, service)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                stub.unary(f"{service}-{i}-{n}".encode(), timeout=10)
                with self.lock:
                    self.ok += 1
            except grpc.RpcError as e:
                with self.lock:
                    self.failures.append(f"{service} on {port}: {e.code()}: {e.details()}")
            self.stop.wait(0.02)
        ch.close()

    def more(self, n: int):
        """Waits until n more calls have succeeded."""
        with self.lock:
            target = self.ok + n
        wait_until(lambda: self.ok >= target, WAIT)

    def finish(self) -> list[str]:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self.failures


@pytest.fixture
def load_factory():
    loads: list[Load] = []

    def make(targets, threads_per_target=2):
        ld = Load(targets, threads_per_target)
        loads.append(ld)
        return ld

    yield make
    for ld in loads:
        ld.finish()


def test_reload_under_load_drops_nothing(ringlb, backends, load_factory):
    b_stay, b_gone, b_side, b_new = backends(4)
    clusters = [cluster("main", [b_stay, b_gone], **STEADY), cluster("side", [b_side])]
    listeners = [{"cluster": "main",
                  "routes": [{"prefix": "/other.Echo/", "cluster": "main"}]}]
    r = ringlb(clusters, listeners, workers=2)
    cfg = r.config
    load = load_factory([(r.port, harness.SERVICE), (r.port, "other.Echo")])
    load.more(50)
    wait_until(lambda: b_stay.total > 0 and b_gone.total > 0, WAIT)
    kept_before = upstream_tuples({b_stay.port})
    assert kept_before, "no connection from ringlb to the endpoint that stays"
    connects_before = endpoint_connects(r, "main", b_stay.address)
    assert connects_before > 0

    # (a) an endpoint added, another removed.
    cfg["cluster"][0] = cluster("main", [b_stay, b_new], **STEADY)
    line = reload(r, cfg)
    assert "1 changed (endpoints +1 -1)" in line, line
    wait_until(lambda: b_new.total > 0, WAIT)
    load.more(20)  # calls that may have been on their way to b_gone before the swap are done
    gone = b_gone.total
    load.more(60)
    assert b_gone.total == gone, "the removed endpoint still gets new calls"

    # (b) a route moved to another cluster.
    side_before = b_side.total
    cfg["listener"][0]["routes"] = [{"prefix": "/other.Echo/", "cluster": "side"}]
    line = reload(r, cfg)
    assert "routes changed" in line, line
    wait_until(lambda: b_side.calls["Unary"] > side_before, WAIT)

    # (c) a listener added; then called.
    listens = len(harness.LISTEN_RE.findall(r.log_text()))
    cfg["listener"].append({"address": "127.0.0.1:0", "cluster": "side"})
    line = reload(r, cfg)
    assert "1 listener added" in line, line
    found = harness.LISTEN_RE.findall(r.log_text())
    assert len(found) > listens, "no `listening on` line for the new listener"
    new_port = int(found[-1][1])
    assert new_port != r.port
    side_before = b_side.total
    ch = channel(new_port)
    try:
        for i in range(5):
            Stub(ch).unary(f"new-listener-{i}".encode(), timeout=10)
    finally:
        ch.close()
    assert b_side.total >= side_before + 5  # the new listener's default cluster

    # (d) round_robin -> p2c.
    cfg["cluster"][0]["lb"] = "p2c"
    line = reload(r, cfg)
    assert "(lb)" in line, line
    load.more(50)

    failures = load.finish()
    assert failures == [], failures[:5]
    assert load.ok > 0
    kept_after = upstream_tuples({b_stay.port})
    assert kept_before <= kept_after, (
        f"connections to the endpoint that stayed were reopened: {kept_before} -> {kept_after}")
    # ringlb's own count agrees: no connect to the endpoint that stayed across four reloads.
    assert endpoint_connects(r, "main", b_stay.address) == connects_before
    assert r.alive()


def test_reload_bad_file_keeps_the_running_config(ringlb, backends, load_factory):
    b0, b1 = backends(2)
    r = ringlb([cluster("main", [b0])])
    cfg = r.config
    load = load_factory([(r.port, harness.SERVICE)])
    load.more(20)
    good = render_config(cfg)
    # A typo'd key on a known line: the error names the file, its line and column.
    bad = good.replace("[proxy]\n", "[proxy]\nworkerz = 2\n", 1)
    line = reload(r, raw=bad, expect=FAILED)
    m = re.search(re.escape(str(r.config_path)) + r":(\d+):(\d+): ", line)
    assert m, line
    assert int(m.group(1)) == 2, line  # "workerz" is on line 2
    assert "workerz" in line
    assert "still running the previous config" in line
    load.more(30)
    assert b1.total == 0
    # The old config still serves, and a good file afterwards applies.
    cfg["cluster"][0] = cluster("main", [b1])
    reload(r, cfg)
    wait_until(lambda: b1.total > 0, WAIT)
    assert load.finish() == []


def test_reload_names_settings_that_need_a_restart(ringlb, backends, load_factory):
    b0, = backends(1)
    r = ringlb([cluster("main", [b0])], workers=1)
    cfg = r.config
    cfg["proxy"]["workers"] = 2
    cfg["proxy"]["drain_timeout"] = "3s"
    line = reload(r, cfg)
    assert "needs a restart to take effect: proxy.workers" in line, line
    load = load_factory([(r.port, harness.SERVICE)])
    load.more(20)
    assert load.finish() == []


def test_reload_removed_listener_drains_its_connections(ringlb, backends):
    b0, = backends(1)
    b0.delay = 1.0  # UnaryDelay with an empty request sleeps this long
    listeners = [{"cluster": "main"}, {"address": "127.0.0.1:0", "cluster": "main"}]
    r = ringlb([cluster("main", [b0])], listeners, workers=2)
    cfg = r.config
    assert len(r.ports) == 2
    second = r.ports[1]
    ch = channel(second)
    stub = Stub(ch)
    stub.unary(b"warm", timeout=10)
    fut = stub.unary_delay.future(b"", timeout=20)
    wait_until(lambda: b0.active > 0, WAIT)
    cfg["listener"] = cfg["listener"][:1]
    line = reload(r, cfg)
    assert "0 listeners added, 1 removed" in line, line
    assert fut.result(timeout=20) == b"b0"  # the call in flight finished (UnaryDelay: name)
    ch.close()
    # No longer accepting: a new connection to the removed port is refused.
    ch2 = channel(second)
    with pytest.raises(grpc.RpcError) as e:
        Stub(ch2).unary(b"x", timeout=3, wait_for_ready=False)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch2.close()
    # The listener that stayed serves on.
    ch3 = channel(r.ports[0])
    Stub(ch3).unary(b"y", timeout=10)
    ch3.close()


def test_reload_removed_cluster_and_new_cluster(ringlb, backends, load_factory):
    b0, b1, b2 = backends(3)
    clusters = [cluster("main", [b0]), cluster("old", [b1])]
    listeners = [{"cluster": "main", "routes": [{"prefix": "/other.Echo/", "cluster": "old"}]}]
    r = ringlb(clusters, listeners, workers=2)
    cfg = r.config
    load = load_factory([(r.port, harness.SERVICE), (r.port, "other.Echo")])
    load.more(30)
    wait_until(lambda: b1.total > 0, WAIT)
    # A call in flight to the cluster about to go: it finishes under the config it started with.
    slow_ch = channel(r.port)
    slow = Stub(slow_ch, "other.Echo").slow.future(
        json.dumps({"id": "across", "ms": 1500}).encode(), timeout=20)
    wait_until(lambda: b1.slow.get("across") == "running", WAIT)
    cfg["cluster"] = [cluster("main", [b0]), cluster("fresh", [b2])]
    cfg["listener"][0]["routes"] = [{"prefix": "/other.Echo/", "cluster": "fresh"}]
    line = reload(r, cfg)
    assert "1 cluster added" in line and ", 1 removed" in line, line
    wait_until(lambda: b2.total > 0, WAIT)
    load.more(20)
    gone = b1.total
    load.more(40)
    assert b1.total == gone
    assert slow.result(timeout=20) == b"done"
    slow_ch.close()
    assert load.finish() == []


# ---------------------------------------------------------------------------------------------
# DNS clusters across a reload (the scripted DNS server of test_discovery.py)
# ---------------------------------------------------------------------------------------------
from test_discovery import dns, dns_cluster, host_backends, start_ringlb  # noqa: E402,F401


def test_reload_dns_cluster_follows_on_and_switches_source(ringlb, dns, host_backends, backends,
                                                           load_factory):
    h = host_backends(2, 41)
    port = h[0].port
    dns.set_a("svc.reload.local", [b.host for b in h], ttl=1)
    dns.set_a("svc2.reload.local", [h[1].host], ttl=1)
    s0, s1 = backends(2)
    clusters = [dns_cluster("svc.reload.local", port=port, **STEADY), cluster("side", [s0])]
    listeners = [{"cluster": "main", "routes": [{"prefix": "/other.Echo/", "cluster": "side"}]}]
    r = start_ringlb(ringlb, dns, clusters, listeners, workers=2)
    cfg = r.config
    load = load_factory([(r.port, harness.SERVICE), (r.port, "other.Echo")])
    wait_until(lambda: h[0].total > 0 and h[1].total > 0, WAIT)
    peers = {b.port for b in h}
    before = upstream_tuples(peers)
    assert before

    # The DNS cluster is unchanged: it goes on following (no new follow, the same connections).
    cfg["cluster"][1] = cluster("side", [s1])
    line = reload(r, cfg)
    assert "1 changed (endpoints +1 -1)" in line, line
    wait_until(lambda: s1.total > 0, WAIT)
    load.more(40)
    assert "no longer following" not in r.log_text()
    assert upstream_tuples(peers) >= before

    # DNS -> static: the follow stops; the static list rules.
    cfg["cluster"][0] = cluster("main", [h[0]])
    line = reload(r, cfg)
    assert "membership source" in line, line
    assert "no longer following svc.reload.local" in r.log_text()
    load.more(20)
    h1 = h[1].total
    load.more(40)
    assert h[1].total == h1, "the endpoint the static list left out still gets calls"

    # static -> DNS under another name: a new follow; its answer becomes the membership.
    cfg["cluster"][0] = dns_cluster("svc2.reload.local", port=port)
    line = reload(r, cfg)
    assert "membership source" in line, line
    wait_until(lambda: "following svc2.reload.local" in r.log_text(), WAIT)
    wait_until(lambda: h[1].total > h1, WAIT)
    load.more(20)
    h0 = h[0].total
    load.more(40)
    assert h[0].total == h0
    assert load.finish() == []


# ---------------------------------------------------------------------------------------------
# Health checks across a reload (health_backend.py)
# ---------------------------------------------------------------------------------------------
from health_backend import NOT_SERVING, SERVING, HealthBackend  # noqa: E402


def test_reload_health_checks_follow_the_clusters(ringlb, backends):
    hb = [HealthBackend("hb0"), HealthBackend("hb1")]
    try:
        b_first, = backends(1)
        hb[1].set_status(NOT_SERVING)
        r = ringlb([cluster("c", hb)], workers=2)
        cfg = r.config
        stub = Stub(channel(r.port))
        for i in range(10):
            stub.unary(b"x", timeout=10)
        assert hb[1].count("Unary") > 0  # no checks yet: both take calls

        # Checks turned on by a reload: the NOT_SERVING one is taken out.
        check = {"interval": "300ms", "timeout": "200ms", "unhealthy": 1, "healthy": 1}
        cfg["cluster"][0] = cluster("c", hb, health_check=check)
        line = reload(r, cfg)
        assert "health_check" in line, line
        wait_until(lambda: f"endpoint {hb[1].address} unhealthy" in r.log_text(), WAIT)
        wait_until(lambda: _calls_only_reach(stub, hb[0], hb[1]), WAIT)

        # A cluster inserted before it renumbers the clusters: the health verdicts that follow
        # still reach cluster c's endpoint on every shard.
        cfg["cluster"] = [cluster("first", [b_first])] + cfg["cluster"]
        line = reload(r, cfg)
        assert "1 cluster added" in line, line
        assert _calls_only_reach(stub, hb[0], hb[1])
        hb[1].set_status(SERVING)
        wait_until(lambda: f"endpoint {hb[1].address} healthy again" in r.log_text(), WAIT)
        before = hb[1].count("Unary")
        wait_until(lambda: (stub.unary(b"y", timeout=10) is not None
                            and hb[1].count("Unary") > before), WAIT)
        assert b_first.total == 0  # the listener's default is still c

        # The cluster removed: its checks stop (the backends are asked no more).
        cfg["cluster"] = [cluster("first", [b_first])]
        cfg["listener"][0]["cluster"] = "first"
        reload(r, cfg)
        wait_until(lambda: stub.unary(b"z", timeout=10) is not None and b_first.total > 0, WAIT)
        checks = hb[0].count("Check") + hb[0].count("Watch")
        stub.unary(b"w", timeout=10)
        time.sleep(1.0)  # a few check intervals: nothing may come (asserting an absence)
        assert hb[0].count("Check") + hb[0].count("Watch") == checks
        stub.ch.close()
    finally:
        for b in hb:
            b.stop()


def _calls_only_reach(stub, good, bad, n: int = 20) -> bool:
    """n calls in a row all go to `good`, none to `bad`."""
    b0, b1 = good.count("Unary"), bad.count("Unary")
    for i in range(n):
        stub.unary(b"q", timeout=10)
    return good.count("Unary") == b0 + n and bad.count("Unary") == b1

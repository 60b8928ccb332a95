"""Active gRPC health checks (grpc.health.v1) run by ringlb's control thread, against grpcio
backends that serve the Health service (health_backend.py).

What is asserted is ringlb's log (one line per change of an endpoint's health): taking the
endpoint out on the shards comes with the broadcast, and these tests will then also count the
calls each backend gets.
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import harness
from health_backend import NOT_SERVING, SERVING, HealthBackend

INTERVAL = 0.3  # seconds, as configured below
TIMEOUT = 0.2
# Log lines reach stderr through ringlb's log writer and the test polls the file: on two loaded
# cores under ASan/TSan that is well under a second; this is the allowance beyond the protocol's
# own bound.
SLACK = 1.5


def health_check(unhealthy: int = 2, healthy: int = 2, service: str = "") -> dict:
    return {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": f"{int(TIMEOUT * 1000)}ms",
            "unhealthy": unhealthy, "healthy": healthy, "service": service}


def health_cluster(name: str, endpoints: list, **check) -> dict:
    return harness.cluster(name, endpoints, health_check=health_check(**check))


def unhealthy_re(address: str) -> re.Pattern:
    return re.compile(rf"endpoint {re.escape(address)} unhealthy: (.*)")


def healthy_re(address: str) -> re.Pattern:
    return re.compile(rf"endpoint {re.escape(address)} healthy again \((.*)\)")


def log_time(text: str, pos: int) -> float:
    """Seconds (wall clock, ms resolution) of the log line holding offset `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    stamp = text[start:start + 24]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def wait_line(rl, pattern: re.Pattern, timeout: float, after: int = 0) -> re.Match | None:
    """The first match of `pattern` in ringlb's log at or past offset `after`."""
    return harness.wait_until(lambda: pattern.search(rl.log_text(), after), timeout)


@pytest.fixture
def health_backends():
    made: list = []

    def make(*args, **kw) -> HealthBackend:
        b = HealthBackend(*args, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def subprocess_backend():
    """A HealthBackend in a process of its own (it can be SIGSTOPped). Killed at teardown."""
    procs: list[subprocess.Popen] = []

    def make(name: str) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                           "health_backend.py"), name],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        procs.append(p)
        line = p.stdout.readline()  # the child prints its port first, then nothing
        m = re.match(r"port (\d+)", line)
        if not m:
            pytest.fail(f"health backend {name} printed {line!r} instead of its port")
        return p, f"127.0.0.1:{m.group(1)}"

    yield make
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(10)


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "check-only"])
def test_not_serving_out_at_once_back_after_healthy_checks(ringlb, health_backends, watch):
    """NOT_SERVING for the configured service takes the endpoint out within interval + timeout
    (at once through Watch, at the next check without it); it comes back only after `healthy`
    SERVING checks in a row. The other endpoint is never reported."""
    b0 = health_backends("b0", watch=watch)
    b1 = health_backends("b1", watch=watch)
    for b in (b0, b1):
        b.set_status(SERVING, "test.Echo")
    rl = ringlb([health_cluster("c", [b0, b1], healthy=3, service="test.Echo")])
    # Checks run and name the service: the backend counts what it was asked about.
    assert harness.wait_until(lambda: b0.services_asked["test.Echo"] >= 2, 5.0), \
        f"no checks for service test.Echo reached the backend: {dict(b0.services_asked)}"
    if watch:
        assert harness.wait_until(lambda: b0.count("Watch") >= 1, 5.0), "no Watch stream opened"
    assert not unhealthy_re(b0.address).search(rl.log_text())

    start = time.monotonic()
    b0.set_status(NOT_SERVING, "test.Echo")
    m = wait_line(rl, unhealthy_re(b0.address), INTERVAL + TIMEOUT + SLACK)
    took = time.monotonic() - start
    assert m, f"no `unhealthy` line for {b0.address} within {INTERVAL + TIMEOUT + SLACK}s"
    assert m.group(1) == ("Watch: NOT_SERVING" if watch else "NOT_SERVING"), m.group(1)
    assert took <= INTERVAL + TIMEOUT + SLACK

    back = time.monotonic()
    b0.set_status(SERVING, "test.Echo")
    h = wait_line(rl, healthy_re(b0.address), 3 * INTERVAL + TIMEOUT + SLACK, m.end())
    assert h, f"{b0.address} not reported healthy again"
    assert h.group(1) == "3 checks in a row answered SERVING", h.group(1)
    # Three checks in a row, the first at most one interval after the change: at least two
    # intervals (the checks are on a fixed cadence).
    assert time.monotonic() - back >= 2 * INTERVAL - 0.05
    text = rl.log_text()
    assert not unhealthy_re(b1.address).search(text), text
    assert len(unhealthy_re(b0.address).findall(text)) == 1, text


def test_no_health_service_is_liveness_only(ringlb, health_backends):
    """A server without grpc.health.v1 (UNIMPLEMENTED) is warned about once and kept healthy:
    it answered a gRPC call in time, which is all a check can prove without the service."""
    bare = health_backends("bare", health=False)
    checked = health_backends("checked")
    rl = ringlb([health_cluster("c", [bare, checked], unhealthy=1)])
    warn = re.compile(rf"endpoint {re.escape(bare.address)} has no grpc\.health\.v1 service "
                      r"\(UNIMPLEMENTED\)")
    assert wait_line(rl, warn, 5.0), "no UNIMPLEMENTED warning"
    # Several more checks (unhealthy = 1: a single failed one would show).
    time.sleep(4 * INTERVAL)
    text = rl.log_text()
    assert len(warn.findall(text)) == 1, "the warning is once per endpoint"
    assert not unhealthy_re(bare.address).search(text), text
    assert checked.count("Check") >= 3, "the other endpoint is checked meanwhile"


def test_refused_port_goes_unhealthy_after_threshold(ringlb, health_backends):
    """Nobody listening: each check fails at connect; `unhealthy` of them take it out, no
    sooner than (unhealthy - 1) intervals (the checks keep their cadence, no reconnect storm)."""
    live = health_backends("live")
    dead = f"127.0.0.1:{harness.closed_port()}"
    rl = ringlb([health_cluster("c", [live, dead], unhealthy=3)])
    m = wait_line(rl, unhealthy_re(dead), 2 * INTERVAL + TIMEOUT + SLACK)
    assert m, f"{dead} never reported unhealthy"
    assert m.group(1).startswith("3 failed checks in a row, the last: connection closed: "
                                 "connect: Connection refused"), m.group(1)
    # The first check ran as the control thread started, just before `ready:`; the third one
    # two intervals later.
    text = rl.log_text()
    ready = re.search(r"ready: ", text)
    took = log_time(text, m.start()) - log_time(text, ready.start())
    assert 2 * INTERVAL - 0.05 <= took <= 2 * INTERVAL + SLACK, took


def test_stopped_backend_times_out_then_recovers(ringlb, subprocess_backend, health_backends):
    """A SIGSTOPped server keeps its socket open and answers nothing: `unhealthy` checks time out
    and take it out; after SIGCONT `healthy` SERVING checks bring it back."""
    proc, address = subprocess_backend("stopped")
    other = health_backends("other")
    rl = ringlb([health_cluster("c", [address, other], unhealthy=2, healthy=2)])
    assert harness.wait_until(lambda: other.count("Check") >= 2, 5.0)
    mark = len(rl.log_text())
    stopped_at = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        m = wait_line(rl, unhealthy_re(address), 2 * INTERVAL + TIMEOUT + SLACK, mark)
        took = time.monotonic() - stopped_at
        assert m, f"stopped backend {address} not reported unhealthy"
        assert m.group(1) == f"2 failed checks in a row, the last: no answer within " \
                             f"{int(TIMEOUT * 1000)}ms", m.group(1)
        # Two checks had to time out: the second starts an interval after the first.
        assert took >= INTERVAL + TIMEOUT - 0.35, took
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    h = wait_line(rl, healthy_re(address), 2 * INTERVAL + TIMEOUT + SLACK, m.end())
    assert h, f"{address} not reported healthy again after SIGCONT"
    assert h.group(1) == "2 checks in a row answered SERVING", h.group(1)
    assert not unhealthy_re(other.address).search(rl.log_text())


def test_dns_cluster_endpoints_follow_the_published_set(ringlb, health_backends):
    """A DNS (SRV) cluster: the checker follows each published set: a new member is checked
    from its first appearance, a member that left is checked no more."""
    import dns_server
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    if harness.direct_mode():
        pytest.fail("DNS discovery needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    b0, b1, b2 = (health_backends(f"d{i}") for i in range(3))
    b2.set_status(NOT_SERVING)
    name = "_grpc._tcp.health.test.local"
    with dns_server.DnsServer() as dns:
        dns.set_a("t.test.local", ["127.0.0.1"], ttl=5)
        dns.set_srv(name, [(10, 1, b.port, "t.test.local") for b in (b0, b1)], ttl=1)
        c = {"name": "main", "dns": name, "record": "SRV", "min_refresh": "200ms",
             "max_refresh": "1s", "hold": "0s", "connect_timeout": "1s",
             "health_check": health_check()}
        cfg = ringlb.config([c])
        cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "500ms"}
        rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-dns")
        ringlb.instances.append(rl)
        assert harness.wait_until(lambda: b0.count("Check") >= 2 and b1.count("Check") >= 2, 5.0)
        assert b2.count("Check") == 0
        b1.set_status(NOT_SERVING)
        assert wait_line(rl, unhealthy_re(b1.address), INTERVAL + TIMEOUT + SLACK)

        dns.set_srv(name, [(10, 1, b.port, "t.test.local") for b in (b0, b2)], ttl=1)
        m = wait_line(rl, unhealthy_re(b2.address), 1.0 + INTERVAL + TIMEOUT + SLACK)
        assert m, "the new member (NOT_SERVING from the start) was not checked"
        # b1 left the set: its checks stop (one may have been in flight).
        left = b1.count("Check")
        time.sleep(4 * INTERVAL)
        assert b1.count("Check") <= left + 1, "checks go on for an endpoint that left"
        assert b0.count("Check") >= 3
        assert not unhealthy_re(b0.address).search(rl.log_text())

"""Readiness with a slow DNS server: ringlb binds its listener at once but serves only after
the first DNS answer, so a client that connects early waits and then gets OK, never
UNAVAILABLE for a cluster that is merely not resolved yet."""
from __future__ import annotations

import time

import grpc
import pytest

import dns_server
import harness
from harness import Stub, channel, md_dict

NAME = "svc.test.local"
FIRST_DELAY = 1.5  # seconds the DNS server holds its first answer


@pytest.fixture
def dns():
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    d = dns_server.DnsServer()
    yield d
    d.stop()


def test_early_client_waits_for_first_dns_answer(backends, ringlb, dns):
    if harness.direct_mode():
        pytest.fail("readiness needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    bs = backends(1)
    dns.set_a(NAME, ["127.0.0.1"], ttl=30)
    dns.first_delay = FIRST_DELAY
    cl = {"name": "main", "lb": "round_robin", "dns": NAME, "record": "A", "port": bs[0].port,
          "connect_timeout": "1s"}
    cfg = ringlb.config([cl])
    # A query timeout longer than the delay: the first answer is the one that counts.
    cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "4s"}
    rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-ready",
                        wait_ready=False)
    ringlb.instances.append(rl)

    port = rl.wait_listening()
    t_listen = time.monotonic()
    stub = Stub(channel(port))
    fut = stub.unary.future(b"early", timeout=15)
    # The point of the test: the call is on its way before ringlb is ready to serve it.
    assert not harness.READY_RE.search(rl.log_text()), \
        "ringlb was ready before the early call was sent: the DNS delay did not hold it"

    # ready: must come only after the held answer, and well before ringlb's own 5 s fallback.
    seen = harness.wait_until(lambda: harness.READY_RE.search(rl.log_text()), 10.0, 0.005)
    t_ready = time.monotonic()
    assert seen, "no `ready:` line within 10s of `listening on`"
    assert dns.log, "ringlb sent no DNS query"
    t_query = dns.log[0][0]
    assert t_ready - t_query >= FIRST_DELAY - 0.05, \
        (f"`ready:` {t_ready - t_query:.3f}s after the first query, before the DNS answer "
         f"(held {FIRST_DELAY}s)")
    assert t_ready - t_query < FIRST_DELAY + 2.5, \
        f"`ready:` only {t_ready - t_query:.3f}s after the first query: not on the answer"
    log = rl.log_text()
    assert log.index("listening on") < seen.start(), "`ready:` before `listening on`"

    try:
        resp = fut.result(timeout=15)
    except grpc.RpcError as e:
        pytest.fail(f"the early call failed: {e.code()} {e.details()!r} (t+"
                    f"{time.monotonic() - t_listen:.2f}s after listening)", pytrace=False)
    assert resp == b"early"
    assert bs[0].calls["Unary"] == 1
    assert dns.queries(NAME, "A") >= 1

    # the io backend check the harness does for ringlbs it waits on itself
    rl.wait_ready()
    resp, call = stub.unary.with_call(b"later", timeout=5)
    assert resp == b"later" and md_dict(call.initial_metadata()).get("x-backend") == bs[0].name

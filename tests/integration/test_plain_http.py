"""A plain HTTP/2 request (not gRPC) that ringlb cannot deliver gets a plain HTTP answer: the
status that says what went wrong (404 no route, 503 no endpoint, 504 timeout, 502 backend
reset) and a text/plain body that says why; never a gRPC-shaped answer it cannot read."""
from __future__ import annotations

import pytest

from harness import closed_port, cluster
from raw_h2 import RawH2Backend, h2_request

PLAIN = [("content-type", "text/plain; charset=utf-8")]


@pytest.fixture
def raw_backend():
    made = []

    def make(mode: str) -> RawH2Backend:
        b = RawH2Backend(mode)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def check_plain_error(r, status: str, words: tuple[str, ...]):
    ctype = r.headers.get("content-type", "")
    assert r.ended, f"no complete answer (reset {r.reset}, goaway {r.goaway}, {r.headers})"
    assert r.status == status, f"want HTTP {status}, got {r.status}: {r.headers}"
    assert "grpc" not in ctype.lower(), \
        f"plain request answered with content-type {ctype!r} (HTTP {r.status})"
    assert ctype.startswith("text/plain"), f"want a text/plain body, content-type {ctype!r}"
    body = r.body.decode("utf-8", errors="replace")
    assert body.strip(), f"HTTP {r.status} with an empty body: nothing says why"
    assert any(w in body.lower() for w in words), \
        f"HTTP {r.status} body does not say why (want one of {words}): {body!r}"


def test_no_route_is_404(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("other", bs)], listeners=[{
        "routes": [{"prefix": "/other.", "cluster": "other"}]}])  # no default cluster
    r = h2_request(rl.port, "/nowhere/at/all", headers=PLAIN, body=b"hello", timeout=10)
    check_plain_error(r, "404", ("route",))
    assert bs[0].total == 0


def test_no_endpoint_listening_is_503(ringlb):
    rl = ringlb([cluster("dead", [f"127.0.0.1:{closed_port()}"])])
    r = h2_request(rl.port, "/index.html", headers=PLAIN, body=b"hello", timeout=10)
    check_plain_error(r, "503", ("dead", "connect", "endpoint", "unavailable"))


def test_route_timeout_is_504(raw_backend, ringlb):
    rb = raw_backend("hang")
    rl = ringlb([cluster("main", [rb.address])], listeners=[{
        "cluster": "main", "routes": [{"prefix": "/", "cluster": "main", "timeout": "200ms"}]}])
    r = h2_request(rl.port, "/slow", headers=PLAIN, body=b"hello", timeout=10)
    check_plain_error(r, "504", ("timeout", "deadline", "timed out"))
    assert r.elapsed < 3.0, f"504 after {r.elapsed:.3f}s (route timeout 200 ms)"
    assert rb.got_request.is_set()


def test_backend_reset_is_502(raw_backend, ringlb):
    rb = raw_backend("reset")
    rl = ringlb([cluster("main", [rb.address])])
    r = h2_request(rl.port, "/reset-me", headers=PLAIN, body=b"hello", timeout=10)
    check_plain_error(r, "502", ("reset", "upstream", "backend"))
    assert rb.got_request.is_set()

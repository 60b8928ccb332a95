"""TLS on both sides of ringlb (TLS_CONTRACT.md): listeners that terminate TLS (and verify client
certificates), clusters that speak TLS to their backends (and present a client certificate).

Real ringlb, real grpcio clients and backends (grpc.ssl_channel_credentials /
grpc.ssl_server_credentials), and Python's ssl module where a test needs to see or steer the
handshake itself (ALPN, SNI, the served certificate's serial, the TLS version, the alert a client
sends). The certificates come from tls_certs.py (openssl CLI, once per run).

Every refusal is checked three ways: the client fails, ringlb's stderr has the contract's line
(`tls: listener NAME peer IP:PORT: handshake failed: REASON` or
`tls: cluster NAME endpoint IP:PORT: handshake failed: REASON`), and the failure counters on
/metrics moved. Where the client's own port is known (Python ssl clients) the line is found by it.

Note on grpcio clients: python3-grpcio (Debian) runs its TLS on OpenSSL through memory BIOs and
closes the socket when its certificate check fails without sending the alert; ringlb then sees
the connection end inside the handshake. The alert texts (`peer sent alert: unknown CA` ...) are
therefore checked with Python ssl clients, which do send them.
"""
from __future__ import annotations

import collections
import json
import re
import shutil
import socket
import ssl
import threading
import time
from concurrent import futures

import grpc
import pytest

import harness
from harness import Stub, channel, cluster, wait_until
from test_access_log import by_id, md, stop_and_read
from test_metrics import _LABEL, _LINE, series
from test_reload import FAILED, reload
from tls_certs import CLIENT_URI, Cert, certs, serial_of_der  # noqa: F401 (certs: fixture)

WAIT = 20.0          # generous: a loaded 2-core machine under ASan/TSan
CALL_TIMEOUT = 10.0
NAME = "ringlb.test"       # the listener certificate's DNS name (tls_certs.SERVER_SAN)
BACKEND_NAME = "backend.test"
HS_FAILED = "handshake failed: "

DOWN_HANDSHAKES = "ringlb_downstream_tls_handshakes_total"
DOWN_FAILURES = "ringlb_downstream_tls_failures_total"
UP_FAILURES = "ringlb_upstream_tls_failures_total"


# ---------------------------------------------------------------------------------------------
# ringlb, logs, metrics
# ---------------------------------------------------------------------------------------------
def start(factory, clusters, listeners=None, log=None, **proxy) -> harness.Ringlb:
    """The `ringlb` fixture's factory, with a [log] table when given."""
    if harness.direct_mode():
        pytest.fail("TLS tests need the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    cfg = factory.config(clusters, listeners, **proxy)
    if log is not None:
        cfg["log"] = log
    r = harness.Ringlb(cfg, factory.io_backend, factory.tmp_path,
                       name=f"ringlb{len(factory.instances)}")
    factory.instances.append(r)
    return r


def listener_tls(cert: Cert, **extra) -> dict:
    d = {"cert": str(cert.cert), "key": str(cert.key)}
    d.update(extra)
    return d


def lines_with(r, *parts: str, since: int = 0) -> list[str]:
    """ringlb's stderr lines (from offset `since`) that contain every one of `parts`."""
    return [ln for ln in r.stderr_text()[since:].splitlines() if all(p in ln for p in parts)]


def wait_line(r, *parts: str, since: int = 0) -> str:
    """The first stderr line from `since` with every one of `parts`; fails (with the log's tail)
    if none comes within WAIT."""
    wait_until(lambda: lines_with(r, *parts, since=since), WAIT, interval=0.02)
    found = lines_with(r, *parts, since=since)
    assert found, (f"no line with all of {parts!r} in ringlb's stderr within {WAIT}s; "
                   f"its tail:\n{r.stderr_text()[since:][-3000:]}")
    return found[0]


def scrape(r) -> tuple[str, dict]:
    """/metrics as test_metrics.scrape does, except that a sample listed twice is summed:
    listeners are labelled by their configured address, and the tests here run several on
    127.0.0.1:0 (each TLS counter is summed over listeners anyway)."""
    status, body, _ = r.admin("/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
    text = body.decode("utf-8")
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        key = (m.group(1), frozenset(_LABEL.findall(m.group(3) or "")))
        out[key] = out.get(key, 0.0) + float(m.group(4))
    return text, out


def counter(r, name: str, **labels) -> float:
    """Sum over every series of `name` whose labels include `labels` (0 if none)."""
    _, s = scrape(r)
    return sum(series(s, name, **labels).values())


def counters(r) -> dict[str, dict]:
    """Every TLS counter, by name, then by its labels (for failure messages)."""
    _, s = scrape(r)
    return {n: {",".join(f"{k}={v}" for k, v in sorted(l)): x
                for l, x in series(s, n).items()}
            for n in (DOWN_HANDSHAKES, DOWN_FAILURES, UP_FAILURES)}


def wait_counter_above(r, name: str, before: float, timeout: float = WAIT, **labels) -> float:
    """Waits (bounded) for the counter to pass `before`; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        v = counter(r, name, **labels)
        if v > before or time.monotonic() > end:
            return v
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------
def tls_channel(port: int, ca: Cert | None, name: str = NAME,
                client: Cert | None = None) -> grpc.Channel:
    """A grpcio TLS channel of its own (like harness.channel) to 127.0.0.1:port, trusting `ca`,
    expecting (and sending as SNI) `name`, presenting `client` if given."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem if ca else None,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None)
    opts = [
        ("grpc.max_send_message_length", harness.MAX_MSG),
        ("grpc.max_receive_message_length", harness.MAX_MSG),
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
        ("grpc.use_local_subchannel_pool", 1),
        ("ringlb.test.channel", next(harness._channel_seq)),
        ("grpc.ssl_target_name_override", name),
    ]
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=opts)


def call_code(fn, *args, **kw) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args, **kw)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def ssl_context(ca: Cert | None = None, client: Cert | None = None, alpn=("h2",),
                max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A Python ssl client context. ca=None: no verification at all (to see what is served)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca.cert))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class Handshake:
    """One Python ssl handshake with 127.0.0.1:port: what came of it."""

    def __init__(self, port: int, ctx: ssl.SSLContext, sni: str | None = NAME):
        self.error: Exception | None = None
        self.serial = self.version = self.alpn = None
        s = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
        self.local_port = s.getsockname()[1]
        try:
            t = ctx.wrap_socket(s, server_hostname=sni)
            try:
                self.version = t.version()
                self.alpn = t.selected_alpn_protocol()
                self.serial = serial_of_der(t.getpeercert(binary_form=True))
            finally:
                t.close()
        except (ssl.SSLError, OSError) as e:
            self.error = e
        finally:
            s.close()

    @property
    def peer(self) -> str:
        """How ringlb names this client in its log."""
        return f"peer 127.0.0.1:{self.local_port}: "

    def __repr__(self):
        return (f"Handshake(local port {self.local_port}, error={self.error!r}, "
                f"serial={self.serial and hex(self.serial)}, version={self.version}, "
                f"alpn={self.alpn})")


def served_serial(port: int, sni: str | None = NAME) -> int:
    hs = Handshake(port, ssl_context(), sni)
    assert hs.error is None, hs
    return hs.serial


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
class TlsBackend(harness.Backend):
    """harness.Backend (Unary, Status, ...) on a TLS port (grpc.ssl_server_credentials).
    Records, per call, the client certificate's identity grpc saw (None without one)."""

    def __init__(self, name: str, cert: Cert, client_ca: Cert | None = None,
                 require_client_auth: bool = False):
        # harness.Backend's __init__ binds a plaintext port; the same state, a TLS port here.
        self.name = name
        self.delay = 0.0
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.active = 0
        self.slow, self.stream_sent, self.stream_state, self.metadata = {}, {}, {}, {}
        self.identities: list = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                                  options=harness.SERVER_OPTIONS)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary_seen),
            "Status": grpc.unary_unary_rpc_method_handler(self._status),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
        }
        self.server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(svc, handlers) for svc in harness.SERVICES))
        creds = grpc.ssl_server_credentials(
            [(cert.key_pem, cert.cert_pem)],
            root_certificates=client_ca.cert_pem if client_ca else None,
            require_client_auth=require_client_auth)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        if not self.port:
            raise RuntimeError(f"TLS backend {name}: could not bind")
        self.server.start()

    def _unary_seen(self, req: bytes, ctx):
        ac = ctx.auth_context()
        with self.lock:
            self.identities.append((tuple(ac.get("transport_security_type") or ()),
                                    tuple(ac.get("x509_subject_alternative_name") or ())))
        return self._unary(req, ctx)


class NoAlpnBackend:
    """A TLS server (Python ssl, a certificate ringlb trusts) that knows ALPN http/1.1 only: the
    handshake completes without an ALPN protocol, which ringlb must refuse."""

    def __init__(self, cert: Cert):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert.cert), str(cert.key))
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.handshakes: list = []   # ALPN selected per completed handshake (None: none)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(5)
        try:
            t = self.ctx.wrap_socket(conn, server_side=True)
            with self.lock:
                self.handshakes.append(t.selected_alpn_protocol())
            t.recv(1)  # until ringlb closes
            t.close()
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def tls_backends():
    made = []

    def make(n: int, cert: Cert, client_ca: Cert | None = None,
             require_client_auth: bool = False) -> list[TlsBackend]:
        out = []
        for i in range(n):
            b = TlsBackend(f"t{len(made)}", cert, client_ca, require_client_auth)
            made.append(b)
            out.append(b)
        return out

    yield make
    for b in made:
        b.stop()


def spread(bs, n: int, calls: int) -> list[int]:
    """Round robin over one client channel: every backend within 25% of its share."""
    counts = [b.calls["Unary"] for b in bs]
    assert sum(counts) == calls, counts
    share = calls / n
    for c in counts:
        assert 0.75 * share <= c <= 1.25 * share, f"round_robin: {counts} (want {share:.0f} each)"
    return counts


# ---------------------------------------------------------------------------------------------
# Calls that go through
# ---------------------------------------------------------------------------------------------
def test_tls_listener_to_plain_backends(ringlb, backends, certs):
    bs = backends(3)
    r = start(ringlb, [cluster("c", bs)], [{"cluster": "c", "tls": listener_tls(certs.server)}])
    ch = tls_channel(r.port, certs.ca)
    stub = Stub(ch)
    for i in range(60):
        assert stub.unary(f"tls-{i}".encode(), timeout=CALL_TIMEOUT) == f"tls-{i}".encode()
    ch.close()
    spread(bs, 3, 60)
    assert wait_counter_above(r, DOWN_HANDSHAKES, 0, result="full") >= 1, counters(r)
    assert counter(r, DOWN_HANDSHAKES, result="failed") == 0, counters(r)
    assert counter(r, DOWN_FAILURES) == 0, counters(r)

    # TLS 1.3 (what grpcio and Python offer by default) and TLS 1.2, both with ALPN h2.
    hs13 = Handshake(r.port, ssl_context(certs.ca))
    assert (hs13.error, hs13.version, hs13.alpn, hs13.serial) == (
        None, "TLSv1.3", "h2", certs.server.serial), hs13
    hs12 = Handshake(r.port, ssl_context(certs.ca, max_version=ssl.TLSVersion.TLSv1_2))
    assert (hs12.error, hs12.version, hs12.alpn, hs12.serial) == (
        None, "TLSv1.2", "h2", certs.server.serial), hs12
    # A plaintext client on the TLS listener is not served.
    plain = channel(r.port)
    code, details = call_code(Stub(plain).unary, b"plain", timeout=CALL_TIMEOUT)
    plain.close()
    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _h2_session(port: int, ctx: ssl.SSLContext, session=None) -> tuple[bool, str, object]:
    """A TLS connection that speaks HTTP/2 far enough to get ringlb's SETTINGS (and with them
    the TLS 1.3 session tickets): (session reused, TLS version, the session to resume)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
    try:
        t = ctx.wrap_socket(s, server_hostname=NAME, session=session)
        t.sendall(H2_PREFACE)
        first = t.recv(9)
        assert len(first) == 9 and first[3] == 0x4, f"no SETTINGS frame from ringlb: {first!r}"
        out = (t.session_reused, t.version(), t.session)
        t.close()
        return out
    finally:
        s.close()


def test_tls_session_resumption_is_counted(ringlb, backends, certs):
    b, = backends(1)
    r = start(ringlb, [cluster("c", [b])], [{"cluster": "c", "tls": listener_tls(certs.server)}])
    for version, name in ((None, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
        ctx = ssl_context(certs.ca, max_version=version)
        reused, got, sess = _h2_session(r.port, ctx)
        assert (reused, got) == (False, name)
        reused, got, _ = _h2_session(r.port, ctx, session=sess)
        assert (reused, got) == (True, name), f"{name}: ringlb did not resume the session"
    end = time.monotonic() + WAIT
    while counter(r, DOWN_HANDSHAKES, result="resumed") < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert (counter(r, DOWN_HANDSHAKES, result="full"),
            counter(r, DOWN_HANDSHAKES, result="resumed"),
            counter(r, DOWN_HANDSHAKES, result="failed")) == (2, 2, 0), counters(r)


def test_tls_to_backends_plain_client(ringlb, tls_backends, certs):
    bs = tls_backends(3, certs.server)
    clusters = [
        # sni names the backends' certificate.
        cluster("sni", bs, tls={"ca": str(certs.ca.cert), "sni": BACKEND_NAME}),
        # No sni, static IP endpoints: the certificate's IP SAN (127.0.0.1) is what is checked.
        cluster("ip", bs, tls={"ca": str(certs.ca.cert)}),
    ]
    listeners = [{"cluster": "sni", "routes": [{"prefix": "/other.Echo/", "cluster": "ip"}]}]
    r = start(ringlb, clusters, listeners)
    ch = channel(r.port)
    stub, other = Stub(ch), Stub(ch, "other.Echo")
    for i in range(60):
        assert stub.unary(f"up-{i}".encode(), timeout=CALL_TIMEOUT) == f"up-{i}".encode()
    spread(bs, 3, 60)
    for i in range(30):
        assert other.unary(f"ip-{i}".encode(), timeout=CALL_TIMEOUT) == f"ip-{i}".encode()
    ch.close()
    spread(bs, 3, 90)
    # Every call came over TLS, and ringlb presented no client certificate.
    for b in bs:
        assert set(b.identities) == {((b"ssl",), ())}, (b.name, set(b.identities))
    assert counter(r, UP_FAILURES) == 0, counters(r)


def test_tls_cluster_verify_false_accepts_any_certificate(ringlb, tls_backends, certs):
    b, = tls_backends(1, certs.wrong_ca_server)
    r = start(ringlb, [cluster("c", [b], tls={"verify": False, "sni": BACKEND_NAME})])
    stub = Stub(channel(r.port))
    for i in range(5):
        assert stub.unary(b"unverified", timeout=CALL_TIMEOUT) == b"unverified"
    stub.ch.close()
    assert b.calls["Unary"] == 5
    assert counter(r, UP_FAILURES) == 0, counters(r)


def test_mtls_both_sides_with_access_log(ringlb, tls_backends, certs):
    bs = tls_backends(3, certs.server, client_ca=certs.ca, require_client_auth=True)
    ca = str(certs.ca.cert)
    clusters = [cluster("c", bs, tls={"ca": ca, "sni": BACKEND_NAME,
                                      "cert": str(certs.client.cert),
                                      "key": str(certs.client.key)})]
    listeners = [
        {"cluster": "c", "tls": listener_tls(certs.server, client_ca=ca)},   # required
        {"address": "127.0.0.1:0", "cluster": "c",
         "tls": listener_tls(certs.server, client_ca=ca, client_cert="optional")},
        {"address": "127.0.0.1:0", "cluster": "c"},                           # plain
    ]
    r = start(ringlb, clusters, listeners, log={"access": "stdout"})
    assert len(r.ports) == 3, r.ports
    required, optional, plain = r.ports

    ch = tls_channel(required, certs.ca, client=certs.client)
    stub = Stub(ch)
    for i in range(60):
        assert stub.unary(b"m", timeout=CALL_TIMEOUT, metadata=md(f"m{i}")) == b"m"
    ch.close()
    spread(bs, 3, 60)
    for name, chan in (("opt-none", tls_channel(optional, certs.ca)),
                       ("opt-cert", tls_channel(optional, certs.ca, client=certs.client)),
                       ("plain", channel(plain))):
        for i in range(3):
            assert Stub(chan).unary(b"o", timeout=CALL_TIMEOUT,
                                    metadata=md(f"{name}{i}")) == b"o"
        chan.close()
    # Every call reached its backend over TLS with ringlb's client certificate.
    for b in bs:
        assert set(b.identities) == {((b"ssl",), (CLIENT_URI.encode(),))}, (b.name,
                                                                         set(b.identities))
    assert sum(b.calls["Unary"] for b in bs) == 69

    lines = by_id(stop_and_read(r))
    want = {f"m{i}" for i in range(60)} | {f"{n}{i}" for n in ("opt-none", "opt-cert", "plain")
                                           for i in range(3)}
    assert set(lines) == want, sorted(set(lines) ^ want)
    wrong = []
    for rid, e in sorted(lines.items()):
        got = (e.get("tls", "(absent)"), e.get("peer_identity", "(absent)"), e["grpc_status"])
        if rid.startswith("m") or rid.startswith("opt-cert"):
            expect = ("TLSv1.3", CLIENT_URI, 0)
        elif rid.startswith("opt-none"):
            expect = ("TLSv1.3", None, 0)
        else:  # a cleartext listener's lines carry neither field
            expect = ("(absent)", "(absent)", 0)
        if got != expect:
            wrong.append(f"{rid}: (tls, peer_identity, grpc_status) = {got}, want {expect}: "
                         f"{json.dumps(e, sort_keys=True)}")
    assert not wrong, f"{len(wrong)} of {len(lines)} access log lines:\n" + "\n".join(wrong[:4])


# ---------------------------------------------------------------------------------------------
# Refusals on the listener side
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def front(ringlb, backends, certs):
    """ringlb with four TLS listeners in front of one plain backend:
    ports[0] the good certificate, [1] the expired one, [2] client certificates required
    (client_ca = the CA), [3] min_version 1.3."""
    b, = backends(1)
    ca = str(certs.ca.cert)
    listeners = [
        {"cluster": "c", "tls": listener_tls(certs.server)},
        {"address": "127.0.0.1:0", "cluster": "c", "tls": listener_tls(certs.expired)},
        {"address": "127.0.0.1:0", "cluster": "c", "tls": listener_tls(certs.server,
                                                                       client_ca=ca)},
        {"address": "127.0.0.1:0", "cluster": "c", "tls": listener_tls(certs.server,
                                                                       min_version="1.3")},
    ]
    r = start(ringlb, [cluster("c", [b])], listeners)
    assert len(r.ports) == 4, r.ports
    r.backend = b
    return r


class Findings:
    """What a refusal test found wrong, all of it: one run names every way the binary differs
    from the contract (the client's outcome, the log line, each counter) instead of the first."""

    def __init__(self, r):
        self.r = r
        self.problems: list[str] = []

    @property
    def wait(self) -> float:
        """WAIT; once something did not come within it, a short wait for what follows (the
        process had its time; the watchdog should not end a run that is only reporting)."""
        return 2.0 if self.problems else WAIT

    def check(self, ok: bool, what: str):
        if not ok:
            self.problems.append(what)

    def line(self, *parts: str, since: int = 0) -> str | None:
        """A stderr line with every one of `parts` (waited for, bounded)."""
        wait_until(lambda: lines_with(self.r, *parts, since=since), self.wait, interval=0.02)
        found = lines_with(self.r, *parts, since=since)
        if not found:
            tail = "\n    ".join(self.r.stderr_text()[since:].splitlines()[-8:])
            self.problems.append(f"no stderr line with all of {parts!r}; the lines since:\n    "
                                 f"{tail}")
            return None
        return found[0]

    def moved(self, name: str, before: float, **labels):
        after = wait_counter_above(self.r, name, before, timeout=self.wait, **labels)
        self.check(after > before, f"{name}{labels} did not move ({before} -> {after}); TLS "
                                   f"counters: {counters(self.r)}")

    def done(self):
        assert not self.problems, "\n".join(f"- {p}" for p in self.problems)


def _before(r) -> tuple[int, float, float]:
    return (len(r.stderr_text()), counter(r, DOWN_HANDSHAKES, result="failed"),
            counter(r, DOWN_FAILURES))


def _grpc_refused(f: Findings, port, ca, name=NAME, client=None) -> str:
    """A grpcio call on a new TLS channel: it must fail UNAVAILABLE. Returns its details."""
    ch = tls_channel(port, ca, name=name, client=client)
    code, details = call_code(Stub(ch).unary, b"refused", timeout=CALL_TIMEOUT)
    ch.close()
    f.check(code == grpc.StatusCode.UNAVAILABLE, f"grpcio client: {code}: {details}")
    return details


def _alert_seen(f: Findings, port: int, ctx_args: dict, sni: str, verify_message: str,
                alert: str):
    """A Python ssl client, TLS 1.3 then TLS 1.2, rejects ringlb's certificate (its verify
    message is `verify_message`) and sends `alert`: ringlb's line for that client names it."""
    for version in (None, ssl.TLSVersion.TLSv1_2):
        since = len(f.r.stderr_text())
        hs = Handshake(port, ssl_context(max_version=version, **ctx_args), sni=sni)
        assert isinstance(hs.error, ssl.SSLCertVerificationError), hs
        assert verify_message in hs.error.verify_message, hs
        label = "TLS 1.2" if version else "TLS 1.3"
        line = f.line("tls: listener ", hs.peer + HS_FAILED + "peer sent alert: ", since=since)
        if line is not None:
            f.check(alert.lower() in line.lower(),
                    f"{label} client sent alert `{alert}`; ringlb's line: {line}")


def test_tls_client_trusting_another_ca_is_refused(front, certs):
    r, f = front, Findings(front)
    since, failed, failures = _before(r)
    _grpc_refused(f, r.ports[0], certs.wrong_ca)
    f.line("tls: listener ", HS_FAILED, since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, failures)
    # A client that sends its alert (Python ssl): ringlb names it.
    _alert_seen(f, r.port, {"ca": certs.wrong_ca}, NAME,
                "unable to get local issuer certificate", "unknown CA")
    f.check(r.backend.total == 0, f"the backend got {r.backend.total} calls")
    f.done()


def test_tls_listener_with_expired_certificate(front, certs):
    r, f = front, Findings(front)
    since, failed, failures = _before(r)
    _grpc_refused(f, r.ports[1], certs.ca)
    f.line("tls: listener ", HS_FAILED, since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, failures)
    _alert_seen(f, r.ports[1], {"ca": certs.ca}, NAME, "certificate has expired",
                "certificate expired")
    # What is served is the expired certificate (seen without verifying).
    assert served_serial(r.ports[1]) == certs.expired.serial
    f.check(r.backend.total == 0, f"the backend got {r.backend.total} calls")
    f.done()


def test_tls_client_expecting_another_name_is_refused(front, certs):
    r, f = front, Findings(front)
    since, failed, failures = _before(r)
    # grpcio checks the name after the handshake and then closes the connection.
    _grpc_refused(f, r.port, certs.ca, name="nothere.test")
    _alert_seen(f, r.port, {"ca": certs.ca}, "nothere.test", "Hostname mismatch",
                "bad certificate")
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, failures)
    f.check(r.backend.total == 0, f"the backend got {r.backend.total} calls")
    f.done()


def test_tls_client_without_required_certificate(front, certs):
    r, f = front, Findings(front)
    since, failed, _ = _before(r)
    nocert = counter(r, DOWN_FAILURES, reason="no_client_cert")
    _grpc_refused(f, r.ports[2], certs.ca)
    f.line("tls: listener ", HS_FAILED + "no client certificate", since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, nocert, reason="no_client_cert")
    # Python ssl, no certificate: the line names its port.
    since = len(r.stderr_text())
    hs = Handshake(r.ports[2], ssl_context(certs.ca))
    f.line("tls: listener ", hs.peer + HS_FAILED + "no client certificate", since=since)
    # The same listener serves a client that presents the right certificate.
    ch = tls_channel(r.ports[2], certs.ca, client=certs.client)
    assert Stub(ch).unary(b"with cert", timeout=CALL_TIMEOUT) == b"with cert"
    ch.close()
    f.check(r.backend.total == 1, f"the backend got {r.backend.total} calls, not 1")
    f.done()


def test_tls_client_certificate_from_another_ca(front, certs):
    r, f = front, Findings(front)
    since, failed, _ = _before(r)
    unknown = counter(r, DOWN_FAILURES, reason="unknown_ca")
    _grpc_refused(f, r.ports[2], certs.ca, client=certs.wrong_client)
    f.line("tls: listener ", HS_FAILED + "certificate verify failed: "
           "unable to get local issuer certificate", since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, unknown, reason="unknown_ca")
    # Python ssl. (TLS 1.3: the client's side of the handshake may end before ringlb has judged
    # its certificate, so only ringlb's line is checked.)
    since = len(r.stderr_text())
    hs = Handshake(r.ports[2], ssl_context(certs.ca, client=certs.wrong_client))
    f.line("tls: listener ", hs.peer + HS_FAILED + "certificate verify failed: "
           "unable to get local issuer certificate", since=since)
    f.check(r.backend.total == 0, f"the backend got {r.backend.total} calls")
    f.done()


def test_tls_http1_only_client_gets_no_application_protocol(front, certs):
    r, f = front, Findings(front)
    since, failed, _ = _before(r)
    no_alpn = counter(r, DOWN_FAILURES, reason="no_alpn_h2")
    hs = Handshake(r.port, ssl_context(certs.ca, alpn=("http/1.1",)))
    assert isinstance(hs.error, ssl.SSLError), hs
    assert "no application protocol" in str(hs.error).lower(), hs
    f.line("tls: listener ", hs.peer + HS_FAILED + "no ALPN h2", since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, no_alpn, reason="no_alpn_h2")
    f.done()


def test_tls_min_version_and_plaintext_refused(front, certs):
    r, f = front, Findings(front)
    since, failed, failures = _before(r)
    # min_version = "1.3": a TLS 1.2 client is refused (it is served on the default listener).
    hs = Handshake(r.ports[3], ssl_context(certs.ca, max_version=ssl.TLSVersion.TLSv1_2))
    assert isinstance(hs.error, ssl.SSLError), hs
    f.line("tls: listener ", hs.peer + HS_FAILED, since=since)
    f.moved(DOWN_HANDSHAKES, failed, result="failed")
    f.moved(DOWN_FAILURES, failures)
    ok13 = Handshake(r.ports[3], ssl_context(certs.ca))
    assert (ok13.error, ok13.version, ok13.alpn) == (None, "TLSv1.3", "h2"), ok13
    # A plaintext HTTP/2 client on a TLS listener: refused and closed.
    since = len(r.stderr_text())
    s = socket.create_connection(("127.0.0.1", r.port), timeout=CALL_TIMEOUT)
    cport = s.getsockname()[1]
    try:
        s.sendall(H2_PREFACE)
        closed = _read_until_closed(s, CALL_TIMEOUT)
    finally:
        s.close()
    f.check(closed is not None, "ringlb kept a plaintext connection on a TLS listener open")
    f.line("tls: listener ", f"peer 127.0.0.1:{cport}: {HS_FAILED}", since=since)
    f.check(r.backend.total == 0, f"the backend got {r.backend.total} calls")
    f.done()


def _read_until_closed(s: socket.socket, timeout: float) -> float | None:
    """Reads until EOF or a reset; seconds it took, None if still open after `timeout`."""
    t0 = time.monotonic()
    s.settimeout(0.5)
    while time.monotonic() - t0 < timeout:
        try:
            if s.recv(65536) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


# ---------------------------------------------------------------------------------------------
# Refusals on the backend side
# ---------------------------------------------------------------------------------------------
UPSTREAM_CASES = {
    # backend certificate -> (reason text, counter reason)
    "wrong_name": ("certificate verify failed: Hostname mismatch", "name_mismatch"),
    "wrong_ca_server": ("certificate verify failed: unable to get local issuer certificate",
                        "unknown_ca"),
    "expired": ("certificate verify failed: certificate has expired", "expired"),
    "no_alpn": ("backend did not select ALPN h2", "no_alpn_h2"),
}


@pytest.mark.parametrize("case", list(UPSTREAM_CASES))
def test_tls_backend_refused(ringlb, tls_backends, certs, case):
    text, reason = UPSTREAM_CASES[case]
    if case == "no_alpn":
        b = NoAlpnBackend(certs.server)
    else:
        b, = tls_backends(1, getattr(certs, case))
    try:
        r = start(ringlb, [cluster("c", [b], tls={"ca": str(certs.ca.cert), "sni": BACKEND_NAME},
                                   retry={"attempts": 1})])
        f = Findings(r)
        ch = channel(r.port)
        code, details = call_code(Stub(ch).unary, b"x", timeout=CALL_TIMEOUT)
        ch.close()
        f.check(code == grpc.StatusCode.UNAVAILABLE, f"the call ended {code}: {details}")
        # The contract: the grpc-message contains `TLS` and the same reason text as the log.
        f.check("TLS" in details and text in details,
                f"grpc-message {details!r} lacks `TLS` and/or {text!r}")
        f.line(f"tls: cluster c endpoint {b.address}: {HS_FAILED}{text}")
        f.moved(UP_FAILURES, 0.0, cluster="c", reason=reason)
        if case == "no_alpn":
            f.check(bool(b.handshakes) and set(b.handshakes) == {None},
                    f"the backend's handshakes (ALPN): {b.handshakes}")
        else:
            f.check(b.total == 0, f"the backend got {b.total} calls")
        f.done()
    finally:
        if case == "no_alpn":
            b.stop()


def test_tls_backend_handshake_timeout(ringlb):
    """A backend whose kernel accepts the TCP connection but which never answers the
    ClientHello (a hung task): the handshake gets connect_timeout after the TCP connect, then
    the call ends UNAVAILABLE naming the timeout, logged and counted."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: the ClientHello waits in the kernel, unanswered
    addr = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        r = start(ringlb, [cluster("c", [addr], tls={"verify": False},
                                   connect_timeout="300ms", retry={"attempts": 1})])
        f = Findings(r)
        ch = channel(r.port)
        t0 = time.monotonic()
        code, details = call_code(Stub(ch).unary, b"x", timeout=CALL_TIMEOUT)
        took = time.monotonic() - t0
        ch.close()
        f.check(code == grpc.StatusCode.UNAVAILABLE, f"the call ended {code}: {details}")
        f.check("TLS handshake failed: handshake timeout" in details,
                f"grpc-message {details!r} does not name the handshake timeout")
        # TCP connects at once; the handshake then has 300 ms (generous margin for sanitizers).
        f.check(took < 5.0, f"the call took {took:.2f} s")
        f.line(f"tls: cluster c endpoint {addr}: {HS_FAILED}handshake timeout")
        f.moved(UP_FAILURES, 0.0, cluster="c", reason="timeout")
        f.done()
    finally:
        silent.close()


# ---------------------------------------------------------------------------------------------
# SNI
# ---------------------------------------------------------------------------------------------
def test_tls_sni_selects_the_certificate(ringlb, backends, certs):
    b, = backends(1)
    tls = listener_tls(certs.server, sni_certs=[{"cert": str(certs.other.cert),
                                                 "key": str(certs.other.key)}])
    r = start(ringlb, [cluster("c", [b])], [{"cluster": "c", "tls": tls}])
    seen = {sni: served_serial(r.port, sni)
            for sni in ("other.test", "ringlb.test", "unknown.test", None)}
    assert seen == {"other.test": certs.other.serial, "ringlb.test": certs.server.serial,
                    "unknown.test": certs.server.serial, None: certs.server.serial}, (
        {k: hex(v) for k, v in seen.items()})
    # Verified, with the name checked, both ways.
    for sni, cert in (("other.test", certs.other), (NAME, certs.server)):
        hs = Handshake(r.port, ssl_context(certs.ca), sni=sni)
        assert (hs.error, hs.serial) == (None, cert.serial), hs
        ch = tls_channel(r.port, certs.ca, name=sni)
        assert Stub(ch).unary(sni.encode(), timeout=CALL_TIMEOUT) == sni.encode()
        ch.close()
    assert b.calls["Unary"] == 2


# ---------------------------------------------------------------------------------------------
# Reload
# ---------------------------------------------------------------------------------------------
class SteadyTlsLoad:
    """One long-lived grpcio TLS channel calling Unary at ~100 calls/s, and every 0.5 s a new
    connection (Python ssl) that records the served certificate's serial."""

    def __init__(self, port: int, ca: Cert):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.probes: list[tuple[float, float, int | None, str]] = []  # start, end, serial, error
        self.states: list[grpc.ChannelConnectivity] = []
        self.ch = tls_channel(port, ca)
        self.ch.subscribe(self._state, try_to_connect=True)
        self.stub = Stub(self.ch)
        self.threads = [threading.Thread(target=self._calls, daemon=True),
                        threading.Thread(target=self._probes, daemon=True)]
        for t in self.threads:
            t.start()

    def _state(self, s):
        with self.lock:
            self.states.append(s)

    def _calls(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.stub.unary(f"steady-{n}".encode(), timeout=CALL_TIMEOUT)
                with self.lock:
                    self.ok += 1
            except grpc.RpcError as e:
                with self.lock:
                    self.failures.append(f"call {n}: {e.code()}: {e.details()}")
            self.stop.wait(0.01)

    def _probes(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            hs = Handshake(self.port, ssl_context())
            with self.lock:
                self.probes.append((t0, time.monotonic(), hs.serial,
                                    repr(hs.error) if hs.error else ""))
            self.stop.wait(0.5)

    def more(self, n: int):
        with self.lock:
            target = self.ok + n
        wait_until(lambda: self.ok >= target or self.failures, WAIT)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        self.ch.unsubscribe(self._state)


def test_tls_reload_swaps_certificate_under_load(ringlb, backends, certs, tmp_path):
    bs = backends(2)
    live_crt, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copyfile(certs.server.cert, live_crt)
    shutil.copyfile(certs.server.key, live_key)
    r = start(ringlb, [cluster("c", bs)],
              [{"cluster": "c", "tls": {"cert": str(live_crt), "key": str(live_key)}}],
              workers=2)
    load = SteadyTlsLoad(r.port, certs.ca)
    try:
        load.more(100)
        # The TOML does not change: the reload reads the certificate files again all the same.
        shutil.copyfile(certs.server2.cert, live_crt)
        shutil.copyfile(certs.server2.key, live_key)
        t_sighup = time.monotonic()
        reload(r, raw=r.config_path.read_text())
        t_applied = time.monotonic()
        load.more(150)
        wait_until(lambda: sum(1 for p in load.probes if p[0] > t_applied) >= 4, WAIT)
    finally:
        load.finish()
    assert load.failures == [], load.failures[:5]
    assert load.ok >= 250, load.ok
    errors = [p for p in load.probes if p[3]]
    assert errors == [], errors[:3]
    old = [p[2] for p in load.probes if p[1] < t_sighup]
    new = [p[2] for p in load.probes if p[0] > t_applied]
    assert old and set(old) == {certs.server.serial}, [hex(s) for s in old]
    assert len(new) >= 4 and set(new) == {certs.server2.serial}, [hex(s) for s in new]
    # The long-lived channel kept its connection: READY from the first time on, nothing else.
    states = load.states
    first = states.index(grpc.ChannelConnectivity.READY) if (
        grpc.ChannelConnectivity.READY in states) else None
    assert first is not None and set(states[first:]) == {grpc.ChannelConnectivity.READY}, states
    assert all(b.calls["Unary"] > 0 for b in bs), [b.calls["Unary"] for b in bs]

    # A broken certificate file: POST /reload refuses it and says which file; the last good
    # certificate is still served to new connections, and old and new channels work.
    live_crt.write_text("this is not a PEM certificate\n")
    before = r.stderr_text().count(FAILED)
    status, body, _ = r.admin("/reload", method="POST", body=b"")
    answer = body.decode(errors="replace")
    assert status == 400, (status, answer)
    assert str(live_crt) in answer and "listener[0].tls.cert" in answer, answer
    wait_until(lambda: r.stderr_text().count(FAILED) > before, WAIT)
    line = [ln for ln in r.stderr_text().splitlines() if FAILED in ln][before:]
    assert line and str(live_crt) in line[0], line
    assert served_serial(r.port) == certs.server2.serial
    assert load.stub.unary(b"old channel", timeout=CALL_TIMEOUT) == b"old channel"
    ch = tls_channel(r.port, certs.ca)
    assert Stub(ch).unary(b"new channel", timeout=CALL_TIMEOUT) == b"new channel"
    ch.close()
    load.ch.close()


# ---------------------------------------------------------------------------------------------
# Handshake timeout
# ---------------------------------------------------------------------------------------------
def _client_hello() -> bytes:
    """A real TLS ClientHello (Python ssl through memory BIOs)."""
    ctx = ssl_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=NAME)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello


def test_tls_handshake_timeout(ringlb, backends, certs):
    b, = backends(1)
    r = start(ringlb, [cluster("c", [b])], [{"cluster": "c", "tls": listener_tls(certs.server)}],
              handshake_timeout="1s")
    since = len(r.stderr_text())
    timeouts = counter(r, DOWN_FAILURES, reason="timeout")
    hello = _client_hello()
    results: dict[str, tuple[int, float | None]] = {}

    def client(kind: str):
        s = socket.create_connection(("127.0.0.1", r.port), timeout=CALL_TIMEOUT)
        try:
            if kind == "half":
                s.sendall(hello[: len(hello) // 2])
            results[kind] = (s.getsockname()[1], _read_until_closed(s, 1.0 + 3.0 + 5.0))
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in ("silent", "half")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert set(results) == {"silent", "half"}, results
    for kind, (cport, took) in results.items():
        assert took is not None, f"{kind}: still open after 9 s (handshake_timeout = 1s)"
        assert 0.9 <= took <= 1.0 + 3.0, f"{kind}: closed after {took:.2f}s (want 1 s, +3 s)"
        wait_line(r, "tls: listener ", f"peer 127.0.0.1:{cport}: {HS_FAILED}handshake timeout",
                  since=since)
    end = time.monotonic() + WAIT
    while counter(r, DOWN_FAILURES, reason="timeout") < timeouts + 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert counter(r, DOWN_FAILURES, reason="timeout") == timeouts + 2, counters(r)
    # The listener serves on.
    ch = tls_channel(r.port, certs.ca)
    assert Stub(ch).unary(b"after", timeout=CALL_TIMEOUT) == b"after"
    ch.close()


# ---------------------------------------------------------------------------------------------
# `ringlb check`: certificate files are read and judged with the config
# ---------------------------------------------------------------------------------------------
def test_tls_check_names_the_bad_pem_file(ringlb, certs, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.crt"
    base = ringlb.config([cluster("c", ["127.0.0.1:1"])],
                         [{"cluster": "c", "tls": listener_tls(certs.server)}])

    def check(tls: dict, cluster_tls: dict | None = None):
        cfg = json.loads(json.dumps(base))
        cfg["listener"][0]["tls"] = tls
        if cluster_tls:
            cfg["cluster"][0]["tls"] = cluster_tls
        path = tmp_path / f"check{next(_check_seq)}.toml"
        path.write_text(harness.render_config(cfg))
        return path, ringlb.run(["check", str(path)])

    path, res = check(listener_tls(certs.server, client_ca=str(certs.ca.cert),
                                   sni_certs=[{"cert": str(certs.other.cert),
                                               "key": str(certs.other.key)}]),
                      {"ca": str(certs.ca.cert), "sni": BACKEND_NAME,
                       "cert": str(certs.client.cert), "key": str(certs.client.key)})
    assert res.returncode == 0, f"`ringlb check {path}` refused a good TLS config: {res.stderr}"

    cases = [
        ("missing cert", {"cert": str(missing), "key": str(certs.server.key)}, r"cert",
         missing),
        ("garbage cert", {"cert": str(garbage), "key": str(certs.server.key)}, r"cert",
         garbage),
        ("missing key", {"cert": str(certs.server.cert), "key": str(missing)}, r"(?:cert|key)",
         missing),
        ("key of another cert", {"cert": str(certs.server.cert), "key": str(certs.other.key)},
         r"(?:cert|key)", None),
    ]
    problems = []
    for what, tls, key, named in cases:
        path, res = check(tls)
        out = (res.stdout + res.stderr).strip()
        if res.returncode == 0:
            problems.append(f"{what}: `ringlb check` accepted it: {out}")
            continue
        m = re.search(re.escape(str(path)) + r":\d+:\d+: listener\[0\]\.tls\." + key + ": (.*)",
                      out)
        if not m:
            problems.append(f"{what}: no `FILE:LINE:COLUMN: listener[0].tls.{key.strip('(?:)')}: "
                            f"...`; got: {out}")
            continue
        if named is not None and str(named) not in m.group(1):
            problems.append(f"{what}: the message does not name {named}: {out}")
        if named is None and not (str(certs.server.cert) in m.group(1)
                                  or str(certs.other.key) in m.group(1)):
            problems.append(f"{what}: the message names neither file: {out}")
    assert not problems, "\n".join(problems)

_check_seq = iter(range(1, 1 << 30))


def test_tls_check_names_a_missing_cluster_ca(ringlb, certs, tmp_path):
    missing = tmp_path / "missing-ca.pem"
    cfg = ringlb.config([cluster("c", ["127.0.0.1:1"], tls={"ca": str(missing),
                                                            "sni": BACKEND_NAME})])
    path = tmp_path / "cluster-ca.toml"
    path.write_text(harness.render_config(cfg))
    res = ringlb.run(["check", str(path)])
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"`ringlb check` accepted a cluster CA file that is missing: {out}"
    assert re.search(re.escape(str(path)) + r":\d+:\d+: cluster\[0\]\.tls", out), out
    assert str(missing) in out, out

"""systemd's readiness protocol, as packaging/ringlb.service (Type=notify) relies on it: with
NOTIFY_SOCKET set, ringlb sends READY=1 from its own pid once it serves (after the first DNS
answers), and STOPPING=1 when SIGTERM starts the drain. The socket here is a plain AF_UNIX
datagram socket with SO_PASSCRED, as systemd's notify socket is; no systemd needed."""
from __future__ import annotations

import signal
import socket
import struct
import time

import pytest

import dns_server
import harness
from harness import Stub, channel, cluster

NAME = "notify.test.local"
FIRST_DELAY = 1.5  # seconds the DNS server holds its first answer


class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)

    def receive(self, timeout: float) -> tuple[dict[str, str], int, float]:
        """One datagram: its VAR=VALUE fields, the sender's pid (SCM_CREDENTIALS) and when."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            pytest.fail(f"no datagram on NOTIFY_SOCKET within {timeout}s", pytrace=False)
        at = time.monotonic()
        pid = 0
        for level, kind, body in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", body[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        return fields, pid, at

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path, monkeypatch):
    if harness.direct_mode():
        pytest.fail("sd_notify needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)
    n = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)  # inherited by the ringlb started next
    yield n
    n.close()


def test_ready_when_serving_and_stopping_on_sigterm(backends, ringlb, notify):
    bs = backends(1)
    cfg = ringlb.config([cluster("main", bs)], workers=2)
    rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-notify",
                        wait_ready=False)
    ringlb.instances.append(rl)

    fields, pid, _ = notify.receive(10.0)
    assert pid == rl.pid, f"READY=1 came from pid {pid}, ringlb is {rl.pid}"
    assert fields.get("READY") == "1", fields
    assert fields.get("STATUS") == "serving: 2 workers", fields
    # Serving means serving: the admin says ready and a call goes through.
    status, body, _ = rl.admin("/ready")
    assert (status, body) == (200, b"ready\n")
    rl.wait_ready()
    assert Stub(channel(rl.port)).unary(b"after READY=1", timeout=5) == b"after READY=1"
    assert "systemd: sent READY=1" in rl.log_text()

    rl.signal(signal.SIGTERM)
    fields, pid, _ = notify.receive(5.0)
    assert pid == rl.pid
    assert fields.get("STOPPING") == "1", fields
    assert fields.get("STATUS") == "draining", fields
    assert rl.wait(10.0) == 0, f"exit status {rl.returncode} after the drain"


def test_ready_waits_for_the_first_dns_answer(backends, ringlb, notify):
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    bs = backends(1)
    dns = dns_server.DnsServer()
    try:
        dns.set_a(NAME, ["127.0.0.1"], ttl=30)
        dns.first_delay = FIRST_DELAY
        cl = {"name": "main", "lb": "round_robin", "dns": NAME, "record": "A",
              "port": bs[0].port, "connect_timeout": "1s"}
        cfg = ringlb.config([cl])
        cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "4s"}
        rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-notify-dns",
                            wait_ready=False)
        ringlb.instances.append(rl)

        fields, pid, at = notify.receive(10.0)
        assert pid == rl.pid and fields.get("READY") == "1", (pid, fields)
        assert dns.log, "ringlb sent no DNS query"
        waited = at - dns.log[0][0]
        assert waited >= FIRST_DELAY - 0.05, \
            f"READY=1 {waited:.3f}s after the first DNS query, before its answer ({FIRST_DELAY}s)"
        assert waited < FIRST_DELAY + 2.5, f"READY=1 only {waited:.3f}s after the query"
        # The answer is in, so nothing is left to wait for.
        assert fields.get("STATUS") == "serving: 1 workers", fields
        rl.wait_ready()
        assert Stub(channel(rl.port)).unary(b"dns", timeout=5) == b"dns"
    finally:
        dns.stop()

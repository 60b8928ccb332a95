"""`ringlb ready`: the health check of a container image without curl (HEALTHCHECK, ECS container
health check). Exit 0 with the body on a ready ringlb; 1 on a ringlb that is not ready (a DNS
cluster whose server never answers keeps /ready at 503) and when nothing listens; 2 on usage
errors."""
from __future__ import annotations

import socket
import threading
import time

import pytest

import dns_server
import harness
from harness import cluster, closed_port

NAME = "svc.test.local"


def _need_proxy():
    if harness.direct_mode():
        pytest.fail("`ringlb ready` needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)


def _admin_cfg(ringlb, clusters):
    cfg = ringlb.config(clusters)
    cfg["admin"] = {"address": "127.0.0.1:0"}
    return cfg


def test_ready_exits_0_on_a_ready_ringlb(backends, ringlb):
    _need_proxy()
    bs = backends(1)
    rl = harness.Ringlb(_admin_cfg(ringlb, [cluster("main", bs)]), ringlb.io_backend,
                        ringlb.tmp_path, name="ringlb-ready-ok")
    ringlb.instances.append(rl)
    admin = f"127.0.0.1:{rl.admin_port()}"
    for args in (["ready", "--admin", admin], ["ready", f"--admin={admin}", "--timeout", "5s"]):
        r = ringlb.run(args)
        assert r.returncode == 0, f"`ringlb {' '.join(args)}`: rc {r.returncode}\n{r.stderr}"
        assert r.stdout == "ready\n", r.stdout


def test_ready_exits_1_while_not_ready(ringlb):
    """A DNS cluster whose server drops every query: /ready stays 503 and says why."""
    _need_proxy()
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    dns = dns_server.DnsServer()
    try:
        dns.mode = "drop"
        cl = {"name": "main", "lb": "round_robin", "dns": NAME, "record": "A",
              "port": closed_port(), "connect_timeout": "1s"}
        cfg = _admin_cfg(ringlb, [cl])
        cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "500ms"}
        rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-not-ready",
                            wait_ready=False)
        ringlb.instances.append(rl)
        r = ringlb.run(["ready", "--admin", f"127.0.0.1:{rl.admin_port()}"])
        assert r.returncode == 1, f"rc {r.returncode}\nstdout {r.stdout!r}\nstderr {r.stderr!r}"
        assert "waiting for the first DNS answer for cluster main" in r.stdout, r.stdout
        assert "not ready (HTTP 503" in r.stderr, r.stderr
    finally:
        dns.stop()


def test_ready_exits_1_when_nothing_listens(ringlb):
    port = closed_port()
    t0 = time.monotonic()
    r = ringlb.run(["ready", "--admin", f"127.0.0.1:{port}"])
    assert r.returncode == 1, f"rc {r.returncode}\n{r.stderr}"
    assert r.stdout == ""
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 5


def test_ready_times_out_on_a_silent_peer(ringlb):
    """A listener that accepts and never answers: exit 1 after --timeout, not a hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        r = ringlb.run(["ready", "--admin", f"127.0.0.1:{port}", "--timeout", "300ms"])
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    assert r.returncode == 1, f"rc {r.returncode}\n{r.stderr}"
    assert "timed out after 0.3s waiting for the answer" in r.stderr, r.stderr
    assert took < 3, f"`ringlb ready --timeout 300ms` took {took:.2f}s"


@pytest.mark.parametrize("args", [["ready", "--admin"], ["ready", "--admin", "nonsense"],
                                  ["ready", "--admin", "127.0.0.1:99999x"],
                                  ["ready", "--timeout", "soon"], ["ready", "--timeout", "0s"],
                                  ["ready", "extra"]])
def test_ready_usage_errors_exit_2(ringlb, args):
    r = ringlb.run(args)
    assert r.returncode == 2, f"`ringlb {' '.join(args)}`: rc {r.returncode}\n{r.stderr}"
    assert r.stderr.strip(), "a usage error says what is wrong"


def test_help_names_ready_and_config_env(ringlb):
    r = ringlb.run(["--help"])
    assert r.returncode == 0
    for text in ("ringlb ready [--admin HOST:PORT] [--timeout DURATION]",
                 "--config-env NAME", "check --config-env NAME"):
        assert text in r.stdout, f"--help lacks {text!r}:\n{r.stdout}"
    r = ringlb.run(["ready", "--help"])
    assert r.returncode == 0 and "127.0.0.1:9901" in r.stdout

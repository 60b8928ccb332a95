"""ringlb's own restart on one host: a second ringlb binds the same port (SO_REUSEPORT), the
first gets SIGTERM and drains; a gRPC client at a steady rate on one channel must see no failed
call, and its calls must move to the new process.

Both processes run the same config on one fixed port (picked by binding port 0 and closing; if
another program takes it meanwhile, ringlb cannot bind and the test picks another). Which process
served how many calls comes from each one's `shard N stopped: C connections, K calls` lines.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

import dns_server
import harness
from harness import Stub, channel, closed_port, cluster, wait_until

RATE = 150.0         # calls per second on the one channel
DRAIN_TIMEOUT = "5s"
CALL_TIMEOUT = 5.0   # seconds, each call's deadline
# Connections opened back to back while the hand-over happens: each new connection is the case
# the listener hand-over (not the GOAWAY) must get right.
CHURN_THREADS = 2
TAKE_OVER_RE = "another process listens on"
SLOW_NAME = "slow.test.local"


@pytest.fixture
def dns():
    if not dns_server.HAVE_DNSLIB:
        pytest.fail(dns_server.INSTALL_HINT, pytrace=False)
    d = dns_server.DnsServer()
    yield d
    d.stop()


def _need_process():
    if harness.direct_mode():
        pytest.fail("the restart needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)


def default_client_channel(port: int) -> grpc.Channel:
    """A channel as an application makes one: grpcio's defaults, transparent retries on. (The
    harness turns retries off so that no failure hides.) grpc-core fails a call that reaches a
    connection just after that connection got a GOAWAY, before the channel has moved on, with
    UNAVAILABLE "GOAWAY received", and marks it not sent on the wire: what the transparent
    retry exists for, since the server never saw it. No server can prevent that race; with
    retries off it caught 1 of 621 calls in one of our TSan runs."""
    opts = [("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1)]
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)


class Load:
    """Calls at a fixed rate on one channel (futures, so a slow call does not hold the next
    back), and optionally clients that open a new connection for every call (those with the
    harness's strict channel: each call is the first on its connection, so it is sent before
    any GOAWAY can reach it)."""

    def __init__(self, port: int, rate: float = RATE, churn: int = 0):
        self.port = port
        self.stub = Stub(default_client_channel(port))
        self.rate = rate
        self.churn = churn
        self.stop_flag = threading.Event()
        self.futures: list[tuple[float, bytes, grpc.Future]] = []
        self.churn_ok = 0
        self.churn_failed: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._steady, daemon=True)]
        self.threads += [threading.Thread(target=self._churn, args=(k,), daemon=True)
                         for k in range(churn)]

    def start(self):
        # The first call opens the connection; one failure here is a set-up problem, not the
        # hand-over's.
        assert self.stub.unary(b"warm-up", timeout=CALL_TIMEOUT) == b"warm-up"
        for t in self.threads:
            t.start()

    def _steady(self):
        period = 1.0 / self.rate
        next_t = time.monotonic()
        i = 0
        while not self.stop_flag.is_set():
            payload = b"call %d" % i
            f = self.stub.unary.future(payload, timeout=CALL_TIMEOUT)
            self.futures.append((time.monotonic(), payload, f))
            i += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _churn(self, k: int):
        i = 0
        while not self.stop_flag.is_set():
            ch = channel(self.port)
            payload = b"churn %d-%d" % (k, i)
            try:
                ok = Stub(ch).unary(payload, timeout=CALL_TIMEOUT) == payload
                with self.lock:
                    if ok:
                        self.churn_ok += 1
                    else:
                        self.churn_failed.append((time.monotonic(), "wrong payload"))
            except grpc.RpcError as e:
                with self.lock:
                    self.churn_failed.append((time.monotonic(), f"{e.code()} {e.details()}"))
            finally:
                ch.close()
            i += 1

    def finish(self) -> tuple[int, list]:
        """Stops issuing; waits for every call. Returns (calls, failures)."""
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=CALL_TIMEOUT + 5)
            assert not t.is_alive(), "a load thread did not stop"
        failures = []
        for t_sent, payload, f in self.futures:
            try:
                if f.result(timeout=CALL_TIMEOUT + 5) != payload:
                    failures.append((t_sent, "wrong payload"))
            except grpc.RpcError as e:
                failures.append((t_sent, f"{e.code()} {e.details()}"))
        self.stub.ch.close()
        return len(self.futures), failures


def _start(ringlb, cfg: dict, name: str) -> harness.Ringlb:
    r = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name=name, wait_ready=False)
    ringlb.instances.append(r)
    return r


def _first_on_fixed_port(ringlb, bs, **proxy) -> tuple[dict, harness.Ringlb]:
    """Starts the first ringlb on a fixed port; retries with another port if it was taken."""
    for attempt in range(5):
        port = closed_port()
        cfg = ringlb.config([cluster("main", bs)],
                            [{"address": f"127.0.0.1:{port}", "cluster": "main"}], **proxy)
        r = _start(ringlb, cfg, f"ringlb-p{attempt}")
        ok = wait_until(lambda: harness.READY_RE.search(r.log_text()) or not r.alive(), 10.0)
        # Someone else's SO_REUSEPORT socket on the port would share our connections: retry.
        if ok and r.alive() and TAKE_OVER_RE not in r.log_text():
            r.wait_ready()
            assert r.port == port
            return cfg, r
        if r.alive():
            r.stop()
            continue
        r.wait(5)
        r.expect_nonzero = True
        if "in use" not in r.log_text():
            pytest.fail(f"ringlb did not start on port {port}:\n{r.log_text()[-2000:]}",
                        pytrace=False)
    pytest.fail(f"no ringlb served on a fixed port in 5 tries (taken ports?); the last:\n"
                f"{r.log_text()[-2000:]}", pytrace=False)


def _take_over(ringlb, cfg: dict, old: harness.Ringlb, name: str, settle: float) -> \
        harness.Ringlb:
    """Starts a second ringlb on old's port, waits until it serves, then SIGTERMs old and waits
    for old to drain and exit 0."""
    new = _start(ringlb, cfg, name)
    new.wait_ready()
    assert new.port == old.port
    assert TAKE_OVER_RE in new.log_text(), "the new process did not see the old one's listener"
    time.sleep(settle)  # both in the group for a while: old keeps serving its connection
    t0 = time.monotonic()
    old.signal(signal.SIGTERM)
    rc = old.wait(15)
    assert rc == 0, f"{old.config_path.name}: exit status {rc} after SIGTERM (None: still running " \
                    f"15 s later)"
    # The clients moved over as soon as they had seen the GOAWAY and their calls in flight had
    # ended: well before drain_timeout.
    assert "drain_timeout reached" not in old.log_text(), \
        f"{old.config_path.name} drained until drain_timeout ({time.monotonic() - t0:.1f}s)"
    return new


def _calls_served(r: harness.Ringlb) -> tuple[int, int]:
    stats = r.shard_stats()
    assert stats, f"{r.config_path.name}: no `shard N stopped` lines"
    return sum(c for c, _ in stats.values()), sum(n for _, n in stats.values())


def _run_in_own_netns(request, migrate: int) -> bool:
    """True inside a network namespace of this test's own (loopback only, with
    net.ipv4.tcp_migrate_req=`migrate`); outside, runs this very test in one (unshare --net,
    a nested pytest) and returns False once it has passed."""
    if os.environ.get("RINGLB_TEST_NETNS") == "1":
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            assert int(f.read()) == migrate
        return True
    if not os.path.exists("/proc/sys/net/ipv4/tcp_migrate_req"):
        pytest.skip("net.ipv4.tcp_migrate_req does not exist (Linux < 5.14)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace (unshare --net: {probe.stderr.strip()})")
    script = (f"ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req={migrate} && exec "
              f"{sys.executable} -m pytest -q -s -p no:cacheprovider "
              f"'{request.node.path}::{request.node.name}'")
    env = dict(os.environ, RINGLB_TEST_NETNS="1", RINGLB_BIN=str(harness.ringlb_bin()))
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=harness.REPO, env=env,
                       capture_output=True, text=True, timeout=100)
    print(r.stdout[-3000:])
    assert r.returncode == 0, f"in its own network namespace:\n{r.stdout[-6000:]}{r.stderr[-2000:]}"
    return False


@pytest.mark.parametrize("churn", [0, CHURN_THREADS], ids=["one-channel", "with-churn"])
def test_restart_loses_no_call(backends, ringlb, churn, request):
    """The floor: one channel at 150 calls/s, 0 failed. With churn, clients also open a new
    connection for every call; one that reaches the old process's accept queue in the
    microseconds between its last accept and the close of its socket is reset by the kernel
    unless net.ipv4.tcp_migrate_req=1 (measured without it: about 1 in 100,000 connections at
    3,500 new connections/s). So that variant runs in a namespace of its own with the sysctl set,
    as the README recommends; the one-channel variant needs nothing of the kind."""
    _need_process()
    if churn and not _run_in_own_netns(request, migrate=1):
        return
    bs = backends(2)
    cfg, old = _first_on_fixed_port(ringlb, bs, workers=2, drain_timeout=DRAIN_TIMEOUT)
    load = Load(old.port, churn=churn)
    load.start()
    time.sleep(1.0)
    new = _take_over(ringlb, cfg, old, "ringlb-new", settle=1.0)
    t_old_gone = time.monotonic()
    time.sleep(1.5)
    calls, failures = load.finish()
    calls_after = sum(1 for t, _, _ in load.futures if t > t_old_gone)
    assert new.stop() == 0

    old_conns, old_calls = _calls_served(old)
    new_conns, new_calls = _calls_served(new)
    print(f"\n[{ringlb.io_backend}] one channel: {calls} calls, {len(failures)} failed; "
          f"churn: {load.churn_ok} ok, {len(load.churn_failed)} failed; "
          f"old served {old_calls} calls on {old_conns} connections, "
          f"new {new_calls} on {new_conns}")
    assert not failures, f"{len(failures)} of {calls} calls failed: {failures[:5]}"
    assert not load.churn_failed, \
        f"{len(load.churn_failed)} of {load.churn_ok + len(load.churn_failed)} calls on new " \
        f"connections failed: {load.churn_failed[:5]}"
    assert calls >= RATE * 3, f"only {calls} calls issued in 3.5 s"
    assert calls_after > RATE, f"only {calls_after} calls issued after the old process exited"
    # Every call is counted by the process that served it; the calls issued after the old one
    # exited (and more) were the new one's.
    total = calls + 1 + load.churn_ok
    assert old_calls + new_calls == total, (old_calls, new_calls, total)
    assert new_calls >= calls_after, (new_calls, calls_after)
    assert old_calls > 0 and new_conns >= 1


def test_three_restarts_in_a_row(backends, ringlb):
    _need_process()
    bs = backends(2)
    cfg, current = _first_on_fixed_port(ringlb, bs, workers=1, drain_timeout=DRAIN_TIMEOUT)
    procs = [current]
    load = Load(current.port)
    load.start()
    time.sleep(0.5)
    for k in range(3):
        current = _take_over(ringlb, cfg, current, f"ringlb-gen{k + 1}", settle=0.5)
        procs.append(current)
        time.sleep(0.5)
    calls, failures = load.finish()
    assert current.stop() == 0
    served = [_calls_served(p)[1] for p in procs]
    print(f"\n[{ringlb.io_backend}] 3 restarts: {calls} calls, {len(failures)} failed; "
          f"calls per generation {served}")
    assert not failures, f"{len(failures)} of {calls} calls failed: {failures[:5]}"
    assert sum(served) == calls + 1, (served, calls)
    assert all(n > 0 for n in served), f"a generation served no call: {served}"


def _lines(r: harness.Ringlb, pattern: str) -> list[str]:
    return [line for line in r.log_text().splitlines() if pattern in line]


def test_successor_takes_no_connection_before_it_is_ready(backends, ringlb, dns):
    """The new process binds at once but joins the listening group only once it can serve
    (here: after a first DNS answer held for 2 s). Meanwhile every new connection goes to the
    old process and is served at once; none waits in the new one's backlog."""
    _need_process()
    bs = backends(2)
    cfg, old = _first_on_fixed_port(ringlb, bs, drain_timeout=DRAIN_TIMEOUT)
    dns.set_a(SLOW_NAME, ["127.0.0.1"], ttl=30)
    dns.first_delay = 2.0
    new_cfg = dict(cfg)
    new_cfg["cluster"] = cfg["cluster"] + [
        {"name": "later", "lb": "round_robin", "dns": SLOW_NAME, "record": "A",
         "port": bs[0].port, "connect_timeout": "1s"}]
    new_cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "4s"}
    new = _start(ringlb, new_cfg, "ringlb-new")
    assert wait_until(lambda: TAKE_OVER_RE in new.log_text(), 10.0), \
        f"the new process did not see the old one's listener:\n{new.log_text()}"
    assert wait_until(lambda: dns.log, 5.0), "the new process sent no DNS query"
    t_query = dns.log[0][0]
    slow = []
    n = 0
    while time.monotonic() < t_query + 1.5:
        ch = channel(old.port)
        t0 = time.monotonic()
        assert Stub(ch).unary(b"early %d" % n, timeout=CALL_TIMEOUT) == b"early %d" % n
        slow += [time.monotonic() - t0] if time.monotonic() - t0 > 0.5 else []
        ch.close()
        n += 1
    assert not harness.READY_RE.search(new.log_text()), "the DNS answer was not held"
    assert n >= 10, f"only {n} connections in 1.5 s"
    assert not slow, f"{len(slow)} of {n} calls on new connections waited: {slow[:5]}"
    new.wait_ready()
    listening = _lines(new, "listening on")
    ready = _lines(new, "ready:")
    assert listening and ready
    assert new.log_text().index(listening[0]) < new.log_text().index(ready[0])
    old.stop()
    assert Stub(channel(new.port)).unary(b"after", timeout=CALL_TIMEOUT) == b"after"
    assert new.stop() == 0
    old_conns, old_calls = _calls_served(old)
    assert old_conns == n and old_calls == n, (old_conns, old_calls, n)
    assert _calls_served(new) == (1, 1)


def test_connections_queued_at_sigterm_are_served(backends, ringlb, dns):
    """Connections in the old process's accept queue when it gets SIGTERM are accepted and
    told to go away (SETTINGS, GOAWAY), not reset by the close: their calls succeed, on the
    old process or moved to the new one. The old process is made to hold them in its queue by
    a DNS cluster that never answers (so it never starts accepting); its default cluster is
    static and can serve. Under net.ipv4.tcp_migrate_req=1 the kernel would hand the queue over
    by itself; this namespace has it at 0 unless the machine's is set."""
    _need_process()
    bs = backends(2)
    dns.set_drop(SLOW_NAME)
    for attempt in range(5):
        port = closed_port()
        old_cfg = ringlb.config(
            [cluster("main", bs),
             {"name": "never", "lb": "round_robin", "dns": SLOW_NAME, "record": "A",
              "port": bs[0].port, "connect_timeout": "1s"}],
            [{"address": f"127.0.0.1:{port}", "cluster": "main"}], drain_timeout=DRAIN_TIMEOUT)
        old_cfg["discovery"] = {"resolvers": [dns.address], "query_timeout": "10s"}
        old = _start(ringlb, old_cfg, f"ringlb-old{attempt}")
        if wait_until(lambda: "listening on" in old.log_text() or not old.alive(), 10.0) and \
                old.alive():
            break
        old.wait(5)
        old.expect_nonzero = True
    else:
        pytest.fail("5 ports in a row were taken", pytrace=False)
    assert TAKE_OVER_RE not in old.log_text(), f"port {port} was taken meanwhile"
    t_start = time.monotonic()

    # 8 clients, each its own connection; all wait in the old process's queue.
    stubs = [Stub(channel(port)) for _ in range(8)]
    futs = [s.unary.future(b"queued %d" % i, timeout=15) for i, s in enumerate(stubs)]
    time.sleep(0.3)
    assert not any(f.done() for f in futs), "a call was answered before anyone accepted"
    new_cfg = ringlb.config([cluster("main", bs)],
                            [{"address": f"127.0.0.1:{port}", "cluster": "main"}])
    new = _start(ringlb, new_cfg, "ringlb-new")
    new.wait_ready()
    assert TAKE_OVER_RE in new.log_text()
    assert time.monotonic() - t_start < 4.0, "too slow: the old process's 5 s DNS wait is over"
    assert not harness.READY_RE.search(old.log_text()), "the old process served after all"
    old.signal(signal.SIGTERM)
    failures = []
    for i, f in enumerate(futs):
        try:
            assert f.result(timeout=15) == b"queued %d" % i
        except grpc.RpcError as e:
            failures.append((i, f"{e.code()} {e.details()}"))
    assert old.wait(10) == 0
    # And the clients keep working, now on the new process.
    for i, s in enumerate(stubs):
        assert s.unary(b"later %d" % i, timeout=CALL_TIMEOUT) == b"later %d" % i
    assert new.stop() == 0
    old_conns, old_calls = _calls_served(old)
    new_conns, new_calls = _calls_served(new)
    print(f"\n[{ringlb.io_backend}] queued at SIGTERM: 8 calls, {len(failures)} failed; old "
          f"accepted {old_conns} connections, served {old_calls} calls; new {new_calls} calls")
    assert not failures, failures
    assert old_conns == 8, f"the old process accepted {old_conns} of 8 queued connections"
    assert old_calls + new_calls == 16 and new_calls >= 8, (old_calls, new_calls)


def test_calls_still_open_at_drain_timeout_get_a_grpc_answer(backends, ringlb):
    """A call that outlives drain_timeout (a long stream, a slow backend) cannot finish on the
    old process: it ends with UNAVAILABLE and a message that says why (a gRPC answer the client
    may retry on), not a bare connection close, and its backend is told to stop."""
    _need_process()
    bs = backends(1)
    rl = ringlb([cluster("main", bs)], drain_timeout="1s")
    stub = Stub(channel(rl.port))
    slow = stub.slow.future(json.dumps({"id": "slow", "ms": 20000}).encode(), timeout=30)
    stream = stub.server_stream(json.dumps({"id": "s", "count": 10**8, "size": 100}).encode(),
                                timeout=30)
    it = iter(stream)
    next(it)
    assert wait_until(lambda: bs[0].slow.get("slow") == "running", 5.0)
    t0 = time.monotonic()
    rl.signal(signal.SIGTERM)
    received = 1
    with pytest.raises(grpc.RpcError) as err:
        for _ in it:
            received += 1
    for e in (err.value, pytest.raises(grpc.RpcError, slow.result, timeout=10).value):
        assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
        assert "drain_timeout" in e.details(), e.details()
    assert received > 1
    rc = rl.wait(10)
    took = time.monotonic() - t0
    assert rc == 0, rc
    assert took < 1.0 + 3.0, f"ringlb exited {took:.1f}s after SIGTERM (drain_timeout 1s)"
    assert "drain_timeout reached; ending the calls still open" in rl.log_text()
    # The backends were told (RST_STREAM), not left to find out when the connection went.
    assert wait_until(lambda: bs[0].slow.get("slow") == "cancelled", 5.0), bs[0].slow
    assert wait_until(lambda: bs[0].stream_state.get("s") == "cancelled", 5.0), bs[0].stream_state

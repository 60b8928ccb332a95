"""Processes of a chaos scenario: the network namespace check, backends, the tap, and the proxy
under test (ringlb, or HAProxy for the bench's side-by-side fault run). Everything here runs
inside the scenario's own network namespace (scenario.py refuses to run outside one).

Owner: the scenario process (scenario.py); nothing here is shared between threads except the
Proc objects, which the fault thread signals while the client thread runs.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from harness import render_config  # noqa: E402  (the integration suite's TOML writer)

PY = "/usr/bin/python3"
BACKEND_PORT = 50051          # every backend: its own 127.0.0.x, this port (as A records need)
LISTEN_PORT = 8080            # the proxy's listener: fixed, so a second ringlb can share it


class ScenarioError(Exception):
    """The scenario could not be run as designed (a process did not start, ...): not a floor."""


def in_own_netns() -> bool:
    """True when this process has a network namespace of its own (a fresh one has only `lo`):
    the iptables rules and addresses we add then die with it and never touch the machine's own
    network. (/proc/1/ns/net is not always readable, so interfaces are what we look at.)"""
    import socket
    return [n for _, n in socket.if_nameindex()] == ["lo"]


def sh(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise ScenarioError(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr.strip()}")


class Proc:
    """A child process with its stderr in a file; its own session so signals reach only it."""

    def __init__(self, name: str, argv: list[str], workdir: Path):
        self.name, self.argv, self.workdir = name, argv, workdir
        self.err_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self):
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def text(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int):
        if self.alive():
            os.kill(self.pid, sig)

    def wait_for(self, regex: str, timeout: float, since: int = 0) -> re.Match:
        pat = re.compile(regex)
        end = time.monotonic() + timeout
        while True:
            m = pat.search(self.text()[since:])
            if m:
                return m
            if not self.alive():
                raise ScenarioError(f"{self.name} exited ({self.proc.returncode}) before "
                                    f"/{regex}/: {self.text()[-2000:]}")
            if time.monotonic() > end:
                raise ScenarioError(f"{self.name}: no /{regex}/ within {timeout}s: "
                                    f"{self.text()[-2000:]}")
            time.sleep(0.01)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGCONT (in case it was stopped), SIGTERM, then SIGKILL. Returns the exit status."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait_exit(5)
        return self.proc.returncode if self.proc else None


class Backend(Proc):
    def __init__(self, name: str, host: str, workdir: Path, grace: float = 10.0,
                 wait: bool = True):
        self.host = host
        self.log_path = workdir / f"{name}.calls"
        argv = [PY, str(HERE / "backend.py"), "--name", name, "--listen",
                f"{host}:{BACKEND_PORT}", "--log", str(self.log_path), "--grace", str(grace)]
        super().__init__(name, argv, workdir)
        if wait:  # else the caller starts several, then waits for each (they start in parallel)
            self.wait_listening()

    def wait_listening(self, since: int = 0):
        self.wait_for(r"listening on", 15.0, since)

    def restart(self):
        """Start again on the same address (after it exited) and wait until it serves."""
        mark = len(self.text())
        self.start()
        self.wait_listening(since=mark)

    @property
    def address(self) -> str:
        return f"{self.host}:{BACKEND_PORT}"

    def stop(self, timeout: float = 5.0) -> int | None:
        """Teardown: SIGKILL (a stopped backend would first drain a backlog of dead calls)."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait_exit(5)
        return self.proc.returncode if self.proc else None


class Tap(Proc):
    def __init__(self, workdir: Path):
        self.out = workdir / "tap.txt"
        super().__init__("tap", [PY, str(HERE / "tap.py"), "--port", str(BACKEND_PORT),
                                 "--out", str(self.out)], workdir)
        self.wait_for(r"tap: capturing", 10.0)


# ---------------------------------------------------------------------------------------------
# Proxies under test
# ---------------------------------------------------------------------------------------------
def ringlb_config(io_backend: str, endpoints: list[str] | None, dns: dict | None,
                  route: dict | None, workers: int = 1) -> dict:
    """route: the policy keys put on the listener's one route (per_try_timeout, hedge); None
    keeps the plain defaults (no route table at all, no policy key written)."""
    cl: dict = {"name": "c", "lb": "round_robin"}
    if dns:
        cl.update({"dns": dns["name"], "port": BACKEND_PORT, "record": "A"})
    else:
        cl["endpoints"] = endpoints
    lst: dict = {"address": f"127.0.0.1:{LISTEN_PORT}"}
    if route:
        lst["routes"] = [{"prefix": "/", "cluster": "c", "timeout": "2s", **route}]
    else:
        lst["cluster"] = "c"
    cfg = {"proxy": {"workers": workers, "io_backend": io_backend, "drain_timeout": "5s"},
           "listener": [lst], "cluster": [cl]}
    if dns:
        cfg["discovery"] = {"resolvers": [dns["resolver"]]}
    return cfg


class Ringlb(Proc):
    def __init__(self, binary: str, cfg: dict, workdir: Path, name: str = "ringlb"):
        self.config_path = workdir / "ringlb.toml"
        self.config_path.write_text(render_config(cfg))
        self.io_backend = cfg["proxy"]["io_backend"]
        super().__init__(name, [binary, "--config", str(self.config_path)], workdir)
        self.wait_ready()

    def wait_ready(self):
        try:
            self.wait_for(r"ready:\s*\d+\s+workers?", 10.0)
        except ScenarioError as e:
            self.stop(1.0)  # nothing may outlive the scenario in its namespace
            raise ScenarioError(f"{self.name} did not start with {self.config_path}:\n"
                                f"{self.config_path.read_text()}\n{e}") from None
        io = re.search(r"io backend: (\S+)", self.text())
        if not io or io.group(1) != self.io_backend:
            self.stop(1.0)
            raise ScenarioError(f"{self.name}: asked for io_backend {self.io_backend}, log says "
                                f"{io.group(0) if io else 'nothing'}")

    def again(self, name: str) -> "Ringlb":
        """A second ringlb on the same config (and so the same listener port: SO_REUSEPORT)."""
        r = Ringlb.__new__(Ringlb)
        r.config_path, r.io_backend = self.config_path, self.io_backend
        Proc.__init__(r, name, self.argv, self.workdir)
        r.wait_ready()
        return r


def haproxy_config(backends: list[Backend]) -> str:
    """As the issue puts it: h2 to the backends, `check inter 1s fall 2`, `retry-on
    conn-failure` (with redispatch, so the retry goes to another server)."""
    servers = "\n".join(f"    server {b.name} {b.address} proto h2 check inter 1s fall 2"
                        for b in backends)
    return f"""# written by tests/chaos/procs.py
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend fe
    bind 127.0.0.1:{LISTEN_PORT} proto h2
    default_backend be

backend be
    balance roundrobin
    http-reuse always
{servers}
"""


class Haproxy(Proc):
    def __init__(self, backends: list[Backend], workdir: Path):
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(haproxy_config(backends))
        super().__init__("haproxy", ["haproxy", "-db", "-f", str(self.config_path)], workdir)
        end = time.monotonic() + 10
        import socket
        while True:
            try:
                socket.create_connection(("127.0.0.1", LISTEN_PORT), timeout=0.5).close()
                return
            except OSError:
                if not self.alive() or time.monotonic() > end:
                    self.stop(1.0)
                    raise ScenarioError(f"haproxy did not listen: {self.text()[-2000:]}")
                time.sleep(0.05)

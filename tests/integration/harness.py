"""Integration harness: real grpcio backends, real grpcio clients, the real ringlb binary.

Everything binds 127.0.0.1 port 0. Backends run in-process (grpcio servers on their own thread
pools); ringlb runs as a child process with its stderr captured to a file.

Environment:
  RINGLB_BIN     path of the binary (default: <repo>/build/ringlb)
  RINGLB_DIRECT  "1": no proxy at all; the ringlb factory hands out the port of a backend of the
                 listener's default cluster, so the harness and the client side can be checked
                 without the binary. Anything that needs the process (pid, RSS, logs, signals)
                 fails loudly in this mode, and so do assertions that only a proxy can satisfy.
"""
from __future__ import annotations

import base64
import collections
import faulthandler
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
MAX_MSG = 16 * MIB
SERVICE = "test.Echo"
SERVICES = (SERVICE, "other.Echo")

READY_TIMEOUT = 10.0   # seconds for ringlb to print ready:
STOP_TIMEOUT = 10.0    # seconds after SIGTERM before kill -9 (and a failed test)

LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")
READY_RE = re.compile(r"ready:\s*(\d+)\s+workers?")
IO_RE = re.compile(r"io backend: (\S+)")
# The admin listener's start-up line: "admin: http://127.0.0.1:PORT/ (...)".
ADMIN_RE = re.compile(r"admin: http://(\S+):(\d+)/")
SHARD_RE = re.compile(r"shard (\d+) stopped: (\d+) connections, (\d+) calls")
CONFIG_ERR_RE = re.compile(r"(\S+?):(\d+):(\d+): (.*)")


def direct_mode() -> bool:
    return os.environ.get("RINGLB_DIRECT", "") not in ("", "0")


def ringlb_bin() -> Path:
    return Path(os.environ.get("RINGLB_BIN", REPO / "build" / "ringlb"))


def require_binary() -> Path:
    b = ringlb_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(f"ringlb binary not found or not executable at {b}: build it with "
                    f"`cd {REPO} && meson setup build && ninja -C build`, or set RINGLB_BIN",
                    pytrace=False)
    return b


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
    ("grpc.so_reuseport", 0),
]


def pattern(i: int, size: int) -> bytes:
    """Deterministic message i of `size` bytes (index in the first 8 bytes, then filler)."""
    head = i.to_bytes(8, "big")
    if size <= 8:
        return head[:size]
    seed = hashlib.sha256(head).digest()
    body = (seed * (size // len(seed) + 1))[: size - 8]
    return head + body


class Backend:
    """One grpcio server with the test.Echo methods and per-backend counters."""

    # Set on an instance: Unary answers this status (still counted) instead of echoing. A class
    # attribute, so subclasses that build their own server have it too.
    fail_code: grpc.StatusCode | None = None

    def __init__(self, name: str, delay: float = 0.0, max_workers: int = 128, port: int = 0):
        """port: 0 binds any free port; another binds that one (a backend that comes back)."""
        self.name = name
        self.delay = delay              # seconds, used by UnaryDelay when the request is empty
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.active = 0                 # calls currently inside a handler
        self.slow: dict[str, str] = {}  # Slow call id -> "running" | "cancelled" | "completed"
        self.stream_sent: dict[str, int] = {}   # ServerStream id -> messages handed to grpc
        self.stream_state: dict[str, str] = {}  # ServerStream id -> "running" | "done" | "cancelled"
        self.metadata: dict[str, list] = {}     # call id -> invocation metadata seen
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=SERVER_OPTIONS)
        h = grpc
        handlers = {
            "Unary": h.unary_unary_rpc_method_handler(self._unary),
            "UnaryDelay": h.unary_unary_rpc_method_handler(self._unary_delay),
            "ServerStream": h.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": h.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": h.stream_stream_rpc_method_handler(self._bidi),
            "Status": h.unary_unary_rpc_method_handler(self._status),
            "Slow": h.unary_unary_rpc_method_handler(self._slow),
        }
        # The same methods under a second service name, for route tests.
        self.server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(svc, handlers) for svc in SERVICES))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        if not self.port:
            raise RuntimeError(f"backend {name}: could not bind 127.0.0.1:{port}")
        self.server.start()

    # -- bookkeeping
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    def _enter(self, method: str):
        with self.lock:
            self.calls[method] += 1
            self.active += 1

    def _leave(self):
        with self.lock:
            self.active -= 1

    def reset(self):
        with self.lock:
            self.calls.clear()

    def stop(self):
        self.server.stop(0)

    # -- handlers
    def _unary(self, req: bytes, ctx):
        self._enter("Unary")
        try:
            code = self.fail_code
            if code is not None:
                ctx.abort(code, f"{self.name} is failing on purpose")
            ctx.send_initial_metadata((("x-backend", self.name),))
            return req
        finally:
            self._leave()

    def _unary_delay(self, req: bytes, ctx):
        self._enter("UnaryDelay")
        try:
            delay = float(req.decode()) / 1000.0 if req else self.delay
            ctx.send_initial_metadata((("x-backend", self.name),))
            time.sleep(delay)
            return self.name.encode()
        finally:
            self._leave()

    def _server_stream(self, req: bytes, ctx):
        self._enter("ServerStream")
        try:
            spec = json.loads(req)
            sid, count, size = spec.get("id", ""), int(spec["count"]), int(spec["size"])
            with self.lock:
                self.stream_sent[sid] = 0
                self.stream_state[sid] = "running"
            ctx.send_initial_metadata((("x-backend", self.name),))
            for i in range(count):
                if not ctx.is_active():
                    with self.lock:
                        self.stream_state[sid] = "cancelled"
                    return
                yield pattern(i, size)
                with self.lock:
                    self.stream_sent[sid] = i + 1
            with self.lock:
                self.stream_state[sid] = "done"
        finally:
            with self.lock:
                if self.stream_state.get(sid) == "running":
                    self.stream_state[sid] = "cancelled"
            self._leave()

    def _client_stream(self, it, ctx):
        self._enter("ClientStream")
        try:
            n, nbytes, h = 0, 0, hashlib.sha256()
            for m in it:
                n += 1
                nbytes += len(m)
                h.update(len(m).to_bytes(8, "big"))
                h.update(m)
            return json.dumps({"count": n, "bytes": nbytes, "sha256": h.hexdigest(),
                               "backend": self.name}).encode()
        finally:
            self._leave()

    def _bidi(self, it, ctx):
        self._enter("Bidi")
        try:
            for m in it:
                yield m
        finally:
            self._leave()

    def _status(self, req: bytes, ctx):
        """Request (JSON): code, message, initial, trailing ([[key, value]], -bin values base64).
        Client metadata whose key starts with x- is echoed in the initial metadata as echo-KEY."""
        self._enter("Status")
        try:
            spec = json.loads(req)
            initial = decode_md(spec.get("initial", []))
            for k, v in ctx.invocation_metadata():
                if k.startswith("x-"):
                    initial.append(("echo-" + k, v))
            if initial or spec.get("send_initial", True):
                ctx.send_initial_metadata(tuple(initial))
            ctx.set_trailing_metadata(tuple(decode_md(spec.get("trailing", []))))
            code = int(spec.get("code", 0))
            if code == 0:
                return b"ok"
            ctx.abort(STATUS_BY_VALUE[code], spec.get("message", ""))
        finally:
            self._leave()

    def _slow(self, req: bytes, ctx):
        """Request (JSON): id, ms. Sleeps; records whether the call was cancelled under it."""
        self._enter("Slow")
        spec = json.loads(req) if req else {}
        cid, ms = spec.get("id", ""), float(spec.get("ms", 1000))
        with self.lock:
            self.slow[cid] = "running"
        try:
            end = time.monotonic() + ms / 1000.0
            while time.monotonic() < end:
                if not ctx.is_active():
                    with self.lock:
                        self.slow[cid] = "cancelled"
                    return b""
                time.sleep(0.01)
            with self.lock:
                self.slow[cid] = "completed"
            ctx.send_initial_metadata((("x-backend", self.name),))
            return b"done"
        finally:
            self._leave()


STATUS_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def encode_md(md: Iterable[tuple[str, Any]]) -> list:
    out = []
    for k, v in md:
        if k.endswith("-bin"):
            out.append([k, base64.b64encode(v).decode()])
        else:
            out.append([k, v])
    return out


def decode_md(md: Iterable) -> list:
    out = []
    for k, v in md:
        out.append((k, base64.b64decode(v) if k.endswith("-bin") else v))
    return out


class BackendPool:
    def __init__(self):
        self.all: list[Backend] = []

    def __call__(self, n: int = 1, prefix: str = "b", delays: list[float] | None = None,
                 max_workers: int = 128) -> list[Backend]:
        out = []
        for i in range(n):
            name = f"{prefix}{len(self.all)}"
            d = delays[i] if delays else 0.0
            b = Backend(name, delay=d, max_workers=max_workers)
            self.all.append(b)
            out.append(b)
        return out

    def close(self):
        for b in self.all:
            try:
                b.stop()
            except Exception:
                pass


def closed_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed (nobody listens on it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------
_channel_seq = iter(range(1, 1 << 30))


def channel(port: int, own_connection: bool = True, extra: list | None = None) -> grpc.Channel:
    """A client channel to 127.0.0.1:port. own_connection=True guarantees the channel does not
    share a TCP connection with any other channel (local subchannel pool + unique arg)."""
    opts = [
        ("grpc.max_send_message_length", MAX_MSG),
        ("grpc.max_receive_message_length", MAX_MSG),
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
    ]
    if own_connection:
        opts += [("grpc.use_local_subchannel_pool", 1), ("ringlb.test.channel", next(_channel_seq))]
    opts += extra or []
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)


class Stub:
    def __init__(self, ch: grpc.Channel, service: str = SERVICE):
        self.ch = ch
        m = f"/{service}/"
        self.unary = ch.unary_unary(m + "Unary")
        self.unary_delay = ch.unary_unary(m + "UnaryDelay")
        self.server_stream = ch.unary_stream(m + "ServerStream")
        self.client_stream = ch.stream_unary(m + "ClientStream")
        self.bidi = ch.stream_stream(m + "Bidi")
        self.status = ch.unary_unary(m + "Status")
        self.slow = ch.unary_unary(m + "Slow")


def md_dict(md) -> dict:
    return {k: v for k, v in (md or ())}


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.01):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Config rendering (the TOML subset the config contract uses)
# ---------------------------------------------------------------------------------------------
def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot render {v!r} as TOML")


def render_config(cfg: dict) -> str:
    # Tests run many ringlb processes at once: each gets its own admin port unless the test
    # sets one (or "off").
    cfg = dict(cfg)
    cfg.setdefault("admin", {"address": "127.0.0.1:0"})
    # The access log (default: stdout) is off unless a test asks for it: log_text() is stderr +
    # stdout, and tests that slice it by offset or show its tail want the process log there.
    cfg["log"] = {"access": "off", **cfg.get("log", {})}
    lines = []
    if cfg.get("proxy"):
        lines.append("[proxy]")
        lines += [f"{k} = {toml_value(v)}" for k, v in cfg["proxy"].items()]
        lines.append("")
    for section in ("listener", "cluster"):
        for t in cfg.get(section, []):
            lines.append(f"[[{section}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
            lines.append("")
    for k, v in cfg.items():
        if k not in ("proxy", "listener", "cluster"):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
            lines.append("")
    return "\n".join(lines)


def cluster(name: str, backends: list, lb: str = "round_robin", weights: list | None = None,
            **extra) -> dict:
    eps = []
    for i, b in enumerate(backends):
        addr = b if isinstance(b, str) else b.address
        if weights and weights[i] != 1:
            eps.append({"address": addr, "weight": weights[i]})
        else:
            eps.append(addr)
    c = {"name": name, "lb": lb, "endpoints": eps, "connect_timeout": "1s"}
    c.update(extra)
    return c


# ---------------------------------------------------------------------------------------------
# ringlb process
# ---------------------------------------------------------------------------------------------
class Ringlb:
    """A running ringlb child process."""

    direct = False

    def __init__(self, config: dict, io_backend: str, workdir: Path, name: str = "ringlb",
                 launcher: list[str] | None = None, expect_io: str | None = None,
                 wait_ready: bool = True, env: dict[str, str] | None = None,
                 config_env: str | None = None):
        """launcher: argv placed before the binary (a wrapper that execs it, so pid stays
        ringlb's). expect_io: the `io backend:` name to insist on (default: io_backend).
        wait_ready=False returns at once; call wait_listening() / wait_ready() yourself.
        env: variables added to the child's environment. config_env: pass the config as the
        text of this environment variable (`--config-env NAME`) instead of `--config FILE`."""
        self.bin = require_binary()
        self.expect_io = expect_io or io_backend
        self.io_backend = io_backend
        self.config = config
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(render_config(config))
        self.stderr_path = workdir / f"{name}.stderr"
        self.stdout_path = workdir / f"{name}.stdout"
        self.returncode: int | None = None
        self.killed = False
        child_env = {**os.environ, **(env or {})}
        if config_env:
            child_env[config_env] = self.config_path.read_text()
            args = ["--config-env", config_env]
        else:
            args = ["--config", str(self.config_path)]
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen([*(launcher or []), str(self.bin), *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=child_env, start_new_session=True)
        self.pid = self.proc.pid
        self.addresses: list[tuple[str, int]] = []
        if wait_ready:
            self._wait_ready()

    # -- logs
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.stderr_text() + self.stdout_text()

    def _fail(self, msg: str):
        pytest.fail(f"{msg}\n--- ringlb stderr ({self.stderr_path}) ---\n{self.stderr_text()[-4000:]}",
                    pytrace=False)

    def wait_listening(self, timeout: float = READY_TIMEOUT) -> int:
        """Waits for the first `listening on HOST:PORT` line (ready: or not); returns the port."""
        end = time.monotonic() + timeout
        while True:
            m = LISTEN_RE.search(self.log_text())
            if m:
                return int(m.group(2))
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self._fail(f"ringlb exited with {self.proc.returncode} before `listening on`")
            if time.monotonic() > end:
                self.kill()
                self._fail(f"ringlb printed no `listening on HOST:PORT` within {timeout}s")
            time.sleep(0.005)

    def wait_ready(self):
        self._wait_ready()

    def _wait_ready(self):
        end = time.monotonic() + READY_TIMEOUT
        while True:
            text = self.log_text()
            m = READY_RE.search(text)
            if m and LISTEN_RE.search(text[: m.start()] if m else text):
                break
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self._fail(f"ringlb exited with {self.proc.returncode} before printing ready:")
            if time.monotonic() > end:
                self.kill()
                self._fail(f"ringlb did not print `listening on HOST:PORT` and `ready:` within "
                           f"{READY_TIMEOUT}s")
            time.sleep(0.02)
        self.addresses = [(h, int(p)) for h, p in LISTEN_RE.findall(text[: m.end()])]
        self.ready_workers = int(m.group(1))
        io = IO_RE.search(text)
        if not io:
            self._fail("ringlb printed no `io backend: NAME` line before ready:")
        if io.group(1) != self.expect_io:
            self._fail(f"asked for io_backend = {self.io_backend!r} (expecting "
                       f"{self.expect_io!r}), ringlb says "
                       f"`io backend: {io.group(1)}`")

    # -- addresses
    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def ports(self) -> list[int]:
        # one port per listener, in order of first appearance (shards may each print theirs)
        seen: list[int] = []
        for _, p in self.addresses:
            if p not in seen:
                seen.append(p)
        return seen

    # -- admin listener
    def admin_port(self, timeout: float = READY_TIMEOUT) -> int:
        """The admin listener's port, from its `admin: http://HOST:PORT/` start-up line."""
        end = time.monotonic() + timeout
        while True:
            m = ADMIN_RE.search(self.log_text())
            if m:
                return int(m.group(2))
            if self.proc.poll() is not None or time.monotonic() > end:
                self._fail("ringlb printed no `admin: http://HOST:PORT/` line")
            time.sleep(0.01)

    def admin(self, path: str, method: str = "GET", body: bytes | None = None,
              timeout: float = 10.0) -> tuple[int, bytes, dict]:
        """One request to the admin listener: (status, body, headers with lower-case names)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port(), timeout=timeout)
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            data = r.read()
            return r.status, data, {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    # -- process
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except FileNotFoundError:
            pass
        self._fail("ringlb process is gone; cannot read VmRSS")
        return 0

    def signal(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.killed = True
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        self.returncode = self.proc.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait; kill -9 and fail the test if it does not exit in time."""
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            self._fail(f"ringlb did not exit within {timeout}s of SIGTERM (killed with SIGKILL)")
        return rc

    def shard_stats(self) -> dict[int, tuple[int, int]]:
        return {int(s): (int(c), int(n)) for s, c, n in SHARD_RE.findall(self.log_text())}


class DirectRinglb:
    """RINGLB_DIRECT=1: no proxy. The 'listener' is a backend of the default cluster."""

    direct = True

    def __init__(self, config: dict, io_backend: str):
        self.io_backend = io_backend
        self.config = config
        self.returncode = None
        self.addresses = []
        for lst in config.get("listener", []):
            name = lst.get("cluster") or (lst.get("routes") or [{}])[0].get("cluster")
            cl = next((c for c in config.get("cluster", []) if c["name"] == name), None)
            if cl is None or not cl["endpoints"]:
                pytest.fail("RINGLB_DIRECT=1: listener has no cluster with endpoints to stand in")
            ep = cl["endpoints"][0]
            addr = ep["address"] if isinstance(ep, dict) else ep
            host, port = addr.rsplit(":", 1)
            self.addresses.append((host, int(port)))
        self.ready_workers = config.get("proxy", {}).get("workers", 1)

    port = Ringlb.port
    ports = Ringlb.ports

    def _needs_proxy(self, what: str):
        pytest.fail(f"{what} needs the real ringlb process (RINGLB_DIRECT=1 is set)", pytrace=False)

    @property
    def pid(self):
        self._needs_proxy("the ringlb pid")

    def stderr_text(self):
        self._needs_proxy("ringlb's stderr")

    log_text = stderr_text

    def rss_kib(self):
        self._needs_proxy("ringlb's VmRSS")

    def signal(self, sig=signal.SIGTERM):
        self._needs_proxy("signalling ringlb")

    def wait(self, timeout):
        self._needs_proxy("waiting for ringlb")

    def stop(self, timeout: float = STOP_TIMEOUT):
        self._needs_proxy("stopping ringlb")

    def shard_stats(self):
        self._needs_proxy("ringlb's shard stats")

    def alive(self):
        return True

    def kill(self):
        pass


class RinglbFactory:
    def __init__(self, io_backend: str, tmp_path: Path):
        self.io_backend = io_backend
        self.tmp_path = tmp_path
        self.instances: list[Ringlb] = []

    def config(self, clusters: list[dict], listeners: list[dict] | None = None,
               **proxy) -> dict:
        p = {"workers": 1, "io_backend": self.io_backend, "drain_timeout": "5s",
             "stream_buffer": "256KiB"}
        p.update(proxy)
        if listeners is None:
            listeners = [{"cluster": clusters[0]["name"]}]
        ls = []
        for lst in listeners:
            d = {"address": "127.0.0.1:0"}
            d.update(lst)
            ls.append(d)
        return {"proxy": p, "listener": ls, "cluster": clusters}

    def __call__(self, clusters: list[dict], listeners: list[dict] | None = None,
                 **proxy) -> Ringlb:
        cfg = self.config(clusters, listeners, **proxy)
        if direct_mode():
            return DirectRinglb(cfg, self.io_backend)
        r = Ringlb(cfg, self.io_backend, self.tmp_path, name=f"ringlb{len(self.instances)}")
        self.instances.append(r)
        return r

    def run(self, args: list[str], timeout: float = 10.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Runs the binary to completion (config checks). Fails the test if it hangs.
        env: variables added to its environment."""
        b = require_binary()
        try:
            return subprocess.run([str(b), *args], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, text=True, errors="replace",
                                  env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`ringlb {' '.join(args)}` did not exit within {timeout}s; "
                        f"stderr so far: {e.stderr!r}", pytrace=False)

    def close(self) -> list[str]:
        """Stops every instance still running. Returns problems (not exited / bad exit)."""
        problems = []
        for r in self.instances:
            if r.proc.poll() is None:
                r.signal(signal.SIGTERM)
                rc = r.wait(STOP_TIMEOUT)
                if rc is None:
                    r.kill()
                    problems.append(f"{r.config_path.name}: did not exit within {STOP_TIMEOUT}s "
                                    f"of SIGTERM; killed with SIGKILL")
                    continue
            rc = r.proc.returncode
            r.returncode = rc
            if rc != 0 and not r.killed and not getattr(r, "expect_nonzero", False):
                problems.append(f"{r.config_path.name}: exit status {rc}"
                                + (f" (signal {signal.Signals(-rc).name})" if rc < 0 else ""))
        return problems


def watchdog(request, seconds: float):
    """A conftest's autouse fixture body (yield from it): bounded loops are the rule; this is the
    backstop if a test still hangs: it dumps every thread's stack, kills the test's ringlb
    instances and aborts the run."""
    def fire():
        sys.stderr.write(f"\n*** watchdog: {request.node.nodeid} exceeded {seconds}s ***\n")
        faulthandler.dump_traceback(all_threads=True)
        factory = getattr(request.node, "_ringlb_factory", None)
        for r in (factory.instances if factory else []):
            r.kill()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()

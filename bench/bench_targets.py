"""Benchmark processes: the backends and every target (ringlb, HAProxy, nginx) with their
configs, pinned with taskset; /proc readings (CPU ticks, RSS). Part of bench/harness.py."""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# ringlb-ops: ringlb-io_uring with the operations surface in use: the JSON access log written to
# a file for every call, and /metrics scraped once a second (the other ringlb targets have the
# access log off; metrics are always counted).
PROXY_TARGETS = ["ringlb-io_uring", "ringlb-ops", "ringlb-epoll", "haproxy-h2", "haproxy-tcp",
                 "nginx"]
ALL_TARGETS = ["direct"] + PROXY_TARGETS
RINGLB_TARGETS = ["ringlb-io_uring", "ringlb-epoll"]
REFERENCE = "haproxy-h2"

RPC_PATH = "/bench.Echo/Call"
PAYLOAD = 64                  # bytes of gRPC message payload
RESP_DATA = 5 + PAYLOAD       # DATA bytes of one successful reply: the echoed framed message
MAX_STREAMS = 1024            # concurrent streams per client connection, every target
STREAM_WINDOW = 256 * 1024    # HTTP/2 stream window, every hop we can set
CONN_WINDOW = 8 * 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB_PER_MIB = 1024.0

T0 = time.monotonic()


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - T0:7.1f}s] {msg}\n")
    sys.stderr.flush()


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
ALIVE: set["Proc"] = set()


def children_of(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d.name))
    return out


class Proc:
    """A child process pinned with taskset, output to a log file, its own process group."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, cpu: int,
                 preexec: Callable[[], None] | None = None, prefix: list[str] | None = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.cmd = (prefix or []) + ["taskset", "-c", str(cpu)] + cmd
        with open(self.log_path, "wb") as f:
            self.p = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=workdir,
                                      start_new_session=True, preexec_fn=preexec)
        self.pid = self.p.pid
        ALIVE.add(self)

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 1500) -> str:
        return self.text()[-n:]

    def wait_for(self, regex: str, timeout: float = 10.0) -> re.Match:
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pat.search(self.text())
            if m:
                return m
            if self.p.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.p.returncode}) before /{regex}/: "
                                 f"{self.tail()}")
            time.sleep(0.02)
        raise BenchError(f"{self.name}: no /{regex}/ within {timeout}s: {self.tail()}")

    def pids(self) -> list[int]:
        """The process and its direct children (nginx: master + worker)."""
        if self.p.poll() is not None:
            return []
        return [self.pid] + children_of(self.pid)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        try:  # stragglers of the group we created (an nginx worker whose master was killed)
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        ALIVE.discard(self)


def stop_all() -> None:
    for p in list(ALIVE):
        try:
            p.stop(3.0)
        except Exception as e:  # noqa: BLE001 -- best effort at exit
            log(f"stopping {p.name}: {e}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.p.returncode}): {proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{proc.name}: port {port} not accepting within {timeout}s: {proc.tail()}")


# ---------------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------------
def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of every thread of every pid (the process line sums its threads)."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # fields 14 and 15 of stat(5)
    return total


def sched_ns(pids: list[int]) -> int:
    """Sum of on-CPU nanoseconds of live threads (finer grained cross-check of cpu_ticks)."""
    total = 0
    for pid in pids:
        try:
            for t in Path(f"/proc/{pid}/task").iterdir():
                try:
                    total += int((t / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
        except OSError:
            pass
    return total


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------------------------------------
# Backends and targets
# ---------------------------------------------------------------------------------------------
class Env:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.bin = Path(args.bin)
        self.backend_bin = Path(args.backend_bin or args.bin)
        self.workdir = workdir
        cpus = sorted(os.sched_getaffinity(0))
        self.client_cpu = cpus[0]
        self.proxy_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
        self.body = workdir / "call.bin"
        self.body.write_bytes(b"\x00" + struct.pack(">I", PAYLOAD) + bytes(range(PAYLOAD)))
        self.notes: list[str] = []
        if self.client_cpu == self.proxy_cpu:
            self.notes.append(f"only one usable CPU ({cpus}): proxy and load share it")


def start_backends(env: Env, tag: str, n: int, delay_ms: int,
                   threads: int = 1) -> list[tuple[Proc, int]]:
    out = []
    for i in range(n):
        cmd = [str(env.backend_bin), "backend", "--listen", "127.0.0.1:0", "--name", f"{tag}{i}",
               "--threads", str(threads)]
        if delay_ms:
            cmd += ["--delay-ms", str(delay_ms)]
        p = Proc(f"backend-{tag}{i}", cmd, env.workdir, env.client_cpu)
        m = p.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        out.append((p, int(m.group(1))))
    return out


class Running:
    """One started target: its port and (for proxies) its process."""

    def __init__(self, name: str, port: int, proc: Proc | None, ready_line: str = ""):
        self.name, self.port, self.proc, self.ready_line = name, port, proc, ready_line

    def pids(self) -> list[int]:
        return self.proc.pids() if self.proc else []

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


def ringlb_config(io_backend: str, ports: list[int], workers: str = "1",
                  access: str = "off", proxy_extra: dict[str, str] | None = None) -> str:
    """proxy_extra: more [proxy] keys, each value TOML text (e.g. {"memory_limit": '"64MiB"'})."""
    eps = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    extra = "".join(f"{k} = {v}\n" for k, v in (proxy_extra or {}).items())
    return f"""# written by bench/harness.py
[admin]
address = "127.0.0.1:0"

[log]
access = "{access}"

[proxy]
workers = {workers}
io_backend = "{io_backend}"
max_concurrent_streams = {MAX_STREAMS}
stream_buffer = "{STREAM_WINDOW // 1024}KiB"
connection_window = "{CONN_WINDOW // (1024 * 1024)}MiB"
{extra}
[[listener]]
address = "127.0.0.1:0"
cluster = "bench"

[[cluster]]
name = "bench"
lb = "round_robin"
endpoints = [{eps}]
"""


def start_ringlb(env: Env, name: str, io_backend: str, ports: list[int], workers: str = "1",
                 preexec=None, prefix=None, access: str = "off",
                 proxy_extra: dict[str, str] | None = None) -> Running:
    cfg = env.workdir / f"{name}.toml"
    cfg.write_text(ringlb_config(io_backend, ports, workers, access, proxy_extra))
    p = Proc(name, [str(env.bin), "--config", str(cfg)], env.workdir, env.proxy_cpu,
             preexec=preexec, prefix=prefix)
    ready = p.wait_for(r"ready:[^\n]*")
    m = p.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
    io = re.search(r"io backend: (\S+)", p.text())
    if io and io.group(1) != io_backend:
        p.stop()
        raise BenchError(f"{name}: asked for io_backend {io_backend}, got {io.group(1)}")
    return Running(name, int(m.group(1)), p, ready.group(0))


def start_scraper(run: Running, every: float = 1.0) -> None:
    """Scrapes the ringlb's /metrics every `every` seconds until it stops (a daemon thread), as
    a Prometheus server or the Datadog agent would."""
    import threading
    import urllib.request
    m = run.proc.wait_for(r"admin: http://127\.0\.0\.1:(\d+)/")
    url = f"http://127.0.0.1:{m.group(1)}/metrics"

    def loop():
        while run.proc.alive():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    r.read()
            except OSError:
                pass
            time.sleep(every)

    threading.Thread(target=loop, daemon=True).start()


def start_haproxy(env: Env, name: str, mode: str, ports: list[int], preexec=None,
                  prefix=None) -> Running:
    port = free_port()
    proto = " proto h2" if mode == "http" else ""
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}{proto}" for i, p in enumerate(ports))
    extra_be = "    http-reuse always\n" if mode == "http" else ""
    cfg = env.workdir / f"{name}.cfg"
    cfg.write_text(f"""# written by bench/harness.py
global
    nbthread 1
    maxconn 9000
    tune.h2.max-concurrent-streams {MAX_STREAMS}
    tune.h2.initial-window-size {STREAM_WINDOW}

defaults
    mode {mode}
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend fe
    bind 127.0.0.1:{port}{proto}
    default_backend be

backend be
    balance roundrobin
{extra_be}{servers}
""")
    p = Proc(name, ["haproxy", "-db", "-f", str(cfg)], env.workdir, env.proxy_cpu,
             preexec=preexec, prefix=prefix)
    wait_port(port, p)
    return Running(name, port, p)


def start_nginx(env: Env, name: str, ports: list[int]) -> Running:
    port = free_port()
    prefix = env.workdir / name
    prefix.mkdir(exist_ok=True)
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conf = prefix / "nginx.conf"
    conf.write_text(f"""# written by bench/harness.py
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {max(1024, nofile - 100)}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams {MAX_STREAMS};
    http2_body_preread_size {STREAM_WINDOW // 1024}k;
    upstream backends {{
{servers}
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://backends;
            grpc_read_timeout 120s;
            grpc_send_timeout 120s;
        }}
    }}
}}
""")
    p = Proc(name, ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
             env.workdir, env.proxy_cpu)
    wait_port(port, p)
    deadline = time.monotonic() + 5
    while len(p.pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    if len(p.pids()) < 2:
        raise BenchError(f"{name}: no worker process: {p.tail()}")
    return Running(name, port, p)


def start_target(env: Env, target: str, ports: list[int], tag: str) -> Running:
    name = f"{target}-{tag}"
    if target == "direct":
        return Running(target, ports[0], None)
    if target == "ringlb-ops":
        run = start_ringlb(env, name, "io_uring", ports, access=str(env.workdir / f"{name}.access"))
        start_scraper(run)
        return run
    if target.startswith("ringlb-"):
        return start_ringlb(env, name, target.split("-", 1)[1], ports)
    if target == "haproxy-h2":
        return start_haproxy(env, name, "http", ports)
    if target == "haproxy-tcp":
        return start_haproxy(env, name, "tcp", ports)
    if target == "nginx":
        return start_nginx(env, name, ports)
    raise BenchError(f"unknown target {target}")

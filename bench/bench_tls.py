"""The TLS run of bench/harness.py (`--tls`): ringlb and HAProxy side by side, same run, same
backends, same load, one worker/thread each, the proxy pinned to the proxy CPU and h2load and
the backends to the other (bench_targets' placement).

Certificates are made at run time with the openssl CLI in the work folder: an EC P-256 CA and
an EC P-256 server certificate for `bench.test` and 127.0.0.1 (SAN DNS and IP), signed by it.
Both proxies present the same certificate (no chain beyond it). h2load offers only
TLS_AES_128_GCM_SHA256 for TLS 1.3 (HAProxy would otherwise pick AES-256 by its own preference,
ringlb AES-128 by the client's), the rest is the defaults: TLS 1.3, X25519; what each run
negotiated is in the report, and a note says when the proxies differ.

  A  client-side TLS: h2load over TLS (https://bench.test:PORT, --connect-to 127.0.0.1:PORT,
     so SNI bench.test; ALPN h2) -> proxy (TLS termination) -> the three plain h2c
     `ringlb backend` echo servers of the main harness. ringlb: `[[listener]] tls = { cert,
     key }`; HAProxy: `bind ... ssl crt <cert+key pem> alpn h2`, servers `proto h2`.
  B  TLS to the backends: h2load plain h2c -> proxy -> TLS backends. The backends are the same
     three `ringlb backend` echo servers, each behind a TLS front (one HAProxy process in
     `mode tcp`, `bind ... ssl crt <pem> alpn h2`, nbthread 1, on the client CPU): TLS is
     terminated before the echo server, so replies are the same gRPC echo with trailers and
     the harness's reply check applies. ringlb: `[[cluster]] tls = { ca, sni = "bench.test" }`;
     HAProxy: `server ... ssl verify required ca-file <ca> sni str(bench.test) alpn h2 proto h2`.
  C  full handshakes per CPU-second: h2load in rate mode, every connection new and carrying
     exactly one call (-c N -n N -m 1: n/c = 1 call per connection), then closed. h2load keeps
     no TLS session between its connections (no ticket or session id is offered), so every
     handshake is a full one for both proxies; the proxies' own counters confirm it (ringlb
     ringlb_downstream_tls_handshakes_total{result}, HAProxy `show stat` ssl_sess,
     ssl_reused_sess, ssl_failed_handshake of the frontend) and the report shows them. Figure: handshakes / proxy CPU
     seconds (utime + stime over the run) = handshakes per second per core. Each counted
     handshake also carries its TCP accept, the HTTP/2 preface and one proxied call: the same
     work on both sides.
  RSS  ringlb (and HAProxy, for scale) with the run-A TLS listener: VmRSS after start, and
     after a few calls over TLS once idle again (the floor's figure).

CPU per call is the main harness's: utime + stime of the proxy's threads from /proc/PID/stat
over a fixed number of calls at full speed (4 connections x 32 streams, after a warm-up), with
/proc/PID/task/*/schedstat as the cross-check. Repetitions (3; --quick 1) rotate the proxy
order; the tables show medians. Floors: A ringlb / HAProxy CPU per call <= 0.6; C ringlb
handshakes per CPU-second >= HAProxy's; ringlb idle RSS with a TLS listener <= 8 MiB (8192 KiB).
B is reported with its ratio (no floor set).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_load import H2, background_load, h2load_cmd
from bench_targets import (CLK_TCK, MAX_STREAMS, STREAM_WINDOW, BenchError, Env, Proc, Running,
                           cpu_ticks, free_port, ringlb_config, rss_kb, sched_ns, start_backends,
                           stop_all, wait_port)

TARGETS = ["ringlb-io_uring", "ringlb-epoll", "haproxy-h2"]
DEFAULT_TARGETS = ["ringlb-io_uring", "haproxy-h2"]
REFERENCE = "haproxy-h2"
RUNS = {"A": "client-side TLS", "B": "TLS to the backends", "C": "full handshakes",
        "RSS": "idle RSS with a TLS listener"}
SNI = "bench.test"
FLOOR_A_CPU_RATIO = 0.6
FLOOR_C_HS_RATIO = 1.0
FLOOR_RSS_KIB = 8192
# h2load offers only this TLS 1.3 suite: HAProxy picks by its own preference (AES-256 first),
# ringlb by the client's, so left to their defaults they encrypt differently. AES-128-GCM is
# h2load's (and most gRPC clients') first choice.
CLIENT_TLS13_CIPHERS = "TLS_AES_128_GCM_SHA256"


class TlsProfile:
    def __init__(self, a):
        q = a.quick
        self.quick = q
        self.reps = a.reps or (1 if q else 3)
        self.calls = a.calls or (10000 if q else 50000)
        self.warmup_calls = 500 if q else 5000
        self.conns, self.streams = 4, 32
        self.hs_count = a.tls_handshakes or (500 if q else 2000)
        self.hs_rate = a.tls_hs_rate        # connections/s asked of h2load's rate mode
        self.rss_calls = 100

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------
def _openssl(args: list[str], cwd: Path) -> None:
    r = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise BenchError(f"openssl {' '.join(args)}: {r.stderr.strip()[-400:]}")


def make_certs(d: Path) -> dict[str, Path]:
    """EC P-256 CA and server certificate (SAN DNS:bench.test, IP:127.0.0.1) in d."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
              "/CN=ringlb bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", "server.key"], d)
    _openssl(["req", "-new", "-key", "server.key", "-subj", f"/CN={SNI}", "-out", "server.csr"],
             d)
    (d / "server.ext").write_text(f"subjectAltName=DNS:{SNI},IP:127.0.0.1\n"
                                  "basicConstraints=critical,CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature\n"
                                  "extendedKeyUsage=serverAuth\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-set_serial", str(int(time.time())), "-days", "2", "-sha256",
              "-extfile", "server.ext", "-out", "server.crt"], d)
    _openssl(["verify", "-CAfile", "ca.pem", "server.crt"], d)
    # HAProxy's `crt`: the certificate and its key in one PEM.
    (d / "server.pem").write_text((d / "server.crt").read_text() + (d / "server.key").read_text())
    return {"ca": d / "ca.pem", "crt": d / "server.crt", "key": d / "server.key",
            "pem": d / "server.pem"}


# ---------------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------------
def ringlb_tls_config(io_backend: str, ports: list[int], certs: dict[str, Path],
                      listener_tls: bool, cluster_tls: bool) -> str:
    """bench_targets' ringlb config (workers = 1, 1024 streams, 256 KiB / 8 MiB windows, access
    log off) with the TLS inline tables of TLS_CONTRACT.md added."""
    text = ringlb_config(io_backend, ports)
    if listener_tls:
        old = 'cluster = "bench"\n'
        assert text.count(old) == 1
        text = text.replace(old, old + f'tls = {{ cert = "{certs["crt"]}", '
                                       f'key = "{certs["key"]}" }}\n')
    if cluster_tls:
        m = re.search(r"^endpoints = \[.*\]\n", text, re.M)
        assert m
        text = (text[:m.end()] + f'tls = {{ ca = "{certs["ca"]}", sni = "{SNI}" }}\n'
                + text[m.end():])
    return text


def ringlb_check(env: Env, cfg: Path) -> tuple[bool, str]:
    r = subprocess.run([str(env.bin), "check", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def start_ringlb_tls(env: Env, name: str, io_backend: str, ports: list[int],
                     certs: dict[str, Path], listener_tls: bool, cluster_tls: bool) -> Running:
    cfg = env.workdir / f"{name}.toml"
    cfg.write_text(ringlb_tls_config(io_backend, ports, certs, listener_tls, cluster_tls))
    p = Proc(name, [str(env.bin), "--config", str(cfg)], env.workdir, env.proxy_cpu)
    ready = p.wait_for(r"ready:[^\n]*")
    m = p.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
    io = re.search(r"io backend: (\S+)", p.text())
    if io and io.group(1) != io_backend:
        p.stop()
        raise BenchError(f"{name}: asked for io_backend {io_backend}, got {io.group(1)}")
    return Running(name, int(m.group(1)), p, ready.group(0))


def start_haproxy_tls(env: Env, name: str, ports: list[int], certs: dict[str, Path],
                      listener_tls: bool, cluster_tls: bool) -> Running:
    """bench_targets' haproxy-h2 config (nbthread 1, 1024 streams, 256 KiB window, http-reuse
    always, balance roundrobin) with TLS on the bind and/or the servers, and a stats socket."""
    port = free_port()
    bind_tls = f" ssl crt {certs['pem']} alpn h2" if listener_tls else " proto h2"
    srv_tls = (f" ssl verify required ca-file {certs['ca']} sni str({SNI}) alpn h2"
               if cluster_tls else "")
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}{srv_tls} proto h2"
                        for i, p in enumerate(ports))
    sock = env.workdir / f"{name}.sock"
    cfg = env.workdir / f"{name}.cfg"
    cfg.write_text(f"""# written by bench/harness.py --tls
global
    nbthread 1
    maxconn 9000
    tune.h2.max-concurrent-streams {MAX_STREAMS}
    tune.h2.initial-window-size {STREAM_WINDOW}
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend fe
    bind 127.0.0.1:{port}{bind_tls}
    default_backend be

backend be
    balance roundrobin
    http-reuse always
{servers}
""")
    p = Proc(name, ["haproxy", "-db", "-f", str(cfg)], env.workdir, env.proxy_cpu)
    wait_port(port, p)
    run = Running(name, port, p)
    run.stats_sock = sock  # type: ignore[attr-defined]
    return run


def start_tls_front(env: Env, ports: list[int], certs: dict[str, Path]) -> tuple[Proc, list[int]]:
    """Run B's TLS backends: one HAProxy in mode tcp on the client CPU terminating TLS (ALPN h2)
    in front of each plain echo backend; HTTP/2 passes through it untouched."""
    fronts = [free_port() for _ in ports]
    listens = "\n".join(f"listen tls{i}\n    bind 127.0.0.1:{f} ssl crt {certs['pem']} alpn h2\n"
                        f"    server b 127.0.0.1:{p}\n" for i, (f, p) in enumerate(zip(fronts,
                                                                                      ports)))
    cfg = env.workdir / "tls-front.cfg"
    cfg.write_text(f"""# written by bench/harness.py --tls: TLS in front of the echo backends
global
    nbthread 1
    maxconn 9000

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

{listens}""")
    p = Proc("tls-front", ["haproxy", "-db", "-f", str(cfg)], env.workdir, env.client_cpu)
    for f in fronts:
        wait_port(f, p)
    return p, fronts


def start_proxy(env: Env, target: str, name: str, ports: list[int], certs: dict[str, Path],
                listener_tls: bool, cluster_tls: bool) -> Running:
    if target.startswith("ringlb-"):
        return start_ringlb_tls(env, name, target.split("-", 1)[1], ports, certs, listener_tls,
                                cluster_tls)
    return start_haproxy_tls(env, name, ports, certs, listener_tls, cluster_tls)


# ---------------------------------------------------------------------------------------------
# Proxy-side TLS counters
# ---------------------------------------------------------------------------------------------
def _haproxy_cmd(run: Running, cmd: bytes) -> str:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(run.stats_sock))  # type: ignore[attr-defined]
            s.sendall(cmd)
            data = b""
            while True:
                x = s.recv(65536)
                if not x:
                    break
                data += x
    except OSError:
        return ""
    return data.decode(errors="replace")


def haproxy_info(run: Running) -> dict[str, int]:
    """The frontend's cumulative TLS counters (`show stat`: ssl_sess, ssl_reused_sess,
    ssl_failed_handshake of the SSL stats module) and `show info`'s CumSslConns."""
    out: dict[str, int] = {}
    for line in _haproxy_cmd(run, b"show info\n").splitlines():
        k, _, v = line.partition(": ")
        if k == "CumSslConns":
            out[k] = int(v)
    lines = _haproxy_cmd(run, b"show stat\n").splitlines()
    if lines:
        hdr = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            f = line.split(",")
            if len(f) > 1 and f[0] == "fe" and f[1] == "FRONTEND":
                for h, v in zip(hdr, f):
                    if h.startswith("ssl_") and v.isdigit():
                        out[h] = int(v)
    return out


def ringlb_tls_counters(run: Running) -> dict[str, float]:
    """ringlb_downstream_tls_handshakes_total by result (TLS_CONTRACT.md), from /metrics."""
    m = re.search(r"admin: http://127\.0\.0\.1:(\d+)/", run.proc.text())
    if not m:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5) as r:
            text = r.read().decode(errors="replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ringlb_downstream_tls_handshakes_total"):
            rm = re.search(r'result="(\w+)"', line)
            if rm:
                out[rm.group(1)] = out.get(rm.group(1), 0) + float(line.rsplit(" ", 1)[1])
    return out


def tls_library(pids: list[int]) -> str:
    """The libssl a running proxy has mapped, with its Debian package and version."""
    path = ""
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                f = line.split()
                if len(f) >= 6 and re.search(r"/libssl[^/]*\.so", f[5]):
                    path = f[5]
                    break
        except OSError:
            continue
        if path:
            break
    if not path:
        return "no libssl mapped (static?)"
    try:
        r = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True, timeout=10)
        pkg = r.stdout.split(":", 1)[0].strip() if r.returncode == 0 else ""
        if pkg:
            v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                               capture_output=True, text=True, timeout=10).stdout.strip()
            return f"{path} ({pkg} {v})"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return path


def handshake_counters(run: Running, target: str) -> dict:
    return ringlb_tls_counters(run) if target.startswith("ringlb-") else haproxy_info(run)


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------
def tls_h2load_cmd(env: Env, port: int, n: int, conns: int, streams: int, tls: bool,
                   extra: list[str] | None = None) -> list[str]:
    cmd = h2load_cmd(env, port, n, conns, streams)
    url = cmd.pop()
    if tls:
        cmd += ["--connect-to", f"127.0.0.1:{port}", f"--tls13-ciphers={CLIENT_TLS13_CIPHERS}"]
        url = url.replace(f"http://127.0.0.1:{port}", f"https://{SNI}:{port}")
    return cmd + (extra or []) + [url]


def run_h2load(cmd: list[str], n: int, timeout: float = 120.0) -> H2:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"h2load did not finish within {timeout}s: {' '.join(cmd)}") from e
    return H2(n, r.stdout + r.stderr, r.returncode)


def tls_params(out: str) -> str:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 h2' from h2load's summary (empty if plain)."""
    got = []
    for key in ("TLS Protocol", "Cipher", "Server Temp Key", "Application protocol"):
        m = re.search(rf"^{key}: (\S+)", out, re.M)
        if m:
            got.append(m.group(1))
    return " ".join(got)


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------
def cpu_per_call(env: Env, prof: TlsProfile, target: str, run_id: str, rep: int,
                 ports: list[int], certs: dict[str, Path]) -> dict[str, Any]:
    """Runs A and B: warm-up, then prof.calls at full speed; the proxy's CPU over them."""
    client_tls = run_id == "A"
    r: dict[str, Any] = {"run": run_id, "target": target, "rep": rep}
    run = start_proxy(env, target, f"{target}-{run_id}-r{rep}", ports, certs,
                      listener_tls=client_tls, cluster_tls=not client_tls)
    try:
        time.sleep(0.3)
        pids = run.pids()
        r["pids"] = pids
        r["rss_start_kb"] = rss_kb(pids)
        r["tls_library"] = tls_library(pids)
        w = run_h2load(tls_h2load_cmd(env, run.port, prof.warmup_calls, prof.conns,
                                      prof.streams, client_tls), prof.warmup_calls)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")
        cmd = tls_h2load_cmd(env, run.port, prof.calls, prof.conns, prof.streams, client_tls)
        c0, s0 = cpu_ticks(pids), sched_ns(pids)
        t = run_h2load(cmd, prof.calls)
        c1, s1 = cpu_ticks(pids), sched_ns(pids)
        if not t.ok:
            raise BenchError(f"{RUNS[run_id]}: {t.problem()}")
        r.update({"calls": prof.calls, "calls_per_s": t.rps, "elapsed_s": t.elapsed,
                  "cpu_ticks": c1 - c0,
                  "cpu_us_per_call": (c1 - c0) / CLK_TCK * 1e6 / prof.calls,
                  "cpu_us_per_call_schedstat": (s1 - s0) / 1e3 / prof.calls,
                  "rss_after_kb": rss_kb(pids), "tls_client": tls_params(t.raw),
                  "h2load": " ".join(cmd)})
        if not run.proc.alive():
            raise BenchError(f"{target} died: {run.proc.tail()}")
    finally:
        run.stop()
    return r


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + SETTINGS


def ticket_probe(port: int) -> dict[str, Any]:
    """One `openssl s_client` connection (SNI, ALPN h2, the HTTP/2 client preface sent after
    the handshake, as h2load does): what the proxy negotiates and how many TLS 1.3 session
    tickets it sends after a full handshake (part of every run-C handshake's cost; h2load
    receives them and never uses them)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SNI,
           "-alpn", "h2", "-nocommands"]
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        p.stdin.write(H2_PREFACE)
        p.stdin.flush()
        time.sleep(0.5)
        out_b, _ = p.communicate(b"", timeout=5)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    out = out_b.decode(errors="replace")
    m = re.search(r"^(New|Reused), (\S+), Cipher is (\S+)", out, re.M)
    a = re.search(r"^ALPN protocol: (\S+)", out, re.M)
    g = re.search(r"^Server Temp Key: ([^\n]+)", out, re.M)
    return {"session_tickets": out.count("Post-Handshake New Session Ticket arrived"),
            "negotiated": " ".join(x for x in (m and m.group(2), m and m.group(3),
                                               g and g.group(1), a and a.group(1)) if x)}


def handshakes(env: Env, prof: TlsProfile, target: str, rep: int, ports: list[int],
               certs: dict[str, Path]) -> dict[str, Any]:
    """Run C: prof.hs_count new connections, one call each, no resumption."""
    r: dict[str, Any] = {"run": "C", "target": target, "rep": rep}
    run = start_proxy(env, target, f"{target}-C-r{rep}", ports, certs, True, False)
    try:
        time.sleep(0.3)
        pids = run.pids()
        # Upstream connections open, first-use allocations done: a few calls on one connection.
        w = run_h2load(tls_h2load_cmd(env, run.port, 200, 1, 32, True), 200)
        if not w.ok:
            raise BenchError(f"warm-up: {w.problem()}")
        r["s_client"] = ticket_probe(run.port)
        n = prof.hs_count
        per_period = max(1, round(prof.hs_rate / 100))  # every 10 ms
        cmd = tls_h2load_cmd(env, run.port, n, n, 1, True,
                             ["-r", str(per_period), "--rate-period", "10ms"])
        k0 = handshake_counters(run, target)
        c0, s0 = cpu_ticks(pids), sched_ns(pids)
        t0 = time.monotonic()
        t = run_h2load(cmd, n, timeout=n / 50 + 60)
        wall = time.monotonic() - t0
        c1, s1 = cpu_ticks(pids), sched_ns(pids)
        k1 = handshake_counters(run, target)
        if not t.ok:
            raise BenchError(f"handshakes: {t.problem()}")
        cpu_s = (c1 - c0) / CLK_TCK
        r.update({"handshakes": n, "elapsed_s": t.elapsed, "wall_s": wall,
                  "handshakes_per_s": n / t.elapsed if t.elapsed else None,
                  "cpu_s": cpu_s, "cpu_s_schedstat": (s1 - s0) / 1e9,
                  "cpu_pct": 100 * cpu_s / t.elapsed if t.elapsed else None,
                  "hs_per_cpu_s": n / cpu_s if cpu_s > 0 else None,
                  "hs_per_cpu_s_schedstat": n / ((s1 - s0) / 1e9) if s1 > s0 else None,
                  "cpu_us_per_handshake": cpu_s * 1e6 / n,
                  "proxy_counters_delta": {k: k1[k] - k0.get(k, 0) for k in k1
                                           if isinstance(k1[k], (int, float))},
                  "proxy_counters_after": k1,
                  "tls_client": tls_params(t.raw), "h2load": " ".join(cmd)})
        r["resumed"] = resumed(target, r["proxy_counters_delta"], k1)
        if not run.proc.alive():
            raise BenchError(f"{target} died: {run.proc.tail()}")
    finally:
        run.stop()
    return r


def resumed(target: str, delta: dict, after: dict) -> str:
    """What the proxy's own counters say about resumption over run C."""
    if target.startswith("ringlb-"):
        if not delta:
            return "n/a (no ringlb_downstream_tls_handshakes_total in /metrics)"
        return (f"full {delta.get('full', 0):.0f}, resumed {delta.get('resumed', 0):.0f}, "
                f"failed {delta.get('failed', 0):.0f}")
    if not delta:
        return "n/a (no stats socket answer)"
    if "ssl_sess" not in delta:
        return f"TLS conns {delta.get('CumSslConns', 0)} (no ssl_sess in show stat)"
    return (f"full {delta['ssl_sess'] - delta.get('ssl_reused_sess', 0)}, resumed "
            f"{delta.get('ssl_reused_sess', 0)}, failed {delta.get('ssl_failed_handshake', 0)}")


def idle_rss(env: Env, prof: TlsProfile, target: str, rep: int, ports: list[int],
             certs: dict[str, Path]) -> dict[str, Any]:
    """VmRSS with the run-A TLS listener: after start, then after a few calls once idle."""
    r: dict[str, Any] = {"run": "RSS", "target": target, "rep": rep}
    run = start_proxy(env, target, f"{target}-RSS-r{rep}", ports, certs, True, False)
    try:
        time.sleep(0.3)
        pids = run.pids()
        r["rss_start_kb"] = rss_kb(pids)
        t = run_h2load(tls_h2load_cmd(env, run.port, prof.rss_calls, 1, 1, True), prof.rss_calls)
        if not t.ok:
            raise BenchError(f"rss calls: {t.problem()}")
        time.sleep(0.5)
        r["rss_idle_kb"] = rss_kb(pids)
        r["calls"] = prof.rss_calls
        if not run.proc.alive():
            raise BenchError(f"{target} died: {run.proc.tail()}")
    finally:
        run.stop()
    return r


# ---------------------------------------------------------------------------------------------
# Aggregation, floors, report
# ---------------------------------------------------------------------------------------------
MED_KEYS = {"A": ["calls_per_s", "cpu_us_per_call", "cpu_us_per_call_schedstat", "rss_after_kb"],
            "B": ["calls_per_s", "cpu_us_per_call", "cpu_us_per_call_schedstat", "rss_after_kb"],
            "C": ["handshakes_per_s", "cpu_pct", "hs_per_cpu_s", "hs_per_cpu_s_schedstat",
                  "cpu_us_per_handshake"],
            "RSS": ["rss_start_kb", "rss_idle_kb"]}


def _med(vals: list) -> float | None:
    v = [x for x in vals if isinstance(x, (int, float))]
    return statistics.median(v) if v else None


def aggregate(results: list[dict], targets: list[str], runs: list[str]) -> dict:
    out: dict[str, dict] = {}
    for run_id in runs:
        out[run_id] = {}
        for t in targets:
            rows = [x for x in results if x["run"] == run_id and x["target"] == t]
            good = [x for x in rows if "error" not in x]
            m = {k: _med([x.get(k) for x in good]) for k in MED_KEYS[run_id]}
            m["reps_ok"], m["reps"] = len(good), len(rows)
            m["errors"] = sorted({x["error"][:400] for x in rows if "error" in x})
            m["tls_client"] = sorted({x["tls_client"] for x in good if x.get("tls_client")})
            if run_id == "C":
                m["resumed"] = [x.get("resumed") for x in good]
                m["session_tickets"] = sorted({x.get("s_client", {}).get("session_tickets")
                                               for x in good} - {None})
            out[run_id][t] = m
    return out


def _ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


def ratios(med_: dict) -> dict:
    out: dict[str, dict] = {}
    for run_id, key in (("A", "cpu_us_per_call"), ("B", "cpu_us_per_call"),
                        ("C", "hs_per_cpu_s"), ("RSS", "rss_idle_kb")):
        if run_id not in med_:
            continue
        ref = med_[run_id].get(REFERENCE, {}).get(key)
        out[run_id] = {t: _ratio(m.get(key), ref) for t, m in med_[run_id].items()
                       if t != REFERENCE}
    return out


def floors(med_: dict) -> list[dict]:
    fl = []

    def add(name, target, value, limit, ok, shown):
        res = "NO DATA" if value is None or limit is None else ("PASS" if ok else "FAIL")
        fl.append({"floor": name, "target": target, "value": value, "limit": limit,
                   "result": res, "shown": shown})

    for t in TARGETS:
        if t == REFERENCE:
            continue
        if "A" in med_ and t in med_["A"]:
            c, h = med_["A"][t]["cpu_us_per_call"], med_["A"].get(REFERENCE, {}).get(
                "cpu_us_per_call")
            rc = _ratio(c, h)
            add(f"A: client-side TLS CPU per call <= {FLOOR_A_CPU_RATIO}x HAProxy", t, rc,
                FLOOR_A_CPU_RATIO, rc is not None and rc <= FLOOR_A_CPU_RATIO,
                f"{_f(c)} vs {_f(h)} us = {_f(rc)}x" if rc is not None else
                f"{_f(c)} vs {_f(h)} us")
        if "C" in med_ and t in med_["C"]:
            c, h = med_["C"][t]["hs_per_cpu_s"], med_["C"].get(REFERENCE, {}).get(
                "hs_per_cpu_s")
            rc = _ratio(c, h)
            add("C: full handshakes per CPU-second >= HAProxy's", t, rc, FLOOR_C_HS_RATIO,
                rc is not None and rc >= FLOOR_C_HS_RATIO,
                f"{_f(c, 0)} vs {_f(h, 0)} per CPU-s = {_f(rc)}x" if rc is not None else
                f"{_f(c, 0)} vs {_f(h, 0)} per CPU-s")
        if "RSS" in med_ and t in med_["RSS"]:
            v = med_["RSS"][t]["rss_idle_kb"]
            add(f"idle RSS with a TLS listener <= {FLOOR_RSS_KIB} KiB", t, v, FLOOR_RSS_KIB,
                v is not None and v <= FLOOR_RSS_KIB,
                f"{_f(v, 0)} KiB ({_f(None if v is None else v / 1024)} MiB)")
    return fl


def render(meta: dict, med_: dict, rat: dict, fl: list[dict], targets: list[str]) -> str:
    p = meta["profile"]
    L = [f"## TLS run ({meta['timestamp']})", "",
         f"Command: `{meta['command']}`  ",
         f"Machine: {meta['nproc']} CPUs, kernel {meta['kernel']}; proxy on CPU "
         f"{meta['proxy_cpu']}, h2load + backends (+ run B's TLS front) on CPU "
         f"{meta['client_cpu']}  ",
         f"Versions: {meta['versions']}  ",
         "TLS libraries: " + "; ".join(f"{t} {', '.join(v) or 'n/a'}"
                                       for t, v in meta.get("tls_libraries", {}).items())
         + "  ",
         f"Medians of {p['reps']} repetition(s). Certificates: EC P-256 CA and server cert "
         f"({SNI}, 127.0.0.1), made by openssl at run time. One worker/thread per proxy.", ""]
    for run_id in ("A", "B"):
        if run_id not in med_:
            continue
        what = ("h2load over TLS (ALPN h2, SNI bench.test) -> proxy terminates TLS -> 3 plain "
                "h2c echo backends" if run_id == "A" else
                "h2load plain h2c -> proxy -> TLS (ALPN h2, verified against the CA, SNI "
                "bench.test) -> 3 echo backends behind a TLS front")
        L += [f"### Run {run_id}: {RUNS[run_id]}", "",
              f"{what}. {p['calls']:,} calls over {p['conns']} connections x {p['streams']} "
              f"streams after {p['warmup_calls']:,} warm-up calls.", "",
              "| proxy | calls/s | CPU us/call | (schedstat) | vs HAProxy | client TLS |",
              "|---|---:|---:|---:|---:|---|"]
        for t in targets:
            m = med_[run_id][t]
            if not m["reps_ok"]:
                L.append(f"| {t} | could not run: "
                         f"{(m['errors'] or ['?'])[0][:160].replace('|', '/')} | | | | |")
                continue
            L.append(f"| {t} | {_f(m['calls_per_s'], 0)} | {_f(m['cpu_us_per_call'])} | "
                     f"{_f(m['cpu_us_per_call_schedstat'])} | "
                     f"{_f(rat.get(run_id, {}).get(t)) if t != REFERENCE else '1.00'} | "
                     f"{', '.join(m['tls_client']) or 'plain'} |")
        L.append("")
    if "C" in med_:
        L += ["### Run C: full handshakes per CPU-second", "",
              f"h2load rate mode, {p['hs_count']:,} new TLS connections asked at "
              f"{p['hs_rate']:,}/s, each carrying one call then closed (-c N -n N -m 1); h2load "
              "offers no session ticket or id, so every handshake is full (the proxy's counters "
              "below). hs per CPU-s = handshakes / proxy CPU seconds = per core. *tickets sent*: "
              "TLS 1.3 session tickets the proxy sends after a full handshake (one `openssl "
              "s_client` probe that sends the HTTP/2 preface), work every run-C handshake pays.", "",
              "| proxy | handshakes/s | proxy CPU % | CPU us/handshake | hs per CPU-s | "
              "(schedstat) | vs HAProxy | proxy's counters | tickets sent | client TLS |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for t in targets:
            m = med_["C"][t]
            if not m["reps_ok"]:
                L.append(f"| {t} | could not run: "
                         f"{(m['errors'] or ['?'])[0][:160].replace('|', '/')} | | | | | | | | |")
                continue
            L.append(f"| {t} | {_f(m['handshakes_per_s'], 0)} | {_f(m['cpu_pct'], 0)} | "
                     f"{_f(m['cpu_us_per_handshake'], 0)} | {_f(m['hs_per_cpu_s'], 0)} | "
                     f"{_f(m['hs_per_cpu_s_schedstat'], 0)} | "
                     f"{_f(rat.get('C', {}).get(t)) if t != REFERENCE else '1.00'} | "
                     f"{'; '.join(str(x) for x in m['resumed'][:1])} | "
                     f"{'/'.join(str(x) for x in m['session_tickets']) or 'n/a'} | "
                     f"{', '.join(m['tls_client'])} |")
        L.append("")
    if "RSS" in med_:
        L += ["### Idle RSS with a TLS listener", "",
              f"VmRSS after start (0.3 s), and after {p['rss_calls']} calls over one TLS "
              "connection once idle again (0.5 s).", "",
              "| proxy | after start KiB | after calls, idle KiB |", "|---|---:|---:|"]
        for t in targets:
            m = med_["RSS"][t]
            if not m["reps_ok"]:
                L.append(f"| {t} | could not run: "
                         f"{(m['errors'] or ['?'])[0][:160].replace('|', '/')} | |")
                continue
            L.append(f"| {t} | {_f(m['rss_start_kb'], 0)} | {_f(m['rss_idle_kb'], 0)} |")
        L.append("")
    L += ["Floors:", "", "| floor | target | measured | result |", "|---|---|---|---|"]
    for f in fl:
        L.append(f"| {f['floor']} | {f['target']} | {f['shown']} | {f['result']} |")
    if "B" in med_:
        for t in targets:
            if t != REFERENCE and rat.get("B", {}).get(t) is not None:
                L.append(f"| B: TLS to backends CPU per call (reported, no floor) | {t} | "
                         f"{_f(med_['B'][t]['cpu_us_per_call'])} vs "
                         f"{_f(med_['B'][REFERENCE]['cpu_us_per_call'])} us = "
                         f"{_f(rat['B'][t])}x | - |")
    if meta.get("notes"):
        L += ["", "Notes:", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry
# ---------------------------------------------------------------------------------------------
def tls_main(args, log) -> int:
    """--tls: the tables on stdout and in <out>/tls-latest.md, every figure in
    <out>/tls-<UTC timestamp>.json. Exit 1 if a row could not run."""
    from bench_report import versions
    from bench_targets import ALL_TARGETS, REPO

    missing = [c for c in ("h2load", "haproxy", "openssl", "taskset") if not shutil.which(c)]
    if missing:
        raise SystemExit(f"harness --tls: missing {', '.join(missing)} (apt-get install -y "
                         "nghttp2-client haproxy openssl util-linux)")
    b = Path(args.bin)
    if not (b.is_file() and os.access(b, os.X_OK)):
        raise SystemExit(f"harness --tls: ringlb binary not found at {b} (--bin or RINGLB_BIN)")
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.targets == ",".join(ALL_TARGETS):   # --targets not given
        wanted = DEFAULT_TARGETS
    targets = [t for t in TARGETS if t in wanted]
    runs = [x.strip().upper() for x in args.tls_runs.split(",") if x.strip()]
    bad = [x for x in runs if x not in RUNS]
    if bad or not targets:
        raise SystemExit(f"harness --tls: runs among {list(RUNS)} (got {bad}); targets among "
                         f"{TARGETS} (got {wanted})")
    prof = TlsProfile(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-tls-"))
    env = Env(args, workdir)
    command = os.environ.get("RINGLB_BENCH_COMMAND") or " ".join(["bench/harness.py"]
                                                                 + sys.argv[1:])
    results: list[dict] = []
    notes: list[str] = list(env.notes)
    rc = 0
    try:
        if getattr(args, "wait_quiet", 0) > 0:
            deadline = time.monotonic() + args.wait_quiet
            while True:
                bg = background_load(env, 1.0)
                if max(bg.values()) < 10 or time.monotonic() > deadline:
                    break
                log("waiting for quiet CPUs: "
                    + ", ".join(f"CPU {c} {v:.0f}%" for c, v in bg.items()))
            log("background load: " + ", ".join(f"CPU {c} {v:.0f}%" for c, v in bg.items()))
        certs = make_certs(workdir / "certs")
        log(f"work folder {workdir}; targets {', '.join(targets)}; runs {', '.join(runs)}; "
            f"{prof.reps} rep(s); binary {env.bin}")
        # Does this ringlb take the TLS keys at all? (Until TLS lands they are unknown keys.)
        ringlb_ok: dict[str, str] = {}
        for t in targets:
            if not t.startswith("ringlb-"):
                continue
            for lt, ct, what in ((True, False, "listener"), (False, True, "cluster")):
                cfg = workdir / f"check-{t}-{what}.toml"
                cfg.write_text(ringlb_tls_config(t.split("-", 1)[1], [1], certs, lt, ct))
                ok, out = ringlb_check(env, cfg)
                if not ok:
                    ringlb_ok[f"{t}/{what}"] = out
                    log(f"{t}: `ringlb check` rejects a TLS {what} config: {out}")
                    notes.append(f"{t}: `{env.bin} check` rejects a TLS {what} config: "
                                 f"{out[:300]}")
        plain = start_backends(env, "fast", 3, 0)
        ports = [p for _, p in plain]
        front, fports = (start_tls_front(env, ports, certs) if "B" in runs else (None, []))
        log(f"backends {ports}; TLS front {fports}")
        for rep in range(prof.reps):
            k = rep % len(targets)
            order = targets[k:] + targets[:k]
            for run_id in runs:
                for t in order:
                    tt = time.monotonic()
                    bg = background_load(env)
                    if max(bg.values()) > 10:
                        log(f"rep {rep + 1} {run_id} {t}: other processes keep the CPUs busy ("
                            + ", ".join(f"CPU {c} {v:.0f}%" for c, v in bg.items())
                            + ") - figures will suffer")
                    skip = ringlb_ok.get(f"{t}/{'cluster' if run_id == 'B' else 'listener'}")
                    try:
                        if skip is not None:
                            raise BenchError(f"ringlb check rejects the TLS config: {skip}")
                        if run_id in ("A", "B"):
                            r = cpu_per_call(env, prof, t, run_id, rep,
                                             ports if run_id == "A" else fports, certs)
                            msg = (f"{r['calls_per_s']:,.0f} calls/s, CPU "
                                   f"{r['cpu_us_per_call']:.2f} us/call (schedstat "
                                   f"{r['cpu_us_per_call_schedstat']:.2f}), "
                                   f"{r['tls_client'] or 'plain client'}")
                        elif run_id == "C":
                            r = handshakes(env, prof, t, rep, ports, certs)
                            msg = (f"{r['handshakes']:,} handshakes at "
                                   f"{_f(r['handshakes_per_s'], 0)}/s, proxy CPU "
                                   f"{r['cpu_s']:.2f} s = {_f(r['hs_per_cpu_s'], 0)} per "
                                   f"CPU-s ({r['resumed']}), {r['tls_client']}")
                        else:
                            r = idle_rss(env, prof, t, rep, ports, certs)
                            msg = (f"RSS {r['rss_start_kb']} KiB at start, "
                                   f"{r['rss_idle_kb']} KiB idle after {r['calls']} calls")
                        log(f"rep {rep + 1} {run_id} {t}: {msg} ({time.monotonic() - tt:.0f}s)")
                    except Exception as e:  # noqa: BLE001 -- one row failing ends only that row
                        what = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
                        r = {"run": run_id, "target": t, "rep": rep, "error": what}
                        if skip is None:
                            log(f"rep {rep + 1} {run_id} {t}: ERROR {what[:600]}")
                    r["background_busy_pct"] = {str(c): round(v, 1) for c, v in bg.items()}
                    results.append(r)
        if front is not None and not front.alive():
            notes.append(f"the TLS front of run B died: {front.tail()}")
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        rc = 130
    finally:
        stop_all()
    if rc:
        return rc
    med_ = aggregate(results, targets, runs)
    rat = ratios(med_)
    fl = floors(med_)
    for run_id in ("A", "C"):
        seen = {t: med_[run_id][t]["tls_client"] for t in targets
                if run_id in med_ and med_[run_id][t]["tls_client"]}
        if len({tuple(v) for v in seen.values()}) > 1:
            notes.append(f"run {run_id}: the proxies negotiated different TLS parameters with "
                         f"h2load: " + "; ".join(f"{t} {', '.join(v)}" for t, v in seen.items()))
    libs = {t: sorted({x["tls_library"] for x in results
                       if x["target"] == t and x.get("tls_library")}) for t in targets}
    if len({tuple(v) for v in libs.values() if v}) > 1:
        notes.append("the proxies use different TLS libraries (see TLS libraries above): "
                     "handshake and record costs compare the libraries as well as the proxies")
    bgs = [v for r in results for v in r.get("background_busy_pct", {}).values()]
    if bgs and max(bgs) > 5:
        notes.append(f"other processes were busy on the benchmark CPUs (sampled for 0.5 s "
                     f"before each row, nothing of ours running): median "
                     f"{statistics.median(bgs):.0f}%, max {max(bgs):.0f}%")
    total = time.monotonic() - t0
    notes.append(f"run took {total:.0f} s")
    meta = {"timestamp": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "command": command,
            "tls_libraries": libs,
            "profile": prof.as_dict(), "nproc": os.cpu_count(), "kernel": os.uname().release,
            "proxy_cpu": env.proxy_cpu, "client_cpu": env.client_cpu,
            "versions": ", ".join(v for v in versions(env).values() if v != "n/a"),
            "binary": str(env.bin), "notes": notes, "workdir": str(workdir),
            "duration_s": round(total, 1)}
    report = render(meta, med_, rat, fl, targets)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tls-latest.md").write_text(report)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"tls-{stamp}.json"
    json_path.write_text(json.dumps({"schema": 1, **meta, "targets": targets, "runs": runs,
                                     "results": results, "median": med_, "ratios": rat,
                                     "floors": fl}, indent=1, default=str) + "\n")
    sys.stdout.write(report)
    sys.stdout.write(f"\nWrote {out_dir / 'tls-latest.md'}, {json_path}\n")
    if args.keep:
        log(f"kept {workdir} (certificates, configs, logs)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any("error" in r for r in results) else 0

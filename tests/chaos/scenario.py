"""One chaos scenario, run inside its own network namespace:

  unshare --net --pid --fork --kill-child /usr/bin/python3 tests/chaos/scenario.py NAME \
      --io-backend epoll --json OUT [--bin build/ringlb] [--target ringlb|haproxy] [--workdir DIR]

(--pid --fork --kill-child: this script is PID 1 of a PID namespace of its own, so whatever
way it ends, the kernel kills every process it started and the network namespace goes with them.)

Inside: loopback up; a tap on it (tap.py); three backends (backend.py) on 127.0.0.2-4:50051;
the proxy on 127.0.0.1:8080; ONE grpc channel at 150 calls/s, open loop (each call issued on
schedule, whatever the earlier ones are doing), 2 s deadline, for 12 s (30 s for the long
variant); the fault at 3 s. Every call's start, end, status and answering backend, every
attempt seen on the wire and every fault event go through analysis.py, which decides the floors;
the result is written as JSON and a one-line summary is printed. The client is a stock grpcio
channel (its defaults: transparent retries of calls that never left it or that a GOAWAY/
REFUSED_STREAM says were not processed, no retry policy, no keepalive), as an application's is.
Exit status: 0 when every floor held, 1 when one failed, 2 when the scenario could not be run
(a process did not start).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analysis  # noqa: E402
from procs import (BACKEND_PORT, LISTEN_PORT, REPO, Backend, Haproxy, ScenarioError,  # noqa: E402
                   Ringlb, Tap, in_own_netns, ringlb_config, sh)

RATE = 150.0          # calls per second, one channel
DEADLINE = 2.0        # client deadline per call, seconds
FAULT_AT = 3.0        # seconds after the first call
DNS_NAME = "svc.chaos.local"
DNS_PORT = 5353
PER_TRY = {"retry": {"per_try_timeout": "300ms"}}   # the route's per-try timeout
HEDGE = {"hedge": {"after": "150ms"}}                # the route's hedging
CALL_ID_BASE = 1 << 40   # warm-up calls use ids from here: never counted


@dataclass
class Run:
    """What a fault function needs and what it leaves for the analysis. Owner: the fault thread
    writes events and windows; the main thread reads them after joining it."""
    workdir: Path
    backends: dict[str, Backend]
    proxy: object
    start_proxy: Callable[[str], object]
    dns: object = None
    events: list = field(default_factory=list)     # (time, text)
    windows: list = field(default_factory=list)    # analysis.Window: a backend's bad period
    proxies: list = field(default_factory=list)

    def event(self, text: str) -> float:
        t = time.time()
        self.events.append((t, text))
        return t


# ---------------------------------------------------------------------------------------------
# Faults (each runs at FAULT_AT in its own thread)
# ---------------------------------------------------------------------------------------------
def f_kill(r: Run, long: bool = False):
    b = r.backends["b1"]
    b.signal(signal.SIGKILL)
    r.windows.append(analysis.Window(b.name, b.host, r.event("SIGKILL b1"), None))


def f_unavailable(r: Run, long: bool = False):
    b = r.backends["b1"]
    b.signal(signal.SIGUSR1)
    r.windows.append(analysis.Window(b.name, b.host, r.event("b1 answers UNAVAILABLE"), None,
                                     kind="unavailable"))


def f_sigstop(r: Run, long: bool = False):
    b = r.backends["b1"]
    b.signal(signal.SIGSTOP)
    w = analysis.Window(b.name, b.host, r.event("SIGSTOP b1"), None)
    r.windows.append(w)
    if long:  # the 30 s variant: the backend comes back at 18 s
        time.sleep(15.0)
        b.signal(signal.SIGCONT)
        w.recovered = r.event("SIGCONT b1")


def f_blackhole(r: Run, long: bool = False):
    b = r.backends["b1"]
    # INPUT only: on loopback every packet crosses INPUT, so these two rules drop both
    # directions, after the tap has seen them (a blackhole loses packets "in the network").
    sh("iptables", "-w", "-I", "INPUT", "-d", b.host, "-j", "DROP")
    sh("iptables", "-w", "-I", "INPUT", "-s", b.host, "-j", "DROP")
    r.windows.append(analysis.Window(b.name, b.host, r.event(f"blackhole {b.host}"), None,
                                     kind="blackhole"))


def f_rolling_restart(r: Run, long: bool = False):
    """In place: SIGTERM, wait for the exit (graceful drain), start again, next."""
    for name in ("b0", "b1", "b2"):
        b = r.backends[name]
        w = analysis.Window(name, b.host, r.event(f"SIGTERM {name}"), None, kind="restart")
        b.signal(signal.SIGTERM)
        rc = b.wait_exit(15.0)
        r.event(f"{name} exited ({rc})")
        if rc is None:
            raise ScenarioError(f"{name} did not drain and exit within 15 s of SIGTERM")
        # Recovered from the moment the new process starts: it cannot take a call before it
        # listens, and one it takes a millisecond after is no call to a bad backend.
        w.recovered = r.event(f"{name} starting again")
        b.restart()
        r.event(f"{name} serving again")
        r.windows.append(w)


def f_dns_replace(r: Run, long: bool = False):
    """As Cloud Map and ECS do a rolling deployment: the new tasks are published, then each old
    one leaves DNS and gets SIGTERM at the same moment (no waiting for the TTL)."""
    old = ["b0", "b1", "b2"]
    new = {f"b{i + 3}": f"127.0.0.{i + 5}" for i in range(3)}
    for name, host in new.items():
        r.backends[name] = Backend(name, host, r.workdir, wait=False)
    for name in new:
        r.backends[name].wait_listening()
    live = [r.backends[n].host for n in old] + list(new.values())
    r.dns.set_a(DNS_NAME, live, ttl=1)
    r.event("new backends b3-b5 published")
    time.sleep(2.0)  # two TTLs: ECS stops an old task only once its replacement is running
    for name in old:
        b = r.backends[name]
        live.remove(b.host)
        r.dns.set_a(DNS_NAME, live, ttl=1)
        b.signal(signal.SIGTERM)
        r.windows.append(analysis.Window(name, b.host, r.event(f"{name} out of DNS + SIGTERM"),
                                         None, kind="restart"))
        time.sleep(1.0)


def f_proxy_restart(r: Run, long: bool = False):
    """A second ringlb on the same listener (SO_REUSEPORT), then SIGTERM to the first."""
    first = r.proxy
    second = r.start_proxy("ringlb2")
    r.proxies.append(second)
    r.event("second ringlb ready")
    first.signal(signal.SIGTERM)
    r.event("SIGTERM first ringlb")
    rc = first.wait_exit(10.0)
    r.event(f"first ringlb exited ({rc})")


@dataclass
class Scenario:
    fault: Callable
    expect: str = "zero"        # zero: no failed call | detect: failures only before detection
    route: dict | None = None   # None: the plain defaults
    dns: bool = False
    seconds: float = 12.0
    long: bool = False
    ringlb_only: bool = False


SCENARIOS: dict[str, Scenario] = {
    "kill": Scenario(f_kill),
    "rolling_restart": Scenario(f_rolling_restart),
    "dns_replace": Scenario(f_dns_replace, dns=True, ringlb_only=True),
    "ringlb_restart": Scenario(f_proxy_restart, ringlb_only=True),
    "unavailable": Scenario(f_unavailable),
    "sigstop": Scenario(f_sigstop, expect="detect"),
    "sigstop_per_try": Scenario(f_sigstop, route=PER_TRY, ringlb_only=True),
    "sigstop_hedge": Scenario(f_sigstop, route=HEDGE, ringlb_only=True),
    "blackhole": Scenario(f_blackhole, expect="detect"),
    "blackhole_per_try": Scenario(f_blackhole, route=PER_TRY, ringlb_only=True),
    "blackhole_hedge": Scenario(f_blackhole, route=HEDGE, ringlb_only=True),
    "sigstop_30s": Scenario(f_sigstop, expect="detect", seconds=30.0, long=True),
}


# ---------------------------------------------------------------------------------------------
# The client: one channel, open loop
# ---------------------------------------------------------------------------------------------
def run_client(seconds: float, on_start: Callable[[float], None]) -> tuple[list, float]:
    """Returns ([start, end, status, backend] per call id, t0). on_start(t0) is called once the
    channel is up and warmed (its calls are not counted), just before the first counted call."""
    import grpc
    ch = grpc.insecure_channel(f"127.0.0.1:{LISTEN_PORT}")
    call = ch.unary_unary("/chaos.Echo/Call")
    grpc.channel_ready_future(ch).result(timeout=10)
    for i in range(30):  # warm-up: upstream connections to every backend
        call((CALL_ID_BASE + i).to_bytes(8, "big"), timeout=DEADLINE)
    n = int(seconds * RATE)
    calls: list = [None] * n
    done = threading.Semaphore(0)

    def finish(i: int, fut):
        end = time.time()
        try:
            who = fut.result().decode()
            calls[i][1:] = [end, "OK", who]
        except grpc.RpcError as e:
            calls[i][1:] = [end, e.code().name, (e.details() or "")[:200]]
        except Exception as e:  # noqa: BLE001 -- recorded, never lost
            calls[i][1:] = [end, "CLIENT_ERROR", repr(e)[:200]]
        done.release()

    t0 = time.time()
    on_start(t0)
    for i in range(n):
        due = t0 + i / RATE
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        start = time.time()
        calls[i] = [start, None, None, None]
        fut = call.future(i.to_bytes(8, "big"), timeout=DEADLINE)
        fut.add_done_callback(lambda f, i=i: finish(i, f))
    end = time.time() + DEADLINE + 3.0
    for _ in range(n):
        if not done.acquire(timeout=max(0.0, end - time.time())):
            break
    ch.close()
    return calls, t0


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
def run(name: str, target: str, io_backend: str, binary: str, workdir: Path) -> dict:
    sc = SCENARIOS[name]
    if sc.ringlb_only and target != "ringlb":
        raise ScenarioError(f"{name} runs against ringlb only")
    sh("ip", "link", "set", "lo", "up")
    tap = Tap(workdir)
    procs: list = [tap]
    r = None
    try:
        backends = {f"b{i}": Backend(f"b{i}", f"127.0.0.{i + 2}", workdir, wait=False)
                    for i in range(3)}
        procs += backends.values()
        for b in backends.values():
            b.wait_listening()
        dns = None
        if sc.dns:
            sys.path.insert(0, str(REPO / "tests" / "integration"))
            import dns_server
            dns = dns_server.DnsServer(port=DNS_PORT)
            dns.set_a(DNS_NAME, [b.host for b in backends.values()], ttl=1)
        eps = [b.address for b in backends.values()]
        dns_cfg = {"name": DNS_NAME, "resolver": f"127.0.0.1:{DNS_PORT}"} if dns else None

        def start_proxy(pname: str):
            if target == "haproxy":
                return Haproxy(list(backends.values()), workdir)
            cfg = ringlb_config(io_backend, eps, dns_cfg, sc.route)
            return Ringlb(binary, cfg, workdir, name=pname)

        proxy = start_proxy("ringlb" if target == "ringlb" else target)
        r = Run(workdir, backends, proxy, start_proxy, dns, proxies=[proxy])
        fault_err: list = []

        def fault():
            try:
                sc.fault(r, sc.long)
            except Exception as e:  # noqa: BLE001 -- reported as a scenario error
                fault_err.append(f"{type(e).__name__}: {e}")
                traceback.print_exc()

        th = threading.Thread(target=fault, daemon=True)

        def on_start(t0: float):
            r.event("first call")
            threading.Timer(FAULT_AT, th.start).start()

        calls, t0 = run_client(sc.seconds, on_start)
        th.join(30)
        if fault_err:
            raise ScenarioError("fault: " + fault_err[0])
        time.sleep(0.3)  # the tap's last packets
    finally:
        for p in (r.proxies if r else []) + list((r.backends if r else {}).values()):
            p.stop()
        for p in procs:
            p.stop()
        if r and r.dns:
            r.dns.stop()
    raw = {"calls": calls, "t0": t0, "events": r.events, "backends": list(r.backends),
           "windows": [w.__dict__ for w in r.windows]}
    (workdir / "raw.json").write_text(json.dumps(raw))
    res = reanalyse(name, workdir)
    if name == "ringlb_restart":  # the first one drained (GOAWAY, calls finished) and exited 0
        rc = r.proxies[0].proc.returncode
        res["floors"].append({"name": "first ringlb drained and exited 0", "ok": rc == 0,
                              "detail": f"exit status {rc}"})
        res["ok"] = all(f["ok"] for f in res["floors"])
    res.update({"target": target, "io_backend": io_backend if target == "ringlb" else None,
                "config": (proxy.config_path.read_text() if hasattr(proxy, "config_path")
                           else None),
                "proxy_exit": [p.proc.returncode for p in r.proxies]})
    return res


def reanalyse(name: str, workdir: Path) -> dict:
    """The floors from a run's raw records (raw.json, tap.txt): after a run, or again later
    with --reanalyse DIR (no namespace needed) when the analysis changes."""
    raw = json.loads((workdir / "raw.json").read_text())
    windows = [analysis.Window(**w) for w in raw["windows"]]
    attempts = analysis.read_tap(workdir / "tap.txt")
    return analysis.analyse(name, SCENARIOS[name], raw["calls"], raw["t0"], raw["events"],
                            windows, attempts, raw["backends"], RATE, FAULT_AT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("name", choices=sorted(SCENARIOS))
    ap.add_argument("--io-backend", default="epoll", choices=["io_uring", "epoll"])
    ap.add_argument("--target", default="ringlb", choices=["ringlb", "haproxy"])
    ap.add_argument("--bin", default=os.environ.get("RINGLB_BIN", str(REPO / "build" / "ringlb")))
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--workdir", help="keep configs, logs and the raw records here")
    ap.add_argument("--reanalyse", metavar="DIR", help="run nothing: the floors again from the "
                    "records a run left in DIR (its --workdir)")
    a = ap.parse_args()
    if a.reanalyse:
        res = reanalyse(a.name, Path(a.reanalyse))
        res.update({"target": "?", "io_backend": None})
        print(analysis.summary_line(res))
        for f in res["floors"]:
            print(f"  {'ok  ' if f['ok'] else 'FAIL'} {f['name']}: {f['detail']}")
        return 0 if res["ok"] else 1
    if not in_own_netns():
        print("scenario.py: refusing to run outside a network namespace of its own (it adds "
              "iptables rules); run it as `unshare --net --pid --fork --kill-child "
              "/usr/bin/python3 ...`", file=sys.stderr)
        return 2
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="ringlb-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        res = run(a.name, a.target, a.io_backend, a.bin, workdir)
    except Exception as e:  # noqa: BLE001 -- ScenarioError or a client that never got going
        traceback.print_exc()
        what = str(e) if isinstance(e, ScenarioError) else f"{type(e).__name__}: {e}"
        res = {"scenario": a.name, "target": a.target, "io_backend": a.io_backend,
               "error": what, "ok": False}
        print(f"chaos {a.name} [{a.target} {a.io_backend}]: could not run: {what}",
              file=sys.stderr)
    res["workdir"] = str(workdir)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    if "error" in res:
        return 2
    print(analysis.summary_line(res))
    for f in res["floors"]:
        print(f"  {'ok  ' if f['ok'] else 'FAIL'} {f['name']}: {f['detail']}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

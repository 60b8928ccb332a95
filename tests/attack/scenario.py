"""One attack scenario against a running ringlb: a well-behaved grpcio client at a fixed rate,
ringlb's RSS sampled every 100 ms, the attacker as a child process (tests/attack/attackers.py,
so its Python loop shares no GIL with the client whose latency is measured), /metrics before and
after, and the recovery of RSS afterwards. Used by tests/attack/test_attacks.py and
bench/bench_attack.py.

Timeline:  warm-up | baseline RSS | client starts | +0.5 s attack (S s) | client ends S + 2 s
after its start | RSS recovery poll (<= RECOVER_S) | fresh-channel calls | /metrics.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import grpc

HERE = Path(__file__).resolve().parent
ATTACKERS = HERE / "attackers.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

RATE = 50             # well-behaved calls per second
DEADLINE = 2.0        # seconds, per well-behaved call
PAYLOAD = 64          # bytes per well-behaved call
LEAD_IN = 0.5         # seconds the client runs before the attack starts
TAIL = 1.5            # seconds the client runs after the attack's planned end
SAMPLE_EVERY = 0.1    # RSS sampling period, seconds
RECOVER_S = 5.0       # RSS must come back within this after the attack
RECOVER_RATIO = 1.2   # ... to at most this times the pre-attack RSS
FIXED_KIB = 4 * 1024    # see the bound in run_scenario


def cpu_s(pid: int) -> float | None:
    """utime + stime of the whole process (all threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vmrss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """VmRSS of one process every SAMPLE_EVERY seconds on its own thread; keeps the peak."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY):
        self.pid, self.every = pid, every
        self.peak_kib = 0
        self.samples: list[tuple[float, int]] = []
        self.gone = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="rss")
        self._t.start()

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            v = vmrss_kib(self.pid)
            if v is None:
                self.gone = True
            else:
                self.peak_kib = max(self.peak_kib, v)
                self.samples.append((round(time.monotonic() - t0, 2), v))
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join(2)
        return self.peak_kib


class GoodClient:
    """A well-behaved grpcio client on its own channel (own TCP connection): unary calls at
    `rate` per second, open loop (each call starts on schedule, whatever the previous did),
    `deadline` each, a small payload. Latency is from the start of a call to its completion."""

    def __init__(self, call: Callable, rate: int = RATE, deadline: float = DEADLINE,
                 payload: int = PAYLOAD):
        self.call = call           # a grpcio unary-unary multicallable (echo)
        self.rate, self.deadline, self.payload = rate, deadline, payload
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.started = 0
        self.done = threading.Semaphore(0)
        self._thread: threading.Thread | None = None

    def _body(self, i: int) -> bytes:
        head = b"good-%d-" % i
        return head + b"g" * max(0, self.payload - len(head))

    def warm(self, n: int = 20):
        for i in range(n):
            body = self._body(-1 - i)
            if self.call(body, timeout=5) != body:
                raise AssertionError("warm-up call: wrong echo")

    def start(self, seconds: float):
        n = int(seconds * self.rate)
        self._thread = threading.Thread(target=self._run, args=(n,), daemon=True, name="good")
        self._thread.start()

    def _run(self, n: int):
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = self._body(i)
            t = time.monotonic()
            try:
                fut = self.call.future(body, timeout=self.deadline)
            except Exception as e:  # noqa: BLE001 -- counted as a failed call
                with self.lock:
                    self.failures.append(f"call {i}: could not start: {e!r}")
                self.started += 1
                self.done.release()
                continue
            self.started += 1
            fut.add_done_callback(lambda f, t=t, i=i, body=body: self._finish(f, t, i, body))

    def _finish(self, fut, t: float, i: int, body: bytes):
        dt = time.monotonic() - t
        try:
            r = fut.result()
            with self.lock:
                if r == body:
                    self.latencies.append(dt)
                else:
                    self.failures.append(f"call {i}: wrong echo ({len(r)} bytes)")
        except grpc.RpcError as e:
            with self.lock:
                self.failures.append(f"call {i}: {e.code().name} {e.details()!r} after "
                                     f"{dt * 1000:.0f} ms")
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.failures.append(f"call {i}: {e!r}")
        finally:
            self.done.release()

    def join(self, timeout: float) -> bool:
        """Waits for the schedule to end and every call to complete. False on a hang."""
        end = time.monotonic() + timeout
        self._thread.join(max(0.0, end - time.monotonic()))
        if self._thread.is_alive():
            return False
        for _ in range(self.started):
            if not self.done.acquire(timeout=max(0.0, end - time.monotonic())):
                return False
        return True

    def stats(self) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
            fails = list(self.failures)
        def pct(p):
            return round(lat[max(0, math.ceil(p * len(lat)) - 1)] * 1000, 2) if lat else None
        return {"calls": self.started, "ok": len(lat), "failed": len(fails),
                "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "max_ms": round(lat[-1] * 1000, 2) if lat else None,
                "failures": fails[:5]}


# ---------------------------------------------------------------------------------------------
# /metrics (Prometheus text)
# ---------------------------------------------------------------------------------------------
SAMPLE_RE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin_port: int, timeout: float = 5.0) -> dict[tuple, float] | None:
    """{(family, ((label, value), ...)): value}; None when the admin listener does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=timeout)
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        conn.close()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL_RE.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def deltas(before: dict | None, after: dict | None, prefix: str = "ringlb_downstream_") -> dict:
    """Series of families starting with prefix that moved: {"family{l=v}": delta}."""
    if not after:
        return {}
    out = {}
    for key, v in after.items():
        if not key[0].startswith(prefix):
            continue
        d = v - (before or {}).get(key, 0.0)
        if d:
            lbl = ",".join(f'{k}="{x}"' for k, x in key[1])
            out[f"{key[0]}{{{lbl}}}"] = d
    return out


def counter_moved(before: dict | None, after: dict | None, family: str, label: str | None = None,
                  values: tuple = ()) -> float:
    """Sum of the deltas of family's series whose label is one of values (any when empty)."""
    if not after:
        return 0.0
    total = 0.0
    for key, v in after.items():
        if key[0] != family:
            continue
        labels = dict(key[1])
        if label and values and labels.get(label) not in values:
            continue
        total += v - (before or {}).get(key, 0.0)
    return total


def family_present(metrics: dict | None, family: str) -> bool:
    return bool(metrics) and any(k[0] == family for k in metrics)


# ---------------------------------------------------------------------------------------------
# The attacker process
# ---------------------------------------------------------------------------------------------
def start_attacker(attack: str, port: int, workdir: Path, **kw) -> tuple[subprocess.Popen, Path]:
    out = Path(tempfile.mkstemp(prefix=f"attack-{attack}-", suffix=".json", dir=workdir)[1])
    args = [PYTHON, str(ATTACKERS), attack, "--port", str(port), "--json", str(out)]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k}", str(v)]
    err = open(out.with_suffix(".stderr"), "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    err.close()
    return p, out


def finish_attacker(p: subprocess.Popen, out: Path, timeout: float) -> dict:
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        return {"error": f"attacker did not finish within {timeout:.0f}s (killed)"}
    if p.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        err = out.with_suffix(".stderr")
        tail = err.read_text(errors="replace")[-1500:] if err.exists() else ""
        return {"error": f"attacker exit {p.returncode}: {tail}"}
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------
class Outcome:
    """Everything one scenario measured; `problems()` lists what broke the common floors."""

    def __init__(self):
        self.baseline_kib = 0
        self.peak_kib = 0
        self.final_kib = 0
        self.recovered_s: float | None = None
        self.bound_kib = 0
        self.client: dict = {}
        self.client_hung = False
        self.attacker: dict = {}
        self.alive_during = True
        self.alive_after = True
        self.answering_after = ""
        self.metrics_before: dict | None = None
        self.metrics_after: dict | None = None
        self.moved: dict = {}
        self.samples: list = []
        self.memory_limit_mib = 0
        self.cpu_s: float | None = None       # ringlb's CPU seconds from attack start to end
        self.backend_calls: int | None = None  # calls the backend got from the attack's start
        #                                         to the client's end (the client's included)

    def problems(self, p99_ms: float = 50.0) -> list[str]:
        out = []
        c = self.client
        if self.client_hung:
            out.append("the well-behaved client's calls did not all complete (hang)")
        if c.get("failed"):
            out.append(f"the well-behaved client had {c['failed']} failed calls of "
                       f"{c['calls']}: {c['failures']}")
        if c.get("p99_ms") is None or c["p99_ms"] >= p99_ms:
            out.append(f"the well-behaved client's p99 was {c.get('p99_ms')} ms (floor "
                       f"< {p99_ms:g} ms; p50 {c.get('p50_ms')} ms, max {c.get('max_ms')} ms)")
        if not self.alive_during or not self.alive_after:
            out.append("ringlb died during the attack")
        elif self.answering_after:
            out.append(f"ringlb did not answer a fresh client after the attack: "
                       f"{self.answering_after}")
        if self.peak_kib >= self.bound_kib:
            out.append(f"ringlb's peak RSS {self.peak_kib / 1024:.1f} MiB >= bound "
                       f"{self.bound_kib / 1024:.1f} MiB (baseline {self.baseline_kib / 1024:.1f}"
                       f" + memory_limit {self.memory_limit_mib} MiB)")
        if self.recovered_s is None and self.alive_after:
            out.append(f"ringlb's RSS did not come back within {RECOVER_S:g}s: "
                       f"{self.final_kib / 1024:.1f} MiB vs pre-attack "
                       f"{self.baseline_kib / 1024:.1f} MiB (bound x{RECOVER_RATIO})")
        if "error" in self.attacker:
            out.append(f"attacker: {self.attacker['error']}")
        return out

    def summary(self) -> str:
        c, a = self.client, self.attacker
        seen = []
        if a.get("goaways"):
            seen.append("GOAWAY " + ", ".join(f"0x{int(k):x} x{v}"
                                              for k, v in a["goaways"].items()))
        if a.get("goaway_debug"):
            seen.append(f"debug {a['goaway_debug'][:2]}")
        for k in ("connections", "closed_by_peer", "refused", "still_open", "units"):
            if k in a:
                seen.append(f"{k} {a[k]}")
        if a.get("resets_received"):
            seen.append(f"RST_STREAM {a['resets_received']}")
        if a.get("grpc_statuses"):
            seen.append(f"grpc-status {a['grpc_statuses']}")
        if a.get("first_goaway_s") is not None:
            seen.append(f"first GOAWAY at {a['first_goaway_s']}s")
        if self.cpu_s is not None:
            seen.append(f"ringlb CPU {self.cpu_s:.2f}s during the attack")
        if self.backend_calls is not None:
            seen.append(f"the backend got {self.backend_calls} calls meanwhile (the "
                        f"well-behaved client started {self.client.get('calls')})")
        return (f"client {c.get('ok')}/{c.get('calls')} ok, {c.get('failed')} failed, "
                f"p50 {c.get('p50_ms')} ms, p99 {c.get('p99_ms')} ms, max {c.get('max_ms')} ms; "
                f"RSS baseline {self.baseline_kib / 1024:.1f} MiB, peak "
                f"{self.peak_kib / 1024:.1f} MiB (bound {self.bound_kib / 1024:.1f}), after "
                f"{self.final_kib / 1024:.1f} MiB"
                + (f" (back in {self.recovered_s:.1f}s)" if self.recovered_s is not None
                   else " (not back)")
                + f"; attacker: {'; '.join(seen) or a.get('error', 'nothing')}"
                + f"; metrics moved: {self.moved or 'none'}")


def run_scenario(*, pid: int, port: int, admin_port: int | None, good_call: Callable,
                 fresh_call: Callable[[], None], alive: Callable[[], bool], workdir: Path,
                 attack: str, attack_seconds: float, memory_limit_mib: int,
                 attack_kw: dict | None = None, attacker_timeout: float = 30.0,
                 backend_total: Callable[[], int] | None = None,
                 recover_slack_kib: int = 0) -> Outcome:
    """Runs the timeline in the module docstring. fresh_call() makes calls on a new channel and
    raises on failure. Returns the Outcome; the caller asserts."""
    o = Outcome()
    o.memory_limit_mib = memory_limit_mib
    client = GoodClient(good_call)
    client.warm()
    time.sleep(0.3)
    samples = []
    for _ in range(5):
        samples.append(vmrss_kib(pid) or 0)
        time.sleep(0.05)
    # The baseline: ringlb after start-up and warm-up, the good client's connection open and its
    # upstream connection up: the median of 5 samples over 0.25 s.
    o.baseline_kib = sorted(samples)[2]
    # The bound: the baseline plus memory_limit plus FIXED_KIB. memory_limit caps what ringlb
    # holds for its peers (buffers, streams, header blocks, calls); whatever an attacker makes
    # it hold must fit in it, on top of what ringlb needs at rest. FIXED_KIB is what does not
    # grow with peers but is not all touched at rest: the io_uring reactor's receive-buffer
    # ring (2 MiB per worker, its pages touched as load spreads over them) and allocator slack.
    o.bound_kib = o.baseline_kib + memory_limit_mib * 1024 + FIXED_KIB
    o.metrics_before = scrape(admin_port) if admin_port else None
    sampler = RssSampler(pid)
    client.start(LEAD_IN + attack_seconds + TAIL)
    time.sleep(LEAD_IN)
    calls0 = backend_total() if backend_total else 0
    cpu0 = cpu_s(pid)
    p, out = start_attacker(attack, port, workdir, seconds=attack_seconds, **(attack_kw or {}))
    o.attacker = finish_attacker(p, out, attacker_timeout + attack_seconds)
    cpu1 = cpu_s(pid)
    if cpu0 is not None and cpu1 is not None:
        o.cpu_s = cpu1 - cpu0
    o.client_hung = not client.join(TAIL + attack_seconds + DEADLINE + 5)
    o.client = client.stats()
    if backend_total:
        o.backend_calls = backend_total() - calls0
    o.alive_during = alive() and not sampler.gone
    o.peak_kib = sampler.stop()
    o.samples = sampler.samples
    # RSS comes back: poll, bounded.
    t0 = time.monotonic()
    while True:
        v = vmrss_kib(pid)
        if v is None:
            break
        o.final_kib = v
        if v <= o.baseline_kib * RECOVER_RATIO + recover_slack_kib:
            o.recovered_s = time.monotonic() - t0
            break
        if time.monotonic() - t0 > RECOVER_S:
            break
        time.sleep(0.1)
    o.alive_after = alive()
    if o.alive_after:
        try:
            fresh_call()
        except Exception as e:  # noqa: BLE001 -- reported
            o.answering_after = repr(e)[:300]
    o.metrics_after = scrape(admin_port) if admin_port and o.alive_after else None
    o.moved = deltas(o.metrics_before, o.metrics_after)
    return o

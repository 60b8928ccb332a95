"""The floors of the chaos suite, decided from what was recorded: every call the client made
(start, end, status, who answered), every attempt the proxy put on the wire to a backend (the
tap), and the fault events. Pure functions; scenario.py calls analyse() after the run.

Words used below (all times are time.time(), one clock for the client, the tap and the faults):
  F          the moment a fault took effect on backend B (the signal or iptables returned)
  R          the moment B recovered (SIGCONT, restarted and serving) or the end of the run
  attempt    one HTTP/2 stream the proxy opened to a backend (a call, a retry or a hedge)
  detection  D = (the last attempt sent to B in [F, R)) - F, or 0 when none was sent: once
             the proxy has noticed, it sends B nothing more until B recovers, so the last
             attempt marks the moment it knew
What is asserted, by scenario kind:
  every scenario   p99 of the successful calls < 1 s; the client kept its schedule (no more
                   than 2% of calls issued > 100 ms late) and the tap saw >= 99% of the calls
                   that succeeded (else the run says nothing and fails as such)
  zero             no failed call at all
  hard fault       (kill, SIGSTOP, blackhole; each old backend of a restart) every attempt to B
                   in [F, R) was sent within 1 s of F: detected within 1 s, and after that
                   nothing until it recovers
  detect           (SIGSTOP / blackhole under the plain defaults, no per-try timeout or hedge)
                   D <= 1 s, and every failed call was sent to B and started before F + D: the
                   calls that fail are those already on their way to B before the proxy could
                   know (in flight at the fault or sent between the fault and its detection),
                   none started after detection
  unavailable      B answers every call with UNAVAILABLE from F (its health check still says
                   SERVING): no failed call, and B is ejected: every attempt it gets in
                   [F, F + 4 s) was sent within 1 s of F. Later attempts (probes once the
                   base ejection of 5 s runs out) are reported, not failed: only a call can
                   tell the proxy that an application-level fault is over
  recovery         (the 30 s SIGSTOP variant) after SIGCONT, B answers calls again
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

DETECT_WITHIN = 1.0    # seconds
P99_UNDER = 1.0        # seconds
LATE_ISSUE = 0.100     # seconds a call may be issued behind schedule (by 2% of the calls)
EJECTED_FOR = 4.0      # unavailable: no attempt in [F + 1 s, F + this)


@dataclass
class Window:
    """A backend's bad period. Written by the fault thread."""
    name: str
    host: str
    fault: float
    recovered: float | None
    kind: str = "hard"          # hard | blackhole | restart | unavailable


def read_tap(path: Path) -> list[tuple[float, str, int | None]]:
    """-> [(time, backend host, call id or None)] one per attempt, in wire order."""
    heads: dict[tuple[str, str], tuple[float, str]] = {}
    ids: dict[tuple[str, str], int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        f = line.split()
        if len(f) != 5:
            continue
        if f[0] == "H":
            heads[(f[2], f[3])] = (float(f[1]), f[4])
        elif f[0] == "D":
            ids[(f[2], f[3])] = int(f[4])
    return sorted((t, host, ids.get(k)) for k, (t, host) in heads.items())


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def _floor(out: list, name: str, ok: bool, detail: str):
    out.append({"name": name, "ok": bool(ok), "detail": detail})


def analyse(name: str, sc, calls: list, t0: float, events: list, windows: list[Window],
            attempts: list, backends: list[str], rate: float, fault_at: float) -> dict:
    end_of_run = max([c[1] or c[0] for c in calls] + [t0])
    # The fault began with the first event after the first call (a signal, iptables, new
    # backends published, a second ringlb); before/after counts split there.
    fault = events[1][0] if len(events) > 1 else t0 + fault_at
    ok_calls = [c for c in calls if c[2] == "OK"]
    failed = [(i, c) for i, c in enumerate(calls) if c[2] != "OK"]
    for _, c in failed:
        if c[2] is None:
            c[2] = "NO_ANSWER"  # no callback within deadline + 3 s
    by_status = collections.Counter(c[2] for _, c in failed)
    lat = [c[1] - c[0] for c in ok_calls]
    by_call: dict[int, list] = collections.defaultdict(list)
    for t, host, cid in attempts:
        if cid is not None:
            by_call[cid].append((t, host))
    host_of = {}
    for w in windows:
        host_of[w.host] = w.name
    res = {
        "scenario": name, "calls": len(calls), "failed": len(failed),
        "failed_by_status": dict(by_status),
        "failure_messages": sorted({c[3] for _, c in failed if c[3]})[:5],
        "p50_ms": _ms(pct(lat, 50)), "p99_ms": _ms(pct(lat, 99)), "max_ms": _ms(max(lat or [0])),
        "answered": _answered(calls, fault), "attempts": _attempts(attempts, fault),
        "events": [(round(t - t0, 3), e) for t, e in events],
        "outage_s": (round(max(c[1] or c[0] + 2 for _, c in failed)
                           - min(c[0] for _, c in failed), 3) if failed else 0.0),
        "first_failure_s": round(min(c[0] for _, c in failed) - fault, 3) if failed else None,
        "last_failure_s": round(max(c[0] for _, c in failed) - fault, 3) if failed else None,
    }
    floors: list = []
    _harness_floors(floors, calls, ok_calls, by_call, t0, rate)
    p99 = pct(lat, 99)
    _floor(floors, "p99 of successful calls < 1 s", p99 is not None and p99 < P99_UNDER,
           f"p99 {_ms(p99)} ms over {len(lat)} calls")
    detections, late = [], 0
    for w in windows:
        d, n = _window_floors(floors, w, attempts, calls, end_of_run)
        detections.append(d)
        late += n
        if w.kind == "blackhole":
            _held_floor(floors, w, calls, held_threshold(sc.route), end_of_run)
    res["late_attempts"] = late
    res["detection_s"] = max(detections) if detections else None
    res["detections"] = {w.name: d for w, d in zip(windows, detections)}
    if sc.expect == "zero":
        _floor(floors, "no failed call", not failed, _failed_detail(failed, by_status))
    else:
        res["detection_s"] = _detect_floors(floors, windows, detections, failed, by_call)
    res["floors"] = floors
    res["ok"] = all(f["ok"] for f in floors)
    return res


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000.0, 1)


def _answered(calls: list, fault: float) -> dict:
    out: dict = {}
    for c in calls:
        if c[2] == "OK":
            d = out.setdefault(c[3], [0, 0])
            d[0 if c[0] < fault else 1] += 1
    return {k: {"before": v[0], "after": v[1]} for k, v in sorted(out.items())}


def _attempts(attempts: list, fault: float) -> dict:
    out: dict = {}
    for t, host, _ in attempts:
        d = out.setdefault(host, [0, 0])
        d[0 if t < fault else 1] += 1
    return {k: {"before": v[0], "after": v[1]} for k, v in sorted(out.items())}


def _failed_detail(failed: list, by_status) -> str:
    if not failed:
        return "0 failed"
    return f"{len(failed)} failed {dict(by_status)}"


def _harness_floors(floors: list, calls: list, ok_calls: list, by_call: dict, t0: float,
                    rate: float):
    late = sum(1 for i, c in enumerate(calls) if c[0] - (t0 + i / rate) > LATE_ISSUE)
    _floor(floors, "harness: client kept its schedule", late <= 0.02 * len(calls),
           f"{late} of {len(calls)} calls issued > {LATE_ISSUE * 1000:.0f} ms late")
    seen = sum(1 for i, c in enumerate(calls) if c[2] == "OK" and i in by_call)
    _floor(floors, "harness: the tap saw the calls", seen >= 0.99 * len(ok_calls),
           f"{seen} of {len(ok_calls)} successful calls seen on the wire")


def _window_floors(floors: list, w: Window, attempts: list, calls: list,
                   end_of_run: float) -> tuple[float, int]:
    """-> (detection, attempts sent to the backend more than 1 s after its fault)"""
    until = w.recovered or end_of_run
    if w.kind == "unavailable":
        until = min(until, w.fault + EJECTED_FOR)
    sent = [t for t, host, _ in attempts if host == w.host and w.fault <= t < until]
    d = round(max(sent) - w.fault, 3) if sent else 0.0
    late = [round(t - w.fault, 3) for t in sent if t - w.fault > DETECT_WITHIN]
    span = f"[F, F + {EJECTED_FOR:g} s)" if w.kind == "unavailable" else (
        "until it recovered" if w.recovered else "until the end")
    _floor(floors, f"{w.name}: no attempt more than 1 s after the fault, {span}", not late,
           f"{len(sent)} attempts to {w.host} after the fault, the last at +{d:.3f} s"
           + (f"; {len(late)} late, first at +{late[0]:.3f} s" if late else ""))
    if w.kind == "unavailable":
        probes = [t for t, host, _ in attempts if host == w.host and t >= until]
        floors[-1]["detail"] += f"; {len(probes)} probe attempts after +{EJECTED_FOR:g} s"
    if w.recovered and w.kind in ("hard", "blackhole"):
        back = sum(1 for c in calls if c[2] == "OK" and c[3] == w.name and c[0] >= w.recovered)
        _floor(floors, f"{w.name}: answers calls again after it recovered", back > 0,
               f"{back} calls answered by {w.name} after recovery")
    return d, len(late)


def held_threshold(route: dict | None) -> float:
    """A call sent into a blackholed socket is rescued (if at all) no sooner than the per-try
    timeout, the hedge delay, or (plain defaults) the connection's death: 90% of that."""
    def secs(v: str) -> float:
        return float(v[:-2]) / 1000.0 if v.endswith("ms") else float(v[:-1])
    route = route or {}
    if "hedge" in route:
        return 0.9 * secs(route["hedge"]["after"])
    if "retry" in route:
        return 0.9 * secs(route["retry"]["per_try_timeout"])
    return 0.5


def _held_floor(floors: list, w: Window, calls: list, threshold: float, end_of_run: float):
    """A blackhole keeps attempts written into B's socket off the wire, so the tap cannot see
    them; a call that went there and was rescued shows as a slow success. Successful calls
    started more than 1 s after the fault (until B recovers) may be that slow for other reasons
    only rarely: at most 0.5% of them (a proxy still sending to B sends it a third)."""
    until = w.recovered or end_of_run
    later = [c for c in calls if c[2] == "OK" and w.fault + DETECT_WITHIN < c[0] < until]
    slow = [c for c in later if c[1] - c[0] > threshold]
    _floor(floors, f"{w.name}: no call held up by it more than 1 s after the fault",
           len(slow) <= 0.005 * len(later),
           f"{len(slow)} of {len(later)} successful calls started after +1 s took > "
           f"{threshold * 1000:.0f} ms (allowed: 0.5%, noise)")


def _detect_floors(floors: list, windows: list[Window], detections: list, failed: list,
                   by_call: dict) -> float:
    """-> the detection time D, taken as the later of the last attempt seen to B and the
    start of the last failed call (a blackholed socket keeps attempts off the wire: the calls
    written into it show up only as failures)."""
    w = windows[0]
    starts = [c[0] - w.fault for _, c in failed]
    d = round(max([detections[0]] + starts), 3)
    after = [x for x in starts if x > DETECT_WITHIN]
    _floor(floors, f"{w.name}: detected within 1 s, no failed call started after that",
           d <= DETECT_WITHIN,
           f"detection {d:.3f} s; {len(failed)} failed, {len(after)} of them started more than "
           f"1 s after the fault" + (f" (first at +{min(after):.3f} s)" if after else ""))
    # Sent to B: seen on the wire to it, or never seen on the wire at all (held in B's socket);
    # a failed call seen going to another backend only is a failure B does not explain.
    elsewhere = [i for i, _ in failed
                 if by_call.get(i) and not any(h == w.host for _, h in by_call[i])]
    at_fault = sum(1 for x in starts if x < 0)
    _floor(floors, f"failed calls were all sent to {w.name}", not elsewhere,
           f"{len(failed) - len(elsewhere)} of {len(failed)} failed calls went to {w.host} "
           f"({at_fault} in flight at the fault, {len(failed) - at_fault} sent after it)"
           + (f"; call ids seen only elsewhere: {elsewhere[:5]}" if elsewhere else ""))
    return d


def summary_line(res: dict) -> str:
    who = res["target"] + (f" {res['io_backend']}" if res.get("io_backend") else "")
    per = ", ".join(f"{k} {v['before']}+{v['after']}" for k, v in res["answered"].items())
    det = res.get("detection_s")
    bad = [f["name"] for f in res["floors"] if not f["ok"]]
    return (f"chaos {res['scenario']} [{who}]: {res['calls']} calls, {res['failed']} failed "
            f"{res['failed_by_status'] or ''}, outage {res['outage_s']} s, "
            f"p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, answered (before+after) {per}, "
            f"detection {det if det is not None else '-'} s: "
            + ("all floors hold" if not bad else "FAILED: " + "; ".join(bad)))

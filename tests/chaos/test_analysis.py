"""The floors themselves, on made-up records: a proxy that behaves passes them and one that does
not fails them, so a green chaos run means what analysis.py says (no namespace, no processes)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analysis  # noqa: E402
from scenario import HEDGE, SCENARIOS  # noqa: E402

T0, RATE, FAULT_AT = 1000.0, 150.0, 3.0
F = T0 + FAULT_AT + 0.01
N = int(12 * RATE)
HOSTS = {"b0": "127.0.0.2", "b1": "127.0.0.3", "b2": "127.0.0.4"}


def run(name: str, b1_until: float = 99.0, bad: dict | None = None, probes=(),
        kind: str = "hard", slow: dict | None = None):
    """A made-up proxy: 12 s at 150/s, round robin over b0..b2, every call 2 ms. From F +
    b1_until on it sends b1's share to b0 (it has noticed). bad: call index -> (status, how
    long); probes: extra attempts to b1 at F + x; slow: call index -> duration of a success.
    kind="blackhole": attempts to b1 after F never reach the wire."""
    calls, attempts = [], []
    for i in range(N):
        start = T0 + i / RATE
        who = f"b{i % 3}"
        if who == "b1" and start >= F + b1_until:
            who = "b0"
        if i in (bad or {}):
            status, dur = bad[i]
            calls.append([start, start + dur, status, "boom"])
        else:
            calls.append([start, start + (slow or {}).get(i, 0.002), "OK", who])
        if not (kind == "blackhole" and who == "b1" and start > F):
            attempts.append((start + 0.0005, HOSTS[who], i))
        if i in (slow or {}):  # rescued: the retry or hedge that answered went to b2
            attempts.append((start + slow[i] - 0.002, HOSTS["b2"], i))
    attempts += [(F + x, HOSTS["b1"], None) for x in probes]
    windows = [analysis.Window("b1", HOSTS["b1"], F, None, kind=kind)]
    return analysis.analyse(name, SCENARIOS[name], calls, T0, [(T0, "first call"), (F, "fault")],
                            windows, sorted(attempts), list(HOSTS), RATE, FAULT_AT)


def b1_calls(a: float, b: float) -> list[int]:
    return [i for i in range(N) if i % 3 == 1 and F + a <= T0 + i / RATE < F + b]


def failed_floors(res) -> list[str]:
    return [f["name"] for f in res["floors"] if not f["ok"]]


def test_sigstop_detected_in_time_passes():
    # b1's calls until +0.6 s fail (sent before the proxy knew), then it gets nothing.
    res = run("sigstop", b1_until=0.6, bad={i: ("DEADLINE_EXCEEDED", 2.0)
                                            for i in b1_calls(0, 0.6)})
    assert failed_floors(res) == [], res["floors"]
    assert 0.5 < res["detection_s"] <= 0.6


def test_sigstop_never_detected_fails():
    res = run("sigstop", bad={i: ("DEADLINE_EXCEEDED", 2.0) for i in b1_calls(0, 9)})
    assert failed_floors(res) == ["b1: no attempt more than 1 s after the fault, until the end",
                                  "b1: detected within 1 s, no failed call started after that"]


def test_kill_with_one_failure_fails_only_the_zero_floor():
    res = run("kill", b1_until=0.0, bad={b1_calls(-0.1, 0)[0]: ("UNAVAILABLE", 0.02)})
    assert failed_floors(res) == ["no failed call"]


def test_unavailable_ejected_then_probed_passes_and_never_ejected_fails():
    res = run("unavailable", b1_until=0.05, probes=[5.0, 5.5], kind="unavailable")
    assert failed_floors(res) == [], res["floors"]
    res = run("unavailable", kind="unavailable")
    assert failed_floors(res) == ["b1: no attempt more than 1 s after the fault, [F, F + 4 s)"]


def test_blackhole_held_calls_are_seen_without_the_wire():
    # Hedging rescues every call sent into the dead socket after 150 ms: no failure and no
    # attempt on the wire, but slow calls. Before +1 s that is allowed; after it, not.
    assert SCENARIOS["blackhole_hedge"].route == HEDGE
    res = run("blackhole_hedge", b1_until=0.9, kind="blackhole",
              slow={i: 0.16 for i in b1_calls(0, 0.9)})
    assert failed_floors(res) == [], res["floors"]
    res = run("blackhole_hedge", kind="blackhole", slow={i: 0.16 for i in b1_calls(0, 9)})
    assert failed_floors(res) == ["b1: no call held up by it more than 1 s after the fault"]


def test_failed_call_seen_only_at_a_healthy_backend_fails_attribution():
    i = [j for j in range(N) if j % 3 == 0 and F < T0 + j / RATE < F + 0.5][0]
    res = run("sigstop", b1_until=0.3, bad={i: ("UNAVAILABLE", 0.01)})
    assert failed_floors(res) == ["failed calls were all sent to b1"]


def test_a_blind_tap_fails_the_harness_floor():
    calls = [[T0 + i / RATE, T0 + i / RATE + 0.002, "OK", "b0"] for i in range(100)]
    res = analysis.analyse("kill", SCENARIOS["kill"], calls, T0, [(T0, "first call")], [], [],
                           list(HOSTS), RATE, FAULT_AT)
    assert failed_floors(res) == ["harness: the tap saw the calls"]

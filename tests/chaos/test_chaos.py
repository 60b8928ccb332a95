"""The chaos suite (issue 9, "Resilience"): every scenario of scenario.py, each inside its own
network namespace (`unshare --net --pid`), against the real binary, on both reactor backends.

Each test runs one scenario as a child process and asserts the floors analysis.py decided (its
docstring says exactly what each floor means). The figures of every run (calls, failed, outage,
p50/p99, per-backend counts, detection time) are printed in a closing "chaos figures" section.

  RINGLB_BIN=$PWD/build/ringlb /usr/bin/python3 -m pytest tests/chaos -q -rs
  RINGLB_CHAOS_KEEP=1 ...   keep every scenario's folder (configs, logs, raw records)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from analysis import summary_line  # noqa: E402
from scenario import SCENARIOS  # noqa: E402

NAMES = list(SCENARIOS)


def ringlb_bin() -> str:
    b = Path(os.environ.get("RINGLB_BIN", REPO / "build" / "ringlb"))
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(f"ringlb binary not found at {b}: build it, or set RINGLB_BIN", pytrace=False)
    return str(b)


def can_unshare() -> str | None:
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "the chaos suite needs root (unshare --net, iptables inside the namespace)"
    return None


# Scenario -> floor name -> why it does not hold yet.
KNOWN_GAPS = {
    "blackhole_hedge": {
        "b1: no call held up by it more than 1 s after the fault":
            "no call fails, but until the third connect timeout ejects the blackholed endpoint, "
            "and again when its ejection ends, calls are still picked for it and wait for the "
            "hedge (150 ms); ringlb does not yet probe an endpoint before giving it calls back",
    },
}


@pytest.mark.parametrize("name", NAMES)
def test_scenario(name, io_backend, tmp_path, summaries):
    why = can_unshare()
    if why:
        pytest.skip(why)
    binary = ringlb_bin()
    out = tmp_path / "result.json"
    sc = SCENARIOS[name]
    # A PID namespace too: whatever way the scenario ends, nothing it started outlives it.
    cmd = ["unshare", "--net", "--pid", "--fork", "--kill-child", "/usr/bin/python3",
           str(HERE / "scenario.py"), name, "--io-backend", io_backend, "--bin", binary,
           "--json", str(out), "--workdir", str(tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=sc.seconds + 90)
    if not out.exists():
        pytest.fail(f"scenario {name} wrote no result (exit {p.returncode}):\n"
                    f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}", pytrace=False)
    res = json.loads(out.read_text())
    if "error" in res:
        summaries.append(f"chaos {name} [ringlb {io_backend}]: could not run: "
                         f"{[x for x in res['error'].splitlines() if x.strip()][-1][:300]}")
        pytest.fail(f"scenario {name} could not run: {res['error']}\n{p.stderr[-3000:]}",
                    pytrace=False)
    summaries.append(summary_line(res))
    bad = [f for f in res["floors"] if not f["ok"]]
    # Known gaps, reported as xfail (counted, with the figures) while every other floor of the
    # scenario still asserts. Remove an entry when its gap closes.
    gaps = [f for f in bad if f["name"] in KNOWN_GAPS.get(name, {})]
    bad = [f for f in bad if f not in gaps]
    if gaps and not bad:
        pytest.xfail("; ".join(f"{f['name']}: {f['detail']} ({KNOWN_GAPS[name][f['name']]})"
                               for f in gaps))
    if not bad and os.environ.get("RINGLB_CHAOS_KEEP") != "1":
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    assert not bad, (summary_line(res) + "\n" + "\n".join(
        f"  FAIL {f['name']}: {f['detail']}" for f in bad)
        + f"\n  failure messages: {res['failure_messages']}\n  events: {res['events']}\n"
        f"  attempts per backend (before+after the fault): {res['attempts']}\n"
        f"  logs and raw records: {tmp_path / 'run'}")

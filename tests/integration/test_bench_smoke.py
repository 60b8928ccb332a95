"""Smoke test of the end-to-end benchmark harness (bench/harness.py).

Runs the harness in its smallest mode against every target and checks that the Markdown table
has a row with a number of calls/s for each. It asserts nothing about speed: a slow or loaded
machine must not fail it, a broken harness, a missing peer or a target that cannot serve must.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = ["direct", "ringlb-io_uring", "ringlb-epoll", "haproxy-h2", "haproxy-tcp", "nginx"]
PEERS = {"haproxy": "haproxy", "nginx": "nginx-light", "h2load": "nghttp2-client",
         "taskset": "util-linux"}
HARNESS_TIMEOUT = 100  # seconds; the run takes about 30 (the suite's watchdog fires at 120)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Rows of the first table (the one before the ratios), by target name."""
    rows: dict[str, list[str]] = {}
    for line in markdown.split("Ratios", 1)[0].splitlines():
        if not line.startswith("| ") or line.startswith("| target"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].split(" ")[0]
        rows[name] = cells
    return rows


def test_bench_harness_quick(io_backend, tmp_path):
    # The harness runs both reactor backends itself, so both parameters run the same thing;
    # a deliberate repeat (about 20 s) rather than a skip.
    del io_backend
    missing = [f"{cmd} (apt-get install {pkg})" for cmd, pkg in PEERS.items()
               if not shutil.which(cmd)]
    if missing:
        pytest.fail("the benchmark smoke test needs " + ", ".join(missing) +
                    "; tests/run.sh installs them", pytrace=False)
    binary = Path(os.environ.get("RINGLB_BIN", REPO / "build" / "ringlb"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"ringlb binary not found at {binary} (ninja -C build or RINGLB_BIN)",
                    pytrace=False)
    # Under a sanitizer build the backends may as well be the release binary, if there is one.
    release = REPO / "build" / "ringlb"
    backend_bin = release if release.is_file() else binary

    out = tmp_path / "results"
    cmd = ["/usr/bin/python3", str(REPO / "bench" / "harness.py"), "--quick", "--reps", "1",
           "--no-fargate", "--out", str(out), "--bin", str(binary),
           "--backend-bin", str(backend_bin), "--calls", "2000", "--rate-secs", "0.5",
           "--hold-streams", "1000", "--hold-delay-ms", "1000"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=HARNESS_TIMEOUT,
                           cwd=REPO)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"harness did not finish within {HARNESS_TIMEOUT}s:\n"
                    f"{(e.stderr or b'')[-4000:]!r}", pytrace=False)
    log = f"--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-4000:]}"
    assert r.returncode == 0, f"harness exited {r.returncode}\n{log}"

    md_path = out / "latest.md"
    assert md_path.is_file(), f"no {md_path}\n{log}"
    rows = table_rows(md_path.read_text())
    for t in TARGETS:
        assert t in rows, f"no row for {t} in the table\n{md_path.read_text()}"
        cell = rows[t][1]
        assert re.fullmatch(r"[\d,]+(\.\d+)?", cell), f"{t}: calls/s is {cell!r}\n{log}"
        assert float(cell.replace(",", "")) > 0, f"{t}: calls/s is {cell}"

    history = list(out.glob("*.json"))
    assert len(history) == 1, f"expected one JSON result, found {history}"
    doc = json.loads(history[0].read_text())
    assert set(TARGETS) <= set(doc["targets"]), doc["targets"].keys()

"""`--config-env NAME` and `ringlb check --config-env NAME`: the TOML text from an environment
variable (ECS task definitions set them, also from SSM parameters and secrets; Fargate has no
host files to mount). Errors name env:NAME:LINE:COLUMN as file errors name FILE:LINE:COLUMN; a
missing or empty variable says so; SIGHUP re-parses the same text and says that too."""
from __future__ import annotations

import json
import re
import signal

import pytest

import harness
from harness import Stub, channel, cluster, closed_port, render_config

VAR = "RINGLB_CONFIG"


def _need_proxy():
    if harness.direct_mode():
        pytest.fail("--config-env needs the real ringlb process (RINGLB_DIRECT=1 is set)",
                    pytrace=False)


def test_config_from_env_serves_calls_and_reloads_the_same_text(backends, ringlb):
    _need_proxy()
    bs = backends(2)
    cfg = ringlb.config([cluster("main", bs)])
    rl = harness.Ringlb(cfg, ringlb.io_backend, ringlb.tmp_path, name="ringlb-env",
                        config_env=VAR)
    ringlb.instances.append(rl)
    stub = Stub(channel(rl.port))
    for i in range(6):
        assert stub.unary(b"%d" % i, timeout=10) == b"%d" % i
    assert sorted(b.calls["Unary"] for b in bs) == [3, 3]
    st, body, _ = rl.admin("/config")
    assert st == 200 and json.loads(body)["source"] == f"env:{VAR}"

    # SIGHUP: the same text again, said in the log; nothing changes, calls go on.
    before = len(rl.log_text())
    rl.signal(signal.SIGHUP)
    assert harness.wait_until(lambda: "reload: applied" in rl.log_text()[before:], 10.0), \
        rl.log_text()[before:]
    tail = rl.log_text()[before:]
    assert f"SIGHUP: reloading env:{VAR}" in tail, tail
    assert f"reload: config from environment variable {VAR}: re-parsing the same text" in tail
    st, body, _ = rl.admin("/reload", method="POST", body=b"")
    assert st == 200, body
    for i in range(4):
        assert stub.unary(b"after%d" % i, timeout=10) == b"after%d" % i


def test_check_config_env_good(ringlb):
    text = render_config(ringlb.config([cluster("main", [f"127.0.0.1:{closed_port()}"])]))
    r = ringlb.run(["check", "--config-env", VAR], env={VAR: text})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"env:{VAR}: ok (1 listeners, 1 clusters)\n"


# (replace this line, with this, error at line, columns, key named)
BAD = {
    "bad_duration": ('drain_timeout = "5s"', 'drain_timeout = "5 parsecs"', {1, 17},
                     "drain_timeout"),
    "syntax_error": ("workers = 1", "workers = = 1", {11}, None),
}


@pytest.mark.parametrize("mode", ["check", "run"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_env_names_env_line_column(ringlb, case, mode):
    old, new, cols, key = BAD[case]
    text = render_config(ringlb.config([cluster("main", [f"127.0.0.1:{closed_port()}"])]))
    lines = text.splitlines()
    n = next(i for i, l in enumerate(lines, 1) if l.startswith(old.split(" = ")[0] + " = "))
    lines[n - 1] = new
    args = ["check", "--config-env", VAR] if mode == "check" else ["--config-env", VAR]
    r = ringlb.run(args, env={VAR: "\n".join(lines) + "\n"}, timeout=5)
    assert r.returncode == 1, f"rc {r.returncode}\n{r.stderr}"
    assert "listening on" not in r.stderr + r.stdout
    m = re.search(rf"^env:{VAR}:(\d+):(\d+): (.*)$", r.stderr, re.M)
    assert m, f"no env:{VAR}:LINE:COLUMN in stderr:\n{r.stderr}"
    assert int(m.group(1)) == n and int(m.group(2)) in cols, (m.group(0), n, cols)
    if key:
        assert key in m.group(3), m.group(0)


@pytest.mark.parametrize("mode", ["check", "run"])
@pytest.mark.parametrize("value,problem", [(None, "is not set"), ("", "is empty"),
                                           ("  \n", "is empty")])
def test_missing_or_empty_variable(ringlb, mode, value, problem):
    args = ["check", "--config-env", VAR] if mode == "check" else ["--config-env", VAR]
    env = {} if value is None else {VAR: value}
    # The test runner's own environment must not lend the variable.
    r = ringlb.run(args, env=env) if value is not None else _run_without(ringlb, args, VAR)
    assert r.returncode == 1, f"rc {r.returncode}\n{r.stderr}"
    assert f"env:{VAR}: environment variable {VAR} {problem}" in r.stderr, r.stderr


def _run_without(ringlb, args, var):
    import os
    saved = os.environ.pop(var, None)
    try:
        return ringlb.run(args)
    finally:
        if saved is not None:
            os.environ[var] = saved


@pytest.mark.parametrize("args", [["--config", "x.toml", "--config-env", VAR],
                                  ["--config-env"], ["check", "--config-env"],
                                  ["check", "--config-env", VAR, "extra"]])
def test_config_env_usage_errors(ringlb, args):
    r = ringlb.run(args, env={VAR: "x = 1"})
    assert r.returncode == 2, f"`ringlb {' '.join(args)}`: rc {r.returncode}\n{r.stderr}"

"""Config validation: `ringlb check FILE` and start-up errors naming FILE:LINE:COLUMN: KEY."""
import re

import pytest

from harness import closed_port, render_config

# Lines are numbered as written below (line 1 = "[proxy]").
GOOD = """\
[proxy]
workers = 1
io_backend = "{io}"
drain_timeout = "5s"
stream_buffer = "256KiB"

[[listener]]
address = "127.0.0.1:0"
cluster = "main"
routes = [ {{ prefix = "/other.", cluster = "other", timeout = "2s" }} ]

[[cluster]]
name = "main"
lb = "round_robin"
endpoints = ["{ep}", {{ address = "{ep2}", weight = 2 }}]
connect_timeout = "1s"

[[cluster]]
name = "other"
lb = "p2c"
endpoints = ["{ep}"]
"""


def _line(text: str, n: int) -> str:
    return text.splitlines()[n - 1]


# name -> (function(text) -> bad text, line, acceptable columns, key named in the message)
def _replace_line(n, new):
    def f(text):
        lines = text.splitlines()
        lines[n - 1] = new
        return "\n".join(lines) + "\n"
    return f


def _insert_line(n, new):
    def f(text):
        lines = text.splitlines()
        lines.insert(n - 1, new)
        return "\n".join(lines) + "\n"
    return f


BAD = {
    # unknown key, indented: the key starts at column 3, its value at column 16
    "unknown_key": (_insert_line(3, "  frobnicate = 3"), 3, {3, 16}, "frobnicate"),
    # unknown key inside an inline table: `timout` at column 53, its value at column 62
    "unknown_inline_key": (_replace_line(
        10, 'routes = [ { prefix = "/other.", cluster = "other", timout = "2s" } ]'),
        10, {53, 62}, "timout"),
    # bad duration: value at column 17
    "bad_duration": (_replace_line(4, 'drain_timeout = "5 parsecs"'), 4, {1, 17}, "drain_timeout"),
    "bad_duration_cluster": (_replace_line(16, 'connect_timeout = "fast"'), 16, {1, 19},
                             "connect_timeout"),
    # bad addresses: value at column 11
    "bad_address_port": (_replace_line(8, 'address = "127.0.0.1:99999"'), 8, {1, 11}, "address"),
    "bad_address_hostname": (_replace_line(8, 'address = "localhost:8080"'), 8, {1, 11}, "address"),
    # a listener naming a cluster that does not exist: value at column 11
    "unknown_cluster": (_replace_line(9, 'cluster = "nope"'), 9, {1, 11}, "cluster"),
    # TOML syntax error: the second '=' is at column 11
    "syntax_error": (_replace_line(2, "workers = = 1"), 2, {11}, None),
}


def _good(io_backend):
    return GOOD.format(io=io_backend, ep=f"127.0.0.1:{closed_port()}",
                       ep2=f"127.0.0.1:{closed_port()}")


def test_check_good_file(ringlb, io_backend, tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(_good(io_backend))
    r = ringlb.run(["check", str(path)])
    assert r.returncode == 0, f"`ringlb check` rejected a good file: rc {r.returncode}\n{r.stderr}"
    assert "listening on" not in r.stderr + r.stdout


def test_check_harness_config(ringlb, io_backend, tmp_path):
    """The config the other tests generate is itself valid."""
    cfg = ringlb.config([{"name": "main", "lb": "p2c", "connect_timeout": "1s",
                          "endpoints": [f"127.0.0.1:{closed_port()}",
                                        {"address": f"127.0.0.1:{closed_port()}", "weight": 3}]}],
                        [{"cluster": "main",
                          "routes": [{"prefix": "/x.", "cluster": "main", "timeout": "100ms"}]}],
                        workers=2)
    path = tmp_path / "gen.toml"
    path.write_text(render_config(cfg))
    r = ringlb.run(["check", str(path)])
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stderr}\n--- file ---\n{path.read_text()}"


@pytest.mark.parametrize("mode", ["check", "run"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config(ringlb, io_backend, tmp_path, case, mode):
    make, line, cols, key = BAD[case]
    text = make(_good(io_backend))
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    args = ["check", str(path)] if mode == "check" else ["--config", str(path)]
    r = ringlb.run(args, timeout=5)
    detail = f"\n--- {path.name} line {line} ---\n{_line(text, line)}\n--- stderr ---\n{r.stderr}"
    assert r.returncode != 0, f"`ringlb {' '.join(args)}` accepted a bad file{detail}"
    assert "listening on" not in r.stderr + r.stdout, f"bound a listener despite the error{detail}"
    m = re.search(re.escape(str(path)) + r":(\d+):(\d+): ?(.*)", r.stderr)
    assert m, f"no `{path}:LINE:COLUMN:` in stderr{detail}"
    got_line, got_col, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    assert got_line == line, f"error names line {got_line}, the problem is on line {line}{detail}"
    assert got_col in cols, f"error names column {got_col}, want one of {sorted(cols)}{detail}"
    if key:
        assert key in rest, f"error message does not name the key {key!r}: {rest!r}{detail}"

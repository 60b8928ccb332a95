#!/usr/bin/env python3
"""Checks DESIGN.md's layering: every project include points down the table, and core/ has no
source file at its top level. Prints each violation as FILE:LINE and exits 1 if there is any."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = ["base", "io", "mem", "config", "h2", "proxy", "runtime", "demo"]
# What each folder may include (besides itself), from DESIGN.md's Layout table.
ALLOWED = {
    "core/base": set(),
    "core/io": {"core/base"},
    "core/mem": {"core/base"},
    "core/config": {"core/base", "core/io", "lb"},
    "core/h2": {"core/base", "core/io", "core/mem"},
    "core/proxy": {"core/base", "core/io", "core/mem", "core/h2", "core/config", "lb", "proto"},
    "core/runtime": {f"core/{c}" for c in CORE if c != "demo"} | {"lb", "discovery", "proto"},
    "core/demo": {f"core/{c}" for c in CORE} | {"proto"},
    "lb": set(),
    "discovery": {"lb"},
    "proto": set(),
}
# `main` dispatches to `ringlb demo`, which the proxy itself never includes.
EXTRA = {"core/runtime/main.cc": {"core/demo"}}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def folder_of(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] == "core" else parts[0]


def main() -> int:
    bad = []
    for f in sorted((ROOT / "core").iterdir()):
        if f.is_file() and f.suffix in (".h", ".cc"):
            bad.append(f"core/{f.name}: a source file at core/'s top level (put it in a layer)")
    for src in sorted(ROOT.glob("**/*")):
        rel = src.relative_to(ROOT).as_posix()
        if src.suffix not in (".h", ".cc") or rel.split("/")[0] not in ("core", "lb", "discovery", "proto"):
            continue
        me = folder_of(rel)
        if me not in ALLOWED:
            bad.append(f"{rel}: folder {me} is not a layer DESIGN.md names")
            continue
        for n, line in enumerate(src.read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if not m or "/" not in m.group(1):
                continue
            target = folder_of(m.group(1))
            if target == me or target not in ALLOWED:
                continue  # same layer, or not ours (generated .pb.h and the like)
            if target not in ALLOWED[me] | EXTRA.get(rel, set()):
                bad.append(f"{rel}:{n}: {me} must not include {m.group(1)}")
    for b in bad:
        print(b)
    print(f"layers: {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading packaging/ringlb.service and systemd's syscall groups, for the packaging tests."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY -> every value it is given, in order (systemd keys may repeat), all sections."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: group name -> members (syscalls and @groups)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for n in names:
        if n.startswith("@"):
            if n not in groups:
                raise KeyError(f"systemd knows no syscall group {n}")
            out |= expand(groups[n], groups)
        else:
            out.add(n)
    return out


def allowed_syscalls(settings: dict[str, list[str]], groups: dict[str, list[str]]) -> set[str]:
    """The unit's effective SystemCallFilter (systemd.exec(5)): allow-list lines add, lines
    starting with ~ remove; the first line decides that it is an allow list."""
    lines = settings.get("SystemCallFilter", [])
    if not lines or lines[0].startswith("~"):
        raise ValueError("the unit has no SystemCallFilter allow list")
    allowed: set[str] = set()
    for value in lines:
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        (allowed.difference_update if deny else allowed.update)(expand(names, groups))
    return allowed


STRACE_CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_][a-z0-9_]*)(?:\(| resumed>)")
STRACE_SOCKET = re.compile(r"^\d+\s+socket\((AF_[A-Z0-9]+)")


def strace_summary(path: Path) -> tuple[set[str], set[str]]:
    """(syscall names, socket() address families) in an `strace -f -o` file."""
    calls: set[str] = set()
    families: set[str] = set()
    for line in path.read_text(errors="replace").splitlines():
        m = STRACE_CALL.match(line)
        if m:
            calls.add(m.group(1))
        m = STRACE_SOCKET.match(line)
        if m:
            families.add(m.group(1))
    return calls, families

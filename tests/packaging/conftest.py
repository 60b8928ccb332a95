"""Shared fixtures for the packaging suite (container image, .deb, systemd unit, ECS templates).
Every test that cannot run on this machine skips with the reason; tests/run.sh counts skips."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def need(*commands: str) -> None:
    """Skips the test, naming what is missing, unless every command is on PATH."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip("not installed: " + ", ".join(missing))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ringlb_bin() -> Path:
    """The release binary the suite packages (RINGLB_BIN, default build/ringlb)."""
    path = Path(os.environ.get("RINGLB_BIN", ROOT / "build" / "ringlb"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build ringlb first (meson setup build && ninja -C build)")
    return path


@pytest.fixture(scope="session")
def minbase_tar() -> Path:
    """A Debian 12 minbase root as a tarball (mmdebstrap), built once and cached."""
    need("mmdebstrap")
    out = subprocess.run(["bash", str(ROOT / "packaging" / "base-image.sh"), "--tar"],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail("packaging/base-image.sh --tar failed:\n" + out.stderr[-3000:])
    return ROOT / out.stdout.strip()


@pytest.fixture(scope="session")
def base_image(minbase_tar) -> str:
    """The local debian:bookworm-slim stand-in, imported into podman."""
    need("podman")
    out = subprocess.run(["bash", str(ROOT / "packaging" / "base-image.sh")],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail("packaging/base-image.sh failed:\n" + out.stderr[-3000:])
    return out.stdout.strip()

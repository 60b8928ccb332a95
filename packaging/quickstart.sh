#!/usr/bin/env bash
# Quick start: installs what a fresh Debian 12 machine lacks, builds ringlb, and runs
# `ringlb demo`: three local gRPC backends behind ringlb, and a picture of how one connection's
# calls spread over them. Extra arguments go to `ringlb demo` (e.g. --port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup-debian.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build ringlb >/dev/null
exec ./build/ringlb demo "$@"

#!/usr/bin/env bash
# The end-to-end benchmark, from a fresh Debian 12 machine: installs what is missing (the build
# and test packages, haproxy, nginx-light, gnuplot-nox, linux-perf, strace, podman), builds
# ringlb, then runs bench/harness.py: ringlb (io_uring, epoll) against direct, HAProxy (h2, tcp)
# and nginx.
#
# Usage: bash bench/run.sh [--quick] [--reps N] [--no-fargate | --fargate] [more harness options]
# Output: a Markdown table on stdout and in bench/results/latest.md, the raw figures in
# bench/results/<UTC timestamp>.json, a plot in bench/results/latest.png. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

RINGLB_SETUP_BENCH=1 bash packaging/setup-debian.sh

# Syscall counting: perf (raw_syscalls tracepoint), strace as the fallback. The Fargate-shaped
# run's container variant: podman with runc, and mmdebstrap for the local base image.
extra=(linux-perf strace util-linux podman runc mmdebstrap)
missing=()
for p in "${extra[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "bench: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
ninja -C build >/dev/null || ninja -C build

# cgroups, perf and /dev/cpu_* want root; the harness says what it could not do without it.
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: not root: the Fargate-shaped run cannot create a cgroup and perf may be refused" >&2
fi
RINGLB_BENCH_COMMAND="bash bench/run.sh${*:+ $*}" exec /usr/bin/python3 bench/harness.py "$@"

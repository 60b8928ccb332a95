#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run, test and benchmark ringlb.
# Idempotent: packages already present are not reinstalled, and apt-get update runs only when
# something is missing. Needs root (or sudo).
set -euo pipefail

build_pkgs=(g++ meson ninja-build pkg-config liburing-dev libnghttp2-dev libprotobuf-dev
  protobuf-compiler android-libboringssl-dev libc-ares-dev libtomlplusplus-dev doctest-dev
  libbenchmark-dev)
test_pkgs=(python3 python3-grpcio python3-protobuf python3-pytest python3-dnslib python3-h2
  python3-seccomp nghttp2-client iproute2 iptables procps clang-format
  clang libclang-rt-14-dev llvm-14  # tests/fuzz/run.sh: libFuzzer, ASan/UBSan, symbolizer
  prometheus)  # promtool: the /metrics text is checked with `promtool check metrics`
bench_pkgs=(haproxy nginx-light gnuplot-nox)
# tests/packaging: the container image (podman with runc; mmdebstrap builds the local
# debian:bookworm-slim), the .deb (lintian, help2man for the man page), the systemd unit
# (systemd-analyze), the ECS templates (npm's cfn-lint, installed by the test into build/).
packaging_pkgs=(podman runc fuse-overlayfs slirp4netns uidmap mmdebstrap lintian help2man
  systemd python3-yaml python3-botocore dpkg-dev binutils strace man-db)
# npm: these machines carry Node.js with npm already; Debian's npm only where there is none.
[ "${RINGLB_SETUP_PACKAGING:-0}" = 1 ] && ! command -v npm >/dev/null && packaging_pkgs+=(npm)

want=("${build_pkgs[@]}" "${test_pkgs[@]}")
[ "${RINGLB_SETUP_PACKAGING:-0}" = 1 ] && want+=("${packaging_pkgs[@]}")
[ "${RINGLB_SETUP_BENCH:-0}" = 1 ] && want+=("${bench_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#want[@]} packages present"
  exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

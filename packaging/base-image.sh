#!/usr/bin/env bash
# Builds the local stand-in for docker.io/library/debian:bookworm-slim (no registry is reachable
# from the test machines): `mmdebstrap --variant=minbase bookworm` into a tarball, then
# `podman import` tagged with the name the Dockerfile uses, so packaging/Dockerfile builds
# unchanged. Both steps are cached: the tarball under $RINGLB_CACHE (default build/packaging),
# the image in podman's store.
# Usage: packaging/base-image.sh           -> the tarball built and the image imported
#        packaging/base-image.sh --tar     -> only the tarball; prints its path
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${RINGLB_CACHE:-build/packaging}
tag=docker.io/library/debian:bookworm-slim
tar="$cache/bookworm-minbase.tar"
mkdir -p "$cache"
if [ ! -f "$tar" ] || [ ! -s "$tar" ]; then
  command -v mmdebstrap >/dev/null || { echo "base-image: mmdebstrap is not installed" >&2; exit 2; }
  rm -rf "$tar" "$cache/partial.tar"
  # mmdebstrap picks the output format from the name: keep the .tar suffix on the partial file.
  mmdebstrap --quiet --variant=minbase bookworm "$cache/partial.tar" >&2
  mv "$cache/partial.tar" "$tar"
fi
if [ "${1:-}" = --tar ]; then
  echo "$tar"
  exit 0
fi
command -v podman >/dev/null || { echo "base-image: podman is not installed" >&2; exit 2; }
if ! podman image exists "$tag"; then
  podman import --quiet "$tar" "$tag" >/dev/null
fi
echo "$tag"

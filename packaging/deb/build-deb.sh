#!/usr/bin/env bash
# Builds ringlb_<version>_<arch>.deb from an existing release build, without debian/ rules:
# the binary (stripped), the systemd unit (packaging/ringlb.service), a default config
# (packaging/deb/ringlb.toml, a conffile), a man page made by help2man from --help/--version
# plus packaging/deb/ringlb.h2m, copyright and changelog.Debian.gz, maintainer scripts
# (packaging/deb/postinst, prerm, postrm: enable and start the unit), and Depends computed by
# dpkg-shlibdeps from the libraries the binary links. Prints the .deb's path.
#
# Usage: packaging/deb/build-deb.sh [--version DEBVERSION] [--config FILE] [BINARY [OUTDIR]]
#   BINARY     the ringlb release binary (default build/ringlb)
#   OUTDIR     where the .deb goes (default build/packaging)
#   --version  the package version (default: `ringlb --version`'s, plus "-1")
#   --config   the default /etc/ringlb/ringlb.toml to ship (default packaging/deb/ringlb.toml)
# Relative paths are taken from the repository's top. Env: RINGLB_DEB_MAINTAINER
# ("Name <address>") for Maintainer and the changelog; SOURCE_DATE_EPOCH (default: the last
# commit's time) for every date and timestamp, so the same inputs give the same .deb.
# Needs: dpkg-dev (dpkg-shlibdeps), help2man, binutils (strip), gzip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "build-deb: $*" >&2; exit 2; }

version=""
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    --version=*) version=${1#--version=}; shift ;;
    --config) [ $# -ge 2 ] || die "--config needs a value"; config=$2; shift 2 ;;
    --config=*) config=${1#--config=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -le 2 ] || die "too many arguments (usage: build-deb.sh [--version V] [--config F] [BINARY [OUTDIR]])"
cd "$repo"
config=${config:-packaging/deb/ringlb.toml}
[ -f "$config" ] || die "no config file $config"
bin=${1:-build/ringlb}
out=${2:-build/packaging}
for tool in dpkg-deb dpkg-shlibdeps help2man strip gzip md5sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install dpkg-dev help2man binutils)"
done
[ -x "$bin" ] || die "$bin is not an executable: build ringlb first (meson setup build --buildtype=release && ninja -C build ringlb)"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# Version: what the binary says it is (meson's project version, compiled in).
first=$("$bin" --version | head -n1)
upstream=$(printf '%s\n' "$first" | sed -n 's/^ringlb \([0-9][0-9A-Za-z.+~]*\)\( .*\)\{0,1\}$/\1/p')
[ -n "$upstream" ] || die "cannot read a version from \`$bin --version\`: '$first'"
meson_version=$(sed -n "s/^ *version: *'\([^']*\)'.*/\1/p" meson.build | head -n1)
if [ -n "$meson_version" ] && [ "$meson_version" != "$upstream" ]; then
  echo "build-deb: warning: $bin says $upstream, meson.build says $meson_version (packaging $upstream)" >&2
fi
version=${version:-$upstream-1}
printf '%s' "$version" | grep -Eq '^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$' || die "not a Debian version: $version"
arch=$(dpkg --print-architecture)
maintainer=${RINGLB_DEB_MAINTAINER:-ringlb maintainers <ringlb@example.org>}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The staging tree sits where dpkg-shlibdeps expects a package's files: debian/<package>/.
root=$work/src/debian/ringlb
doc=$root/usr/share/doc/ringlb

install -D -m 0755 "$bin" "$root/usr/bin/ringlb"
# As dh_strip does for an executable (lintian: unstripped-binary-or-object).
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/ringlb"
install -D -m 0644 packaging/ringlb.service "$root/lib/systemd/system/ringlb.service"
# Debian ships BoringSSL (android-libboringssl) outside the default library path, so that its
# libssl.so.0 never stands in for OpenSSL's: the binary finds it by its RUNPATH, as Debian's own
# android tools do, and says so to lintian.
runpath=$(readelf -d "$root/usr/bin/ringlb" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
if [ -n "$runpath" ]; then
  install -d "$root/usr/share/lintian/overrides"
  printf '%s\n' "# BoringSSL (android-libboringssl) lives off the default library path" \
    "ringlb: custom-library-search-path RUNPATH $runpath [usr/bin/ringlb]" \
    > "$root/usr/share/lintian/overrides/ringlb"
  chmod 0644 "$root/usr/share/lintian/overrides/ringlb"
fi
install -D -m 0644 "$config" "$root/etc/ringlb/ringlb.toml"
"$root/usr/bin/ringlb" check "$root/etc/ringlb/ringlb.toml" >/dev/null \
  || die "$config does not pass \`ringlb check\`"

# Man page: help2man runs the binary's --help and --version; ringlb.h2m adds the sections
# --help has no room for (description, signals, systemd, files).
mkdir -p "$root/usr/share/man/man1"
help2man --no-info --no-discard-stderr --section=1 \
  --name="gRPC (HTTP/2) load balancer that balances every call" \
  --include=packaging/deb/ringlb.h2m --output="$work/ringlb.1" "$root/usr/bin/ringlb"
gzip -9n -c "$work/ringlb.1" > "$root/usr/share/man/man1/ringlb.1.gz"
chmod 0644 "$root/usr/share/man/man1/ringlb.1.gz"

# Documentation as Debian policy wants it: machine-readable copyright, changelog.Debian.gz.
mkdir -p "$doc"
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ringlb

Files: *
Copyright: $year The ringlb authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
EOF
cat > "$work/changelog.Debian" <<EOF
ringlb ($version) unstable; urgency=medium

  * ringlb $upstream, packaged from its release build by
    packaging/deb/build-deb.sh.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
gzip -9n -c "$work/changelog.Debian" > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/copyright" "$doc/changelog.Debian.gz"

# Depends: dpkg-shlibdeps reads the binary's NEEDED libraries and the installed packages'
# shlibs/symbols files. It wants a debian/control to stand in (nothing else of it is used)
# and finds the package's root by its DEBIAN/ folder.
mkdir -p "$root/DEBIAN"
printf 'Source: ringlb\n\nPackage: ringlb\nArchitecture: any\n' > "$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O debian/ringlb/usr/bin/ringlb | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies for $bin"
# procps: /bin/kill, which the unit's ExecReload runs (a minbase system lacks it).
depends="$depends, procps"

install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/ringlb/ringlb.toml > "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, plus one per directory.
size=$(cd "$root" && find . -path ./DEBIAN -prune -o \( -type f -printf '%s\n' -o -type d -printf '1024\n' \) \
  | awk '{ s += int(($1 + 1023) / 1024) } END { print s }')
cat > "$root/DEBIAN/control" <<EOF
Package: ringlb
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: gRPC (HTTP/2) load balancer that balances every call
 ringlb terminates each client's HTTP/2 connection and picks a backend for
 every gRPC call, so a client that keeps one connection open still spreads
 its calls over all backends, where an L4 balancer pins them all to one.
 .
 It follows backends through DNS (A, AAAA and SRV records), routes around
 dead or hung ones (keepalive PINGs, passive ejection, active health checks,
 retries within a budget), reloads its TOML config without dropping calls
 and drains on stop. Workers run on io_uring, or epoll where io_uring is
 denied. Metrics in the Prometheus format, a JSON access log.
 .
 The package runs it as the systemd service ringlb.service with
 /etc/ringlb/ringlb.toml.
EOF
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/ringlb_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"

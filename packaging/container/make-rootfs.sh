#!/bin/sh
# Lays out the container image's root file system (packaging/Dockerfile's build stage runs it):
# the ringlb binary, every shared library ldd names for it, the dynamic loader included (each
# copied to the same path, symlinks resolved), /etc/passwd and /etc/group with the ringlb user
# (uid/gid 65532), the CA bundle, nsswitch.conf (c-ares reads its hosts: order) and the default
# config. Usage: make-rootfs.sh BINARY CONFIG ROOT
set -eu
bin=$1 config=$2 r=$3
mkdir -p "$r/usr/bin" "$r/etc/ringlb" "$r/etc/ssl/certs" "$r/tmp"
chmod 1777 "$r/tmp"
cp "$bin" "$r/usr/bin/ringlb"
# "libx.so.N => /path (addr)" lines give the libraries, "/lib64/ld-linux-... (addr)" the loader.
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  cp -L --parents "$lib" "$r/"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
fi
cat > "$r/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
ringlb:x:65532:65532:ringlb:/nonexistent:/sbin/nologin
PASSWD
cat > "$r/etc/group" <<'GROUP'
root:x:0:
ringlb:x:65532:
GROUP
echo 'hosts: files dns' > "$r/etc/nsswitch.conf"
cp "$config" "$r/etc/ringlb/ringlb.toml"
chmod 0644 "$r/etc/ringlb/ringlb.toml"
# The result must run on its own: the binary finds every library and validates the config.
chroot "$r" /usr/bin/ringlb check /etc/ringlb/ringlb.toml

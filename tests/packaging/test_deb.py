"""The .deb (packaging/deb/build-deb.sh): lintian finds no error, it holds what it should
(stripped binary, unit, conffile, man page, copyright, changelog; Depends naming the package of
every library the binary links), and it installs into a fresh Debian 12 root with apt resolving
its Depends from Debian's archive. There ringlb runs and accepts its packaged config, the
unit is enabled, Debian 12's systemd boots it in a container (hardened as shipped: READY=1,
a call through it, reload, a bad reload refused, restart on a crash, clean stop), an upgrade
keeps the admin's edit of the conffile, and purge removes it all."""
from __future__ import annotations

import gzip
import os
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import need

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "deb" / "build-deb.sh"
CONFIG = ROOT / "packaging" / "deb" / "ringlb.toml"
CONFFILE = "etc/ringlb/ringlb.toml"


def run(cmd, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` exited {r.returncode}\n{r.stdout[-3000:]}\n"
                    f"{r.stderr[-3000:]}", pytrace=False)
    return r


@pytest.fixture(scope="module")
def debs(ringlb_bin, tmp_path_factory) -> dict[str, Path]:
    """The package as released ("first", version from the binary) and an upgrade ("second",
    revision 2) whose default config changed, so dpkg has a conffile question to answer."""
    need("dpkg-deb", "dpkg-shlibdeps", "help2man", "strip")
    out = tmp_path_factory.mktemp("debs")
    upstream = run([str(ringlb_bin), "--version"]).stdout.split()[1]
    t0 = time.monotonic()
    first = Path(run(["bash", str(BUILD), str(ringlb_bin.resolve()), str(out)]).stdout.strip())
    print(f"build-deb.sh: {time.monotonic() - t0:.1f}s")
    changed = out / "ringlb.toml"
    changed.write_text(CONFIG.read_text() + "\n# (a line the second version's default adds)\n")
    second = Path(run(["bash", str(BUILD), "--version", f"{upstream}-2", "--config",
                       str(changed), str(ringlb_bin.resolve()), str(out)]).stdout.strip())
    assert first.name == f"ringlb_{upstream}-1_amd64.deb", first
    assert second.name == f"ringlb_{upstream}-2_amd64.deb", second
    return {"first": first, "second": second, "upstream": upstream, "dir": out}


def test_lintian_reports_no_errors(debs):
    need("lintian")
    t0 = time.monotonic()
    r = run(["lintian", "--display-info", "--pedantic", str(debs["first"])], check=False,
            timeout=300)
    lines = r.stdout.splitlines()
    print(f"lintian ({time.monotonic() - t0:.1f}s), exit {r.returncode}:")
    for line in lines:
        print("  " + line)
    errors = [line for line in lines if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)
    assert r.returncode == 0, r.stdout + r.stderr


def test_contents_and_control(debs, ringlb_bin, tmp_path):
    deb = debs["first"]
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    files = {}
    for line in listing.splitlines():
        perms, owner, _size, _date, _time, path = line.split(None, 5)
        files[path.removeprefix("./")] = (perms, owner)
    want = {"usr/bin/ringlb": "-rwxr-xr-x", "lib/systemd/system/ringlb.service": "-rw-r--r--",
            CONFFILE: "-rw-r--r--", "usr/share/man/man1/ringlb.1.gz": "-rw-r--r--",
            "usr/share/doc/ringlb/copyright": "-rw-r--r--",
            "usr/share/doc/ringlb/changelog.Debian.gz": "-rw-r--r--"}
    for path, perms in want.items():
        assert path in files, f"{path} missing from the .deb:\n{listing}"
        assert files[path] == (perms, "root/root"), (path, files[path])
    assert all(owner == "root/root" for _, owner in files.values())

    assert run(["dpkg-deb", "-f", str(deb), "Package"]).stdout.strip() == "ringlb"
    assert run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip() == \
        f"{debs['upstream']}-1"
    ctl = tmp_path / "DEBIAN"
    run(["dpkg-deb", "-e", str(deb), str(ctl)])
    assert (ctl / "conffiles").read_text().split() == ["/" + CONFFILE]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(ctl / script, os.X_OK), script
        run(["sh", "-n", str(ctl / script)])
    assert "deb-systemd-helper enable 'ringlb.service'" in (ctl / "postinst").read_text()

    # Depends: the package of every library the binary needs, and procps for /bin/kill.
    depends = run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout.strip()
    names = {d.split()[0] for d in depends.split(", ")}
    print("Depends:", depends)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]",
                        run(["readelf", "-d", str(ringlb_bin)]).stdout)
    owners = run(["dpkg", "-S", *(f"*/{lib}" for lib in needed)], check=False).stdout
    for lib in needed:
        pkgs = {o.split(":")[0] for o in owners.splitlines() if o.endswith(f"/{lib}")}
        assert pkgs & names, f"{lib} (from {sorted(pkgs)}) has no package in Depends: {depends}"
    assert "procps" in names

    x = tmp_path / "x"
    run(["dpkg-deb", "-x", str(deb), str(x)])
    sections = run(["readelf", "-S", "-W", str(x / "usr/bin/ringlb")]).stdout
    assert ".symtab" not in sections and ".debug_info" not in sections, "binary not stripped"
    man = gzip.decompress((x / "usr/share/man/man1/ringlb.1.gz").read_bytes()).decode()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES"):
        assert f'.SH {section}' in man or f'.SH "{section}"' in man, section
    assert "Apache-2.0" in (x / "usr/share/doc/ringlb/copyright").read_text()
    changelog = gzip.decompress((x / "usr/share/doc/ringlb/changelog.Debian.gz").read_bytes())
    assert changelog.decode().startswith(f"ringlb ({debs['upstream']}-1) ")
    assert (x / CONFFILE).read_text() == CONFIG.read_text()


def test_packaged_unit_verifies(debs, tmp_path):
    """The unit as the .deb ships it, with the .deb's man page for Documentation=man:."""
    need("systemd-analyze", "man")
    x = tmp_path / "x"
    run(["dpkg-deb", "-x", str(debs["first"]), str(x)])
    unit = tmp_path / "ringlb.service"
    unit.write_text((x / "lib/systemd/system/ringlb.service").read_text()
                    .replace("/usr/bin/ringlb", str(x / "usr/bin/ringlb")))
    r = run(["systemd-analyze", "verify", "--man=yes", str(unit)], check=False,
            env=dict(os.environ, MANPATH=str(x / "usr/share/man")))
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


# ------------------------------------------------------------------------------------------
# A fresh Debian 12 root: install, boot under systemd, upgrade, purge (in this order).
# ------------------------------------------------------------------------------------------
def chroot(root: Path, *cmd, timeout=300, check=True) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C.UTF-8"}
    return run(["chroot", str(root), *cmd], timeout=timeout, check=check, env=env)


@pytest.fixture(scope="module")
def bookworm(debs, minbase_tar, tmp_path_factory):
    """The minbase tarball extracted, then `apt-get install ./ringlb.deb systemd systemd-sysv`
    (systemd only for the boot test: minbase has no init)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot into a Debian root)")
    need("chroot")
    root = tmp_path_factory.mktemp("bookworm") / "root"
    root.mkdir()
    t0 = time.monotonic()
    run(["tar", "-xf", str(minbase_tar), "-C", str(root)])
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    for key in ("first", "second"):
        shutil.copy(debs[key], root / "tmp" / debs[key].name)
    chroot(root, "apt-get", "update", "-q")
    r = chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
               f"/tmp/{debs['first'].name}", "systemd", "systemd-sysv")
    print(f"minbase + apt-get install ringlb systemd: {time.monotonic() - t0:.1f}s")
    assert "Setting up ringlb" in r.stdout, r.stdout[-3000:]
    yield root
    shutil.rmtree(root, ignore_errors=True)  # about 400 MB; pytest would keep three runs' worth


def test_installs_and_runs_in_a_fresh_bookworm(bookworm, debs):
    version = chroot(bookworm, "ringlb", "--version").stdout
    assert version.startswith(f"ringlb {debs['upstream']} "), version
    check = chroot(bookworm, "ringlb", "check", "/etc/ringlb/ringlb.toml")
    assert "/etc/ringlb/ringlb.toml: ok" in check.stdout
    status = chroot(bookworm, "dpkg-query", "-W", "-f", "${Status} ${Version}", "ringlb").stdout
    assert status == f"install ok installed {debs['upstream']}-1", status
    link = bookworm / "etc/systemd/system/multi-user.target.wants/ringlb.service"
    assert link.is_symlink() and os.readlink(link) == "/lib/systemd/system/ringlb.service"


def _io_uring_available() -> bool:
    p = Path("/proc/sys/kernel/io_uring_disabled")
    return not p.exists() or p.read_text().strip() == "0"


def test_service_under_systemd_in_a_container(bookworm, tmp_path):
    """Boots the installed root with Debian 12's systemd as PID 1 (podman --rootfs, privileged
    so systemd can build the unit's namespaces, no network but its own loopback). A gRPC
    backend runs beside it (`ringlb backend`); calls come from this host's grpcio, entered
    into the container's network namespace."""
    need("podman", "nsenter")
    name = f"ringlb-deb-test-{os.getpid()}"
    # The container may not raise limits past this sandbox's; runc refuses a high nproc here.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    run(["podman", "run", "-d", "--name", name, "--privileged", "--network=none",
         "--systemd=always", f"--ulimit=nofile={nofile}:{nofile}",
         f"--ulimit=nproc={nproc}:{nproc}", "--rootfs", str(bookworm), "/sbin/init"])

    def sh(cmd: str, check=True) -> subprocess.CompletedProcess:
        return run(["podman", "exec", name, "sh", "-c", cmd], check=check)

    def show(*props) -> dict[str, str]:
        out = sh("systemctl show ringlb " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    def journal() -> str:
        return sh("journalctl -u ringlb --no-pager -o cat").stdout

    try:
        end = time.monotonic() + 60
        while True:
            state = sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            assert time.monotonic() < end, f"systemd did not finish booting: {state}"
            time.sleep(0.5)
        if state == "degraded":
            print("failed units:", sh("systemctl --failed --no-legend").stdout)
        s = show("ActiveState", "StatusText", "MainPID", "NRestarts", "Type")
        assert s["ActiveState"] == "active", journal()
        assert s["StatusText"].startswith("serving: "), s
        assert s["Type"] == "notify"
        log = journal()
        print(log)
        assert "systemd: sent READY=1" in log
        if _io_uring_available():
            assert "io backend: io_uring" in log, "io_uring denied under the unit's sandbox"
        # The sandbox as shipped holds: dynamic user, no new privileges, seccomp, one cap.
        pid = s["MainPID"]
        st = sh(f"cat /proc/{pid}/status").stdout
        fields = dict(re.findall(r"^(\w+):\s+(.*)$", st, re.M))
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", st
        assert fields["Uid"].split()[0] != "0", fields["Uid"]
        assert int(fields["CapEff"], 16) == 1 << 10, fields["CapEff"]  # CAP_NET_BIND_SERVICE

        # A call through it, to a backend beside it.
        sh("systemd-run --unit=echo-backend /usr/bin/ringlb backend --listen 127.0.0.1:50051 "
           "--name b1")
        cpid = run(["podman", "inspect", name, "--format", "{{.State.Pid}}"]).stdout.strip()
        probe = ("import grpc, urllib.request\n"
                 "ch = grpc.insecure_channel('127.0.0.1:8080')\n"
                 "r, c = ch.unary_unary('/demo.Echo/Say').with_call(b'hi', timeout=10)\n"
                 "print(r.decode(), dict(c.initial_metadata())['x-backend'])\n"
                 "print(urllib.request.urlopen('http://127.0.0.1:9901/ready').read().decode())\n")
        out = run(["nsenter", f"--net=/proc/{cpid}/ns/net", "/usr/bin/python3", "-c", probe],
                  timeout=60).stdout.split()
        assert out == ["hi", "b1", "ready"], out

        # Reload: a good file applies; a bad one fails `systemctl reload` and changes nothing.
        sh("systemctl reload ringlb")
        assert "reload: applied" in journal()
        sh("cp /etc/ringlb/ringlb.toml /tmp/good.toml && "
           "sed -i 's/^drain_timeout = .*/drain_timeout = \"20 s\"/' /etc/ringlb/ringlb.toml")
        bad = sh("systemctl reload ringlb", check=False)
        assert bad.returncode != 0, "a reload with a broken config succeeded"
        assert "proxy.drain_timeout" in journal(), journal()[-2000:]
        assert show("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}
        sh("cp /tmp/good.toml /etc/ringlb/ringlb.toml")

        # Restart=on-failure: a crash brings it back.
        sh(f"kill -9 {pid}")
        end = time.monotonic() + 20
        while True:
            s = show("ActiveState", "MainPID", "NRestarts")
            if s["ActiveState"] == "active" and s["MainPID"] not in ("0", pid):
                break
            assert time.monotonic() < end, f"not restarted after SIGKILL: {s}"
            time.sleep(0.2)
        assert s["NRestarts"] == "1", s

        # Stop: the drain, then exit 0, well within TimeoutStopSec.
        t0 = time.monotonic()
        sh("systemctl stop ringlb")
        took = time.monotonic() - t0
        s = show("ActiveState", "Result", "ExecMainStatus")
        assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, s
        assert "systemd: sent STOPPING=1" in journal()
        print(f"systemctl stop: {took:.2f}s")
    finally:
        run(["podman", "rm", "-f", "-t", "5", name], check=False, timeout=120)


def test_upgrade_keeps_the_admins_conffile_edit(bookworm, debs):
    conf = bookworm / CONFFILE
    edited = conf.read_text().replace('address = "127.0.0.1:8080"', 'address = "127.0.0.1:8181"')
    edited += "\n# edited by the admin\n"
    conf.write_text(edited)
    # The second version changed the default too: dpkg has to choose, and --force-confold
    # keeps the admin's file (the package's lands beside it as .dpkg-dist). No prompt: stdin
    # is /dev/null, so a question would fail the install.
    r = chroot(bookworm, "dpkg", "-i", "--force-confold", f"/tmp/{debs['second'].name}")
    print(r.stdout)
    status = chroot(bookworm, "dpkg-query", "-W", "-f", "${Status} ${Version}", "ringlb").stdout
    assert status == f"install ok installed {debs['upstream']}-2", status
    assert conf.read_text() == edited, "the upgrade replaced the admin's edit"
    dist = bookworm / (CONFFILE + ".dpkg-dist")
    assert dist.exists() and "(a line the second version's default adds)" in dist.read_text()
    check = chroot(bookworm, "ringlb", "check", "/etc/ringlb/ringlb.toml")
    assert "ok" in check.stdout


def test_purge_removes_config_and_unit_links(bookworm):
    chroot(bookworm, "dpkg", "--purge", "ringlb")
    assert not (bookworm / CONFFILE).exists()
    assert not (bookworm / "etc/ringlb").exists()
    assert not (bookworm / "usr/bin/ringlb").exists()
    assert not (bookworm / "etc/systemd/system/multi-user.target.wants/ringlb.service") \
        .is_symlink()

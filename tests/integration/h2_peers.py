"""Raw HTTP/2 peers (python3-h2) that misbehave on purpose, for integration tests.

grpcio peers always behave; these do what a real backend or client sometimes does and grpcio
never will: refuse streams after reading them, send GOAWAY below streams already sent, never read
a request body, never read a response. Every server binds 127.0.0.1 port 0, runs one accept thread
and one thread per connection, and is stopped with stop() (or used as a context manager).

Threads: each connection's H2Connection is touched only by that connection's thread (servers) or
under H2Client.lock (the client). Counters read by tests are under the peer's `lock`.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

TICK = 0.02          # seconds between timer checks on a connection thread
SEND_TIMEOUT = 10.0  # a sendall that cannot finish in this long means the peer is wedged


def grpc_frame(msg: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def grpc_messages(body: bytes) -> list[bytes]:
    """The messages of a gRPC body; raises ValueError on a truncated one."""
    out, i = [], 0
    while i < len(body):
        if i + 5 > len(body):
            raise ValueError(f"truncated gRPC prefix at byte {i} of {len(body)}")
        n = int.from_bytes(body[i + 1:i + 5], "big")
        if i + 5 + n > len(body):
            raise ValueError(f"truncated gRPC message at byte {i} ({n} bytes announced)")
        out.append(bytes(body[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def _hdict(headers) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in headers or ()}


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------
@dataclass
class ServerStream:
    """One request stream as a server saw it."""
    conn: int                 # index of the connection (0-based, in accept order)
    sid: int
    headers: dict
    body: bytearray = field(default_factory=bytearray)
    body_bytes: int = 0       # DATA payload received (also counted when the body is not kept)
    ended: bool = False       # END_STREAM received
    reset: int | None = None  # error code of a RST_STREAM from the client
    fate: str = "open"        # open | answered | refused | ignored


class ServerConn:
    """One accepted connection; only its own thread touches it."""

    def __init__(self, server: "H2Server", sock: socket.socket, index: int):
        self.server = server
        self.sock = sock
        self.index = index
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, ServerStream] = {}
        self.closed = False
        self.state: dict = {}  # per-connection scratch space for subclasses

    def flush(self):
        out = self.h2.data_to_send()
        if out and not self.closed:
            self.sock.sendall(out)

    def send_raw(self, data: bytes):
        """Bytes written after everything h2 has queued, behind h2's back (h2 keeps its state)."""
        self.flush()
        if not self.closed:
            self.sock.sendall(data)

    def close(self, linger: float = 0.0):
        """Closes the connection. With linger > 0: FIN first, then whatever the peer still
        sends is read and dropped for up to `linger` seconds, so that unread bytes do not turn
        the close into a TCP RST that could destroy answers the peer has not read yet."""
        if self.closed:
            return
        self.closed = True
        try:
            if linger > 0:
                self.sock.shutdown(socket.SHUT_WR)
                end = time.monotonic() + linger
                while (left := end - time.monotonic()) > 0:
                    r, _, _ = select.select([self.sock], [], [], left)
                    if r and not self.sock.recv(1 << 16):
                        break
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def answer_echo(self, st: ServerStream):
        """A gRPC OK response whose body is the request body (one echo per message)."""
        self.h2.send_headers(st.sid, [(":status", "200"), ("content-type", "application/grpc")])
        if st.body:
            self.h2.send_data(st.sid, bytes(st.body))
        self.h2.send_headers(st.sid, [("grpc-status", "0")], end_stream=True)
        st.fate = "answered"


class H2Server:
    """Base raw HTTP/2 server. Subclasses override the on_* hooks (called on the connection's
    thread) and keep what tests read under self.lock."""

    keep_body = True  # store request bodies in ServerStream.body

    def __init__(self, name: str = "h2peer"):
        self.name = name
        self.lock = threading.Lock()
        self.conns: list[ServerConn] = []
        self.streams: list[ServerStream] = []
        self.errors: list[str] = []   # protocol errors h2 raised on what the client sent
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(128)
        self.port = self._lsock.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "H2Server":
        t = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0):
        self._stop.set()
        try:
            self._lsock.close()
        except OSError:
            pass
        for t in list(self._threads):
            t.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what tests read
    def count(self, fate: str) -> int:
        with self.lock:
            return sum(1 for s in self.streams if s.fate == fate)

    @property
    def connections(self) -> int:
        with self.lock:
            return len(self.conns)

    # -- hooks
    def on_request(self, c: ServerConn, st: ServerStream):
        pass

    def on_data(self, c: ServerConn, st: ServerStream, data: bytes, flow_len: int):
        pass

    def on_end(self, c: ServerConn, st: ServerStream):
        pass

    def on_tick(self, c: ServerConn, now: float):
        pass

    # -- machinery
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._lsock], [], [], 0.05)
                if not r:
                    continue
                sock, _ = self._lsock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(SEND_TIMEOUT)
            with self.lock:
                c = ServerConn(self, sock, len(self.conns))
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), name=f"{self.name}-c{c.index}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, c: ServerConn):
        try:
            c.h2.initiate_connection()
            c.flush()
            while not self._stop.is_set() and not c.closed:
                r, _, _ = select.select([c.sock], [], [], TICK)
                if r:
                    data = c.sock.recv(1 << 16)
                    if not data:
                        break
                    try:
                        events = c.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as e:
                        with self.lock:
                            self.errors.append(f"conn {c.index}: {e!r}")
                        c.flush()
                        break
                    for ev in events:
                        self._dispatch(c, ev)
                self.on_tick(c, time.monotonic())
                c.flush()
        except OSError:
            pass
        finally:
            c.close()

    def _dispatch(self, c: ServerConn, ev):
        if isinstance(ev, h2.events.RequestReceived):
            st = ServerStream(c.index, ev.stream_id, _hdict(ev.headers))
            with self.lock:
                c.streams[ev.stream_id] = st
                self.streams.append(st)
            self.on_request(c, st)
            if ev.stream_ended:
                st.ended = True
                self.on_end(c, st)
        elif isinstance(ev, h2.events.DataReceived):
            st = c.streams.get(ev.stream_id)
            if st is None:
                return
            with self.lock:
                st.body_bytes += len(ev.data)
                if self.keep_body:
                    st.body += ev.data
            self.on_data(c, st, ev.data, ev.flow_controlled_length)
            if ev.stream_ended:
                st.ended = True
                self.on_end(c, st)
        elif isinstance(ev, h2.events.StreamEnded):
            st = c.streams.get(ev.stream_id)
            if st is not None and not st.ended:
                st.ended = True
                self.on_end(c, st)
        elif isinstance(ev, h2.events.StreamReset):
            st = c.streams.get(ev.stream_id)
            if st is not None:
                with self.lock:
                    st.reset = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            c.closed = True


class RefusingServer(H2Server):
    """Reads each request in full (HEADERS and every DATA frame, windows handed back), then
    answers RST_STREAM(REFUSED_STREAM): "not processed, safe to send elsewhere"."""

    def on_data(self, c, st, data, flow_len):
        if flow_len:
            c.h2.acknowledge_received_data(flow_len, st.sid)

    def on_end(self, c, st):
        c.h2.reset_stream(st.sid, ErrorCodes.REFUSED_STREAM)
        with self.lock:
            st.fate = "refused"


class BlackholeServer(H2Server):
    """Accepts streams and never reads their bodies: no WINDOW_UPDATE (stream or connection),
    no response, nothing. PINGs and SETTINGS are still acknowledged (h2 does that itself)."""

    keep_body = False


class GoawayServer(H2Server):
    """Holds the requests of each connection until `goaway_after` of them have arrived in full
    (or the oldest has waited `hold` seconds), then sends GOAWAY(NO_ERROR) with a last-stream-id
    in the middle of the streams it has seen: it answers (gRPC echo) those at or below it and
    ignores the rest, as RFC 9113 6.8 allows. `close_after` seconds later, once the streams it
    kept are answered, it closes the connection. A new connection starts the same again."""

    def __init__(self, name: str = "goaway", goaway_after: int = 8, hold: float = 0.2,
                 close_after: float = 0.2):
        super().__init__(name)
        self.goaway_after = goaway_after
        self.hold = hold
        self.close_after = close_after
        self.goaways: list[tuple[int, int, int]] = []  # (conn, last_stream_id, highest seen)

    def on_data(self, c, st, data, flow_len):
        if flow_len:
            c.h2.acknowledge_received_data(flow_len, st.sid)

    def on_request(self, c, st):
        s = c.state
        if "last" in s and st.sid > s["last"]:
            with self.lock:
                st.fate = "ignored"
        elif "first_at" not in s:
            s["first_at"] = time.monotonic()

    def on_end(self, c, st):
        s = c.state
        if "last" in s:
            if st.sid <= s["last"] and st.fate == "open":
                self._answer(c, st)
            return
        ended = sum(1 for x in c.streams.values() if x.ended)
        if ended >= self.goaway_after:
            self._goaway(c)

    def on_tick(self, c, now):
        s = c.state
        if "last" not in s:
            if c.streams and now - s.get("first_at", now) >= self.hold:
                self._goaway(c)
            return
        kept_open = any(x.sid <= s["last"] and x.fate == "open" for x in c.streams.values())
        if now >= s["goaway_at"] + self.close_after and (not kept_open
                                                         or now >= s["goaway_at"] + 2.0):
            c.close(linger=1.0)

    def _answer(self, c, st):
        c.answer_echo(st)
        with self.lock:
            st.fate = "answered"

    def _goaway(self, c):
        ids = sorted(c.streams)
        # Keep the lower half (none when only one stream came): the rest were never processed.
        last = ids[len(ids) // 2 - 1] if len(ids) >= 2 else ids[0] - 2
        last = max(last, 0)
        c.state["last"] = last
        c.state["goaway_at"] = time.monotonic()
        with self.lock:
            self.goaways.append((c.index, last, ids[-1]))
            for x in c.streams.values():
                if x.sid > last:
                    x.fate = "ignored"
        for x in c.streams.values():
            if x.sid <= last and x.ended and x.fate == "open":
                self._answer(c, x)
        # h2's own close_connection() would refuse to send the answers that follow the GOAWAY,
        # so the frame is written behind its back; h2 keeps serving the streams at or below it.
        c.send_raw(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------
@dataclass
class ClientStream:
    sid: int
    ack: bool                        # hand the response's flow-control window back
    keep_body: bool = True           # store the response body (else only count it)
    headers: dict | None = None
    trailers: dict | None = None
    body: bytearray = field(default_factory=bytearray)
    data_bytes: int = 0
    ended: bool = False
    reset: int | None = None
    pending: memoryview | None = None  # request bytes not yet sent (flow control)
    end_after_pending: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def grpc_status(self) -> int | None:
        for h in (self.trailers, self.headers):
            if h and "grpc-status" in h:
                return int(h["grpc-status"])
        return None


class ClientClosed(Exception):
    pass


class H2Client:
    """A raw HTTP/2 client over one TCP connection to 127.0.0.1:port.

    initial_window: SETTINGS_INITIAL_WINDOW_SIZE it advertises (None: h2's default, 65535).
    Streams opened with ack=False never get a WINDOW_UPDATE, and neither does the connection
    for their bytes: a response on them stalls once the peer has used its window. Request bodies
    larger than the peer's windows are sent as the windows open (never beyond them)."""

    def __init__(self, port: int, initial_window: int | None = None, name: str = "h2client"):
        self.name = name
        self.lock = threading.RLock()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SEND_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        if initial_window is not None:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            })
        self.streams: dict[int, ClientStream] = {}
        self.closed = False
        self.error: str | None = None
        self.goaway: tuple[int, int] | None = None  # (error code, last stream id) if one came
        self._stop = threading.Event()
        with self.lock:
            self.h2.initiate_connection()
            self._flush()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._reader.start()

    # -- streams
    def open(self, path: str, body: bytes = b"", end: bool = True, ack: bool = True,
             keep_body: bool = True) -> ClientStream:
        """Opens a gRPC stream (POST path) and queues `body`; END_STREAM after it if `end`."""
        with self.lock:
            if self.closed:
                raise ClientClosed(self.error or "connection closed")
            sid = self.h2.get_next_available_stream_id()
            st = ClientStream(sid, ack, keep_body)
            self.streams[sid] = st
            self.h2.send_headers(sid, [
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
                ("te", "trailers"),
            ], end_stream=not body and end)
            if body:
                st.pending = memoryview(body)
                st.end_after_pending = end
            self._pump()
            self._flush()
            return st

    def window(self, st: ClientStream) -> int:
        """How much more of st's request the peer lets us send right now."""
        with self.lock:
            try:
                return self.h2.local_flow_control_window(st.sid)
            except h2.exceptions.StreamClosedError:
                return 0

    def unsent(self, st: ClientStream) -> int:
        with self.lock:
            return len(st.pending) if st.pending is not None else 0

    def reset(self, st: ClientStream, code: int = ErrorCodes.CANCEL):
        with self.lock:
            if self.closed or st.ended or st.reset is not None:
                return
            st.pending = None
            try:
                self.h2.reset_stream(st.sid, code)
                self._flush()
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass

    def unary(self, path: str, msg: bytes, timeout: float) -> tuple[int | None, list[bytes], str]:
        """One gRPC call: (grpc-status or None, response messages, what went wrong or "")."""
        st = self.open(path, grpc_frame(msg))
        if not st.done.wait(timeout):
            why = (f"no answer within {timeout:.2f}s (request bytes unsent: {self.unsent(st)}, "
                   f"window {self.window(st)}, response headers {st.headers is not None})")
            self.reset(st)
            return None, [], why
        with self.lock:
            self.streams.pop(st.sid, None)
        if st.reset is not None:
            return None, [], f"stream reset with HTTP/2 error {st.reset}"
        if not st.ended:
            return None, [], f"connection closed: {self.error}"
        try:
            return st.grpc_status(), grpc_messages(st.body), ""
        except ValueError as e:
            return st.grpc_status(), [], str(e)

    def close(self):
        self._stop.set()
        with self.lock:
            if not self.closed:
                try:
                    self.h2.close_connection()
                    self._flush()
                except (OSError, h2.exceptions.ProtocolError):
                    pass
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- machinery (lock held)
    def _flush(self):
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def _pump(self):
        for st in self.streams.values():
            while st.pending is not None:
                try:
                    room = min(self.h2.local_flow_control_window(st.sid),
                               self.h2.max_outbound_frame_size)
                except h2.exceptions.StreamClosedError:
                    st.pending = None
                    break
                if room <= 0:
                    break
                chunk = st.pending[:room]
                rest = st.pending[room:]
                last = len(rest) == 0
                self.h2.send_data(st.sid, bytes(chunk), end_stream=last and st.end_after_pending)
                st.pending = None if last else rest

    def _read_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.05)
                if not r:
                    continue
                data = self.sock.recv(1 << 16)
            except (OSError, ValueError) as e:
                self._terminate(f"recv: {e!r}")
                return
            if not data:
                self._terminate("peer closed the connection")
                return
            with self.lock:
                try:
                    events = self.h2.receive_data(data)
                    for ev in events:
                        self._dispatch(ev)
                    self._pump()
                    self._flush()
                except (h2.exceptions.ProtocolError, OSError) as e:
                    self._terminate(f"HTTP/2 error: {e!r}")
                    return

    def _terminate(self, why: str):
        with self.lock:
            if self.error is None and not self._stop.is_set():
                self.error = why
            self.closed = True
            for st in self.streams.values():
                st.done.set()

    def _dispatch(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", 0) or 0)
        if isinstance(ev, h2.events.ResponseReceived):
            if st:
                st.headers = _hdict(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived):
            if st:
                st.trailers = _hdict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            if st:
                st.data_bytes += len(ev.data)
                if st.keep_body:
                    st.body += ev.data
                if st.ack and ev.flow_controlled_length:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            if st:
                st.ended = True
                st.done.set()
        elif isinstance(ev, h2.events.StreamReset):
            if st:
                st.reset = int(ev.error_code)
                st.pending = None
                st.done.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (int(ev.error_code), int(ev.last_stream_id or 0))
            for s in self.streams.values():
                if s.sid > (ev.last_stream_id or 0):
                    s.done.set()

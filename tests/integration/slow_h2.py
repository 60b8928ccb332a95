"""A slow-reading raw HTTP/2 gRPC client (python3-h2 over a plain socket, no grpcio) for memory
tests: it opens many streams on one connection, advertises a small stream window and grants no
WINDOW_UPDATE until told to, so whatever the server has for it piles up in the server; then
`start_reading()` opens the windows wide and it drains every stream.

A thread owns the socket and the h2 state machine; the test thread only calls the public methods
(which take the lock) and reads the per-stream results. Connects to 127.0.0.1 only.
"""
from __future__ import annotations

import socket
import threading
import time

from raw_h2 import H2Response, grpc_frame, require_h2

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError:  # require_h2() reports it
    pass

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
WIDE_WINDOW = (1 << 31) - 1  # the HTTP/2 maximum


class SlowStream(H2Response):
    def __init__(self, sid: int):
        super().__init__()
        self.sid = sid
        self.nbytes = 0         # DATA payload bytes received (the body is not kept)
        self.t_sent = 0.0
        self.t_first = None     # monotonic time of the response (or trailers-only) headers

    @property
    def answered(self) -> bool:
        return self.status is not None or self.reset is not None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class SlowH2Client:
    """One h2c connection to 127.0.0.1:port. `window` is the SETTINGS_INITIAL_WINDOW_SIZE it
    advertises; the connection window stays at the protocol's 65,535 until start_reading()."""

    def __init__(self, port: int, window: int = 1024, name: str = "slow"):
        require_h2()
        self.name = name
        self.port = port
        self.lock = threading.Lock()
        self.streams: dict[int, SlowStream] = {}
        self.reading = False          # granting window (set by start_reading)
        self.closed = False           # the socket ended (EOF, error, or close())
        self.goaway: int | None = None
        self.error: str | None = None
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                                         h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(0.05)
        with self.lock:
            self.conn.initiate_connection()
            self._flush()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"h2-{name}")
        self.thread.start()

    # -- test thread
    def open_streams(self, n: int, path: str, body: bytes, batch: int = 100):
        """Sends n gRPC requests (headers + one message, END_STREAM), `batch` per write."""
        for start in range(0, n, batch):
            with self.lock:
                for _ in range(min(batch, n - start)):
                    sid = self.conn.get_next_available_stream_id()
                    s = SlowStream(sid)
                    s.t_sent = time.monotonic()
                    self.streams[sid] = s
                    hdrs = [(":method", "POST"), (":scheme", "http"),
                            (":authority", f"127.0.0.1:{self.port}"), (":path", path),
                            *GRPC_HEADERS]
                    self.conn.send_headers(sid, hdrs)
                    self.conn.send_data(sid, grpc_frame(body), end_stream=True)
                self._flush()

    def start_reading(self):
        """Opens the connection window and every stream's window wide; from here on every
        DATA frame is acknowledged at once."""
        with self.lock:
            self.reading = True
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WIDE_WINDOW})
            grant = WIDE_WINDOW - self.conn.inbound_flow_control_window
            self.conn.increment_flow_control_window(grant)
            self._flush()

    def snapshot(self) -> list[SlowStream]:
        with self.lock:
            return list(self.streams.values())

    def count(self, pred) -> int:
        with self.lock:
            return sum(1 for s in self.streams.values() if pred(s))

    def close(self):
        self._stop.set()
        self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass

    # -- socket thread
    def _flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _run(self):
        try:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                if not data:
                    break
                with self.lock:
                    self._on_data(data)
                    self._flush()
        except (OSError, h2.exceptions.H2Error) as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.closed = True

    def _on_data(self, data: bytes):
        now = time.monotonic()
        for ev in self.conn.receive_data(data):
            s = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.ResponseReceived) and s:
                s.headers = dict(ev.headers)
                s.status = s.headers.get(":status")
                s.t_first = now
            elif isinstance(ev, h2.events.TrailersReceived) and s:
                s.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived) and s:
                s.nbytes += len(ev.data)
                if self.reading:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and s:
                s.ended = True
                s.elapsed = now - s.t_sent
            elif isinstance(ev, h2.events.StreamReset) and s:
                s.reset = int(ev.error_code)
                s.elapsed = now - s.t_sent
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = int(ev.error_code)

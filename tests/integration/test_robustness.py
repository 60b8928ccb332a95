"""Back-pressure against a slow reader, and hostile raw TCP peers."""
import json
import socket
import struct
import threading
import time

from harness import MIB, Stub, channel, cluster, pattern, wait_until

MSG = 64 * 1024
TOTAL_MSGS = 4096  # 256 MiB


def test_slow_reader_bounded_memory(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)], stream_buffer="256KiB")
    stub = Stub(channel(rl.port))
    for _ in range(5):
        stub.unary(b"warm-up", timeout=5)
    time.sleep(0.2)
    idle_kib = rl.rss_kib()
    call = stub.server_stream(json.dumps({"id": "big", "count": TOTAL_MSGS, "size": MSG}).encode(),
                              timeout=30)
    peak_kib = idle_kib
    read = 0
    try:
        for _ in range(4):  # read one message, then sit on the stream for a second
            m = next(call)
            assert m == pattern(read, MSG), f"message {read} corrupted"
            read += 1
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                peak_kib = max(peak_kib, rl.rss_kib())
                time.sleep(0.05)
        sent = bs[0].stream_sent.get("big", 0)
        state = bs[0].stream_state.get("big")
    finally:
        call.cancel()
    growth_mib = (peak_kib - idle_kib) / 1024
    assert state == "running", f"backend stream state {state!r} (expected still throttled)"
    assert sent * MSG < TOTAL_MSGS * MSG // 4, \
        f"backend got to send {sent * MSG / MIB:.0f} MiB of 256 MiB to a client that read " \
        f"{read} messages: no back-pressure"
    assert growth_mib < 64, f"ringlb VmRSS grew {growth_mib:.1f} MiB (idle {idle_kib} KiB, " \
                            f"peak {peak_kib} KiB); backend sent {sent * MSG / MIB:.0f} MiB"
    # the cancel reaches the backend, and ringlb keeps serving
    st = wait_until(lambda: bs[0].stream_state.get("big") != "running", 3.0)
    assert st, "backend stream still running 3s after the client cancelled"
    assert stub.unary(b"still alive", timeout=5) == b"still alive"


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


SETTINGS_EMPTY = frame(4, 0, 0, b"")

HOSTILE = {
    "http1": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "garbage": bytes((i * 97 + 13) % 256 for i in range(200)),
    "settings_bad_length": PREFACE + frame(4, 0, 0, b"\x00\x01\x00"),       # FRAME_SIZE_ERROR
    "data_on_stream0": PREFACE + SETTINGS_EMPTY + frame(0, 0, 0, b"hello"),  # PROTOCOL_ERROR
    "bad_hpack": PREFACE + SETTINGS_EMPTY + frame(1, 0x4 | 0x1, 1, b"\xff\xff\xff\xff\xff\xff"),
    "window_update_zero": PREFACE + SETTINGS_EMPTY + frame(8, 0, 0, b"\x00\x00\x00\x00"),
}


def _expect_closed(port: int, data: bytes, within: float = 1.0) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(data)
        end = time.monotonic() + within
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return "still open"
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return ""
            except socket.timeout:
                return "still open"
            if not chunk:
                return ""
    finally:
        s.close()


def test_hostile_raw_clients_lose_their_connection(backends, ringlb):
    bs = backends(1)
    rl = ringlb([cluster("main", bs)])
    stub = Stub(channel(rl.port))
    for i in range(20):
        assert stub.unary(b"before-%d" % i, timeout=5) == b"before-%d" % i

    stop = threading.Event()
    bg = {"ok": 0, "errors": []}

    def background():
        i = 0
        while not stop.is_set() and i < 5000:
            p = b"bg-%d" % i
            try:
                if stub.unary(p, timeout=5) != p:
                    bg["errors"].append(f"call {i}: wrong echo")
                else:
                    bg["ok"] += 1
            except Exception as e:  # noqa: BLE001
                bg["errors"].append(f"call {i}: {e!r}")
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=background)
    t.start()
    try:
        results = {name: _expect_closed(rl.port, data) for name, data in HOSTILE.items()}
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive(), "background grpc calls hung"
    still_open = {k: v for k, v in results.items() if v}
    assert not still_open, f"hostile connections not closed within 1s: {sorted(still_open)}"
    assert not bg["errors"], bg["errors"][:5]
    assert bg["ok"] > 0
    for i in range(20):
        assert stub.unary(b"after-%d" % i, timeout=5) == b"after-%d" % i
    # a fresh grpc connection works too
    assert Stub(channel(rl.port)).unary(b"fresh", timeout=5) == b"fresh"

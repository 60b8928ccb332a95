"""A passive HTTP/2 tap on the namespace's loopback: records every call attempt the proxy sends
to a backend, with the time it went on the wire. This is the ground truth for "no new call is
sent to the bad backend": a SIGSTOPped or blackholed backend never sees the calls sent to it,
but the wire does.

  tap.py --port 50051 --out FILE     (root; inside the scenario's network namespace)

An AF_PACKET socket on `lo` sees each packet as it is received by loopback, before iptables'
INPUT chain (where the blackhole drops it) and whether or not the receiving process runs. For
every TCP connection to --port it reassembles the client-to-server byte stream (by sequence
number, so retransmissions are counted once), skips the HTTP/2 preface and walks the frames:
  HEADERS on a new stream id  -> `H <time> <conn> <stream> <dst ip>`   (one attempt)
  first DATA of that stream   -> `D <time> <conn> <stream> <call id>`  (the gRPC message's
                                 first 8 bytes: the chaos client's call id)
Times are the kernel's receive timestamps (CLOCK_REALTIME, as time.time()). SIGTERM flushes and
exits. Connections whose SYN it did not see are ignored (start the tap before anything else).
"""
from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Stream:
    """One client-to-server byte stream being reassembled."""

    def __init__(self, isn: int):
        self.next_seq = (isn + 1) & 0xFFFFFFFF
        self.buf = bytearray()
        self.pending: dict[int, bytes] = {}   # out-of-order segments by sequence number
        self.preface = False
        self.seen: set[int] = set()           # stream ids with HEADERS
        self.data_seen: set[int] = set()      # stream ids whose first DATA was recorded


def seq_diff(a: int, b: int) -> int:
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


class Tap:
    def __init__(self, port: int, out):
        self.port = port
        self.out = out
        self.conns: dict[tuple, Stream] = {}
        self.ids: dict[tuple, int] = {}

    def conn_id(self, key) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.ids)
        return self.ids[key]

    def packet(self, ts: float, frame: bytes):
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            return
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        if dport != self.port:
            return
        off = (tcp[12] >> 4) * 4
        flags = tcp[13]
        key = (src, sport, dst, dport)
        if flags & 0x02:  # SYN (a retransmitted SYN starts the same stream again: harmless)
            if key not in self.conns or not self.conns[key].buf and not self.conns[key].seen:
                self.conns[key] = Stream(seq)
            return
        st = self.conns.get(key)
        payload = tcp[off:]
        if st is None or not payload:
            return
        self.segment(ts, key, st, seq, bytes(payload))

    def segment(self, ts: float, key, st: Stream, seq: int, payload: bytes):
        d = seq_diff(seq, st.next_seq)
        if d > 0:  # a hole (capture lost a segment or reordering): keep it for later
            st.pending[seq] = payload
            return
        if -d >= len(payload):
            return  # a retransmission of bytes already walked
        payload = payload[-d:] if d < 0 else payload
        st.buf += payload
        st.next_seq = (st.next_seq + len(payload)) & 0xFFFFFFFF
        while st.next_seq in st.pending:
            more = st.pending.pop(st.next_seq)
            st.buf += more
            st.next_seq = (st.next_seq + len(more)) & 0xFFFFFFFF
        self.frames(ts, key, st)

    def frames(self, ts: float, key, st: Stream):
        if not st.preface:
            if len(st.buf) < len(PREFACE):
                return
            if bytes(st.buf[:len(PREFACE)]) != PREFACE:
                st.buf.clear()
                st.preface = True  # not HTTP/2 with prior knowledge: ignore this connection
                st.seen.add(-1)
                return
            del st.buf[:len(PREFACE)]
            st.preface = True
        if -1 in st.seen:
            st.buf.clear()
            return
        cid = self.conn_id(key)
        while len(st.buf) >= 9:
            length = int.from_bytes(st.buf[0:3], "big")
            if len(st.buf) < 9 + length:
                break
            ftype, flags = st.buf[3], st.buf[4]
            sid = int.from_bytes(st.buf[5:9], "big") & 0x7FFFFFFF
            body = bytes(st.buf[9:9 + length])
            del st.buf[:9 + length]
            if ftype == 0x1 and sid not in st.seen:
                st.seen.add(sid)
                self.out.write(f"H {ts:.6f} {cid} {sid} {key[2]}\n")
            elif ftype == 0x0 and sid in st.seen and sid not in st.data_seen:
                if flags & 0x08 and body:  # PADDED
                    body = body[1:len(body) - body[0]]
                if len(body) >= 13:
                    st.data_seen.add(sid)
                    call = int.from_bytes(body[5:13], "big")
                    self.out.write(f"D {ts:.6f} {cid} {sid} {call}\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--iface", default="lo")
    a = ap.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((a.iface, 0))
    out = open(a.out, "w", buffering=1 << 16)
    tap = Tap(a.port, out)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    s.settimeout(0.1)
    print("tap: capturing", file=sys.stderr, flush=True)
    while not stop:
        try:
            data, anc, _, addr = s.recvmsg(1 << 17, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] == PACKET_OUTGOING:  # loopback shows each packet twice: keep the receive
            continue
        ts = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cdata[:16])
                ts = sec + nsec / 1e9
        if ts is None:
            import time
            ts = time.time()
        tap.packet(ts, data)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Regenerates the seed corpora in tests/fuzz/corpus/ (deterministic except the captured gRPC calls).

    /usr/bin/python3 tests/fuzz/make_seeds.py [dns_message|config|h2_downstream|h2_upstream|...]

dns_message: real DNS responses built by python3-dnslib (name compression included): Cloud Map
  style A/AAAA/SRV answers, NXDOMAIN, CNAME chains, TC, EDNS.
config: the TOML examples from README.md and docs, and small variants.
h2_upstream: what a backend sends (raw frames): answers, trailers-only errors, resets, GOAWAYs,
  PINGs, window updates, no SETTINGS, hang-ups, non-gRPC answers, oversized or split headers and
  protocol errors, with "~SPLIT~", "~WAIT~", "~HANGUP~" and "~REFUSE~" markers.
grpc_framing: grpc-timeout values (valid, capped, invalid), then framed messages (health
  responses, compressed, reserved flags, cut short, huge lengths, malformed protobuf).
h2_downstream: what a real gRPC client (python3-grpcio) sends for unary, streaming, deadline and
  health calls, captured on loopback with recv boundaries kept as "~SPLIT~" markers; and client
  streams written with python3-h2 for the paths the fuzz rig routes specially (/dead., /rst.,
  /goaway., /slow.), resets, pings, big bodies and headers, CONTINUATION, bad prefaces, and an
  idle connection ("~IDLE~") answering ringlb's drain PING.
Traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import socket
import struct
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPLIT = b"~SPLIT~"


def write(corpus: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, "corpus", corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- DNS ---------------------------------------------------------------------------------------

def dns_seeds() -> None:
    from dnslib import AAAA, CNAME, EDNS0, QTYPE, RCODE, RR, SRV, A, DNSRecord

    def reply(qname, qtype, records=(), additional=(), rcode=0, tc=False, edns=False, qid=4242):
        q = DNSRecord.question(qname, qtype)
        q.header.id = qid
        r = q.reply()
        r.header.rcode = rcode
        r.header.tc = int(tc)
        for rr in records:
            r.add_answer(rr)
        for rr in additional:
            r.add_ar(rr)
        if edns:
            r.add_ar(EDNS0(udp_len=1232))
        return r.pack()

    svc = "orders.internal.local"
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(20)]
    for n in (1, 2, 3, 8):
        write("dns_message", f"a_{n}_records",
              reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ip), ttl=60) for ip in ips[:n]]))
    write("dns_message", "a_ttl0_cloudmap",
          reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ip), ttl=0) for ip in ips[8:16]]))
    write("dns_message", "a_duplicate",
          reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ips[0]), ttl=5)] * 2))
    write("dns_message", "a_mixed_case",
          reply("Orders.Internal.LOCAL", "A", [RR("oRDERS.internal.local", QTYPE.A,
                                                   rdata=A(ips[1]), ttl=30)]))
    write("dns_message", "a_high_ttl_bit",
          reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ips[2]), ttl=0x80000001)]))
    write("dns_message", "a_edns", reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ips[3]), ttl=10)],
                                         edns=True))
    v6 = ["fd00::1", "fd00::2", "2001:db8::5", "::1"]
    write("dns_message", "aaaa_4_records",
          reply(svc, "AAAA", [RR(svc, QTYPE.AAAA, rdata=AAAA(ip), ttl=60) for ip in v6]))
    write("dns_message", "aaaa_1_record",
          reply(svc, "AAAA", [RR(svc, QTYPE.AAAA, rdata=AAAA(v6[0]), ttl=1)]))
    srv = "_grpc._tcp.payments.internal.local"
    targets = [f"t{i}.payments.internal.local" for i in range(3)]
    srv_rrs = [RR(srv, QTYPE.SRV, rdata=SRV(10, 1 + i, 50051 + i, t), ttl=30)
               for i, t in enumerate(targets)]
    glue = [RR(t, QTYPE.A, rdata=A(ips[i]), ttl=30) for i, t in enumerate(targets)]
    write("dns_message", "srv_with_glue", reply(srv, "SRV", srv_rrs, glue))
    write("dns_message", "srv_no_glue", reply(srv, "SRV", srv_rrs))
    write("dns_message", "srv_glue_in_answer", reply(srv, "SRV", srv_rrs + glue))
    write("dns_message", "srv_aaaa_glue", reply(srv, "SRV", srv_rrs[:1], [
        RR(targets[0], QTYPE.AAAA, rdata=AAAA(v6[0]), ttl=30)]))
    write("dns_message", "srv_priorities", reply(srv, "SRV", [
        RR(srv, QTYPE.SRV, rdata=SRV(20, 0, 50051, targets[0]), ttl=30),
        RR(srv, QTYPE.SRV, rdata=SRV(10, 0, 50052, targets[1]), ttl=30),
        RR(srv, QTYPE.SRV, rdata=SRV(10, 5, 50052, targets[1]), ttl=30),
        RR(srv, QTYPE.SRV, rdata=SRV(10, 5, 0, targets[2]), ttl=30),
        RR(srv, QTYPE.SRV, rdata=SRV(5, 5, 50053, "."), ttl=30)], glue, edns=True))
    write("dns_message", "nxdomain", reply(svc, "A", rcode=RCODE.NXDOMAIN))
    write("dns_message", "servfail", reply(svc, "A", rcode=RCODE.SERVFAIL))
    write("dns_message", "refused", reply(svc, "SRV", rcode=RCODE.REFUSED))
    write("dns_message", "noerror_empty", reply(svc, "AAAA"))
    write("dns_message", "truncated", reply(svc, "A", tc=True))
    write("dns_message", "cname_chain", reply("api.internal.local", "A", [
        RR("api.internal.local", QTYPE.CNAME, rdata=CNAME(svc), ttl=300),
        RR(svc, QTYPE.A, rdata=A(ips[4]), ttl=60),
        RR(svc, QTYPE.A, rdata=A(ips[5]), ttl=60)]))
    escq = DNSRecord.question("a\\.b.weird\\\\name.local", "A")
    escq.header.id = 4243
    esc = escq.reply()
    esc.add_answer(RR("a\\.b.weird\\\\name.local", QTYPE.A, rdata=A(ips[6]), ttl=7))
    write("dns_message", "escaped_labels", esc.pack())
    write("dns_message", "root_question", reply(".", "A"))
    long_name = ".".join(["l" * 63] * 3 + ["x" * 61])  # 253 characters, 255 bytes on the wire
    write("dns_message", "max_name", reply(long_name, "A", [RR(long_name, QTYPE.A,
                                                               rdata=A(ips[7]), ttl=1)]))
    # Hand-made: a compression pointer to itself (a loop) and one into the header.
    base = bytearray(reply(svc, "A", [RR(svc, QTYPE.A, rdata=A(ips[0]), ttl=1)]))
    loop = bytes(base[:12 + len(svc) + 2 + 4]) + b"\xc0" + bytes([12 + len(svc) + 2 + 4]) + \
        bytes(base[12 + len(svc) + 2 + 4 + 2:])
    write("dns_message", "pointer_loop", loop)
    query = DNSRecord.question(svc, "A")
    query.header.id = 4244
    write("dns_message", "query_not_response", query.pack())
    write("dns_message", "header_only", bytes(base[:12]))


# --- config ------------------------------------------------------------------------------------

MINIMAL = ('[[listener]]\naddress = "127.0.0.1:8080"\ncluster = "a"\n'
           '[[cluster]]\nname = "a"\nendpoints = ["127.0.0.1:50051"]\n')


def config_seeds() -> None:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    for i, b in enumerate(blocks):
        write("config", f"readme_{i}.toml", b.encode())
    # Every key of the README example alone with the minimal config, so each loader branch has
    # a short seed of its own.
    if blocks:
        for line in blocks[0].splitlines():
            m = re.match(r"(\w+) = (.*?)(\s+#.*)?$", line)
            if m and m.group(1) in ("workers", "io_backend", "drain_timeout", "max_connections",
                                    "max_concurrent_streams", "stream_buffer",
                                    "connection_window", "max_header_list_size",
                                    "idle_timeout"):
                write("config", f"proxy_{m.group(1)}.toml",
                      f"[proxy]\n{m.group(1)} = {m.group(2)}\n".encode() + MINIMAL.encode())
    minimal = MINIMAL
    seeds = {
        "minimal.toml": minimal,
        "ipv6.toml": minimal.replace("127.0.0.1:8080", "[::1]:8080").replace(
            '"127.0.0.1:50051"', '"[fd00::1]:50051", { address = "[::1]:1", weight = 10000 }'),
        "dns_srv.toml": '[[listener]]\naddress = "0.0.0.0:0"\ncluster = "p"\n'
                        '[[cluster]]\nname = "p"\nlb = "p2c"\n'
                        'dns = "_grpc._tcp.p.internal.local"\nrecord = "SRV"\nhold = "0s"\n'
                        '[discovery]\nresolvers = ["127.0.0.1:5353", "[::1]:53"]\n'
                        'query_timeout = "1.5s"\n',
        "dns_aaaa.toml": '[[listener]]\naddress = "0.0.0.0:9000"\ncluster = "p"\n'
                         '[[cluster]]\nname = "p"\ndns = "p.local."\nport = 443\n'
                         'record = "AAAA"\nmin_refresh = "100ms"\nmax_refresh = "1h"\n'
                         'stale_after = "0s"\n',
        "routes_only.toml": '[[listener]]\naddress = "127.0.0.1:1"\n'
                            'routes = [ { prefix = "/a.", cluster = "a" },'
                            ' { prefix = "/", cluster = "b", timeout = "250ms" } ]\n'
                            '[[cluster]]\nname = "a"\nendpoints = ["10.0.0.1:1"]\n'
                            '[[cluster]]\nname = "b"\nendpoints = ["10.0.0.2:2"]\n',
        "proxy_sizes.toml": '[proxy]\nworkers = 4\nio_backend = "epoll"\n'
                            'max_connections = 1\nmax_concurrent_streams = 2147483647\n'
                            'stream_buffer = 65535\nconnection_window = "1GiB"\n'
                            'max_header_list_size = "1k"\nidle_timeout = "0s"\n'
                            'drain_timeout = "1.000000001s"\n' + minimal,
        "two_listeners.toml": minimal + '[[listener]]\naddress = "127.0.0.1:8081"\ncluster = "a"\n',
        # Errors worth keeping near: a typo, a duplicate, a host name, a bad duration, syntax.
        "err_typo.toml": "[proxy]\nwrokers = 2\n" + minimal,
        "err_duplicate.toml": minimal + '[[cluster]]\nname = "a"\nendpoints = ["1.2.3.4:5"]\n',
        "err_hostname.toml": minimal.replace('"127.0.0.1:50051"', '"api.internal:50051"'),
        "err_duration.toml": '[proxy]\ndrain_timeout = "20 s"\n' + minimal,
        "err_both.toml": minimal.replace('endpoints =', 'dns = "x.local"\nport = 1\nendpoints ='),
        "err_syntax.toml": "[[listener]\naddress = 1\n",
        "err_unknown_cluster.toml": minimal.replace('cluster = "a"', 'cluster = "b"'),
        "err_types.toml": '[proxy]\nworkers = 1.5\nstream_buffer = true\n'
                          'idle_timeout = 1979-05-27T07:32:00Z\n' + minimal,
    }
    for name, text in seeds.items():
        write("config", name, text.encode())


# --- HTTP/2 client bytes -----------------------------------------------------------------------

def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def capture_grpc(name: str, call) -> None:
    """Runs `call(channel)` against a loopback h2 server that answers every request like a
    gRPC backend, and writes what the client sent, recv boundaries kept as SPLIT markers."""
    import grpc
    import h2.config
    import h2.connection
    import h2.events

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    chunks: list[bytes] = []

    def serve():
        conn_sock, _ = lsock.accept()
        conn_sock.settimeout(3)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn_sock.sendall(conn.data_to_send())
        try:
            while True:
                data = conn_sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if isinstance(ev, h2.events.StreamEnded):
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("content-type", "application/grpc")])
                        conn.send_data(ev.stream_id, grpc_message(b"\x0a\x02ok"))
                        conn.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
                conn_sock.sendall(conn.data_to_send())
        except (OSError, socket.timeout):
            pass
        conn_sock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call(ch)
    t.join(5)
    lsock.close()
    write("h2_downstream", name, SPLIT.join(chunks))


def grpc_seeds() -> None:
    def ident(b):
        return b

    def unary(ch):
        f = ch.unary_unary("/helloworld.Greeter/SayHello", request_serializer=ident,
                           response_deserializer=ident)
        f(b"\x0a\x05world", timeout=5)

    def unary_twice_metadata(ch):
        f = ch.unary_unary("/payments.Ledger/Charge", request_serializer=ident,
                           response_deserializer=ident)
        f(b"\x08\x01", metadata=[("x-request-id", "abc-123"), ("auth-bin", b"\x00\x01")])
        f(b"\x08\x02" * 40)

    def client_stream(ch):
        f = ch.stream_unary("/route.Guide/Record", request_serializer=ident,
                            response_deserializer=ident)
        f(iter([b"\x08" + bytes([i]) for i in range(5)]))

    def health(ch):
        f = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=ident,
                           response_deserializer=ident)
        f(b"")

    def dead(ch):
        f = ch.unary_unary("/dead.Svc/Call", request_serializer=ident, response_deserializer=ident)
        f(b"\x0a\x01x", timeout=1)

    for name, fn in [("grpc_unary", unary), ("grpc_unary_metadata", unary_twice_metadata),
                     ("grpc_client_stream", client_stream), ("grpc_health_check", health),
                     ("grpc_dead_route", dead)]:
        capture_grpc(name, fn)


def h2_seeds() -> None:
    import h2.config
    import h2.connection

    def client():
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                 header_encoding="utf-8"))
        c.initiate_connection()
        return c

    def grpc_headers(path, extra=()):
        return [(":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", "ringlb"), ("content-type", "application/grpc"),
                ("te", "trailers"), *extra]

    body = grpc_message(b"\x0a\x05hello")

    def call(path, extra=(), data=body, split_each=False):
        c = client()
        out = [c.data_to_send()]
        c.send_headers(1, grpc_headers(path, extra))
        out.append(c.data_to_send())
        c.send_data(1, data, end_stream=True)
        out.append(c.data_to_send())
        return (SPLIT if split_each else b"").join(out)

    write("h2_downstream", "h2_unary_one_chunk", call("/echo.Svc/Call"))
    write("h2_downstream", "h2_unary_split", call("/echo.Svc/Call", split_each=True))
    write("h2_downstream", "h2_dead", call("/dead.Svc/Call"))
    write("h2_downstream", "h2_rst_upstream", call("/rst.Svc/Call"))
    write("h2_downstream", "h2_goaway_upstream", call("/goaway.Svc/Call"))
    write("h2_downstream", "h2_slow_deadline", call("/slow.Svc/Call", [("grpc-timeout", "20m")]))
    write("h2_downstream", "h2_grpc_timeout", call("/echo.Svc/Call", [("grpc-timeout", "1S")]))
    # Byte by byte: every frame header and HPACK field cut at every place.
    one = call("/echo.Svc/Call")
    write("h2_downstream", "h2_unary_bytewise", SPLIT.join(one[i:i + 1] for i in range(len(one))))

    c = client()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                       (":authority", "example")], end_stream=True)
    write("h2_downstream", "h2_plain_get", c.data_to_send())

    c = client()
    for i in range(10):  # more than max_concurrent_streams (8)
        sid = 1 + 2 * i
        c.send_headers(sid, grpc_headers(f"/echo.Svc/M{i}"))
        c.send_data(sid, body, end_stream=True)
    write("h2_downstream", "h2_ten_streams", c.data_to_send())

    c = client()
    c.send_headers(1, grpc_headers("/echo.Svc/Call"))
    c.send_data(1, body)
    c.reset_stream(1)
    c.send_headers(3, grpc_headers("/echo.Svc/Call"))
    c.send_data(3, body, end_stream=True)
    write("h2_downstream", "h2_client_reset", c.data_to_send())

    c = client()
    c.ping(b"12345678")
    c.update_settings({4: 1 << 20, 5: 1 << 14, 3: 100})
    c.increment_flow_control_window(1 << 20)
    c.send_headers(1, grpc_headers("/echo.Svc/Call"))
    c.increment_flow_control_window(1000, stream_id=1)
    c.send_data(1, body, end_stream=True)
    c.close_connection()
    write("h2_downstream", "h2_ping_settings_goaway", c.data_to_send())

    c = client()
    c.send_headers(1, grpc_headers("/echo.Svc/Big"))
    big = grpc_message(bytes(range(256)) * 60)  # 15 KiB, near the 16 KiB stream window
    c.send_data(1, big[:16000])
    write("h2_downstream", "h2_big_body", c.data_to_send())

    c = client()
    c.send_headers(1, grpc_headers("/echo.Svc/Call", [("x-big", "v" * 5000)]), end_stream=True)
    write("h2_downstream", "h2_big_header", c.data_to_send())

    c = client()
    c.send_headers(1, grpc_headers("/echo.Svc/Call"))
    c.send_data(1, body)
    c.send_headers(1, [("x-trailer", "1")], end_stream=True)
    write("h2_downstream", "h2_request_trailers", c.data_to_send())

    # HEADERS split into HEADERS + CONTINUATION by hand (h2 never does it itself).
    c = client()
    pre = c.data_to_send()
    c.send_headers(1, grpc_headers("/echo.Svc/Call"), end_stream=True)
    frame = c.data_to_send()
    length = int.from_bytes(frame[:3], "big")
    block = frame[9:9 + length]
    half = len(block) // 2
    flags = frame[4] & ~0x04  # END_HEADERS moves to the CONTINUATION
    hdr = len(block[:half]).to_bytes(3, "big") + b"\x01" + bytes([flags]) + frame[5:9]
    cont = len(block[half:]).to_bytes(3, "big") + b"\x09\x04" + frame[5:9]
    write("h2_downstream", "h2_continuation", pre + hdr + block[:half] + cont + block[half:])

    # Idle past proxy.idle_timeout: ringlb sends a shutdown notice and a PING; the client acks
    # it (zero payload), then tries one more call, which the final GOAWAY must refuse.
    idle = b"~IDLE~"
    ping_ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + bytes(8)
    c = client()
    first = c.data_to_send()
    c.send_headers(1, grpc_headers("/echo.Svc/Call"))
    c.send_data(1, body, end_stream=True)
    first += c.data_to_send()
    c.send_headers(3, grpc_headers("/echo.Svc/Late"))
    c.send_data(3, body, end_stream=True)
    write("h2_downstream", "h2_idle_drain_ping_ack", first + idle + ping_ack + SPLIT + c.data_to_send())
    write("h2_downstream", "h2_idle_no_ack", first + idle + SPLIT + c.data_to_send())

    write("h2_downstream", "h2_preface_only", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write("h2_downstream", "h2_bad_preface", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    c = client()
    write("h2_downstream", "h2_priority_unknown_frame",
          c.data_to_send() + b"\x00\x00\x05\x02\x00\x00\x00\x00\x03\x00\x00\x00\x01\x10"
          + b"\x00\x00\x03\xfa\x00\x00\x00\x00\x00abc")


# --- HTTP/2 backend bytes ----------------------------------------------------------------------
# What a backend sends ringlb, as raw frames (hpack literals that never touch the dynamic table,
# so every chunk decodes on any connection). The fuzz rig's client opens four calls, upstream
# streams 1 (unary), 3 (server streaming), 5 (a 20 KiB upload), 7 (no deadline); a retry or a
# replay on the same connection takes the next odd ids (9, 11, ...). The first chunk is the
# greeting every new upstream connection gets.

def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def hblock(fields) -> bytes:
    from hpack import Encoder, NeverIndexedHeaderTuple
    return Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in fields])


def settings(pairs=(), ack=False) -> bytes:
    return frame(4, 1 if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


GREETING = settings([(3, 100)]) + settings(ack=True)  # MAX_CONCURRENT_STREAMS 100, and the ACK
RESP = [(":status", "200"), ("content-type", "application/grpc")]


def resp_headers(sid, fields=RESP, end=False):
    return frame(1, 0x04 | (0x01 if end else 0), sid, hblock(fields))


def data(sid, payload, end=False):
    return frame(0, 0x01 if end else 0, sid, payload)


def trailers(sid, status=0, message=None):
    fields = [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
    return frame(1, 0x05, sid, hblock(fields))


def trailers_only(sid, status, message=None):
    fields = RESP + [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
    return frame(1, 0x05, sid, hblock(fields))


def answer(sid, messages=1):
    return resp_headers(sid) + b"".join(data(sid, grpc_message(b"\x0a\x02ok" + bytes([i])))
                                        for i in range(messages)) + trailers(sid)


def rst(sid, code):
    return frame(3, 0, sid, struct.pack(">I", code))


def goaway(last, code=0, debug=b""):
    return frame(7, 0, 0, struct.pack(">II", last, code) + debug)


def ping(opaque=b"backend!", ack=False):
    return frame(6, 1 if ack else 0, 0, opaque)


def window_update(sid, n):
    return frame(8, 0, sid, struct.pack(">I", n))


def upstream_seeds() -> None:
    def w(name, *chunks):
        write("h2_upstream", name, SPLIT.join(chunks))

    calls = (1, 3, 5, 7)
    w("ok_all", GREETING, answer(1) + answer(3, messages=3) + answer(5) + answer(7))
    # Chunks as a backend's writes come: headers, then each message, then the trailers.
    w("ok_stream_pieces", GREETING, resp_headers(3), data(3, grpc_message(b"one")),
      data(3, grpc_message(b"two")) + trailers(3) + answer(1) + answer(5) + answer(7))
    one = answer(1)
    w("unary_bytewise", GREETING, SPLIT.join(one[i:i + 1] for i in range(len(one))),
      b"".join(trailers_only(s, 0) for s in (3, 5, 7)))
    # UNAVAILABLE (retried after the backoff: the WAIT lets it pass), then the retries answered:
    # three of them (9, 11, 13), as the upload's body is past retry_buffer and is not retried.
    write("h2_upstream", "unavailable_then_retry",
          GREETING + SPLIT + b"".join(trailers_only(s, 14, "try again") for s in calls) +
          b"~WAIT~" + b"".join(answer(s) for s in (9, 11, 13)))
    # REFUSED_STREAM: ringlb replays (the request never reached the backend).
    write("h2_upstream", "refused_then_replay",
          GREETING + SPLIT + b"".join(rst(s, 7) for s in calls) + b"~WAIT~" +
          b"".join(answer(s) for s in (9, 11, 13)))
    # GOAWAY before any stream: the calls move to a new connection (1, 3, 5 there), which greets
    # again; the upload cannot (its body is past retry_buffer) and fails.
    write("h2_upstream", "goaway_reconnect",
          GREETING + SPLIT + goaway(0) + b"~WAIT~" + b"".join(answer(s) for s in (1, 3, 5)))
    # GOAWAY mid-response: the streams it names finish on the old connection.
    w("goaway_mid_response", GREETING, resp_headers(1) + data(1, grpc_message(b"x")) +
      goaway(7, 0, b"going away") + trailers(1) + answer(3) + answer(5) + answer(7))
    w("goaway_error", GREETING, resp_headers(1) + goaway(1, 2, b"internal error"))
    # The backend PINGs (ringlb must ACK), goes quiet past keepalive.interval, then ACKs ringlb's
    # first PING (its opaque data is the sequence number 1, little endian) and answers.
    write("h2_upstream", "ping_keepalive_ack",
          GREETING + SPLIT + ping() + b"~WAIT~" + ping(struct.pack("<Q", 1), ack=True) +
          SPLIT + b"".join(answer(s) for s in calls))
    # A tiny initial window: the upload goes out as WINDOW_UPDATEs allow.
    small = settings([(4, 1000), (5, 16384)]) + settings(ack=True)
    write("h2_upstream", "window_updates",
          small + SPLIT + window_update(0, 30000) + window_update(5, 8000) + SPLIT +
          window_update(5, 12000) + SPLIT + answer(1) + answer(3) + answer(5) + answer(7))
    w("max_concurrent_one", settings([(3, 1)]) + settings(ack=True), answer(1), answer(3),
      answer(5), answer(7))
    # No SETTINGS at all: the connect timer (100 ms) runs out.
    write("h2_upstream", "no_settings", b"~WAIT~~WAIT~")
    # Bytes without a whole frame (an unknown frame's payload trickling in) keep the connection
    # alive through two PINGs; the third waits 5 minutes (ping strikes), then times out.
    write("h2_upstream", "partial_frame_keepalive",
          GREETING + frame(0x1f, 0, 0, bytes(900))[:40] + b"~WAIT~" + bytes(30) + b"~WAIT~" +
          bytes(30) + b"~WAIT~" + bytes(30))
    w("silent_after_headers", GREETING, b"".join(resp_headers(s) for s in calls))
    write("h2_upstream", "hangup_mid_body",
          GREETING + SPLIT + resp_headers(3) + data(3, grpc_message(b"part")[:6]) + b"~HANGUP~")
    write("h2_upstream", "refuse_then_hangup", GREETING + b"~REFUSE~~HANGUP~~WAIT~")
    w("not_grpc", GREETING,
      resp_headers(1, [(":status", "503"), ("content-type", "text/html")]) +
      data(1, b"<html>busy</html>", end=True) +
      resp_headers(3, [(":status", "200")], end=True) +
      resp_headers(5, [(":status", "404"), ("content-type", "application/grpc")], end=True) +
      trailers_only(7, 99, "%E2%9C%93 odd status"))
    w("big_header", GREETING, resp_headers(1, RESP + [("x-big", "v" * 5000)]) + answer(3) +
      answer(5) + answer(7))
    block = hblock(RESP)
    half = len(block) // 2
    w("continuation", GREETING, frame(1, 0, 1, block[:half]) + frame(9, 0x04, 1, block[half:]) +
      data(1, grpc_message(b"c")) + trailers(1) + answer(3) + answer(5) + answer(7))
    w("protocol_errors", GREETING,
      frame(0xfa, 0, 0, b"ext") + data(0, b"x") + resp_headers(99) + frame(5, 4, 1, bytes(4)) +
      frame(9, 4, 3, b"") + frame(0, 0x08, 5, b"\xff"))
    w("content_length_mismatch", GREETING,
      resp_headers(1, RESP + [("content-length", "3")]) + data(1, grpc_message(b"longer")) +
      trailers(1) + answer(3) + answer(5) + answer(7))


# --- gRPC framing ------------------------------------------------------------------------------
# A grpc-timeout value, '\n', then a body of 5-byte framed messages (HealthCheckResponse
# payloads where they are meant to decode). The first byte of the value also sets the retry
# buffer's replay limit and commit point in the target.

def framing_seeds() -> None:
    def varint(v: int) -> bytes:
        out = b""
        while v >= 0x80:
            out += bytes([(v & 0x7F) | 0x80])
            v >>= 7
        return out + bytes([v])

    def health(status: int) -> bytes:
        return b"\x08" + varint(status & 0xFFFFFFFFFFFFFFFF)

    def framed(payload: bytes, flag: int = 0) -> bytes:
        return bytes([flag]) + struct.pack(">I", len(payload)) + payload

    def w(name, value: bytes, body: bytes = b"") -> None:
        write("grpc_framing", name, value + b"\n" + body)

    w("serving", b"2S", framed(health(1)))
    w("watch_stream", b"100m", framed(health(1)) + framed(health(2)) + framed(health(3)) +
      framed(b""))
    w("max_digits_hours", b"99999999H", framed(health(-1)) + framed(health(1 << 40)))
    w("cap_exact", b"8640000S", framed(b"\x08\x01\x12\x03abc\x1d\x00\x00\x00\x00\x08\x02"))
    w("zero", b"0n", framed(b"\x0b\x0c\x08\x01", 0))  # a proto2 group: ringlb refuses it
    w("nine_digits", b"100000000S", framed(health(1), 1))  # compressed flag
    w("lower_s", b"1s", b"\x02\x00\x00\x00\x01\x00")  # reserved flag value
    w("sign", b"+5M", framed(health(1))[:7])  # cut short
    w("huge_length", b"12345678m", b"\x00\xff\xff\xff\xff" + bytes(16))
    w("micro", b"250u", struct.pack("<q", -1) + framed(b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"))
    w("int64_max", b"1n", struct.pack("<q", 2**63 - 1) + framed(health(1)))
    w("bad_varint", b"7M", framed(b"\x08" + b"\xff" * 11) + framed(b"\x00\x01"))
    write("grpc_framing", "no_newline", b"5S")
    w("message_text", b"%E2%9C%93 caf\xc3\xa9 %zz \x00\x7f%", framed(health(2)))


def main() -> int:
    which = sys.argv[1:] or ["dns_message", "config", "h2_downstream", "h2_upstream",
                             "grpc_framing"]
    if "dns_message" in which:
        dns_seeds()
    if "config" in which:
        config_seeds()
    if "h2_downstream" in which:
        h2_seeds()
        grpc_seeds()
    if "h2_upstream" in which:
        upstream_seeds()
    if "grpc_framing" in which:
        framing_seeds()
    for w in which:
        n = len(os.listdir(os.path.join(HERE, "corpus", w)))
        print(f"{w}: {n} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())

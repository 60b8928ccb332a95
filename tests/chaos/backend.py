"""A chaos-suite backend: one real grpcio server in its own process, so it can be SIGKILLed,
SIGSTOPped, blackholed and restarted like a container.

  backend.py --name b0 --listen 127.0.0.2:50051 --log FILE

Serves (bytes in, bytes out; no protobuf classes needed):
  /chaos.Echo/Call              request: the client's call id (8 bytes, big endian) and maybe
                                filler; response: this backend's name (so the client counts who
                                answered). In UNAVAILABLE mode every call gets grpc-status 14.
  /grpc.health.v1.Health/Check  HealthCheckResponse{status: SERVING} (field 1, varint 1), or
                                NOT_SERVING (2) while draining. Application failures (the
                                UNAVAILABLE mode) leave it SERVING: that fault must be caught by
                                the calls (outlier ejection), not by health checks.
Signals:
  SIGTERM  graceful drain, as ECS does it: grpcio's server.stop(grace) sends GOAWAY, refuses new
           calls, lets the calls in flight finish (up to --grace seconds), then the process exits 0.
  SIGUSR1  answer UNAVAILABLE to every call from now on; SIGUSR2  answer normally again.
Every call that reaches a handler appends `<unix time> <call id> <code>` to --log (one write per
line, O_APPEND, so a SIGKILL loses nothing already written). Prints `listening on HOST:PORT` on
stderr once it serves.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"


class Backend:
    def __init__(self, name: str, log_path: str):
        self.name = name.encode()
        self.unavailable = False   # written by the signal handler, read by handlers (GIL)
        self.draining = False
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _log(self, req: bytes, code: str):
        cid = int.from_bytes(req[:8], "big") if len(req) >= 8 else -1
        os.write(self.log_fd, f"{time.time():.6f} {cid} {code}\n".encode())

    def call(self, req: bytes, ctx):
        if self.unavailable:
            self._log(req, "UNAVAILABLE")
            ctx.abort(grpc.StatusCode.UNAVAILABLE, f"chaos: {self.name.decode()} is unavailable")
        self._log(req, "OK")
        return self.name

    def check(self, req: bytes, ctx):
        return NOT_SERVING if self.draining else SERVING


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--log", required=True)
    ap.add_argument("--grace", type=float, default=10.0)
    ap.add_argument("--unavailable", action="store_true", help="start in UNAVAILABLE mode")
    a = ap.parse_args()

    b = Backend(a.name, a.log)
    b.unavailable = a.unavailable
    ident = lambda x: x  # noqa: E731 -- raw bytes both ways
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("chaos.Echo", {
            "Call": grpc.unary_unary_rpc_method_handler(b.call, ident, ident)}),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(b.check, ident, ident)}),
    ))
    if not server.add_insecure_port(a.listen):
        print(f"backend {a.name}: cannot bind {a.listen}", file=sys.stderr)
        return 2
    server.start()

    stopped = threading.Event()

    def on_term(signum, frame):
        if b.draining:
            return
        b.draining = True
        # stop() returns at once; its event is set when the last call in flight has finished.
        done = server.stop(a.grace)
        threading.Thread(target=lambda: (done.wait(), stopped.set()), daemon=True).start()

    def on_usr(signum, frame):
        b.unavailable = signum == signal.SIGUSR1

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr)
    signal.signal(signal.SIGUSR2, on_usr)
    print(f"listening on {a.listen}", file=sys.stderr, flush=True)
    while not stopped.wait(0.1):  # the main thread must wake up for signal handlers to run
        pass
    print(f"backend {a.name}: drained, exiting", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

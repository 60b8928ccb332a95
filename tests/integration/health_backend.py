"""A grpcio backend that serves grpc.health.v1.Health (Check and, optionally, Watch) beside a
test.Echo/Unary method, with a serving status the test sets per service.

python3-grpcio in Debian 12 has no grpc_health package, so the Health service is a generic
handler; its messages are real protobuf messages built from a descriptor at import time (the
same fields as proto/health.proto), so ringlb's hand-written encoder and decoder meet a real
protobuf implementation on the other side.

Run as a script (`python3 health_backend.py NAME`) it serves in a process of its own, prints
`port N` on stdout and serves until it is killed: the test can SIGSTOP it.
"""
from __future__ import annotations

import collections
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


def _messages():
    f = descriptor_pb2.FileDescriptorProto(name="ringlb_test/health.proto",
                                           package="grpc.health.v1", syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    resp = f.message_type.add(name="HealthCheckResponse")
    enum = resp.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2),
                         ("SERVICE_UNKNOWN", 3)):
        enum.value.add(name=name, number=number)
    resp.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
                   type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    return (factory.GetPrototype(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            factory.GetPrototype(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


HealthCheckRequest, HealthCheckResponse = _messages()


class HealthBackend:
    """health=False: no Health service at all (Check and Watch answer UNIMPLEMENTED).
    watch=False: Check only (Watch answers UNIMPLEMENTED)."""

    def __init__(self, name: str, health: bool = True, watch: bool = True):
        self.name = name
        self.cond = threading.Condition()
        self.status: dict[str, int] = {"": SERVING}  # service -> status; absent: unknown
        self.calls: collections.Counter[str] = collections.Counter()
        self.services_asked: collections.Counter[str] = collections.Counter()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                                  options=[("grpc.so_reuseport", 0)])
        handlers = [grpc.method_handlers_generic_handler(
            "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(self._unary)})]
        if health:
            methods = {"Check": grpc.unary_unary_rpc_method_handler(self._check)}
            if watch:
                methods["Watch"] = grpc.unary_stream_rpc_method_handler(self._watch)
            handlers.append(grpc.method_handlers_generic_handler("grpc.health.v1.Health", methods))
        self.server.add_generic_rpc_handlers(tuple(handlers))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise RuntimeError(f"health backend {name}: could not bind 127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_status(self, status: int, service: str = ""):
        with self.cond:
            self.status[service] = status
            self.cond.notify_all()

    def count(self, method: str) -> int:
        with self.cond:
            return self.calls[method]

    def stop(self):
        self.server.stop(0)

    def _unary(self, req: bytes, ctx):
        with self.cond:
            self.calls["Unary"] += 1
        ctx.send_initial_metadata((("x-backend", self.name),))
        return req

    def _check(self, req: bytes, ctx):
        service = HealthCheckRequest.FromString(req).service
        with self.cond:
            self.calls["Check"] += 1
            self.services_asked[service] += 1
            status = self.status.get(service)
        if status is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return HealthCheckResponse(status=status).SerializeToString()

    def _watch(self, req: bytes, ctx):
        service = HealthCheckRequest.FromString(req).service
        with self.cond:
            self.calls["Watch"] += 1
        last = None
        while ctx.is_active():
            with self.cond:
                status = self.status.get(service, SERVICE_UNKNOWN)
                if status == last:
                    self.cond.wait(0.05)  # bounded, so a cancelled stream is noticed
                    continue
            last = status
            yield HealthCheckResponse(status=status).SerializeToString()


def main():
    b = HealthBackend(sys.argv[1] if len(sys.argv) > 1 else "sub")
    print(f"port {b.port}", flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()

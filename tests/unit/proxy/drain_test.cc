// Draining client connections (SIGTERM, a restart): when each client is told to go away, and
// how the calls still open at drain_timeout end. Driven in memory on a fake clock.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;

namespace {
constexpr int32_t kNotice = 0x7fffffff;  // the shutdown notice: GOAWAY naming no stream yet
}

TEST_CASE("proxy drain: a connection with calls is told to go at once, in two phases") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", "x"));
  REQUIRE(rig.pump());
  REQUIRE(rig.backend(kA) != nullptr);
  rig.ctx().start_draining();
  REQUIRE(rig.pump());
  // Notice, PING, the client's PING ack, then the final GOAWAY naming the call in flight.
  CHECK(c.goaway_last_id() == id);
  CHECK(rig.ctx().downstream_count() == 1);
  rig.backend(kA)->respond(rig.backend(kA)->exchanges()[0]->id);
  rig.backend(kA)->send_trailers(rig.backend(kA)->exchanges()[0]->id, 0);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(rig.ctx().downstream_count() == 0);  // the session finished: the connection closed
}

TEST_CASE("proxy drain: a connection without a request yet keeps its calls (accepted mid-drain)") {
  // A client whose connection was still in the accept queue has calls waiting for it. grpc-core
  // fails them ("GOAWAY received") if the GOAWAY comes with the SETTINGS, so the notice waits
  // for the first request.
  ProxyRig rig(config());
  H2Client& c = rig.client();
  rig.ctx().start_draining();
  REQUIRE(rig.pump());
  CHECK(c.goaway_last_id() == -1);
  REQUIRE(rig.advance_ms(500));
  CHECK(c.goaway_last_id() == -1);
  int32_t first = c.submit(grpc_request("/svc.Echo/Call", "a"));
  int32_t second = c.submit(grpc_request("/svc.Echo/Call", "b"));
  REQUIRE(rig.pump());
  CHECK(c.goaway_last_id() == second);  // both taken, then told to go
  CHECK(c.stream(first)->grpc_status == 0);
  CHECK(c.stream(second)->grpc_status == 0);
  CHECK(rig.ended().size() == 2);
  CHECK(rig.ctx().downstream_count() == 0);
}

TEST_CASE("proxy drain: a client that sends nothing is told to go after 1 s") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  rig.ctx().start_draining();
  REQUIRE(rig.advance_ms(999));
  CHECK(c.goaway_last_id() == -1);
  CHECK(rig.ctx().downstream_count() == 1);
  REQUIRE(rig.advance_ms(1));
  // The notice (the rig's client reads no further once it has a GOAWAY and no stream), then the
  // final GOAWAY after the PING came back, and the connection is closed.
  CHECK(c.goaway_last_id() == kNotice);
  CHECK(rig.ctx().downstream_count() == 0);
}

TEST_CASE("proxy drain: a connection accepted while draining is taken and told to go") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& first = rig.client(0);
  int32_t held = first.submit(grpc_request("/svc.Echo/Call", "x"));
  REQUIRE(rig.pump());
  rig.ctx().start_draining();
  REQUIRE(rig.pump());
  CHECK(first.goaway_last_id() == held);
  // E.g. the last of a closing listener's queue: taken, not closed (a reset to the client).
  size_t late = rig.add_client();
  REQUIRE(rig.error().empty());
  CHECK(rig.ctx().downstream_count() == 2);
  rig.mode(kA).action = Action::kAnswer;
  H2Client& c = rig.client(late);
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", "y"));
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(c.goaway_last_id() == id);
  CHECK(rig.ctx().downstream_count() == 1);  // the late one is done; the first still waits
  H2Backend* b = rig.backends(kA)[0];
  b->respond(b->exchanges()[0]->id);
  b->send_trailers(b->exchanges()[0]->id, 0);
  REQUIRE(rig.pump());
  CHECK(first.stream(held)->grpc_status == 0);
  CHECK(rig.ctx().downstream_count() == 0);
}

TEST_CASE("proxy drain: at drain_timeout the calls left end with UNAVAILABLE and a reason") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t waiting = c.submit(grpc_request("/svc.Echo/Wait", "x"));
  int32_t streaming = c.submit(grpc_request("/svc.Echo/Stream", "y"));
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 2);
  int32_t bs = b->exchanges()[1]->id;
  b->respond(bs);
  b->send_data(bs, pattern(100, 3));
  REQUIRE(rig.pump());
  REQUIRE(c.stream(streaming)->status == 200);

  rig.ctx().start_draining();
  REQUIRE(rig.pump());
  rig.ctx().end_calls("ringlb is shutting down");
  REQUIRE(rig.pump());
  for (int32_t id : {waiting, streaming}) {
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.closed);
    CHECK(s.grpc_status == 14);
    CHECK(percent_decode(s.header("grpc-message")) == "ringlb is shutting down");
  }
  CHECK(c.stream(streaming)->body == pattern(100, 3));  // what was sent before is kept
  for (H2Backend::Exchange* e : b->exchanges()) CHECK(e->rst_received);  // the backends stop too
  CHECK(rig.ended().size() == 2);
  CHECK(rig.ctx().downstream_count() == 0);
}

TEST_CASE("proxy accept budget: a burst is set up over turns, queued ones before a drain") {
  // A burst of connects is adopted kAcceptsPerTurn per turn, so the calls of connections
  // already open are not held up behind thousands of new ones; draining takes the rest at once.
  using ringlb::core::proxy::Context;
  ProxyRig rig(config());
  auto& ctx = rig.ctx();
  const auto& counts = ctx.stats().listeners[0];
  const uint64_t before = counts.accepted;
  constexpr uint32_t kBurst = Context::kAcceptsPerTurn * 2 + 10;
  for (uint32_t i = 0; i < kBurst; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    ctx.accepted(0, fd);
  }
  CHECK(counts.accepted - before == Context::kAcceptsPerTurn);
  CHECK(ctx.queued_accepts() == kBurst - Context::kAcceptsPerTurn);
  ctx.turn(0);
  CHECK(counts.accepted - before == 2 * Context::kAcceptsPerTurn);
  CHECK(ctx.queued_accepts() == 10);
  ctx.start_draining();
  CHECK(ctx.queued_accepts() == 0);
  CHECK(counts.accepted - before == kBurst);
  CHECK(ctx.downstream_count() == kBurst);
  CHECK(rig.advance_ms(1500));  // silent clients are told to go after 1 s, then closed
  CHECK(ctx.downstream_count() == 0);
}

// Knowing a backend is gone, fast: upstream connections are ready only once the server's
// SETTINGS arrive (requests wait until then and replay elsewhere if they never do); a
// connection with calls waiting that goes silent is pinged and closed when nothing comes back;
// servers' ping policies (too_many_pings) are respected. Driven in memory on a fake clock with
// the defaults: connect_timeout 250 ms, keepalive interval 250 ms, timeout 500 ms, idle 30 s.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "core/proxy/cluster.h"
#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;
using ringlb::core::proxy::UpstreamEvent;

namespace {

// Most cases look at what keepalive alone does to a call: no retries by policy on top.
constexpr const char* kNoRetry = "retry = { attempts = 1 }";

Request call_request() {
  return grpc_request("/svc.Echo/Call", pattern(100));
}

size_t count_events(const ProxyRig& rig, UpstreamEvent kind) {
  size_t n = 0;
  for (const auto& e : rig.events()) n += e.kind == kind ? 1 : 0;
  return n;
}

// Moves the clock `ms` in steps of `step` ms, pumping at each, as a running loop's turns would
// (one advance_ms jump fires each timer once, however far it goes).
bool walk(ProxyRig& rig, int64_t ms, int64_t step = 10) {
  for (int64_t t = 0; t < ms; t += step) {
    if (!rig.advance_ms(std::min(step, ms - t))) return false;
  }
  return true;
}

int64_t endpoint_interval_ms(ProxyRig& rig, size_t index) {
  return rig.ctx().cluster(0).endpoints[index]->keepalive_interval_ns / kMs;
}

}  // namespace

TEST_CASE("keepalive: a PING after interval of silence with a call waiting, none while idle") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 1);
  CHECK(b->pings() == 0);
  REQUIRE(rig.advance_ms(249));
  CHECK(b->pings() == 0);
  REQUIRE(rig.advance_ms(1));
  CHECK(b->pings() == 1);  // and its ACK came back at once: alive
  REQUIRE(rig.advance_ms(249));
  CHECK(b->pings() == 1);
  REQUIRE(rig.advance_ms(1));
  CHECK(b->pings() == 2);  // 250 ms after the ACK, still silent
  CHECK(rig.backend_open(b));
  CHECK_FALSE(c.stream(id)->closed);

  // The call is answered; the connection goes idle: no more PINGs, however long.
  b->answer(b->exchanges()[0]->id);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  const size_t before = b->pings();
  REQUIRE(walk(rig, 10'000, 50));
  CHECK(b->pings() == before);
  CHECK(rig.backend_open(b));
  CHECK(rig.events().empty());
}

TEST_CASE("keepalive: a busy connection draws no PING while the server keeps answering") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  b->respond(b->exchanges()[0]->id);
  REQUIRE(rig.pump());
  for (int i = 0; i < 20; ++i) {  // a message every 200 ms for 4 s
    REQUIRE(rig.advance_ms(200));
    b->send_data(b->exchanges()[0]->id, "x");
    REQUIRE(rig.pump());
  }
  CHECK(b->pings() == 0);
}

TEST_CASE("keepalive: no ACK closes the connection at interval + timeout; sent calls fail") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", kNoRetry));
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 1);  // its HEADERS reached the backend
  rig.mode(kA).stopped = true;          // SIGSTOP
  REQUIRE(rig.advance_ms(250));         // the PING goes out (and stays in the socket buffer)
  REQUIRE(rig.advance_ms(499));
  CHECK_FALSE(c.stream(id)->closed);
  CHECK(rig.events().empty());
  REQUIRE(rig.advance_ms(1));
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 14);
  const std::string msg = percent_decode(c.stream(id)->headers.find("grpc-message"));
  CHECK(contains(msg, "127.0.0.1:1"));
  CHECK(contains(msg, "PING timeout after 500 ms"));
  CHECK_FALSE(rig.backend_open(b));
  REQUIRE(rig.events().size() == 1);
  CHECK(rig.events()[0].kind == UpstreamEvent::kPingTimeout);
  CHECK(rig.events()[0].endpoint == kA);
  CHECK(contains(rig.events()[0].detail, "PING timeout after 500 ms"));
}

TEST_CASE("keepalive: a call still held when the PING times out is replayed elsewhere") {
  // A takes one stream at a time, but says so only in its SETTINGS: the two calls ringlb gave
  // its connection before then go out one by one, and the second waits, unsent.
  ProxyRig rig(two_endpoints("", kNoRetry));
  rig.mode(kA).action = Action::kHold;
  rig.mode(kA).max_concurrent_streams = 1;
  H2Client& c = rig.client();
  for (int i = 0; i < 4; ++i) c.submit(call_request());  // round robin: two each
  REQUIRE(rig.pump());
  H2Backend* a = rig.backend(kA);
  REQUIRE(a != nullptr);
  CHECK(rig.backends(kA).size() == 1);
  CHECK(a->exchanges().size() == 1);
  CHECK(c.closed_count() == 2);  // B answered its two
  rig.mode(kA).stopped = true;
  REQUIRE(walk(rig, 750));  // PING at 250 ms, no answer by 750 ms
  CHECK(c.all_closed());
  size_t failed = 0, replayed = 0;
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.grpc_status == 14) {
      ++failed;  // the one A had: it may have been processed
      CHECK(contains(e.rec.message, "PING timeout after 500 ms"));
    } else if (e.rec.replays == 1) {
      ++replayed;  // the one A never got: answered by B
      CHECK(e.rec.grpc_status == 0);
      CHECK(e.rec.tried[0] == kA);
      CHECK(e.rec.tried[1] == kB);
    }
  }
  CHECK(failed == 1);
  CHECK(replayed == 1);
  CHECK(count_events(rig, UpstreamEvent::kPingTimeout) == 1);
}

TEST_CASE("keepalive: with the default retry policy, a call lost to a PING timeout is retried") {
  ProxyRig rig(two_endpoints());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = -1;
  for (int i = 0; i < 2 && id < 0; ++i) {  // round robin: one of the first two goes to A
    int32_t x = c.submit(call_request());
    REQUIRE(rig.pump());
    if (!c.stream(x)->closed) id = x;
  }
  REQUIRE(id > 0);
  rig.mode(kA).stopped = true;
  REQUIRE(walk(rig, 750));  // the PING timeout, then the backoff (at most 25 ms)
  REQUIRE(walk(rig, 25));
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(count_events(rig, UpstreamEvent::kPingTimeout) == 1);
}

TEST_CASE("keepalive: frames other than the ACK also prove the connection alive") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", kNoRetry));
  rig.mode(kA).action = Action::kHold;
  rig.mode(kA).ack_pings = false;  // a server that never ACKs, but answers
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  const int32_t bid = b->exchanges()[0]->id;
  REQUIRE(rig.advance_ms(250));
  CHECK(b->pings() == 1);
  REQUIRE(rig.advance_ms(400));
  b->respond(bid);  // at 650 ms: no ACK, but the response headers
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(200));  // 850 ms: past 250 + 500, the connection is still up
  CHECK(rig.backend_open(b));
  CHECK_FALSE(c.stream(id)->closed);
  // Silence again: a PING 250 ms after the headers, and with neither ACK nor anything else the
  // connection is closed 500 ms later.
  REQUIRE(rig.advance_ms(50));
  CHECK(b->pings() == 2);
  REQUIRE(rig.advance_ms(499));
  CHECK(rig.backend_open(b));
  REQUIRE(rig.advance_ms(1));
  CHECK_FALSE(rig.backend_open(b));
  CHECK(c.stream(id)->closed);
  CHECK(count_events(rig, UpstreamEvent::kPingTimeout) == 1);
}

TEST_CASE("keepalive: a call that stays quiet draws at most two PINGs until the server writes") {
  // gRPC servers close a connection at the fourth PING without their sending data.
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(walk(rig, 5'000));
  CHECK(b->pings() == 2);
  CHECK(rig.backend_open(b));
  b->respond(b->exchanges()[0]->id);  // the server writes: its strikes are forgiven
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(250));
  CHECK(b->pings() == 3);
  REQUIRE(walk(rig, 5'000));
  CHECK(b->pings() == 4);
  // Then one every 5 minutes of silence, which those servers accept.
  REQUIRE(walk(rig, 300'000, 1'000));
  CHECK(b->pings() == 5);
  CHECK(rig.backend_open(b));
  CHECK_FALSE(c.stream(id)->closed);
  b->send_trailers(b->exchanges()[0]->id, 0);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
}

TEST_CASE("keepalive: GOAWAY too_many_pings doubles the endpoint's interval, new connections too") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", kNoRetry));
  rig.mode(kA).action = Action::kHold;
  rig.mode(kA).on_ping = [](H2Backend& b) {  // as grpc-core: streams so far will not be served
    b.goaway(b.exchanges().empty() ? 0 : b.exchanges().back()->id, NGHTTP2_ENHANCE_YOUR_CALM,
             "too_many_pings");
  };
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b1 = rig.backend(kA);
  REQUIRE(b1 != nullptr);
  CHECK(endpoint_interval_ms(rig, 0) == 0);  // the cluster's
  REQUIRE(rig.advance_ms(250));
  CHECK(b1->pings() == 1);
  CHECK(endpoint_interval_ms(rig, 0) == 500);
  REQUIRE(count_events(rig, UpstreamEvent::kGoaway) == 1);
  CHECK(rig.events()[0].detail == "ENHANCE_YOUR_CALM (too_many_pings)");
  // The server closes the connection (as grpc-core and grpc-go do): the call was sent, it fails.
  rig.hang_up(b1);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 14);

  // A new connection pings at the doubled interval; the next GOAWAY doubles it again.
  id = c.submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b2 = rig.backend(kA);
  REQUIRE(b2 != b1);
  REQUIRE(rig.advance_ms(499));
  CHECK(b2->pings() == 0);
  REQUIRE(rig.advance_ms(1));
  CHECK(b2->pings() == 1);
  CHECK(endpoint_interval_ms(rig, 0) == 1000);
}

TEST_CASE("keepalive: the doubled interval stops at 5 minutes") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", "keepalive = { interval = \"4m\" }"));
  rig.mode(kA).action = Action::kHold;
  rig.mode(kA).on_ping = [](H2Backend& b) {
    b.goaway(0, NGHTTP2_ENHANCE_YOUR_CALM, "too_many_pings");
  };
  rig.client().submit(call_request());
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(walk(rig, 240'000, 1'000));
  REQUIRE(b->pings() == 1);
  CHECK(endpoint_interval_ms(rig, 0) == 300'000);
}

TEST_CASE("keepalive: other GOAWAYs leave the interval alone") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  rig.mode(kA).on_ping = [](H2Backend& b) { b.goaway(1, NGHTTP2_ENHANCE_YOUR_CALM, "slow down"); };
  rig.client().submit(call_request());
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(250));
  REQUIRE(rig.backend(kA)->pings() == 1);
  CHECK(endpoint_interval_ms(rig, 0) == 0);
}

TEST_CASE("keepalive: a connection reused after a long idle is pinged with the request") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);

  // A short idle: the next call draws no PING of its own.
  REQUIRE(walk(rig, 10'000, 100));
  id = c.submit(call_request());
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(b->pings() == 0);

  // Past keepalive.idle: the PING goes out with the request, at once.
  REQUIRE(walk(rig, 30'000, 100));
  rig.mode(kA).action = Action::kHold;
  id = c.submit(call_request());
  REQUIRE(rig.pump());
  CHECK(b->pings() == 1);
  CHECK(b->exchanges().size() == 3);
  CHECK(rig.backend_open(b));
  CHECK(rig.backend(kA) == b);  // the same connection
}

TEST_CASE("keepalive: a dead idle connection is found within timeout of its reuse") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", kNoRetry));
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  H2Backend* b = rig.backend(kA);
  rig.mode(kA).stopped = true;  // dies while idle: nobody notices
  REQUIRE(walk(rig, 60'000, 1'000));
  CHECK(rig.backend_open(b));
  CHECK(rig.events().empty());
  id = c.submit(call_request());
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(499));
  CHECK_FALSE(c.stream(id)->closed);
  REQUIRE(rig.advance_ms(1));
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 14);
  CHECK(count_events(rig, UpstreamEvent::kPingTimeout) == 1);
}

TEST_CASE("keepalive: off means no PINGs") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", "keepalive = false"));
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  rig.mode(kA).stopped = true;
  REQUIRE(walk(rig, 5'000));
  CHECK(rig.backend(kA)->pings() == 0);
  CHECK_FALSE(c.stream(id)->closed);
  CHECK(rig.events().empty());
}

TEST_CASE("readiness: requests wait for the server's SETTINGS, then go") {
  ProxyRig rig(config());
  rig.mode(kA).mute = true;  // reads, but sends nothing, not even its SETTINGS
  H2Client& c = rig.client();
  int32_t id = c.submit(call_request());
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(200));
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  CHECK(b->exchanges().empty());  // our preface and SETTINGS came, the request did not
  CHECK_FALSE(c.stream(id)->closed);
  rig.mode(kA).mute = false;
  REQUIRE(rig.pump());
  CHECK(b->exchanges().size() == 1);
  CHECK(c.stream(id)->grpc_status == 0);
  REQUIRE(rig.advance_ms(1'000));  // the connect timer was stopped by the SETTINGS
  CHECK(rig.backend_open(b));
  CHECK(rig.events().empty());
}

TEST_CASE("readiness: no SETTINGS within connect_timeout: held calls replay elsewhere") {
  ProxyRig rig(two_endpoints());
  rig.mode(kA).mute = true;
  H2Client& c = rig.client();
  std::vector<int32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(c.submit(call_request()));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(249));
  size_t waiting = 0;
  for (int32_t id : ids) waiting += c.stream(id)->closed ? 0 : 1;
  CHECK(waiting == 2);  // round robin sent two to A; they wait
  REQUIRE(rig.advance_ms(1));
  for (int32_t id : ids) {
    CHECK(c.stream(id)->closed);
    CHECK(c.stream(id)->grpc_status == 0);
  }
  REQUIRE(rig.backend(kA) != nullptr);
  CHECK(exchanges(rig, kA).empty());  // A saw none of them
  CHECK(exchanges(rig, kB).size() == 4);
  size_t replayed = 0;
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.replays == 1) {
      ++replayed;
      CHECK(e.rec.tried[0] == kA);
      CHECK(e.rec.tried[1] == kB);
    }
  }
  CHECK(replayed == 2);
  REQUIRE(count_events(rig, UpstreamEvent::kConnectFailed) == 1);
  CHECK(contains(rig.events()[0].detail,
                 "connected, but no HTTP/2 SETTINGS from the backend within 250 ms"));
}

TEST_CASE("readiness: with one endpoint, a call held past connect_timeout says why") {
  ProxyRig rig(config());
  rig.mode(kA).mute = true;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "600m"));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(250));  // no SETTINGS: replayed (on A again: a new connection)
  CHECK_FALSE(c.stream(id)->closed);
  CHECK(rig.backends(kA).size() == 2);
  REQUIRE(rig.advance_ms(250));
  REQUIRE(rig.advance_ms(100));  // the deadline
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 4);
  CHECK(exchanges(rig, kA).empty());
}

TEST_CASE("readiness: a TCP connect that hangs times out after connect_timeout and replays") {
  ProxyRig rig(two_endpoints());
  rig.reactor().set_connect_result(kA, MemoryReactor::kHang);  // blackholed
  H2Client& c = rig.client();
  std::vector<int32_t> ids;
  for (int i = 0; i < 2; ++i) ids.push_back(c.submit(call_request()));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(249));
  CHECK(c.closed_count() == 1);
  REQUIRE(rig.advance_ms(1));
  for (int32_t id : ids) CHECK(c.stream(id)->grpc_status == 0);
  REQUIRE(count_events(rig, UpstreamEvent::kConnectFailed) == 1);
  CHECK(contains(rig.events()[0].detail, "connect timed out after 250 ms"));
}

TEST_CASE("readiness: a held call the client cancels never reaches the backend") {
  ProxyRig rig(config());
  rig.mode(kA).mute = true;
  H2Client& c = rig.client();
  int32_t gone = c.submit(call_request());
  int32_t kept = c.submit(call_request());
  REQUIRE(rig.pump());
  c.reset(gone);
  REQUIRE(rig.pump());
  rig.mode(kA).mute = false;
  REQUIRE(rig.pump());  // fails if the backend saw anything amiss (a reset for an idle stream)
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 1);
  CHECK(c.stream(kept)->grpc_status == 0);
  CHECK_FALSE(b->exchanges()[0]->rst_received);
}

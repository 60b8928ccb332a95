// Attempts and the retry buffer: a call that never reached a backend (REFUSED_STREAM, above a
// GOAWAY's last stream id, connect failure) is replayed on another endpoint with its whole body,
// byte for byte; a body past proxy.retry_buffer is not; replays stop at the deadline and at a
// bound. Driven in memory on a fake clock.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;

namespace {

// Refuses the first `n` requests, across every backend that shares it, then answers.
std::function<Action(H2Backend&, H2Backend::Exchange&)> refuse_first(int n) {
  auto left = std::make_shared<int>(n);
  return [left](H2Backend&, H2Backend::Exchange&) {
    if (*left > 0) {
      --*left;
      return Action::kRefuse;
    }
    return Action::kAnswer;
  };
}

const char* other(const std::string& a) {
  return a == kA ? kB : kA;
}

}  // namespace

TEST_CASE("proxy retry: REFUSED_STREAM replays the call on the other endpoint, body intact") {
  ProxyRig rig(two_endpoints());
  auto decide = refuse_first(1);
  rig.mode(kA).decide = decide;
  rig.mode(kB).decide = decide;
  H2Client& c = rig.client();
  Request req = grpc_request("/svc.Upload/Put", pattern(40 * 1024, 3));
  req.frame_max = 9000;  // five DATA frames
  int32_t id = c.submit(req);
  REQUIRE(rig.pump());

  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.status == 200);
  CHECK(s.grpc_status == 0);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.attempts == 2);
  CHECK(r.replays == 1);
  CHECK_FALSE(r.truncated);
  CHECK_FALSE(r.local);
  CHECK(r.request_bytes == req.body.size());
  const std::string first = r.tried[0];
  REQUIRE((first == kA || first == kB));
  CHECK(r.tried[1] == other(first));

  auto refused = exchanges(rig, first);
  auto served = exchanges(rig, other(first));
  REQUIRE(refused.size() == 1);
  REQUIRE(served.size() == 1);
  CHECK(served[0]->ended);
  CHECK(served[0]->body.size() == req.body.size());
  CHECK(served[0]->body == req.body);  // the whole body, byte-identical, from the start
  CHECK(served[0]->header(":path") == "/svc.Upload/Put");
}

TEST_CASE("proxy retry: GOAWAY below in-flight streams replays those, and nothing fails") {
  ProxyRig rig(two_endpoints());
  rig.mode(kA).action = Action::kHold;
  rig.mode(kB).action = Action::kHold;
  H2Client& c = rig.client();
  constexpr int kCalls = 6;
  std::vector<std::string> bodies;
  for (int i = 0; i < kCalls; ++i) {
    bodies.push_back(pattern(1024, 50 + i));
    c.submit(grpc_request("/svc.Echo/Call", bodies.back()));
  }
  REQUIRE(rig.pump());
  // Round robin spreads them; the backend with more than one goes away below its second.
  H2Backend* a = rig.backend(kA);
  H2Backend* b = rig.backend(kB);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  REQUIRE(a->exchanges().size() + b->exchanges().size() == kCalls);
  H2Backend* gone = a->exchanges().size() >= 2 ? a : b;
  H2Backend* stays = gone == a ? b : a;
  const std::string gone_addr = gone == a ? kA : kB;
  const size_t above = gone->exchanges().size() - 1;
  const int32_t last = gone->exchanges()[0]->id;
  for (H2Backend::Exchange* e : gone->exchanges()) CHECK(e->body.size() == 1024);

  rig.mode(kA).action = Action::kAnswer;
  rig.mode(kB).action = Action::kAnswer;
  gone->goaway(last);
  gone->answer(last);  // the one below the last stream id is still served there
  for (H2Backend::Exchange* e : stays->exchanges()) stays->answer(e->id);
  REQUIRE(rig.pump());

  REQUIRE(c.all_closed());
  for (const H2Client::Stream* s : c.streams()) {
    CHECK(s->close_code == 0);
    CHECK(s->status == 200);
    CHECK(s->grpc_status == 0);
  }
  REQUIRE(rig.ended().size() == kCalls);
  size_t replayed = 0;
  for (const EndedCall& e : rig.ended()) {
    CHECK_FALSE(e.rec.local);
    if (e.rec.replays > 0) {
      ++replayed;
      CHECK(e.rec.tried[0] == gone_addr);
      CHECK(e.rec.attempts == 2);
    }
  }
  CHECK(replayed == above);
  // Every replayed body arrived whole at the backend that stayed.
  size_t matched = 0;
  for (H2Backend::Exchange* e : stays->exchanges()) {
    CHECK(e->ended);
    if (std::find(bodies.begin(), bodies.end(), e->body) != bodies.end()) ++matched;
  }
  CHECK(matched == stays->exchanges().size());
  CHECK(stays->exchanges().size() == kCalls - 1);
}

TEST_CASE("proxy retry: a connect failure replays the call on another endpoint") {
  ProxyRig rig(two_endpoints());
  rig.reactor().set_connect_result(kA, -ECONNREFUSED);
  H2Client& c = rig.client();
  for (int i = 0; i < 2; ++i) c.submit(grpc_request("/svc.Echo/Call", pattern(2000, i)));
  REQUIRE(rig.pump());
  REQUIRE(c.all_closed());
  for (const H2Client::Stream* s : c.streams()) CHECK(s->grpc_status == 0);
  CHECK(rig.backend(kA) == nullptr);
  size_t replayed = 0;
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.replays == 0) continue;
    ++replayed;
    CHECK(e.rec.tried[0] == kA);
    CHECK(e.rec.tried[1] == kB);
  }
  CHECK(replayed >= 1);  // round robin sends one of the two to the refusing endpoint first
  for (H2Backend::Exchange* e : exchanges(rig, kB)) CHECK(e->body.size() == 2000);
}

TEST_CASE("proxy retry: a body past proxy.retry_buffer is not replayed: UNAVAILABLE, says why") {
  ProxyRig rig(two_endpoints("retry_buffer = \"4KiB\""));
  auto decide = refuse_first(1);
  rig.mode(kA).decide = decide;
  rig.mode(kB).decide = decide;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Upload/Put", pattern(40 * 1024)));
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.headers.find("grpc-status") == "14");
  std::string msg = percent_decode(s.headers.find("grpc-message"));
  CHECK(contains(msg, "retry_buffer"));
  CHECK(contains(msg, "HTTP/2 error 7"));
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.truncated);
  CHECK(r.attempts == 1);
  CHECK(r.replays == 0);
  CHECK(r.local);
  CHECK(r.grpc_status == 14);
  CHECK(exchanges(rig, other(r.tried[0])).empty());  // never tried elsewhere
}

TEST_CASE("proxy retry: replays stop at the call's deadline") {
  // Both endpoints take connects that never complete; each connect times out after 60 ms.
  ProxyRig rig(two_endpoints("", "connect_timeout = \"60ms\""));
  rig.reactor().set_connect_result(kA, MemoryReactor::kHang);
  rig.reactor().set_connect_result(kB, MemoryReactor::kHang);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(100), "100m"));
  REQUIRE(rig.pump());
  CHECK(rig.reactor().connect_log().size() == 1);
  REQUIRE(rig.advance_ms(60));  // the first connect times out: replayed on the other endpoint
  CHECK(rig.reactor().connect_log().size() == 2);
  REQUIRE(rig.advance_ms(39));
  CHECK_FALSE(c.stream(id)->closed);
  REQUIRE(rig.advance_ms(1));
  CHECK(c.stream(id)->closed);
  CHECK(c.stream(id)->grpc_status == 4);
  REQUIRE(rig.advance_ms(500));  // the second connect times out too: nothing more happens
  CHECK(rig.reactor().connect_log().size() == 2);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.attempts == 2);
  CHECK(rig.ended()[0].rec.replays == 1);
  CHECK(rig.ended()[0].rec.grpc_status == 4);
}

TEST_CASE("proxy retry: without a deadline, replays are bounded") {
  ProxyRig rig(two_endpoints());
  rig.mode(kA).action = Action::kRefuse;
  rig.mode(kB).action = Action::kRefuse;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(100)));
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 14);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.attempts == 9);  // the first and 8 replays
  CHECK(r.replays == 8);
  CHECK(contains(r.message, "after 9 attempts"));
  CHECK(exchanges(rig, kA).size() + exchanges(rig, kB).size() == 9);
}

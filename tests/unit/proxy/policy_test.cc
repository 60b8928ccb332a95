// Retries by policy, driven in memory on a fake clock: a gRPC status read from a trailers-only
// answer or from trailers after held headers is retried on another endpoint
// (grpc-previous-rpc-attempts says so), within the attempts, the deadline, the backoff or the
// server's pushback, and the cluster's retry budget; per-try timeouts; a connection lost under
// a call; non-200 answers and answers without grpc-status as gRPC errors; plain HTTP/2
// untouched. Hedging is in hedge_test.cc.
#include "tests/unit/proxy/policy_test.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace ringlb::test;
using namespace ringlb::test::policy_test;

TEST_CASE("policy: a trailers-only UNAVAILABLE is retried on another endpoint, which is told") {
  ProxyRig rig(cfg());
  every_endpoint(rig, fail_first(14));
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(300, 4)));
  REQUIRE(rig.pump());

  const H2Client::Stream& s = *c.stream(id);
  REQUIRE(s.closed);
  CHECK(s.status == 200);
  CHECK(s.grpc_status == 0);
  const std::string first = first_tried(rig);
  REQUIRE(!first.empty());
  const std::string second = other(first);
  CHECK(s.body == "from " + second);
  Exchange* a = only(rig, first);
  Exchange* b = only(rig, second);
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(a->header("grpc-previous-rpc-attempts").empty());
  CHECK(b->header("grpc-previous-rpc-attempts") == "1");
  CHECK(b->body == a->body);  // the same request, whole
  CHECK(b->body.size() == 300);

  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.attempts == 2);
  CHECK(r.retries == 1);
  CHECK(r.replays == 0);
  CHECK(r.hedges == 0);
  CHECK(r.tried[0] == first);
  CHECK(r.tried[1] == second);
  CHECK(r.grpc_status == 0);
  CHECK_FALSE(r.local);
}

TEST_CASE("policy: response headers are held until a message, so trailers can still be retried") {
  ProxyRig rig(cfg());
  every_endpoint(rig, hold_first());
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  REQUIRE(!first.empty());
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  H2Backend* ba = backend_of(rig, first, a);
  ba->respond(a->id, 200, {{"x-from", "first"}});
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->status == 0);  // nothing reached the client yet
  CHECK(rig.call(id)->phase() == Phase::kWaiting);

  SUBCASE(
      "headers, then trailers UNAVAILABLE with no message: retried; the client never sees "
      "the first headers") {
    ba->send_trailers(a->id, 14);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.status == 200);
    CHECK(s.grpc_status == 0);
    CHECK(s.body == std::string("from ") + other(first));
    CHECK(s.header("x-from").empty());
    Exchange* b = only(rig, other(first));
    REQUIRE(b != nullptr);
    CHECK(b->header("grpc-previous-rpc-attempts") == "1");
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.retries == 1);
    CHECK(rig.ended()[0].rec.grpc_status == 0);
  }
  SUBCASE("headers, a message, then trailers UNAVAILABLE: the client got data, not retried") {
    ba->send_data(a->id, "partial");
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->status == 200);
    CHECK(c.stream(id)->header("x-from") == "first");
    ba->send_trailers(a->id, 14, {{"grpc-message", "went away"}});
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.body == "partial");
    CHECK(s.grpc_status == 14);
    CHECK(s.trailers.find("grpc-message") == "went away");
    CHECK(exchanges(rig, other(first)).empty());
    REQUIRE(rig.ended().size() == 1);
    const auto& r = rig.ended()[0].rec;
    CHECK(r.attempts == 1);
    CHECK(r.retries == 0);
    CHECK(r.grpc_status == 14);
    CHECK_FALSE(r.local);
  }
  SUBCASE("headers, then trailers OK with no message: both go to the client") {
    ba->send_trailers(a->id, 0);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.status == 200);
    CHECK(s.headers.find("x-from") == "first");
    CHECK(s.trailers.find("grpc-status") == "0");
    CHECK(s.body_bytes == 0);
    CHECK(exchanges(rig, other(first)).empty());
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.grpc_status == 0);
    CHECK(rig.ended()[0].rec.http_status == 200);
  }
}

TEST_CASE("policy: which statuses are retried: the default, `on`, and attempts = 1") {
  SUBCASE("NOT_FOUND is not retried by default: forwarded as it is") {
    ProxyRig rig(cfg());
    every_endpoint(rig, fail_first(5));
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Get", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 5);
    CHECK(c.stream(id)->headers.find("grpc-status") == "5");  // still trailers-only
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.retries == 0);
    CHECK_FALSE(rig.ended()[0].rec.local);
  }
  SUBCASE("on = [\"not_found\"] retries NOT_FOUND, and no longer UNAVAILABLE") {
    ProxyRig rig(cfg("retry = { on = [\"not_found\"], backoff = \"0s\" }"));
    every_endpoint(rig, fail_first(5));
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Get", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 0);
    CHECK(all_exchanges(rig).size() == 2);
    every_endpoint(rig, fail_first(14));
    int32_t id2 = c.submit(grpc_request("/svc.Echo/Get", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id2)->grpc_status == 14);
    CHECK(all_exchanges(rig).size() == 3);
  }
  SUBCASE("a route lays its own `on` over the cluster's") {
    ProxyRig rig(cfg("retry = { backoff = \"0s\" }",
                     "{ prefix = \"/nf.\", cluster = \"c\", retry = { on = [\"not_found\"] } }"));
    every_endpoint(rig, fail_first(5));
    H2Client& c = rig.client();
    int32_t routed = c.submit(grpc_request("/nf.Svc/Get", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(routed)->grpc_status == 0);
    int32_t plain = c.submit(grpc_request("/svc.Echo/Get", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(plain)->grpc_status == 5);
  }
  SUBCASE("attempts = 1: no retries; headers are not held either") {
    ProxyRig rig(cfg("retry = { attempts = 1 }"));
    every_endpoint(rig, fail_first(14));
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 14);
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.retries == 0);
    CHECK_FALSE(rig.ended()[0].rec.local);

    every_endpoint(rig, Action::kHold);
    int32_t id2 = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    Exchange* e = nullptr;
    for (Exchange* x : all_exchanges(rig)) {
      if (!x->answered) e = x;
    }
    REQUIRE(e != nullptr);
    for (const char* a : kAll) {
      if (H2Backend* b = backend_of(rig, a, e)) b->respond(e->id);
    }
    REQUIRE(rig.pump());
    CHECK(c.stream(id2)->status == 200);  // forwarded at once
  }
}

TEST_CASE("policy: attempts bound the retries; the client gets the last backend's answer") {
  ProxyRig rig(cfg("retry = { attempts = 3, backoff = \"0s\" }", "", 3));
  for (const char* a : kAll) {
    rig.mode(a).action = Action::kTrailersOnly;
    rig.mode(a).grpc_status = 14;
    rig.mode(a).grpc_message = std::string("down at ") + a;
  }
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  REQUIRE(s.closed);
  CHECK(s.grpc_status == 14);
  for (const char* a : kAll) CHECK(exchanges(rig, a).size() == 1);  // each endpoint once
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.attempts == 3);
  CHECK(r.retries == 2);
  CHECK_FALSE(r.local);
  CHECK(s.headers.find("grpc-message") == "down at " + r.tried[2]);
  // The retries counted up.
  std::vector<std::string> previous;
  for (Exchange* e : all_exchanges(rig))
    previous.emplace_back(e->header("grpc-previous-rpc-attempts"));
  std::sort(previous.begin(), previous.end());
  CHECK(previous == std::vector<std::string>{"", "1", "2"});
}

TEST_CASE("policy: the backoff is jittered within its ceiling, which doubles") {
  // 10 ms base, 20 ms ceiling: the first retry waits at most 10 ms, the second at most 20.
  ProxyRig rig(
      cfg("retry = { attempts = 3, backoff = \"10ms\", max_backoff = \"20ms\", "
          "budget_min_per_second = 1000 }",
          "", 3));
  for (const char* a : kAll) {
    rig.mode(a).action = Action::kTrailersOnly;
    rig.mode(a).grpc_status = 14;
  }
  H2Client& c = rig.client();
  int64_t longest = 0;
  for (int call = 0; call < 8; ++call) {
    CAPTURE(call);
    const size_t before = all_exchanges(rig).size();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    for (size_t tries = 2; tries <= 3; ++tries) {
      const int64_t ceiling = tries == 2 ? 10 : 20;
      int64_t waited = 0;
      while (all_exchanges(rig).size() < before + tries && waited <= ceiling) {
        REQUIRE(rig.advance_ms(1));
        ++waited;
      }
      CHECK(all_exchanges(rig).size() == before + tries);
      CHECK(waited <= ceiling);
      longest = std::max(longest, waited);
    }
    CHECK(c.stream(id)->grpc_status == 14);
    c.recycle();
  }
  // Full jitter draws from [0, ceiling]: 16 draws all under 1 ms has odds of about 1e-16.
  CHECK(longest >= 1);
}

TEST_CASE("policy: grpc-retry-pushback-ms sets the wait exactly; negative or malformed stops") {
  ProxyRig rig(cfg("retry = {}"));  // the default jittered backoff, which the pushback replaces
  H2Client& c = rig.client();
  SUBCASE("50 ms, trailers-only") {
    every_endpoint(rig, fail_first(14, {{"grpc-retry-pushback-ms", "50"}}));
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.advance_ms(49));
    CHECK(all_exchanges(rig).size() == 1);
    CHECK_FALSE(c.stream(id)->closed);
    REQUIRE(rig.advance_ms(1));
    CHECK(all_exchanges(rig).size() == 2);
    CHECK(c.stream(id)->grpc_status == 0);
  }
  SUBCASE("50 ms, in trailers after held headers") {
    every_endpoint(rig, hold_first());
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    const std::string first = first_tried(rig);
    Exchange* a = only(rig, first);
    REQUIRE(a != nullptr);
    H2Backend* b = backend_of(rig, first, a);
    b->respond(a->id);
    b->send_trailers(a->id, 14, {{"grpc-retry-pushback-ms", "50"}});
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(49));
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.advance_ms(1));
    CHECK(all_exchanges(rig).size() == 2);
    CHECK(c.stream(id)->grpc_status == 0);
  }
  SUBCASE("negative: not retried") {
    every_endpoint(rig, fail_first(14, {{"grpc-retry-pushback-ms", "-1"}}));
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 14);
    REQUIRE(rig.advance_ms(1000));
    CHECK(all_exchanges(rig).size() == 1);
  }
  SUBCASE("malformed: not retried") {
    every_endpoint(rig, fail_first(14, {{"grpc-retry-pushback-ms", "soon"}}));
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 14);
    REQUIRE(rig.advance_ms(1000));
    CHECK(all_exchanges(rig).size() == 1);
  }
  REQUIRE(rig.ended().size() == 1);
}

TEST_CASE("policy: no retry that would start at or past the deadline") {
  ProxyRig rig(cfg());
  every_endpoint(rig, hold_first());
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "100m"));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  H2Backend* b = backend_of(rig, first, a);
  REQUIRE(rig.advance_ms(95));
  SUBCASE("a pushback past the deadline: the backend's UNAVAILABLE goes to the client") {
    b->respond(a->id, 200, {{"grpc-status", "14"}, {"grpc-retry-pushback-ms", "5"}}, true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->closed);
    CHECK(c.stream(id)->grpc_status == 14);
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.ended().size() == 1);
    CHECK_FALSE(rig.ended()[0].rec.local);
    CHECK(rig.ended()[0].rec.retries == 0);
  }
  SUBCASE("a pushback that fits: retried, with the time left as its grpc-timeout") {
    b->respond(a->id, 200, {{"grpc-status", "14"}, {"grpc-retry-pushback-ms", "3"}}, true);
    REQUIRE(rig.pump());
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.advance_ms(3));
    Exchange* r = only(rig, other(first));
    REQUIRE(r != nullptr);
    CHECK(grpc_timeout_ms(*r) == 2);
    CHECK(c.stream(id)->grpc_status == 0);
  }
}

TEST_CASE("policy: the retry budget allows a floor of retries per second across calls") {
  ProxyRig rig(cfg("retry = { backoff = \"0s\", budget_percent = 0, budget_min_per_second = 1 }"));
  every_endpoint(rig, fail_first(14));
  H2Client& c = rig.client();
  auto call = [&]() {
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    REQUIRE(c.stream(id)->closed);
    return c.stream(id)->grpc_status;
  };
  CHECK(call() == 0);   // the second's one retry
  CHECK(call() == 14);  // none left
  CHECK(call() == 14);
  REQUIRE(rig.advance_ms(500));
  CHECK(call() == 14);  // half a token
  REQUIRE(rig.advance_ms(500));
  CHECK(call() == 0);  // a second on: one more
  CHECK(call() == 14);
  size_t retried = 0;
  for (const EndedCall& e : rig.ended()) retried += e.rec.retries;
  CHECK(retried == 2);
  CHECK(rig.ended().size() == 6);
}

TEST_CASE("policy: a per-try timeout resets a silent attempt and tries another endpoint") {
  SUBCASE("a fixed 100 ms") {
    ProxyRig rig(cfg("retry = { per_try_timeout = \"100ms\", backoff = \"0s\" }"));
    every_endpoint(rig, hold_first());
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    const std::string first = first_tried(rig);
    Exchange* a = only(rig, first);
    REQUIRE(a != nullptr);
    REQUIRE(rig.advance_ms(99));
    CHECK_FALSE(a->rst_received);
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.advance_ms(1));
    CHECK(a->rst_received);
    CHECK(a->rst_code == NGHTTP2_CANCEL);
    Exchange* b = only(rig, other(first));
    REQUIRE(b != nullptr);
    CHECK(b->header("grpc-previous-rpc-attempts") == "1");
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.grpc_status == 0);
    CHECK(s.body == std::string("from ") + other(first));
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.retries == 1);
  }
  SUBCASE("50% of a 1 s deadline: 500 ms, then half of what is left") {
    ProxyRig rig(cfg("retry = { per_try_timeout = \"50%\", backoff = \"0s\", attempts = 2 }"));
    every_endpoint(rig, Action::kHold);
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "1S"));
    REQUIRE(rig.pump());
    REQUIRE(all_exchanges(rig).size() == 1);
    Exchange* a = all_exchanges(rig)[0];
    REQUIRE(rig.advance_ms(499));
    CHECK_FALSE(a->rst_received);
    REQUIRE(rig.advance_ms(1));
    CHECK(a->rst_code == NGHTTP2_CANCEL);
    REQUIRE(all_exchanges(rig).size() == 2);
    Exchange* b = all_exchanges(rig)[0] == a ? all_exchanges(rig)[1] : all_exchanges(rig)[0];
    CHECK(grpc_timeout_ms(*b) == 500);
    REQUIRE(rig.advance_ms(249));
    CHECK_FALSE(b->rst_received);
    REQUIRE(rig.advance_ms(1));
    CHECK(b->rst_code == NGHTTP2_CANCEL);
    // Out of attempts: the client learns why, and how long the try had.
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.grpc_status == 4);
    const std::string msg = percent_decode(s.headers.find("grpc-message"));
    CHECK(contains(msg, "per-try timeout"));
    CHECK(contains(msg, "250 ms"));
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.local);
    CHECK(rig.ended()[0].rec.attempts == 2);
  }
  SUBCASE("a message stops the per-try clock") {
    ProxyRig rig(cfg("retry = { per_try_timeout = \"100ms\", backoff = \"0s\" }"));
    every_endpoint(rig, Action::kHold);
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    Exchange* a = all_exchanges(rig).at(0);
    H2Backend* b = backend_of(rig, first_tried(rig), a);
    REQUIRE(rig.advance_ms(50));
    b->respond(a->id);
    b->send_data(a->id, "first part, ");
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(200));
    CHECK_FALSE(a->rst_received);
    CHECK(all_exchanges(rig).size() == 1);
    b->send_data(a->id, "late but fine");
    b->send_trailers(a->id, 0);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->body == "first part, late but fine");
    CHECK(c.stream(id)->grpc_status == 0);
  }
  SUBCASE("held headers alone do not stop it (a server that sends its headers, then works)") {
    ProxyRig rig(cfg("retry = { per_try_timeout = \"100ms\", backoff = \"0s\" }"));
    every_endpoint(rig, hold_first());
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
    REQUIRE(rig.pump());
    const std::string first = first_tried(rig);
    Exchange* a = only(rig, first);
    REQUIRE(a != nullptr);
    backend_of(rig, first, a)->respond(a->id, 200, {{"x-from", "first"}});
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(99));
    CHECK_FALSE(a->rst_received);
    REQUIRE(rig.advance_ms(1));
    CHECK(a->rst_code == NGHTTP2_CANCEL);
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.grpc_status == 0);
    CHECK(s.body == std::string("from ") + other(first));
    CHECK(s.header("x-from").empty());  // the held headers never reached the client
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.retries == 1);
  }
}

TEST_CASE("policy: a connection lost under a sent call is UNAVAILABLE, retried elsewhere") {
  ProxyRig rig(cfg("retry = {}"));  // the default policy
  every_endpoint(rig, hold_first());
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(2000, 9)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  REQUIRE(only(rig, first) != nullptr);
  CHECK(only(rig, first)->ended);  // it reached the backend: a replay would not be safe
  const int fd = conn_fd(rig, first);
  REQUIRE(fd >= 0);
  rig.reactor().inject_eof(fd);
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(25));  // the default backoff's first ceiling
  const H2Client::Stream& s = *c.stream(id);
  REQUIRE(s.closed);
  CHECK(s.grpc_status == 0);
  CHECK(s.body == std::string("from ") + other(first));
  Exchange* b = only(rig, other(first));
  REQUIRE(b != nullptr);
  CHECK(b->header("grpc-previous-rpc-attempts") == "1");
  CHECK(b->body == pattern(2000, 9));
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.retries == 1);
  CHECK(r.replays == 0);
  CHECK(r.attempts == 2);
}

TEST_CASE("policy: a streaming request is retried with what came so far, then the rest") {
  ProxyRig rig(cfg("retry = {}"));
  every_endpoint(rig, fail_first(14, {{"grpc-retry-pushback-ms", "50"}}));
  H2Client& c = rig.client();
  const std::string body = pattern(3000, 11);
  Request req = grpc_request("/svc.Upload/Put", body.substr(0, 1000));
  req.end = false;
  int32_t id = c.submit(req);
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  CHECK(a->rst_code == NGHTTP2_CANCEL);  // answered before the request ended: stopped
  REQUIRE(rig.advance_ms(10));
  c.send_more(id, std::string_view(body).substr(1000, 1000), false);  // during the backoff
  REQUIRE(rig.advance_ms(40));
  Exchange* b = only(rig, other(first));
  REQUIRE(b != nullptr);
  CHECK(b->body == body.substr(0, 2000));
  c.send_more(id, std::string_view(body).substr(2000), true);
  REQUIRE(rig.pump());
  CHECK(b->body == body);
  CHECK(b->ended);
  CHECK(c.stream(id)->grpc_status == 0);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.request_bytes == body.size());
}

TEST_CASE("policy: the client going away during the backoff ends the call; nothing starts") {
  ProxyRig rig(cfg("retry = {}"));
  every_endpoint(rig, fail_first(14, {{"grpc-retry-pushback-ms", "50"}}));
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(10));
  c.reset(id, NGHTTP2_CANCEL);
  REQUIRE(rig.pump());
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.reset_code == NGHTTP2_CANCEL);
  REQUIRE(rig.advance_ms(100));
  CHECK(all_exchanges(rig).size() == 1);
  CHECK(rig.ended().size() == 1);
  // The pooled call serves the next one normally.
  int32_t next = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(50));
  CHECK(c.stream(next)->grpc_status == 0);
}

TEST_CASE("policy: a body past proxy.retry_buffer is not retried: the backend's status stands") {
  ProxyRig rig("[proxy]\nretry_buffer = \"4KiB\"\n" + cfg());
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Upload/Put", pattern(40 * 1024)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  CHECK(a->body.size() == 40 * 1024);
  backend_of(rig, first, a)->respond_trailers_only(a->id, 14, "busy");
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 14);
  CHECK(c.stream(id)->headers.find("grpc-message") == "busy");
  CHECK(all_exchanges(rig).size() == 1);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.retries == 0);
  CHECK_FALSE(rig.ended()[0].rec.local);
}

TEST_CASE("policy: a non-200 answer to a gRPC call maps to a gRPC status (gRPC's HTTP mapping)") {
  ProxyRig rig(cfg());
  every_endpoint(rig, hold_first());
  for (const char* a : kAll) rig.mode(a).content_type = "text/plain";
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  H2Backend* b = backend_of(rig, first, a);
  SUBCASE("503 (headers only): UNAVAILABLE, retried") {
    for (const char* x : kAll) rig.mode(x).content_type = "application/grpc";
    b->respond(a->id, 503, {}, true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 0);
    CHECK(rig.ended().at(0).rec.retries == 1);
  }
  SUBCASE("503 with a body: UNAVAILABLE, retried; the body goes nowhere") {
    for (const char* x : kAll) rig.mode(x).content_type = "application/grpc";
    b->respond(a->id, 503);
    b->send_data(a->id, "overloaded", true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 0);
    CHECK(c.stream(id)->body == std::string("from ") + other(first));
    CHECK(rig.ended().at(0).rec.retries == 1);
  }
  SUBCASE("404: UNIMPLEMENTED, not retried; the message names the upstream") {
    b->respond(a->id, 404, {}, true);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    REQUIRE(s.closed);
    CHECK(s.status == 200);
    CHECK(s.grpc_status == 12);
    const std::string msg = percent_decode(s.headers.find("grpc-message"));
    CHECK(contains(msg, first));
    CHECK(contains(msg, "HTTP 404"));
    CHECK(all_exchanges(rig).size() == 1);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.local);
    CHECK(rig.ended()[0].rec.grpc_status == 12);
  }
  SUBCASE("401, 403, 429, 500: UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, UNKNOWN") {
    // 429 is UNAVAILABLE, which is retried: the retry gets 500, not retried.
    b->respond(a->id, 429, {}, true);
    REQUIRE(rig.pump());
    Exchange* r = only(rig, other(first));
    REQUIRE(r != nullptr);
    CHECK(r->header("grpc-previous-rpc-attempts") == "1");
    CHECK(c.stream(id)->grpc_status == 0);  // the retry was answered normally
    for (auto [http, grpc] : {std::pair{401, 16}, {403, 7}, {500, 2}, {400, 13}}) {
      CAPTURE(http);
      every_endpoint(rig, Action::kHold);
      c.recycle();
      int32_t id2 = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
      REQUIRE(rig.pump());
      Exchange* e = nullptr;
      std::string at;
      for (const char* x : kAll) {
        for (Exchange* y : exchanges(rig, x)) {
          if (!y->answered) {
            e = y;
            at = x;
          }
        }
      }
      REQUIRE(e != nullptr);
      backend_of(rig, at, e)->respond(e->id, http, {}, true);
      REQUIRE(rig.pump());
      CHECK(c.stream(id2)->grpc_status == grpc);
    }
  }
}

TEST_CASE("policy: a response without grpc-status becomes UNKNOWN with a message") {
  ProxyRig rig(cfg());
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  H2Backend* b = backend_of(rig, first, a);
  std::string msg;
  SUBCASE("a message, then trailers without grpc-status") {
    b->respond(a->id);
    b->send_data(a->id, "msg");
    send_bare_trailers(*b, a->id);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.body == "msg");
    CHECK(s.trailers.find("grpc-status") == "2");
    msg = percent_decode(s.trailers.find("grpc-message"));
  }
  SUBCASE("held headers, then trailers without grpc-status") {
    b->respond(a->id);
    send_bare_trailers(*b, a->id);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.grpc_status == 2);
    msg = percent_decode(s.header("grpc-message"));
  }
  SUBCASE("a message ending in END_STREAM, no trailers") {
    b->respond(a->id);
    b->send_data(a->id, "msg", true);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.body == "msg");
    CHECK(s.trailers.find("grpc-status") == "2");
    msg = percent_decode(s.trailers.find("grpc-message"));
  }
  SUBCASE("held headers, then an empty DATA frame with END_STREAM") {
    b->respond(a->id);
    b->send_data(a->id, "", true);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.grpc_status == 2);
    msg = percent_decode(s.header("grpc-message"));
  }
  SUBCASE("trailers-only without grpc-status") {
    b->respond(a->id, 200, {}, true);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.grpc_status == 2);
    msg = percent_decode(s.header("grpc-message"));
  }
  REQUIRE(c.stream(id)->closed);
  CHECK(contains(msg, "upstream " + first));
  CHECK(contains(msg, "without grpc-status"));
  CHECK(all_exchanges(rig).size() == 1);  // UNKNOWN is not retried by default
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.grpc_status == 2);
}

TEST_CASE("policy: plain HTTP/2 requests are not held, not hedged, not retried by policy") {
  ProxyRig rig(cfg("retry = { per_try_timeout = \"100ms\" }",
                   "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
  every_endpoint(rig, Action::kHold);
  for (const char* a : kAll) rig.mode(a).content_type = "text/html";
  H2Client& c = rig.client();
  int32_t id = c.submit(plain_request("GET", "/h.page"));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  H2Backend* b = backend_of(rig, first, a);
  SUBCASE("headers reach the client at once") {
    b->respond(a->id, 200);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->status == 200);
    CHECK(c.stream(id)->headers.find("content-type") == "text/html");
    b->send_data(a->id, "<p>hi</p>", true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->body == "<p>hi</p>");
    CHECK(c.stream(id)->close_code == 0);
    CHECK(c.stream(id)->trailers.empty());
  }
  SUBCASE("a 503 is forwarded as it is") {
    b->respond(a->id, 503);
    b->send_data(a->id, "busy", true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->status == 503);
    CHECK(c.stream(id)->body == "busy");
  }
  SUBCASE("a connection lost under it: 503, not sent again") {
    rig.reactor().inject_eof(conn_fd(rig, first));
    REQUIRE(rig.advance_ms(300));
    CHECK(c.stream(id)->status == 503);
  }
  SUBCASE("no per-try timeout and no hedge: it waits for its one backend") {
    REQUIRE(rig.advance_ms(300));
    CHECK_FALSE(a->rst_received);
    CHECK_FALSE(c.stream(id)->closed);
    b->respond(a->id, 200, {}, true);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->status == 200);
  }
  REQUIRE(c.stream(id)->closed);
  CHECK(all_exchanges(rig).size() == 1);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.retries == 0);
  CHECK(rig.ended()[0].rec.hedges == 0);
}

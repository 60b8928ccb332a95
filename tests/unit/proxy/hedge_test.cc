// Hedging, driven in memory on a fake clock: after the route's delay (or the per-try timeout) a
// second attempt goes to another endpoint; the first answer accepted wins and the other is
// reset; only for the route's listed methods; within the attempts and the retry budget.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/unit/proxy/policy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::policy_test;

TEST_CASE("hedge: sends a second attempt after the delay; the first answer wins") {
  ProxyRig rig(
      cfg("retry = {}", "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(500, 2)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  REQUIRE(rig.advance_ms(49));
  CHECK(all_exchanges(rig).size() == 1);
  REQUIRE(rig.advance_ms(1));
  Exchange* b = only(rig, other(first));
  REQUIRE(b != nullptr);
  CHECK(b->header("grpc-previous-rpc-attempts") == "1");
  CHECK(b->body == a->body);
  CHECK_FALSE(a->rst_received);
  H2Backend* ba = backend_of(rig, first, a);
  H2Backend* bb = backend_of(rig, other(first), b);

  SUBCASE("the hedge answers first: the first attempt is reset") {
    bb->answer(b->id);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->body == std::string("from ") + other(first));
    CHECK(c.stream(id)->grpc_status == 0);
    CHECK(a->rst_received);
    CHECK(a->rst_code == NGHTTP2_CANCEL);
    CHECK_FALSE(b->rst_received);
  }
  SUBCASE("the first answers first: the hedge is reset") {
    ba->answer(a->id);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->body == "from " + first);
    CHECK(b->rst_received);
    CHECK(b->rst_code == NGHTTP2_CANCEL);
    CHECK_FALSE(a->rst_received);
  }
  SUBCASE("the first fails retryably: the running hedge still answers, no third attempt") {
    ba->respond_trailers_only(a->id, 14);
    REQUIRE(rig.advance_ms(300));
    CHECK(all_exchanges(rig).size() == 2);
    CHECK_FALSE(c.stream(id)->closed);
    bb->answer(b->id);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 0);
  }
  SUBCASE("the first fails with a status not retried: that is the answer, the hedge is reset") {
    ba->respond_trailers_only(a->id, 5);
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 5);
    CHECK(b->rst_code == NGHTTP2_CANCEL);
  }
  REQUIRE(c.stream(id)->closed);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.hedges == 1);
  CHECK(r.retries == 0);
  CHECK(r.attempts == 2);
  REQUIRE(rig.advance_ms(1000));
  CHECK(all_exchanges(rig).size() == 2);  // one hedge per call
}

TEST_CASE("hedge: per route, and only for the listed methods when `methods` is set") {
  ProxyRig rig(cfg("retry = {}",
                   "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\", methods = "
                   "[\"/h.Svc/Get\"] } }"));
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  c.submit(grpc_request("/h.Svc/Put", pattern(10)));
  c.submit(grpc_request("/other.Svc/Get", pattern(10)));  // the default route: no hedge
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(200));
  CHECK(all_exchanges(rig).size() == 2);
  c.submit(grpc_request("/h.Svc/Get", pattern(10)));
  REQUIRE(rig.pump());
  CHECK(all_exchanges(rig).size() == 3);
  REQUIRE(rig.advance_ms(50));
  CHECK(all_exchanges(rig).size() == 4);
  c.submit(plain_request("POST", "/h.Svc/Get", pattern(10)));  // not gRPC: never hedged
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(200));
  CHECK(all_exchanges(rig).size() == 5);
}

TEST_CASE("hedge: after = \"auto\" hedges at the per-try timeout, which then resets nothing") {
  ProxyRig rig(cfg("retry = { per_try_timeout = \"100ms\" }",
                   "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"auto\" } }"));
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  REQUIRE(rig.advance_ms(99));
  CHECK(all_exchanges(rig).size() == 1);
  REQUIRE(rig.advance_ms(1));
  CHECK(all_exchanges(rig).size() == 2);
  CHECK_FALSE(a->rst_received);  // the first keeps its chance
  Exchange* b = only(rig, other(first));
  REQUIRE(b != nullptr);
  REQUIRE(rig.advance_ms(300));  // both silent past their per-try timeouts: no third attempt
  CHECK(all_exchanges(rig).size() == 2);
  CHECK_FALSE(a->rst_received);
  CHECK_FALSE(b->rst_received);
  backend_of(rig, first, a)->answer(a->id);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->body == "from " + first);
  CHECK(b->rst_code == NGHTTP2_CANCEL);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.hedges == 1);
}

TEST_CASE("hedge: both attempts fail: a retry if attempts remain, else the last answer") {
  SUBCASE("attempts = 3: a third attempt") {
    ProxyRig rig(cfg("retry = { backoff = \"0s\" }",
                     "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }", 3));
    every_endpoint(rig, Action::kHold);
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(10)));
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(50));
    auto ex = all_exchanges(rig);
    REQUIRE(ex.size() == 2);
    for (const char* x : kAll) {
      for (Exchange* e : exchanges(rig, x)) backend_of(rig, x, e)->respond_trailers_only(e->id, 14);
    }
    every_endpoint(rig, Action::kAnswer);
    REQUIRE(rig.pump());
    CHECK(all_exchanges(rig).size() == 3);
    CHECK(c.stream(id)->grpc_status == 0);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.hedges == 1);
    CHECK(rig.ended()[0].rec.retries == 1);
    CHECK(rig.ended()[0].rec.attempts == 3);
    for (const char* x : kAll) CHECK(exchanges(rig, x).size() == 1);  // three endpoints
  }
  SUBCASE("attempts = 2: the one answering last is the answer") {
    ProxyRig rig(cfg("retry = { attempts = 2, backoff = \"0s\" }",
                     "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }", 3));
    every_endpoint(rig, Action::kHold);
    H2Client& c = rig.client();
    int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(10)));
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(50));
    const std::string first = first_tried(rig);
    Exchange* a = only(rig, first);
    REQUIRE(a != nullptr);
    Exchange* b = nullptr;
    std::string second;
    for (const char* x : kAll) {
      if (x != first && only(rig, x) != nullptr) {
        b = only(rig, x);
        second = x;
      }
    }
    REQUIRE(b != nullptr);
    backend_of(rig, second, b)->respond_trailers_only(b->id, 14, "hedge down");
    REQUIRE(rig.pump());
    CHECK_FALSE(c.stream(id)->closed);  // the first may still answer
    backend_of(rig, first, a)->respond_trailers_only(a->id, 14, "first down");
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->grpc_status == 14);
    CHECK(c.stream(id)->headers.find("grpc-message") == "first down");
    CHECK(all_exchanges(rig).size() == 2);
  }
}

TEST_CASE("hedge: no hedge without budget, nor with attempts = 1") {
  SUBCASE("an empty budget") {
    ProxyRig rig(cfg("retry = { budget_percent = 0, budget_min_per_second = 0 }",
                     "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
    every_endpoint(rig, Action::kHold);
    rig.client().submit(grpc_request("/h.Svc/Get", pattern(10)));
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(200));
    CHECK(all_exchanges(rig).size() == 1);
  }
  SUBCASE("attempts = 1") {
    ProxyRig rig(cfg("retry = { attempts = 1 }",
                     "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
    every_endpoint(rig, Action::kHold);
    rig.client().submit(grpc_request("/h.Svc/Get", pattern(10)));
    REQUIRE(rig.pump());
    REQUIRE(rig.advance_ms(200));
    CHECK(all_exchanges(rig).size() == 1);
  }
}

TEST_CASE("hedge: held headers on one attempt do not commit; a message does") {
  ProxyRig rig(
      cfg("retry = {}", "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(10)));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(50));
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  Exchange* b = only(rig, other(first));
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  H2Backend* ba = backend_of(rig, first, a);
  H2Backend* bb = backend_of(rig, other(first), b);
  ba->respond(a->id, 200, {{"x-from", "first"}});
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->status == 0);
  CHECK_FALSE(b->rst_received);
  bb->respond(b->id, 200, {{"x-from", "hedge"}});
  bb->send_data(b->id, "hedge message");
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->header("x-from") == "hedge");
  CHECK(a->rst_code == NGHTTP2_CANCEL);
  bb->send_trailers(b->id, 0);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->body == "hedge message");
  CHECK(c.stream(id)->grpc_status == 0);
}

TEST_CASE("hedge: headers held before the delay do not stop the hedge (no message yet)") {
  ProxyRig rig(
      cfg("retry = {}", "{ prefix = \"/h.\", cluster = \"c\", hedge = { after = \"50ms\" } }"));
  every_endpoint(rig, Action::kHold);
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/h.Svc/Get", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  backend_of(rig, first, a)->respond(a->id, 200, {{"x-from", "first"}});
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(50));
  Exchange* b = only(rig, other(first));
  REQUIRE(b != nullptr);  // hedged although the first sent its headers
  backend_of(rig, other(first), b)->answer(b->id);
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  REQUIRE(s.closed);
  CHECK(s.body == std::string("from ") + other(first));
  CHECK(s.header("x-from").empty());
  CHECK(a->rst_code == NGHTTP2_CANCEL);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.hedges == 1);
}

// One client's bad call never fails another's: what ringlb refuses to forward. A malformed
// grpc-timeout is answered locally (INTERNAL, as grpc-go and grpc-core servers answer it) and
// never reaches a backend; a valid but huge one is capped; a request header list past the
// backend's SETTINGS_MAX_HEADER_LIST_SIZE is answered RESOURCE_EXHAUSTED and never sent (on a
// new connection, once the backend's SETTINGS say its limit: attempts wait for them parked).
// Driven in memory on a fake clock.
#include <doctest/doctest.h>

#include <cerrno>
#include <string>

#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;

namespace {

// The fields grpc_request sends for "/svc.Echo/Call", by RFC 9113's count (name + value + 32):
// :method POST 43, :scheme http 43, :path 51, :authority test 46, content-type 60, te 42.
constexpr size_t kBaseList = 285;

// A gRPC call whose header list is `list_size` bytes by RFC 9113's count (x-big pads it).
Request big_request(size_t list_size, std::string_view timeout = {}) {
  Request r = grpc_request("/svc.Echo/Call", pattern(10), timeout);
  const size_t fixed = kBaseList + (timeout.empty() ? 0 : 12 + timeout.size() + 32);
  r.headers.add("x-big", std::string(list_size - fixed - 5 - 32, 'h'));
  REQUIRE(r.headers.list_size() == list_size);
  return r;
}

std::string message_of(const H2Client::Stream& s) {
  return percent_decode(s.header("grpc-message"));
}

}  // namespace

TEST_CASE("proxy validate: a malformed grpc-timeout is answered INTERNAL and never forwarded") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  // (" 1S" and control bytes never get this far: nghttp2 resets a stream whose field value has
  // them, per RFC 9113 8.2.1.)
  const std::string_view bad[] = {"1x",   "-1S", "123456789S", "1s",       "1 S",
                                  "1.5S", "",    "S",          "1\xC3\xA9"};
  for (std::string_view v : bad) {
    CAPTURE(v);
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "1S"));
    // grpc_request adds a valid one first when asked; this call carries only the bad value.
    Request r = grpc_request("/svc.Echo/Call", pattern(10));
    r.headers.add("grpc-timeout", v);
    int32_t bad_id = c.submit(r);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(bad_id);
    CHECK(s.closed);
    CHECK(s.status == 200);
    CHECK(s.header("grpc-status") == "13");  // trailers-only INTERNAL
    CHECK(s.trailers.empty());
    const std::string msg = message_of(s);
    CHECK(contains(msg, "malformed grpc-timeout " + ringlb::proto::quote_value(v)));
    CHECK(contains(msg, "not forwarded"));
    CHECK(c.stream(id)->grpc_status == 0);  // the good call beside it is served
  }
  // Only the good calls reached the backend, over one connection that stayed up.
  auto ex = exchanges(rig, kA);
  CHECK(ex.size() == std::size(bad));
  for (const H2Backend::Exchange* e : ex) CHECK(e->header("grpc-timeout") != "");
  CHECK(rig.backend_count() == 1);
  CHECK(rig.backend_open(rig.backend(kA)));
  size_t internal = 0;
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.grpc_status != 13) continue;
    ++internal;
    CHECK(e.rec.local);
    CHECK(e.rec.attempts == 0);
  }
  CHECK(internal == std::size(bad));
}

TEST_CASE("proxy validate: a malformed grpc-timeout beside a valid one still refuses the call") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  Request r = grpc_request("/svc.Echo/Call", pattern(10), "1S");
  r.headers.add("grpc-timeout", std::string(299, '9') + "\xC3\xA9");
  int32_t id = c.submit(r);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->header("grpc-status") == "13");
  const std::string msg = message_of(*c.stream(id));
  CHECK(contains(msg, "(301 bytes)"));  // the value is cut and says how long it was
  CHECK(contains(msg, "\"99999999"));
  CHECK(msg.size() < 200);
  CHECK(rig.backend_count() == 0);
}

TEST_CASE("proxy validate: a plain HTTP/2 request with a malformed grpc-timeout gets 400") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  Request r = plain_request("GET", "/page");
  r.headers.add("grpc-timeout", "soon");
  int32_t id = c.submit(r);
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.status == 400);
  CHECK(s.header("content-type") == "text/plain; charset=utf-8");
  CHECK(contains(s.body, "malformed grpc-timeout \"soon\""));
  CHECK(rig.backend_count() == 0);
}

TEST_CASE("proxy validate: a huge grpc-timeout is capped and the call proceeds") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "99999999H"));
  REQUIRE(rig.pump());
  REQUIRE(exchanges(rig, kA).size() == 1);
  H2Backend::Exchange* ex = exchanges(rig, kA)[0];
  CHECK(ex->header("grpc-timeout") == "8640000S");  // 100 days, re-encoded
  REQUIRE(rig.advance_ms(60'000));
  CHECK_FALSE(c.stream(id)->closed);  // not failed at once, nor after a minute
  rig.backend(kA)->answer(ex->id);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
}

TEST_CASE("proxy validate: grpc-timeout 0 is already past: DEADLINE_EXCEEDED, not forwarded") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "0n"));
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->header("grpc-status") == "4");
  CHECK(rig.backend_count() == 0);
}

TEST_CASE("proxy validate: of two grpc-timeout values the smaller is passed on") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  Request r = grpc_request("/svc.Echo/Call", pattern(10), "5S");
  r.headers.add("grpc-timeout", "100m");
  c.submit(r);
  REQUIRE(rig.pump());
  REQUIRE(exchanges(rig, kA).size() == 1);
  CHECK(grpc_timeout_ms(*exchanges(rig, kA)[0]) == 100);
}

TEST_CASE(
    "proxy validate: a header list past the backend's limit waits for its SETTINGS, then "
    "RESOURCE_EXHAUSTED; the calls beside it are served") {
  ProxyRig rig(config());
  rig.mode(kA).max_header_list_size = 8192;
  H2Client& c = rig.client();
  int32_t small1 = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  int32_t big = c.submit(big_request(9322));
  int32_t small2 = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(big);
  CHECK(s.closed);
  CHECK(s.header("grpc-status") == "8");
  const std::string msg = message_of(s);
  CHECK(contains(msg, "9322 bytes"));
  CHECK(contains(msg, "the 8192 that upstream 127.0.0.1:1 accepts"));
  CHECK(contains(msg, "not sent"));
  CHECK(c.stream(small1)->grpc_status == 0);
  CHECK(c.stream(small2)->grpc_status == 0);
  // The big one never reached the backend, whose one connection stayed up.
  auto ex = exchanges(rig, kA);
  CHECK(ex.size() == 2);
  for (const H2Backend::Exchange* e : ex) CHECK(e->header("x-big").empty());
  CHECK(rig.backend_count() == 1);
  CHECK(rig.backend_open(rig.backend(kA)));
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.grpc_status == 8) CHECK(e.rec.local);
  }

  SUBCASE("once the limit is known, a list past it is refused at once") {
    int32_t again = c.submit(big_request(8193));
    int32_t fits = c.submit(big_request(8192));
    REQUIRE(rig.pump());
    CHECK(c.stream(again)->header("grpc-status") == "8");
    CHECK(contains(message_of(*c.stream(again)), "8193 bytes"));
    CHECK(c.stream(fits)->grpc_status == 0);  // exactly the limit is allowed
    CHECK(exchanges(rig, kA).size() == 3);
  }
  SUBCASE("the re-encoded grpc-timeout counts too") {
    // 8192 bytes as the client sent it, grpc-timeout included; ringlb re-encodes "1S" as
    // "1000000u", 6 bytes longer: past the limit.
    int32_t id = c.submit(big_request(8192, "1S"));
    REQUIRE(rig.pump());
    CHECK(c.stream(id)->header("grpc-status") == "8");
    CHECK(contains(message_of(*c.stream(id)), "8198 bytes"));
  }
}

TEST_CASE(
    "proxy validate: a header list within the backend's limit waits for SETTINGS, then goes") {
  ProxyRig rig(config());
  SUBCASE("advertised 16 KiB") {
    rig.mode(kA).max_header_list_size = 16384;
  }
  SUBCASE("advertised nothing (unlimited)") {}
  H2Client& c = rig.client();
  int32_t id = c.submit(big_request(12000));
  int32_t small = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(c.stream(small)->grpc_status == 0);
  auto ex = exchanges(rig, kA);
  REQUIRE(ex.size() == 2);
  // Both waited for the backend's SETTINGS and went in the order they came.
  CHECK(ex[0]->headers.list_size() == 12000);  // what the client sent, as sent
  CHECK(ex[1]->header("x-big").empty());
}

TEST_CASE(
    "proxy validate: on a new connection every list is checked against what the backend "
    "advertises, however small") {
  // A backend with a 4 KiB limit: a 5,000-byte list is past it, though under what gRPC servers
  // advertise by default. Nothing goes out before the backend's SETTINGS, so it is refused on
  // the connection's first turn too, not only once the connection is known.
  ProxyRig rig(config());
  rig.mode(kA).max_header_list_size = 4096;
  H2Client& c = rig.client();
  int32_t big = c.submit(big_request(5000));
  int32_t fits = c.submit(big_request(4096));
  REQUIRE(rig.pump());
  CHECK(c.stream(big)->header("grpc-status") == "8");
  CHECK(contains(message_of(*c.stream(big)), "5000 bytes, more than the 4096"));
  CHECK(c.stream(fits)->grpc_status == 0);
  auto ex = exchanges(rig, kA);
  REQUIRE(ex.size() == 1);
  CHECK(ex[0]->headers.list_size() == 4096);
}

TEST_CASE("proxy validate: a waiting attempt whose connection fails is replayed elsewhere") {
  ProxyRig rig(two_endpoints("", "connect_timeout = \"60ms\""));
  rig.reactor().set_connect_result(kA, MemoryReactor::kHang);
  rig.mode(kB).max_header_list_size = 16384;
  H2Client& c = rig.client();
  for (int i = 0; i < 2; ++i) c.submit(big_request(9000));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(60));  // A's connect times out with an attempt waiting on it
  REQUIRE(c.all_closed());
  for (const H2Client::Stream* s : c.streams()) CHECK(s->grpc_status == 0);
  size_t replayed = 0;
  for (const EndedCall& e : rig.ended()) {
    if (e.rec.replays == 0) continue;
    ++replayed;
    CHECK(e.rec.tried[0] == kA);
    CHECK(e.rec.tried[1] == kB);
  }
  CHECK(replayed == 1);  // round robin: one of the two went to A first
  CHECK(exchanges(rig, kB).size() == 2);
}

TEST_CASE("proxy validate: a waiting attempt ends at the call's deadline, nothing sent") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "", "connect_timeout = \"500ms\""));
  rig.reactor().set_connect_result(kA, MemoryReactor::kHang);
  H2Client& c = rig.client();
  int32_t id = c.submit(big_request(9000, "100m"));
  REQUIRE(rig.pump());
  REQUIRE(rig.advance_ms(100));
  CHECK(c.stream(id)->header("grpc-status") == "4");
  REQUIRE(rig.advance_ms(500));  // the connect times out later, with nothing on it
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.grpc_status == 4);
  CHECK(rig.backend_count() == 0);
}

// The call state machine, driven in memory on a fake clock: phases, what the client and the
// backend see, the CallRecord handed to on_call_end (exactly once), deadlines, and what a plain
// (non-gRPC) HTTP/2 client gets when its request cannot be delivered.
#include <doctest/doctest.h>

#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;

TEST_CASE("proxy call: a unary call, phase by phase, and its record") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  const int64_t t0 = rig.clock.now_ns();
  const std::string req = pattern(100, 7);
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", req));
  REQUIRE(rig.pump());

  Call* call = rig.call(id);
  REQUIRE(call != nullptr);
  CHECK(call->phase() == Phase::kWaiting);
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 1);
  H2Backend::Exchange& ex = *b->exchanges()[0];
  CHECK(ex.ended);
  CHECK(ex.body == req);
  CHECK(ex.header(":path") == "/svc.Echo/Call");
  CHECK(ex.header("content-type") == "application/grpc");
  CHECK(ex.header("grpc-timeout").empty());  // no deadline anywhere: none is invented

  rig.clock.advance(5 * kMs);
  b->respond(ex.id);
  REQUIRE(rig.pump());
  // Headers alone are held: until a message comes, an UNAVAILABLE in the trailers could still
  // be retried elsewhere.
  CHECK(call->phase() == Phase::kWaiting);
  CHECK(c.stream(id)->status == 0);
  CHECK_FALSE(c.stream(id)->closed);

  const std::string resp = pattern(300, 8);
  b->send_data(ex.id, resp);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->status == 200);
  CHECK(c.stream(id)->body == resp);
  CHECK(call->phase() == Phase::kResponding);

  rig.clock.advance(3 * kMs);
  b->send_trailers(ex.id, 0);
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.close_code == 0);
  CHECK(s.grpc_status == 0);
  CHECK(s.trailers.find("grpc-status") == "0");
  CHECK(rig.call(id) == nullptr);  // back in the pool

  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(rig.ended()[0].path == "/svc.Echo/Call");
  CHECK(r.listener == 0);
  CHECK(r.route == -1);  // the listener's default cluster
  CHECK(r.cluster == 0);
  CHECK(r.attempts == 1);
  CHECK(r.replays == 0);
  CHECK(r.tried[0] == kA);
  CHECK(r.grpc);
  CHECK_FALSE(r.local);
  CHECK_FALSE(r.truncated);
  CHECK(r.message.empty());
  CHECK(r.http_status == 200);
  CHECK(r.grpc_status == 0);
  CHECK(r.start_ns == t0);
  CHECK(r.first_byte_ns == t0 + 5 * kMs);
  CHECK(r.end_ns == t0 + 8 * kMs);
  CHECK(r.request_bytes == req.size());
  CHECK(r.response_bytes == resp.size());
  CHECK(r.reset_code == 0);

  // Exactly once: nothing more is reported however long the loop runs.
  REQUIRE(rig.advance_ms(1000));
  CHECK(rig.ended().size() == 1);
}

TEST_CASE("proxy call: a trailers-only answer reaches the client as one HEADERS frame") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kTrailersOnly;
  rig.mode(kA).grpc_status = 5;
  rig.mode(kA).grpc_message = "no such thing";
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Get", pattern(10)));
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.status == 200);
  CHECK(s.headers.find("grpc-status") == "5");
  CHECK(s.headers.find("grpc-message") == "no such thing");
  CHECK(s.trailers.empty());
  CHECK(s.body_bytes == 0);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.grpc_status == 5);  // from the headers
  CHECK(r.http_status == 200);
  CHECK_FALSE(r.local);
  CHECK(r.first_byte_ns == r.start_ns);
  CHECK(r.response_bytes == 0);
}

TEST_CASE("proxy call: a streaming response; the whole answer queued while the client lags") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Stream/Watch", pattern(20)));
  c.set_reading(id, false);  // the client's stream window (64 KiB) is all ringlb may send
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  const int32_t bid = b->exchanges().at(0)->id;
  b->respond(bid);
  std::string resp;
  for (int i = 0; i < 8; ++i) {  // 8 messages of 20 KiB, one pump each
    std::string part = pattern(20 * 1024, 100 + i);
    resp += part;
    b->send_data(bid, part);
    REQUIRE(rig.pump());
    CHECK(rig.call(id)->phase() == Phase::kResponding);
  }
  b->send_trailers(bid, 0);
  REQUIRE(rig.pump());
  Call* call = rig.call(id);
  REQUIRE(call != nullptr);
  // The backend is done (its 160 KiB fit ringlb's 256 KiB stream window); the client is not.
  CHECK(call->phase() == Phase::kAnswered);
  CHECK(c.stream(id)->body_bytes <= 65535);
  CHECK_FALSE(c.stream(id)->closed);

  c.set_reading(id, true);
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.body == resp);
  CHECK(s.grpc_status == 0);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.response_bytes == resp.size());
  CHECK(rig.ended()[0].rec.grpc_status == 0);  // from the trailers
}

TEST_CASE("proxy call: a client RST_STREAM mid-call resets the upstream stream") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();

  SUBCASE("while the backend is answering") {
    int32_t id = c.submit(grpc_request("/svc.Stream/Watch", pattern(20)));
    REQUIRE(rig.pump());
    H2Backend::Exchange* ex = rig.backend(kA)->exchanges().at(0);
    rig.backend(kA)->respond(ex->id);
    rig.backend(kA)->send_data(ex->id, pattern(1000));
    REQUIRE(rig.pump());
    REQUIRE(c.stream(id)->body_bytes == 1000);
    rig.clock.advance(2 * kMs);
    c.reset(id, NGHTTP2_CANCEL);
    REQUIRE(rig.pump());
    CHECK(ex->rst_received);
    CHECK(ex->rst_code == NGHTTP2_CANCEL);
    CHECK(ex->closed);
    REQUIRE(rig.ended().size() == 1);
    const auto& r = rig.ended()[0].rec;
    CHECK(r.reset_code == NGHTTP2_CANCEL);
    CHECK(r.http_status == 200);
    CHECK(r.response_bytes == 1000);
    CHECK(r.end_ns == r.start_ns + 2 * kMs);
  }
  SUBCASE("before the backend answered, request still streaming") {
    Request req = grpc_request("/svc.Upload/Put", pattern(500));
    req.end = false;
    int32_t id = c.submit(req);
    REQUIRE(rig.pump());
    H2Backend::Exchange* ex = rig.backend(kA)->exchanges().at(0);
    CHECK(ex->body_bytes == 500);
    CHECK_FALSE(ex->ended);
    c.reset(id, NGHTTP2_CANCEL);
    REQUIRE(rig.pump());
    CHECK(ex->rst_received);
    CHECK(ex->rst_code == NGHTTP2_CANCEL);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.reset_code == NGHTTP2_CANCEL);
    CHECK(rig.ended()[0].rec.first_byte_ns == 0);
  }
  // The connection is fine: the next call goes through.
  rig.mode(kA).action = Action::kAnswer;
  int32_t next = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  CHECK(c.stream(next)->grpc_status == 0);
  CHECK(rig.ended().size() == 2);
}

TEST_CASE("proxy call: the deadline from grpc-timeout, on the fake clock") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10), "100m"));
  REQUIRE(rig.pump());
  H2Backend::Exchange* ex = rig.backend(kA)->exchanges().at(0);
  CHECK(grpc_timeout_ms(*ex) == 100);  // the time left, passed on

  REQUIRE(rig.advance_ms(99));
  CHECK_FALSE(c.stream(id)->closed);
  CHECK(rig.call(id)->phase() == Phase::kWaiting);
  CHECK_FALSE(ex->rst_received);

  REQUIRE(rig.advance_ms(1));
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.status == 200);
  CHECK(s.headers.find("grpc-status") == "4");  // trailers-only: DEADLINE_EXCEEDED
  CHECK(s.trailers.empty());
  CHECK(contains(percent_decode(s.headers.find("grpc-message")), "deadline exceeded"));
  CHECK(ex->rst_received);
  CHECK(ex->rst_code == NGHTTP2_CANCEL);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.grpc_status == 4);
  CHECK(r.local);
  CHECK(contains(r.message, "deadline exceeded before the backend answered"));
}

TEST_CASE("proxy call: a deadline that passes while the backend answers ends in trailers") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Stream/Watch", pattern(10), "50m"));
  REQUIRE(rig.pump());
  H2Backend::Exchange* ex = rig.backend(kA)->exchanges().at(0);
  rig.backend(kA)->respond(ex->id);
  rig.backend(kA)->send_data(ex->id, pattern(700));
  REQUIRE(rig.advance_ms(49));
  CHECK(c.stream(id)->body_bytes == 700);
  CHECK_FALSE(c.stream(id)->closed);
  REQUIRE(rig.advance_ms(1));
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.headers.find("grpc-status").empty());
  CHECK(s.trailers.find("grpc-status") == "4");
  CHECK(ex->rst_code == NGHTTP2_CANCEL);
  REQUIRE(rig.ended().size() == 1);
  CHECK(contains(rig.ended()[0].rec.message, "while the backend was answering"));
}

TEST_CASE("proxy call: the backend gets the smaller of the client's and the route's timeout") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  c.submit(grpc_request("/timed.Svc/A", pattern(10), "10S"));  // route: 250 ms
  c.submit(grpc_request("/timed.Svc/B", pattern(10), "100m"));
  c.submit(grpc_request("/timed.Svc/C", pattern(10)));
  c.submit(grpc_request("/other.Svc/D", pattern(10), "3S"));  // default cluster, no route cap
  REQUIRE(rig.pump());
  auto ex = exchanges(rig, kA);
  REQUIRE(ex.size() == 4);
  CHECK(grpc_timeout_ms(*ex[0]) == 250);
  CHECK(grpc_timeout_ms(*ex[1]) == 100);
  CHECK(grpc_timeout_ms(*ex[2]) == 250);
  CHECK(grpc_timeout_ms(*ex[3]) == 3000);
  // The route's deadline is enforced too.
  REQUIRE(rig.advance_ms(250));
  CHECK(c.streams()[0]->grpc_status == 4);
  CHECK(c.streams()[1]->grpc_status == 4);
  CHECK(c.streams()[2]->grpc_status == 4);
  CHECK_FALSE(c.streams()[3]->closed);
  REQUIRE(rig.ended().size() == 3);
  for (const EndedCall& e : rig.ended()) CHECK(e.rec.route == 0);
}

TEST_CASE("proxy call: plain HTTP/2 requests that cannot be delivered get text/plain errors") {
  SUBCASE("404: no route") {
    ProxyRig rig(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n"
        "routes = [{ prefix = \"/svc.\", cluster = \"c\" }]\n"
        "[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n");
    H2Client& c = rig.client();
    int32_t id = c.submit(plain_request("GET", "/nothing/here"));
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.status == 404);
    CHECK(s.headers.find("content-type") == "text/plain; charset=utf-8");
    CHECK(contains(s.body, "no route for path \"/nothing/here\""));
    CHECK(s.body.ends_with("\n"));
    CHECK(s.closed);
    CHECK(s.close_code == 0);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.http_status == 404);
    CHECK(rig.ended()[0].rec.cluster == -1);
    CHECK_FALSE(rig.ended()[0].rec.grpc);
    CHECK(rig.backend_count() == 0);
  }
  SUBCASE("503: the backend cannot be reached") {
    ProxyRig rig(config());
    rig.reactor().set_connect_result(kA, -ECONNREFUSED);
    H2Client& c = rig.client();
    int32_t id = c.submit(plain_request("POST", "/upload", pattern(100)));
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.status == 503);
    CHECK(s.headers.find("content-type") == "text/plain; charset=utf-8");
    CHECK(contains(s.body, "127.0.0.1:1"));
    CHECK(s.closed);
    CHECK(rig.ended().size() == 1);
  }
  SUBCASE("504: the route's deadline passed") {
    ProxyRig rig(config());
    rig.mode(kA).action = Action::kHold;
    H2Client& c = rig.client();
    int32_t id = c.submit(plain_request("GET", "/timed.page"));
    REQUIRE(rig.pump());
    CHECK_FALSE(c.stream(id)->closed);
    REQUIRE(rig.advance_ms(250));
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.status == 504);
    CHECK(s.headers.find("content-type") == "text/plain; charset=utf-8");
    CHECK(contains(s.body, "deadline exceeded"));
    CHECK(s.closed);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.http_status == 504);
  }
}

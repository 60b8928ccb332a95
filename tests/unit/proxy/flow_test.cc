// Flow control and bounds: one stalled stream never stalls the others on its connection (in
// either direction), the per-shard memory bound refuses new calls and withholds connection
// credit until buffers drain, and header lists past proxy.max_header_list_size end the call
// with RESOURCE_EXHAUSTED. Driven in memory on a fake clock.
#include <doctest/doctest.h>

#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;

namespace {

// The smallest windows the config allows (connection window = one stream's): a stream that
// holds its whole window holds the whole connection's, unless credit comes back on receipt.
const char* kTightWindows = "stream_buffer = \"64KiB\"\nconnection_window = \"64KiB\"";

}  // namespace

TEST_CASE("proxy flow: a client stream that never reads does not stall its upstream connection") {
  ProxyRig rig(config("\"127.0.0.1:1\"", kTightWindows));
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t stuck = c.submit(grpc_request("/svc.Stream/Watch", pattern(10)));
  c.set_reading(stuck, false);
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  const int32_t stuck_b = b->exchanges().at(0)->id;
  const std::string big = pattern(1024 * 1024, 5);
  b->respond(stuck_b);
  b->send_data(stuck_b, big);
  b->send_trailers(stuck_b, 0);
  REQUIRE(rig.pump());
  CHECK(c.stream(stuck)->body_bytes <= 65535);

  // Another call on the same client connection and the same upstream connection.
  rig.mode(kA).action = Action::kAnswer;
  const std::string resp = pattern(200 * 1024, 6);
  rig.mode(kA).response_body = resp;
  int32_t other = c.submit(grpc_request("/svc.Echo/Call", pattern(3000, 2)));
  REQUIRE(rig.pump());
  CHECK(rig.backends(kA).size() == 1);  // no second connection was needed
  const H2Client::Stream& s = *c.stream(other);
  CHECK(s.closed);
  CHECK(s.grpc_status == 0);
  CHECK(s.body == resp);
  CHECK_FALSE(c.stream(stuck)->closed);

  c.set_reading(stuck, true);
  REQUIRE(rig.pump());
  CHECK(c.stream(stuck)->closed);
  CHECK(c.stream(stuck)->body == big);
}

TEST_CASE("proxy flow: a backend stream that never reads does not stall its client connection") {
  ProxyRig rig(config("\"127.0.0.1:1\"", kTightWindows));
  rig.mode(kA).decide = [](H2Backend&, H2Backend::Exchange& e) {
    if (e.header(":path") == "/svc.Upload/Stuck") {
      e.reading = false;  // never gives this stream's window back
      return Action::kHold;
    }
    return Action::kAnswer;
  };
  H2Client& c = rig.client();
  const std::string big = pattern(1024 * 1024, 7);
  int32_t stuck = c.submit(grpc_request("/svc.Upload/Stuck", big));
  REQUIRE(rig.pump());
  H2Backend::Exchange* stuck_b = rig.backend(kA)->exchanges().at(0);
  CHECK(stuck_b->body_bytes < big.size());
  CHECK(c.stream(stuck)->sent < big.size());

  const std::string body = pattern(200 * 1024, 8);
  int32_t other = c.submit(grpc_request("/svc.Upload/Fine", body));
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(other);
  CHECK(s.closed);
  CHECK(s.grpc_status == 0);
  REQUIRE(rig.backend(kA)->exchanges().size() == 2);
  CHECK(rig.backend(kA)->exchanges()[1]->body == body);
  CHECK_FALSE(c.stream(stuck)->closed);

  rig.backend(kA)->set_reading(stuck_b->id, true);
  rig.mode(kA).decide = nullptr;
  REQUIRE(rig.pump());
  rig.backend(kA)->answer(stuck_b->id);
  REQUIRE(rig.pump());
  CHECK(stuck_b->body == big);
  CHECK(c.stream(stuck)->closed);
  CHECK(c.stream(stuck)->grpc_status == 0);
}

TEST_CASE(
    "proxy flow: over the memory bound the call holding the most is shed, and the "
    "calls sharing its connections go on") {
  // 64 KiB windows everywhere: nghttp2 sends a connection WINDOW_UPDATE once half the window is
  // consumed, so credit given back shows on the client.
  ProxyRig rig(config("\"127.0.0.1:1\"", kTightWindows));
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client(rig.add_client(0, 16 * 1024));  // 16 KiB stream windows

  // An upload under way (its response started with a message, so the call committed and its
  // body flows straight through).
  Request up = grpc_request("/svc.Upload/Put", pattern(1000));
  up.end = false;
  int32_t upload = c.submit(up);
  REQUIRE(rig.pump());
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  // The limit counts what the shard holds for its peers (sessions and calls too): 40 KiB more
  // than it holds now is below what one lagging stream makes ringlb hold.
  rig.ctx().set_buffer_limit(rig.ctx().held() + 40 * 1024);
  const int32_t upload_b = b->exchanges().at(0)->id;
  b->respond(upload_b);
  b->send_data(upload_b, pattern(5));  // a first message: the call commits to this backend
  REQUIRE(rig.pump());
  CHECK_FALSE(rig.ctx().over_buffer_limit());

  // A download the client does not read: ringlb would hold 64 KiB less the client's 16 KiB.
  int32_t down = c.submit(grpc_request("/svc.Download/Get", pattern(10)));
  c.set_reading(down, false);
  REQUIRE(rig.pump());
  const int32_t down_b = b->exchanges().at(1)->id;
  b->respond(down_b);
  b->send_data(down_b, pattern(200 * 1024, 9));
  REQUIRE(rig.pump());
  // It was shed: the client sees RST_STREAM(ENHANCE_YOUR_CALM), RESOURCE_EXHAUSTED to gRPC.
  CHECK_FALSE(rig.ctx().over_buffer_limit());
  CHECK(c.stream(down)->closed);
  CHECK(c.stream(down)->rst_code == NGHTTP2_ENHANCE_YOUR_CALM);
  CHECK(b->exchange(down_b)->rst_code == NGHTTP2_CANCEL);  // the backend saw the cancel
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.grpc_status == 8);
  CHECK(rig.ended()[0].rec.local);
  CHECK(contains(rig.ended()[0].rec.message, "proxy.memory_limit"));

  // The upload on the same connections goes on (in 8 KiB pieces: one 40 KiB gulp would itself
  // hold more than the 40 KiB of room), and its credit comes back.
  for (int k = 0; k < 5; ++k) {
    c.send_more(upload, pattern(8 * 1024, 10 + k), false);
    REQUIRE(rig.pump());
  }
  CHECK_FALSE(c.stream(upload)->closed);
  CHECK(b->exchange(upload_b)->body_bytes == 1000 + 40 * 1024);
  // Credit came back (nghttp2 updates once half the window is used: not all of it shows).
  CHECK(c.send_window() > 64 * 1024 - 1000 - 40 * 1024);

  // And new calls are served.
  int32_t later = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  b->answer(b->exchanges().back()->id);
  REQUIRE(rig.pump());
  CHECK(c.stream(later)->grpc_status == 0);
}

TEST_CASE(
    "proxy flow: while over the memory bound with nothing to shed, new calls get "
    "RESOURCE_EXHAUSTED and connection credit waits until the buffers drain") {
  ProxyRig rig(config("\"127.0.0.1:1\"", kTightWindows));
  // Calls holding less than 4 KiB each are not worth shedding: two responses 3,000 bytes past
  // what the client's 16 KiB windows take put the shard 6,000 bytes past what it held, over a
  // limit 4 KiB above that, and keep it there.
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client(rig.add_client(0, 16 * 1024));
  int32_t d1 = c.submit(grpc_request("/svc.Download/Get", pattern(10)));
  int32_t d2 = c.submit(grpc_request("/svc.Download/Get", pattern(10)));
  c.set_reading(d1, false);
  c.set_reading(d2, false);
  REQUIRE(rig.pump());
  rig.ctx().set_buffer_limit(rig.ctx().held() + 4 * 1024);
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  REQUIRE(b->exchanges().size() == 2);
  for (int k = 0; k < 2; ++k) {
    const int32_t id = b->exchanges().at(static_cast<size_t>(k))->id;
    b->respond(id);
    b->send_data(id, pattern(16 * 1024 + 3000, 3));
  }
  REQUIRE(rig.pump());
  REQUIRE(rig.ctx().over_buffer_limit());
  CHECK_FALSE(c.stream(d1)->closed);  // nothing shed
  CHECK_FALSE(c.stream(d2)->closed);
  const int32_t window = c.send_window();

  // A new call is refused at once, and the connection credit for its 40 KiB body is held back.
  int32_t refused = c.submit(grpc_request("/svc.Echo/Call", pattern(40 * 1024)));
  REQUIRE(rig.pump());
  CHECK(c.stream(refused)->closed);
  CHECK(c.stream(refused)->headers.find("grpc-status") == "8");
  CHECK(contains(percent_decode(c.stream(refused)->headers.find("grpc-message")),
                 "proxy.memory_limit"));
  CHECK(b->exchanges().size() == 2);  // it never reached the backend
  CHECK(c.send_window() <= window - 40 * 1024);

  // The client reads: the buffers drain and the withheld credit comes back.
  c.set_reading(d1, true);
  c.set_reading(d2, true);
  REQUIRE(rig.pump());
  CHECK_FALSE(rig.ctx().over_buffer_limit());
  CHECK(c.send_window() == 64 * 1024);
}

TEST_CASE("proxy flow: a request header list past proxy.max_header_list_size") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "max_header_list_size = \"1KiB\""));
  H2Client& c = rig.client();
  SUBCASE("gRPC: RESOURCE_EXHAUSTED") {
    Request r = grpc_request("/svc.Echo/Call", pattern(10));
    r.headers.add("x-big", std::string(1500, 'h'));
    int32_t id = c.submit(r);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.closed);
    CHECK(s.headers.find("grpc-status") == "8");
    CHECK(contains(percent_decode(s.headers.find("grpc-message")), "proxy.max_header_list_size"));
    CHECK(rig.backend_count() == 0);
    REQUIRE(rig.ended().size() == 1);
    CHECK(rig.ended()[0].rec.grpc_status == 8);
    CHECK(rig.ended()[0].rec.local);
  }
  SUBCASE("plain HTTP/2: 431") {
    Request r = plain_request("GET", "/page");
    r.headers.add("x-big", std::string(1500, 'h'));
    int32_t id = c.submit(r);
    REQUIRE(rig.pump());
    const H2Client::Stream& s = *c.stream(id);
    CHECK(s.status == 431);
    CHECK(s.headers.find("content-type") == "text/plain; charset=utf-8");
    CHECK(contains(s.body, "proxy.max_header_list_size"));
  }
  // The connection survives: a normal call goes through.
  int32_t ok = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  CHECK(c.stream(ok)->grpc_status == 0);
}

TEST_CASE("proxy flow: a response header list past the limit fails the call, ringlb resets it") {
  ProxyRig rig(config("\"127.0.0.1:1\"", "max_header_list_size = \"1KiB\""));
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  // Headers only, the stream left open on the backend, so ringlb's reset has a stream to end.
  rig.backend(kA)->respond(rig.backend(kA)->exchanges().at(0)->id, 200,
                           {{"x-big", std::string(1500, 'h')}});
  REQUIRE(rig.pump());
  const H2Client::Stream& s = *c.stream(id);
  CHECK(s.closed);
  CHECK(s.status == 200);
  CHECK(s.headers.find("grpc-status") == "8");
  std::string msg = percent_decode(s.headers.find("grpc-message"));
  CHECK(contains(msg, "proxy.max_header_list_size"));
  CHECK(contains(msg, "ringlb reset the stream"));
  REQUIRE(rig.backend(kA) != nullptr);
  H2Backend::Exchange* ex = rig.backend(kA)->exchanges().at(0);
  CHECK(ex->rst_received);  // ringlb's reset reached the backend
  CHECK(ex->rst_code == NGHTTP2_INTERNAL_ERROR);
  REQUIRE(rig.ended().size() == 1);
  const auto& r = rig.ended()[0].rec;
  CHECK(r.local);
  CHECK(r.grpc_status == 8);
  CHECK(contains(r.message, "ringlb reset the stream"));
  CHECK(r.attempts == 1);  // the backend got the request: never replayed
}

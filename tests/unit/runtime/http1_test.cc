// The admin's HTTP/1.1 request parser: whole and partial requests, keep-alive rules, every
// limit (head 431, body 413) and the malformed cases that must get a 4xx instead of a wait.
#include "core/runtime/http1.h"

#include <doctest/doctest.h>

#include <string>

namespace http1 = ringlb::core::runtime::http1;
using http1::ParseStatus;

namespace {
constexpr size_t kHead = 8192;
constexpr size_t kBody = 65536;
http1::ParseResult parse(std::string_view s) {
  return http1::parse_request(s, kHead, kBody);
}
}  // namespace

TEST_CASE("http1: a GET with a query, keep-alive by default in HTTP/1.1") {
  std::string req = "GET /test/stall?shard=1&ms=20 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";
  http1::ParseResult r = parse(req + "GET /next");
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == req.size());
  CHECK(r.request.method == "GET");
  CHECK(r.request.path == "/test/stall");
  CHECK(r.request.query == "shard=1&ms=20");
  CHECK(r.request.keep_alive);
  REQUIRE(r.request.header("user-agent") != nullptr);
  CHECK(*r.request.header("user-agent") == "t");
  CHECK(http1::query_param(r.request.query, "ms") == "20");
  CHECK(http1::query_param(r.request.query, "shard") == "1");
  CHECK_FALSE(http1::query_param(r.request.query, "x").has_value());
}

TEST_CASE("http1: partial requests wait; every prefix of a valid request is incomplete") {
  std::string req = "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  for (size_t n = 0; n < req.size(); ++n) {
    CAPTURE(n);
    CHECK(parse(req.substr(0, n)).status == ParseStatus::kIncomplete);
  }
  http1::ParseResult r = parse(req);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.request.body == "hello");
  CHECK(r.consumed == req.size());
}

TEST_CASE("http1: Connection header and HTTP/1.0") {
  CHECK_FALSE(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").request.keep_alive);
  CHECK_FALSE(parse("GET / HTTP/1.0\r\n\r\n").request.keep_alive);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").request.keep_alive);
}

TEST_CASE("http1: limits") {
  std::string big(kHead, 'a');
  // Over the head limit before the head is even complete: known at once, no waiting.
  CHECK(parse("GET / HTTP/1.1\r\nX: " + big).status == ParseStatus::kHeadTooLarge);
  CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nX: " + big + "\r\n\r\n").status ==
        ParseStatus::kHeadTooLarge);
  CHECK(parse("POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n").status ==
        ParseStatus::kBodyTooLarge);
  CHECK(parse("POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n").status ==
        ParseStatus::kIncomplete);
  CHECK(http1::status_for(ParseStatus::kHeadTooLarge) == 431);
  CHECK(http1::status_for(ParseStatus::kBodyTooLarge) == 413);
  CHECK(http1::status_for(ParseStatus::kBad) == 400);
}

TEST_CASE("http1: malformed requests are rejected, not waited on") {
  const char* bad[] = {
      "GET\r\n\r\n",
      "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
      "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET / HTTX/1.1\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Name: a\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n",  // no Host
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "GET / HTTP/1.1\nHost: a\n\n",
      "GET / HTTP/1.1\n",
      "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
  };
  for (const char* b : bad) {
    CAPTURE(b);
    http1::ParseResult r = parse(b);
    CHECK(r.status == ParseStatus::kBad);
    CHECK_FALSE(r.error.empty());
  }
  CHECK(parse("GET / HTTP/2.0\r\n\r\n").status == ParseStatus::kVersion);
  CHECK(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").status ==
        ParseStatus::kNotImplemented);
}

TEST_CASE("http1: responses") {
  std::string r = http1::response(404, "text/plain", "nope\n", true);
  CHECK(r.starts_with("HTTP/1.1 404 Not Found\r\n"));
  CHECK(r.find("Content-Length: 5\r\n") != std::string::npos);
  CHECK(r.find("Connection: keep-alive\r\n") != std::string::npos);
  CHECK(r.ends_with("\r\n\r\nnope\n"));
  std::string c = http1::response(405, "text/plain", "x", false, "Allow: POST\r\n");
  CHECK(c.find("Connection: close\r\n") != std::string::npos);
  CHECK(c.find("Allow: POST\r\n") != std::string::npos);
  std::string h = http1::response(200, "text/plain", "body", true, {}, true);
  CHECK(h.find("Content-Length: 4\r\n") != std::string::npos);
  CHECK(h.ends_with("\r\n\r\n"));
}

// The client side (`ringlb ready`, the ECS task metadata): responses as servers send them.
TEST_CASE("http1: responses with Content-Length, chunked, or delimited by the close") {
  std::string cl =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nready\n";
  for (size_t n = 0; n < cl.size(); ++n) {
    CAPTURE(n);
    CHECK(http1::parse_response(cl.substr(0, n), false).status == ParseStatus::kIncomplete);
    CHECK(http1::parse_response(cl.substr(0, n), true).status == ParseStatus::kBad);
  }
  http1::ResponseResult r = http1::parse_response(cl, false);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.response.status == 200);
  CHECK(r.response.body == "ready\n");
  REQUIRE(r.response.header("content-type") != nullptr);
  CHECK(*r.response.header("content-type") == "text/plain");

  // Go's net/http chunks a body it did not buffer whole (the ECS agent's task document).
  std::string ch =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\n{\"a\":\r\n3\r\n12}\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t n = 0; n < ch.size(); ++n) {
    CAPTURE(n);
    CHECK(http1::parse_response(ch.substr(0, n), false).status == ParseStatus::kIncomplete);
  }
  r = http1::parse_response(ch, true);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.response.body == "{\"a\":12}");

  // HTTP/1.0 style (python's http.server): the close ends the body.
  std::string closed = "HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\nwaiting for DNS\n";
  CHECK(http1::parse_response(closed, false).status == ParseStatus::kIncomplete);
  r = http1::parse_response(closed, true);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.response.status == 503);
  CHECK(r.response.body == "waiting for DNS\n");

  // 1xx interim answers are skipped; 204 has no body.
  r = http1::parse_response("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.response.status == 204);
  // A reason phrase is optional.
  CHECK(http1::parse_response("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false).status ==
        ParseStatus::kDone);
}

TEST_CASE("http1: malformed responses") {
  for (const char* bad :
       {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "SSH-2.0-x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 200 OK\r\nBad header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"}) {
    CAPTURE(bad);
    CHECK(http1::parse_response(bad, false).status == ParseStatus::kBad);
  }
  // Cut short: fewer bytes than Content-Length when the server closed.
  CHECK(http1::parse_response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", true).status ==
        ParseStatus::kBad);
}

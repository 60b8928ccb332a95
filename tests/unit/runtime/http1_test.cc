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

#include "proto/grpc.h"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

using namespace std::chrono_literals;
using ringlb::proto::decode_frame_header;
using ringlb::proto::encode_frame_header;
using ringlb::proto::format_grpc_timeout;
using ringlb::proto::FrameHeader;
using ringlb::proto::is_grpc_content_type;
using ringlb::proto::kFrameHeaderSize;
using ringlb::proto::parse_grpc_timeout;
using ringlb::proto::percent_decode;
using ringlb::proto::percent_encode;
using ringlb::proto::StatusCode;

namespace {

std::string format(std::chrono::nanoseconds d) {
  char buf[16];
  std::fill(std::begin(buf), std::end(buf), '#');
  const size_t len = format_grpc_timeout(d, buf);
  REQUIRE(len >= 2);
  REQUIRE(len <= 9);
  CHECK(buf[len] == '#');  // wrote no more than it reported
  return std::string(buf, len);
}

}  // namespace

TEST_CASE("grpc-timeout: valid values") {
  struct Case {
    std::string_view text;
    std::chrono::nanoseconds want;
  };
  const Case cases[] = {
      {"1n", 1ns},
      {"100m", 100ms},
      {"1S", 1s},
      {"5000u", 5ms},
      {"2M", 2min},
      {"3H", 3h},
      {"0m", 0ns},
      {"007S", 7s},
      {"99999999n", 99'999'999ns},
      {"99999999m", 99'999'999ms},
      {"12345678u", 12'345'678us},
      {"0n", 0ns},  // valid: the deadline has passed already (grpc-go and grpc-core agree)
      {"00000000H", 0ns},
      {"8640000S", std::chrono::hours(24 * 100)},  // exactly the cap
      {"2400H", std::chrono::hours(24 * 100)},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    auto got = parse_grpc_timeout(c.text);
    REQUIRE(got.has_value());
    CHECK(*got == c.want);
  }
}

TEST_CASE("grpc-timeout: valid but huge values are capped, never overflow") {
  using ringlb::proto::kMaxGrpcTimeout;
  CHECK(kMaxGrpcTimeout == std::chrono::hours(24 * 100));
  // 99999999H is about 11,400 years, past what int64 nanoseconds hold: it must neither wrap
  // negative nor fail, and the result must leave room to add any monotonic clock reading.
  for (std::string_view text :
       {"99999999H", "99999999M", "99999999S", "8640001S", "2401H", "144001M", "10000000H"}) {
    CAPTURE(text);
    auto got = parse_grpc_timeout(text);
    REQUIRE(got.has_value());
    CHECK(*got == kMaxGrpcTimeout);
  }
  // Just below the cap is exact.
  CHECK(*parse_grpc_timeout("2399H") == std::chrono::hours(2399));
  CHECK(*parse_grpc_timeout("8639999S") == std::chrono::seconds(8'639'999));
  // The cap re-encodes as a value any peer parses, and reads back as itself.
  CHECK(format(kMaxGrpcTimeout) == "8640000S");
  CHECK(*parse_grpc_timeout(format(kMaxGrpcTimeout)) == kMaxGrpcTimeout);
  // Added to a clock reading decades from its epoch, the deadline still does not overflow.
  const int64_t decades_ns = int64_t{50} * 365 * 24 * 3600 * 1'000'000'000;
  CHECK(decades_ns + kMaxGrpcTimeout.count() > decades_ns);
}

TEST_CASE("grpc-timeout: invalid values") {
  // "１S" starts with a full-width digit: UTF-8, not ASCII.
  // Units are H M S m u n only: "s", "h", "U", "N", "ms" are not units.
  const std::string_view cases[] = {
      "",     "S",      "m",   "1",    "100",  "123456789S", "000000000n", "1s",
      "1h",   "1U",     "1N",  "1ms",  "1x",   "1 S",        " 1S",        "1S ",
      "\t1S", "1S\r\n", "+1S", "-1S",  "-0S",  "1.5S",       "1SS",        "S1",
      "1e3m", "0x10m",  "１S", "1,0S", "1_0S", "99999999HH", "999999999H",
  };
  for (auto text : cases) {
    CAPTURE(text);
    CHECK_FALSE(parse_grpc_timeout(text).has_value());
  }
  CHECK_FALSE(parse_grpc_timeout(std::string_view("1\0S", 3)).has_value());  // embedded NUL
}

TEST_CASE("grpc-timeout: format picks the finest unit that fits in 8 digits") {
  CHECK(format(1ns) == "1n");
  CHECK(format(99'999'999ns) == "99999999n");
  CHECK(format(100ms) == "100000u");
  CHECK(format(1s) == "1000000u");
  CHECK(format(99'999'999us) == "99999999u");
  CHECK(format(100s) == "100000m");
  CHECK(format(1h) == "3600000m");
  CHECK(format(std::chrono::seconds(99'999'999)) == "99999999S");
  CHECK(format(std::chrono::seconds(100'000'000)) == "1666667M");
  CHECK(format(std::chrono::nanoseconds::max()) == "2562048H");
  // Beyond the cap, format still writes a valid value; parse reads it back as the cap.
  CHECK(*parse_grpc_timeout(format(std::chrono::nanoseconds::max())) ==
        ringlb::proto::kMaxGrpcTimeout);
}

TEST_CASE("grpc-timeout: format rounds up and never to zero") {
  CHECK(format(100'000'001ns) == "100001u");  // 100.000001 ms -> up to the next microsecond
  CHECK(format(100'000'000'001ns) == "100001m");
  CHECK(format(0ns) == "1n");  // expired: still a valid, minimal timeout
  CHECK(format(-5s) == "1n");
}

TEST_CASE("grpc-timeout: format/parse round trip never shortens the deadline") {
  std::chrono::nanoseconds samples[] = {
      1ns,
      7ns,
      999ns,
      1us,
      12'345'678ns,
      99'999'999ns,
      100'000'000ns,
      123'456'789ns,
      1s,
      30s,
      59min,
      25h,
      std::chrono::hours(24 * 99),
      ringlb::proto::kMaxGrpcTimeout,
  };
  for (auto d : samples) {
    CAPTURE(d.count());
    const std::string text = format(d);
    auto back = parse_grpc_timeout(text);
    REQUIRE(back.has_value());
    CHECK(*back >= d);
    // Longer by less than one unit of the chosen scale. A coarser unit is only chosen once the
    // value has at least 6 digits in it (8 digits / 1000, or / 60), so that is < 1e-5 of d.
    CHECK((*back - d).count() <= d.count() / 100'000);
    CHECK(format(*back) == text);  // stable once rounded
  }
  // Everything below 100 ms is exact in nanoseconds.
  for (int64_t ns = 1; ns < 100'000'000; ns = ns * 3 + 1) {
    CHECK(*parse_grpc_timeout(format(std::chrono::nanoseconds(ns))) ==
          std::chrono::nanoseconds(ns));
  }
}

TEST_CASE("framing: encode and decode the 5-byte header") {
  uint8_t buf[kFrameHeaderSize];
  encode_frame_header({false, 0x01020304}, buf);
  CHECK(buf[0] == 0);
  CHECK(buf[1] == 0x01);
  CHECK(buf[2] == 0x02);
  CHECK(buf[3] == 0x03);
  CHECK(buf[4] == 0x04);
  auto h = decode_frame_header(buf);
  REQUIRE(h.has_value());
  CHECK_FALSE(h->compressed);
  CHECK(h->length == 0x01020304u);

  for (FrameHeader in : {FrameHeader{true, 0}, FrameHeader{false, 0xFFFFFFFFu},
                         FrameHeader{true, 5}, FrameHeader{false, 0x80000000u}}) {
    encode_frame_header(in, buf);
    auto out = decode_frame_header(buf);
    REQUIRE(out.has_value());
    CHECK(out->compressed == in.compressed);
    CHECK(out->length == in.length);
  }
  encode_frame_header({true, 1}, buf);
  CHECK(buf[0] == 1);
}

TEST_CASE("framing: decode rejects bad flags and short input, ignores what follows") {
  const uint8_t bad_flag[] = {2, 0, 0, 0, 1};
  CHECK_FALSE(decode_frame_header(bad_flag).has_value());
  const uint8_t high_flag[] = {0x80, 0, 0, 0, 1};
  CHECK_FALSE(decode_frame_header(high_flag).has_value());

  const uint8_t full[] = {1, 0, 0, 1, 0, 0xAA, 0xBB};
  for (size_t len = 0; len < kFrameHeaderSize; ++len) {
    CAPTURE(len);
    CHECK_FALSE(decode_frame_header(std::span<const uint8_t>(full, len)).has_value());
  }
  auto h = decode_frame_header(full);  // a header followed by payload bytes
  REQUIRE(h.has_value());
  CHECK(h->compressed);
  CHECK(h->length == 256u);
}

TEST_CASE("grpc-message: percent encoding") {
  CHECK(percent_encode("") == "");
  CHECK(percent_encode("no upstream for /pkg.Svc/M") == "no upstream for /pkg.Svc/M");
  CHECK(percent_encode("100%") == "100%25");
  CHECK(percent_encode("a\nb\tc") == "a%0Ab%09c");
  CHECK(percent_encode(std::string_view("\0\x1f\x7f", 3)) == "%00%1F%7F");
  CHECK(percent_encode(" ~") == " ~");  // both ends of the printable range stay as they are
  CHECK(percent_encode("caf\xC3\xA9 \xE2\x82\xAC") == "caf%C3%A9 %E2%82%AC");  // "café €"
  CHECK(percent_encode("\xFF") == "%FF");
}

TEST_CASE("grpc-message: percent decoding") {
  CHECK(percent_decode("caf%C3%A9 %E2%82%AC") == "caf\xC3\xA9 \xE2\x82\xAC");
  CHECK(percent_decode("100%25") == "100%");
  CHECK(percent_decode("%0a%0A") == "\n\n");  // lower-case hex is accepted too
  CHECK(percent_decode("plain") == "plain");
  // Malformed escapes pass through unchanged.
  CHECK(percent_decode("%") == "%");
  CHECK(percent_decode("%4") == "%4");
  CHECK(percent_decode("%zz") == "%zz");
  CHECK(percent_decode("%G1x") == "%G1x");
  CHECK(percent_decode("50%%41") == "50%A");
  CHECK(percent_decode("ab%4") == "ab%4");
  CHECK(percent_decode(std::string_view("%00", 3)) == std::string("\0", 1));

  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string enc = percent_encode(all);
  for (char c : enc) {
    CHECK(static_cast<unsigned char>(c) >= 0x20);
    CHECK(static_cast<unsigned char>(c) <= 0x7E);
  }
  CHECK(percent_decode(enc) == all);
}

TEST_CASE("content-type: gRPC or not") {
  CHECK(is_grpc_content_type("application/grpc"));
  CHECK(is_grpc_content_type("application/grpc+proto"));
  CHECK(is_grpc_content_type("application/grpc+json"));
  CHECK(is_grpc_content_type("application/grpc;charset=utf-8"));
  CHECK_FALSE(is_grpc_content_type(""));
  CHECK_FALSE(is_grpc_content_type("application/grp"));
  CHECK_FALSE(is_grpc_content_type("application/grpcx"));
  CHECK_FALSE(is_grpc_content_type("application/grpc-web"));
  CHECK_FALSE(is_grpc_content_type("application/grpc-web+proto"));
  CHECK_FALSE(is_grpc_content_type("application/json"));
  CHECK_FALSE(is_grpc_content_type("Application/gRPC"));
  CHECK_FALSE(is_grpc_content_type(" application/grpc"));
  CHECK_FALSE(is_grpc_content_type("text/application/grpc"));
}

TEST_CASE("status codes: names and texts") {
  using ringlb::proto::status_name;
  using ringlb::proto::status_text;
  CHECK(status_name(StatusCode::kOk) == "OK");
  CHECK(status_name(StatusCode::kCancelled) == "CANCELLED");
  CHECK(status_name(StatusCode::kInvalidArgument) == "INVALID_ARGUMENT");
  CHECK(status_name(StatusCode::kDeadlineExceeded) == "DEADLINE_EXCEEDED");
  CHECK(status_name(StatusCode::kResourceExhausted) == "RESOURCE_EXHAUSTED");
  CHECK(status_name(StatusCode::kFailedPrecondition) == "FAILED_PRECONDITION");
  CHECK(status_name(StatusCode::kOutOfRange) == "OUT_OF_RANGE");
  CHECK(status_name(StatusCode::kUnavailable) == "UNAVAILABLE");
  CHECK(status_name(StatusCode::kDataLoss) == "DATA_LOSS");
  CHECK(status_name(StatusCode::kUnauthenticated) == "UNAUTHENTICATED");
  CHECK(status_text(StatusCode::kOk) == "0");
  CHECK(status_text(StatusCode::kDeadlineExceeded) == "4");
  CHECK(status_text(StatusCode::kUnavailable) == "14");
  CHECK(status_text(StatusCode::kUnauthenticated) == "16");
  for (int code = 0; code <= 16; ++code) {
    CHECK(status_text(static_cast<StatusCode>(code)) == std::to_string(code));
    CHECK_FALSE(status_name(static_cast<StatusCode>(code)).empty());
  }
  // Codes a peer might send that we do not know read as UNKNOWN, as gRPC clients do.
  CHECK(status_name(static_cast<StatusCode>(17)) == "UNKNOWN");
  CHECK(status_text(static_cast<StatusCode>(-1)) == "2");
}

TEST_CASE("quote_value: escaped, quoted and cut for messages") {
  using ringlb::proto::quote_value;
  CHECK(quote_value("1x") == "\"1x\"");
  CHECK(quote_value("") == "\"\"");
  CHECK(quote_value("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(quote_value(std::string_view("1\0S\n", 4)) == "\"1\\x00S\\x0A\"");
  CHECK(quote_value("caf\xC3\xA9") == "\"caf\\xC3\\xA9\"");
  CHECK(quote_value(std::string(9000, 'a'), 4) == "\"aaaa...\" (9000 bytes)");
  CHECK(quote_value("abcd", 4) == "\"abcd\"");  // exactly max: not cut
  // Whatever the input, the result is printable ASCII (safe in a log line and a grpc-message).
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  for (char c : quote_value(all, 256)) {
    CHECK(static_cast<unsigned char>(c) >= 0x20);
    CHECK(static_cast<unsigned char>(c) <= 0x7E);
  }
}

TEST_CASE("HTTP status to gRPC status, per gRPC's http-grpc-status-mapping.md") {
  using ringlb::proto::status_for_http;
  CHECK(status_for_http(400) == StatusCode::kInternal);
  CHECK(status_for_http(401) == StatusCode::kUnauthenticated);
  CHECK(status_for_http(403) == StatusCode::kPermissionDenied);
  CHECK(status_for_http(404) == StatusCode::kUnimplemented);
  CHECK(status_for_http(429) == StatusCode::kUnavailable);
  CHECK(status_for_http(502) == StatusCode::kUnavailable);
  CHECK(status_for_http(503) == StatusCode::kUnavailable);
  CHECK(status_for_http(504) == StatusCode::kUnavailable);
  // Everything else is UNKNOWN, 200 included (a 200 without grpc-status is no answer either).
  for (int other : {0, 100, 200, 204, 301, 302, 402, 405, 408, 431, 500, 501, 505, 599, 999, -1}) {
    CAPTURE(other);
    CHECK(status_for_http(other) == StatusCode::kUnknown);
  }
}

TEST_CASE("missing_status_message: names the upstream, the HTTP status and what came instead") {
  using ringlb::proto::missing_status_message;
  CHECK(missing_status_message("10.0.1.5:50051", 503, "text/html; charset=utf-8") ==
        "ringlb: upstream 10.0.1.5:50051 answered HTTP 503 (Service Unavailable) without "
        "grpc-status (content-type \"text/html; charset=utf-8\")");
  CHECK(missing_status_message("b:1", 200, "application/grpc") ==
        "ringlb: upstream b:1 answered HTTP 200 (OK) without grpc-status");
  CHECK(missing_status_message("b:1", 418, "") ==
        "ringlb: upstream b:1 answered HTTP 418 without grpc-status (no content-type)");
  CHECK(missing_status_message("b:1", 0, "application/grpc+proto") ==
        "ringlb: upstream b:1 answered without an HTTP status or grpc-status");
  // A hostile content-type is escaped and cut.
  const std::string msg = missing_status_message("b:1", 502, std::string(500, '\n'));
  CHECK(msg.size() < 400);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find("(500 bytes)") != std::string::npos);
}

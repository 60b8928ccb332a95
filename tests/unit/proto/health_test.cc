// grpc.health.v1 by hand: the request bytes a protobuf encoder writes, and a response decoder
// that skips what it does not know and refuses what is not a message.
#include "proto/health.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

using ringlb::proto::decode_health_response;
using ringlb::proto::encode_health_request;
using ringlb::proto::serving_status_name;
using ringlb::proto::ServingStatus;

namespace {

std::optional<ServingStatus> decode(std::vector<uint8_t> bytes) {
  return decode_health_response(bytes);
}

}  // namespace

TEST_SUITE("proto.health") {
  TEST_CASE("request: empty service is the empty message; else field 1 as a string") {
    CHECK(encode_health_request("").empty());
    CHECK(encode_health_request("a.B") == std::string("\x0a\x03"
                                                      "a.B"));
    // A name of 200 bytes needs a two-byte length varint (200 = 0xc8 0x01).
    std::string name(200, 'x');
    std::string want = std::string("\x0a\xc8\x01") + name;
    CHECK(encode_health_request(name) == want);
  }

  TEST_CASE("response: the four statuses, and proto3's default") {
    CHECK(decode({0x08, 0x01}) == ServingStatus::kServing);
    CHECK(decode({0x08, 0x02}) == ServingStatus::kNotServing);
    CHECK(decode({0x08, 0x03}) == ServingStatus::kServiceUnknown);
    CHECK(decode({0x08, 0x00}) == ServingStatus::kUnknown);
    CHECK(decode({}) == ServingStatus::kUnknown);  // status not written: UNKNOWN
  }

  TEST_CASE("response: unknown fields are skipped, the last status wins") {
    // field 2 varint 300, field 3 "hi", field 4 fixed32, field 5 fixed64, then status.
    CHECK(decode({0x10, 0xac, 0x02, 0x1a, 0x02, 'h', 'i', 0x25, 1, 2,    3,   4,
                  0x29, 1,    2,    3,    4,    5,   6,   7,    8, 0x08, 0x01}) ==
          ServingStatus::kServing);
    CHECK(decode({0x08, 0x01, 0x08, 0x02}) == ServingStatus::kNotServing);
    // A newer server's status value is kept as it is (and is not SERVING).
    auto s = decode({0x08, 0x07});
    REQUIRE(s.has_value());
    CHECK(static_cast<int>(*s) == 7);
    CHECK(serving_status_name(*s) == "status 7");
  }

  TEST_CASE("response: malformed bytes are refused") {
    CHECK_FALSE(decode({0x08}).has_value());                          // varint missing
    CHECK_FALSE(decode({0x08, 0x80}).has_value());                    // varint cut short
    CHECK_FALSE(decode({0x1a, 0x05, 'a'}).has_value());               // length past the end
    CHECK_FALSE(decode({0x25, 1, 2}).has_value());                    // fixed32 cut short
    CHECK_FALSE(decode({0x0b}).has_value());                          // a group (wire type 3)
    CHECK_FALSE(decode({0x00, 0x01}).has_value());                    // field number 0
    CHECK_FALSE(decode(std::vector<uint8_t>(11, 0xff)).has_value());  // varint too long
  }

  TEST_CASE("status names") {
    CHECK(serving_status_name(ServingStatus::kServing) == "SERVING");
    CHECK(serving_status_name(ServingStatus::kNotServing) == "NOT_SERVING");
    CHECK(serving_status_name(ServingStatus::kServiceUnknown) == "SERVICE_UNKNOWN");
    CHECK(serving_status_name(ServingStatus::kUnknown) == "UNKNOWN");
  }
}

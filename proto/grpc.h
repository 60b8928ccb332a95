#pragma once
// gRPC wire helpers: status codes, grpc-timeout, grpc-message percent-encoding and the 5-byte
// message framing. Pure functions; usable from any thread. Never includes core/.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ringlb::proto {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

/// "OK", "CANCELLED", ... "UNAUTHENTICATED".
std::string_view status_name(StatusCode code);
/// The decimal text of the code ("14"), a static string.
std::string_view status_text(StatusCode code);

/// Parses a grpc-timeout header value ("100m", "1S", "5000u": 1-8 ASCII digits then one of
/// H M S m u n). Returns nullopt for anything else.
std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value);
/// Formats a duration as a grpc-timeout value (at most 8 digits, the finest unit that fits).
/// Writes into `out` (needs >= 9 bytes) and returns the length.
size_t format_grpc_timeout(std::chrono::nanoseconds d, char* out);

/// Percent-encodes a grpc-message per the gRPC HTTP/2 spec (bytes outside 0x20..0x7E and '%').
std::string percent_encode(std::string_view message);
/// Decodes percent-encoding; invalid escapes pass through unchanged.
std::string percent_decode(std::string_view encoded);

/// The 5-byte length-prefixed message header: compressed flag + big-endian length.
struct FrameHeader {
  bool compressed = false;
  uint32_t length = 0;
};
constexpr size_t kFrameHeaderSize = 5;
void encode_frame_header(FrameHeader h, uint8_t out[kFrameHeaderSize]);
/// Returns nullopt if fewer than 5 bytes or the flag byte is not 0 or 1.
std::optional<FrameHeader> decode_frame_header(std::span<const uint8_t> in);

/// True if a content-type header value names gRPC ("application/grpc", "application/grpc+proto",
/// "application/grpc;..." ).
bool is_grpc_content_type(std::string_view value);

}  // namespace ringlb::proto

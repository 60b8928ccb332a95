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

/// The longest timeout parse_grpc_timeout returns: 100 days. The grammar reaches 99999999H
/// (about 11,400 years, past int64 nanoseconds); any such value means "practically never", and a
/// cap keeps `now + timeout` far from overflow on any clock reading. 100 days is well past the
/// longest route timeout the config accepts (7 days) and past any connection's life, and it
/// re-encodes as "2400H", which every peer parses.
inline constexpr std::chrono::nanoseconds kMaxGrpcTimeout = std::chrono::hours(24 * 100);

/// Parses a grpc-timeout header value per the gRPC HTTP/2 spec: 1 to 8 ASCII digits, then
/// exactly one unit, H M S m u or n (case matters: "1s" is not a unit). No sign, no spaces, no
/// ninth digit. Returns nullopt for anything else (invalid: the call must not be forwarded with
/// it); a valid value above kMaxGrpcTimeout comes back as kMaxGrpcTimeout. "0n" is valid (the
/// deadline has already passed), as grpc-go and grpc-core read it.
std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value);
/// Formats a duration as a grpc-timeout value (at most 8 digits, the finest unit that fits).
/// Writes into `out` (needs >= 9 bytes) and returns the length.
size_t format_grpc_timeout(std::chrono::nanoseconds d, char* out);

/// `value` for a human-readable message: in double quotes, bytes outside printable ASCII and '"'
/// and '\\' escaped C-style (\xNN), cut after `max` input bytes with "..." and the full length
/// ("\"aaaa...\" (9000 bytes)"). For naming a bad header value a peer sent.
std::string quote_value(std::string_view value, size_t max = 32);

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

/// The gRPC status for an HTTP response status when the response carries no grpc-status, per
/// gRPC's doc/http-grpc-status-mapping.md: 400 INTERNAL, 401 UNAUTHENTICATED, 403
/// PERMISSION_DENIED, 404 UNIMPLEMENTED, 429 502 503 504 UNAVAILABLE, anything else (200
/// included: a 200 without grpc-status is no answer either) UNKNOWN.
StatusCode status_for_http(int http_status);
/// The reason phrase of an HTTP status ringlb may meet ("Service Unavailable"), or "" if it has
/// none here.
std::string_view http_reason(int http_status);
/// The grpc-message for a gRPC call whose upstream `upstream` answered without grpc-status:
/// HTTP `http_status` (0 if it had none), its content-type as sent (may be empty). Says what
/// came instead, so the client's error names the real cause, e.g.
/// "ringlb: upstream 10.0.1.5:50051 answered HTTP 503 (Service Unavailable) without
/// grpc-status (content-type \"text/html\")".
std::string missing_status_message(std::string_view upstream, int http_status,
                                   std::string_view content_type);

/// True if a content-type header value names gRPC ("application/grpc", "application/grpc+proto",
/// "application/grpc;..." ).
bool is_grpc_content_type(std::string_view value);

}  // namespace ringlb::proto

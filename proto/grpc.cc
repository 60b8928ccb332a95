#include "proto/grpc.h"

#include <array>
#include <string>

namespace ringlb::proto {

namespace {

constexpr std::array<std::string_view, 17> kStatusNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

constexpr std::array<std::string_view, 17> kStatusTexts = {
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
};

// gRPC clients treat a code they do not know as UNKNOWN; a value outside the enum (a bad cast
// from an upstream's grpc-status) is mapped the same way rather than indexing out of bounds.
size_t status_index(StatusCode code) {
  const auto i = static_cast<unsigned>(code);
  return i < kStatusNames.size() ? i : static_cast<size_t>(StatusCode::kUnknown);
}

struct TimeoutUnit {
  char letter;
  int64_t nanos;
};
// Finest first: format_grpc_timeout takes the first unit whose value fits in 8 digits.
constexpr std::array<TimeoutUnit, 6> kTimeoutUnits = {{
    {'n', 1},
    {'u', 1'000},
    {'m', 1'000'000},
    {'S', 1'000'000'000},
    {'M', 60'000'000'000},
    {'H', 3'600'000'000'000},
}};
constexpr int64_t kMaxTimeoutValue = 99'999'999;  // 8 digits, the spec's limit

constexpr char kHexUpper[] = "0123456789ABCDEF";

// The spec's set: printable ASCII passes except '%', which must be escaped to stay decodable.
bool needs_escape(unsigned char b) {
  return b < 0x20 || b > 0x7E || b == '%';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::string_view status_name(StatusCode code) {
  return kStatusNames[status_index(code)];
}

std::string_view status_text(StatusCode code) {
  return kStatusTexts[status_index(code)];
}

std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value) {
  // 1..8 digits plus the unit letter. Signs, spaces and a 9th digit are all rejected here, so
  // the digit loop below cannot overflow.
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  int64_t amount = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    amount = amount * 10 + (c - '0');
  }
  const char letter = value.back();
  for (const auto& unit : kTimeoutUnits) {
    if (unit.letter != letter) continue;
    // Compared in units, not nanoseconds: 99999999H in nanoseconds would overflow int64.
    if (amount > kMaxGrpcTimeout.count() / unit.nanos) return kMaxGrpcTimeout;
    return std::chrono::nanoseconds(amount * unit.nanos);
  }
  return std::nullopt;
}

size_t format_grpc_timeout(std::chrono::nanoseconds d, char* out) {
  const int64_t ns = d.count();
  if (ns <= 0) {
    // An expired deadline still has to travel as a valid value; 1n makes the upstream expire the
    // call at once (grpc-core sends the same). "0" would read as "no time" to some peers and
    // as a parse error to those that require a positive value.
    out[0] = '1';
    out[1] = 'n';
    return 2;
  }
  for (const auto& unit : kTimeoutUnits) {
    // ceil(ns / unit) fits in 8 digits iff ns <= 99999999 * unit: one compare per unit and a
    // single division at the end. Hours always fit (int64 ns is ~2.6 million hours), and
    // 99999999 hours in ns would overflow the product, so they skip the test.
    if (unit.letter != 'H' && ns > kMaxTimeoutValue * unit.nanos) continue;
    // Round up: a deadline may grow by less than one unit but must never shrink (and never to 0).
    const int64_t amount = ns / unit.nanos + (ns % unit.nanos != 0 ? 1 : 0);
    char digits[8];
    size_t len = 0;
    int64_t rest = amount;
    do {
      digits[len++] = static_cast<char>('0' + rest % 10);
      rest /= 10;
    } while (rest != 0);
    for (size_t i = 0; i < len; ++i) out[i] = digits[len - 1 - i];
    out[len] = unit.letter;
    return len + 1;
  }
  // int64 nanoseconds top out near 2.6 million hours, which always fits the last unit.
  __builtin_unreachable();
}

std::string quote_value(std::string_view value, size_t max) {
  const std::string_view shown = value.substr(0, max);
  std::string out;
  out.reserve(shown.size() + 24);
  out.push_back('"');
  for (char c : shown) {
    const auto b = static_cast<unsigned char>(c);
    if (b == '"' || b == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (b < 0x20 || b > 0x7E) {
      out += "\\x";
      out.push_back(kHexUpper[b >> 4]);
      out.push_back(kHexUpper[b & 0x0F]);
    } else {
      out.push_back(c);
    }
  }
  if (shown.size() < value.size()) {
    out += "...\" (" + std::to_string(value.size()) + " bytes)";
  } else {
    out.push_back('"');
  }
  return out;
}

std::string percent_encode(std::string_view message) {
  // Size first, then fill: one allocation, and most messages are plain ASCII (escaped == 0).
  size_t escaped = 0;
  for (char c : message) escaped += needs_escape(static_cast<unsigned char>(c));
  if (escaped == 0) return std::string(message);
  std::string out(message.size() + 2 * escaped, '\0');
  char* p = out.data();
  for (char c : message) {
    const auto b = static_cast<unsigned char>(c);
    if (!needs_escape(b)) {
      *p++ = c;
    } else {
      *p++ = '%';
      *p++ = kHexUpper[b >> 4];
      *p++ = kHexUpper[b & 0x0F];
    }
  }
  return out;
}

std::string percent_decode(std::string_view encoded) {
  // The spec asks receivers to pass malformed escapes through rather than fail the call: the
  // message is for humans, and losing it helps nobody.
  std::string out;
  out.reserve(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size()) {
      const int hi = hex_value(encoded[i + 1]);
      const int lo = hex_value(encoded[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi << 4 | lo));
        i += 2;
        continue;
      }
    }
    out.push_back(encoded[i]);
  }
  return out;
}

void encode_frame_header(FrameHeader h, uint8_t out[kFrameHeaderSize]) {
  out[0] = h.compressed ? 1 : 0;
  out[1] = static_cast<uint8_t>(h.length >> 24);
  out[2] = static_cast<uint8_t>(h.length >> 16);
  out[3] = static_cast<uint8_t>(h.length >> 8);
  out[4] = static_cast<uint8_t>(h.length);
}

std::optional<FrameHeader> decode_frame_header(std::span<const uint8_t> in) {
  if (in.size() < kFrameHeaderSize) return std::nullopt;
  // Flag values other than 0 and 1 are reserved; accepting them would let a corrupt or
  // misaligned stream be read as a valid length.
  if (in[0] > 1) return std::nullopt;
  FrameHeader h;
  h.compressed = in[0] == 1;
  h.length = uint32_t{in[1]} << 24 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 8 | in[4];
  return h;
}

StatusCode status_for_http(int http_status) {
  switch (http_status) {
    case 400:
      return StatusCode::kInternal;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return StatusCode::kUnavailable;
    default:
      return StatusCode::kUnknown;
  }
}

std::string_view http_reason(int http_status) {
  switch (http_status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return {};
  }
}

std::string missing_status_message(std::string_view upstream, int http_status,
                                   std::string_view content_type) {
  std::string msg = "ringlb: upstream ";
  msg += upstream;
  if (http_status <= 0) {
    msg += " answered without an HTTP status or grpc-status";
  } else {
    msg += " answered HTTP " + std::to_string(http_status);
    if (std::string_view reason = http_reason(http_status); !reason.empty()) {
      msg += " (";
      msg += reason;
      msg += ')';
    }
    msg += " without grpc-status";
  }
  // The content-type says what answered instead (an HTML error page from a sidecar, a plain
  // HTTP server on the gRPC port), which is what the person reading the error needs.
  if (content_type.empty()) {
    msg += " (no content-type)";
  } else if (!is_grpc_content_type(content_type)) {
    msg += " (content-type " + quote_value(content_type, 64) + ")";
  }
  return msg;
}

bool is_grpc_content_type(std::string_view value) {
  // Case-sensitive like grpc-go and grpc-java: the spec spells it this way, and a loose match
  // would route plain HTTP that merely mentions grpc into the gRPC path.
  constexpr std::string_view kBase = "application/grpc";
  if (!value.starts_with(kBase)) return false;
  if (value.size() == kBase.size()) return true;
  const char next = value[kBase.size()];
  return next == '+' || next == ';';
}

}  // namespace ringlb::proto

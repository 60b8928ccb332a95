#include "proto/health.h"

namespace ringlb::proto {
namespace {

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// Reads a varint at `p`; false if it runs past `end` or past 10 bytes.
bool get_varint(const uint8_t*& p, const uint8_t* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p == end) return false;
    uint8_t b = *p++;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Skips one field's value of wire type `type`; false if malformed.
bool skip_field(const uint8_t*& p, const uint8_t* end, uint32_t type) {
  uint64_t v;
  switch (type) {
    case 0:
      return get_varint(p, end, v);
    case 1:
      if (end - p < 8) return false;
      p += 8;
      return true;
    case 2:
      if (!get_varint(p, end, v) || v > static_cast<uint64_t>(end - p)) return false;
      p += v;
      return true;
    case 5:
      if (end - p < 4) return false;
      p += 4;
      return true;
    default:
      return false;  // groups (3, 4) are proto2 only; 6 and 7 do not exist
  }
}

}  // namespace

std::string serving_status_name(ServingStatus s) {
  switch (s) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "status " + std::to_string(static_cast<int>(s));
}

std::string encode_health_request(std::string_view service) {
  std::string out;
  if (service.empty()) return out;  // proto3: a default field is not written
  out.push_back('\x0a');            // field 1, length-delimited
  put_varint(out, service.size());
  out.append(service);
  return out;
}

std::optional<ServingStatus> decode_health_response(std::span<const uint8_t> message) {
  const uint8_t* p = message.data();
  const uint8_t* end = p + message.size();
  ServingStatus status = ServingStatus::kUnknown;
  while (p != end) {
    uint64_t tag;
    if (!get_varint(p, end, tag) || (tag >> 3) == 0) return std::nullopt;
    const auto type = static_cast<uint32_t>(tag & 7);
    if ((tag >> 3) == 1 && type == 0) {
      uint64_t v;
      if (!get_varint(p, end, v)) return std::nullopt;
      status = static_cast<ServingStatus>(static_cast<int32_t>(v));  // enums are int32
      continue;                                                      // the last one wins
    }
    if (!skip_field(p, end, type)) return std::nullopt;
  }
  return status;
}

}  // namespace ringlb::proto

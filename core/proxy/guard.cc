#include "core/proxy/guard.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace ringlb::core::proxy {
namespace {

// Before a peer has earned any: the allowance every connection starts with (Envoy's base for
// the same proportional limits).
constexpr uint64_t kFrameAllowance = 100;
// An address entry untouched this long may make room for another.
constexpr int64_t kAddressIdleNs = 10'000'000'000;

}  // namespace

std::string_view abuse_label(size_t r) {
  static constexpr std::string_view kNames[kAbuseReasons] = {
      "reset_rate", "address_reset_rate", "header_list",    "empty_frames", "window_updates",
      "priority",   "control_frames",     "outbound_flood", "protocol",     "continuations"};
  return r < kAbuseReasons ? kNames[r] : "unknown";
}

std::string_view timeout_label(size_t s) {
  static constexpr std::string_view kNames[kTimeoutStages] = {"handshake", "headers", "body",
                                                              "send", "idle"};
  return s < kTimeoutStages ? kNames[s] : "unknown";
}

bool TokenBucket::take(int64_t now_ns, uint32_t rate, uint32_t burst) {
  if (last_ns_ < 0) {
    tokens_ = burst;
  } else if (now_ns > last_ns_) {
    tokens_ =
        std::min<double>(burst, tokens_ + static_cast<double>(now_ns - last_ns_) * rate / 1e9);
  }
  last_ns_ = std::max(last_ns_, now_ns);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

std::optional<AbuseReason> FrameGuard::on_frame(const config::LimitsConfig& l, int64_t now_ns,
                                                uint8_t type, uint8_t flags, size_t length) {
  const bool end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
      // An empty DATA that ends the stream is how some clients half-close: not empty.
      if (length == 0 && !(type == NGHTTP2_DATA && end_stream)) {
        if (++empty_run_ > l.max_empty_frames) return AbuseReason::kEmptyFrames;
      } else {
        empty_run_ = 0;
      }
      break;
    case NGHTTP2_WINDOW_UPDATE:
      if (++window_updates_ > kFrameAllowance + l.window_updates_per_data_frame * data_sent_) {
        return AbuseReason::kWindowUpdates;
      }
      break;
    case NGHTTP2_PRIORITY:
      if (++priorities_ > kFrameAllowance + uint64_t{l.priority_per_stream} * streams_) {
        return AbuseReason::kPriority;
      }
      break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
      if ((flags & NGHTTP2_FLAG_ACK) == 0 &&
          !control_.take(now_ns, l.control_rate, l.control_burst)) {
        return AbuseReason::kControlFrames;
      }
      break;
    default:
      break;
  }
  return std::nullopt;
}

AddressKey AddressKey::of(const sockaddr_storage& a) {
  AddressKey k;
  if (a.ss_family == AF_INET6) {
    std::memcpy(k.bytes.data(), &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, 16);
    k.valid = true;
  } else if (a.ss_family == AF_INET) {
    k.bytes[10] = k.bytes[11] = 0xff;
    std::memcpy(k.bytes.data() + 12, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, 4);
    k.valid = true;
  }
  return k;
}

size_t AddressGuard::Hash::operator()(const AddressKey& k) const {
  uint64_t a, b;
  std::memcpy(&a, k.bytes.data(), 8);
  std::memcpy(&b, k.bytes.data() + 8, 8);
  return static_cast<size_t>((a * 0x9E3779B97F4A7C15ull) ^ (b + (b >> 29)) * 0xBF58476D1CE4E5B9ull);
}

bool AddressGuard::refused(const AddressKey& a, int64_t now_ns) const {
  if (!a.valid || table_.empty()) return false;
  auto it = table_.find(a);
  return it != table_.end() && it->second.refused_until_ns > now_ns;
}

AddressGuard::Entry* AddressGuard::find_or_add(const AddressKey& a, int64_t now_ns) {
  if (!a.valid) return nullptr;
  if (auto it = table_.find(a); it != table_.end()) return &it->second;
  if (table_.size() >= kMaxEntries) {
    std::erase_if(table_, [&](const auto& kv) {
      return kv.second.refused_until_ns <= now_ns && now_ns - kv.second.last_ns > kAddressIdleNs;
    });
    if (table_.size() >= kMaxEntries) return nullptr;
  }
  return &table_[a];
}

bool AddressGuard::on_reset(const config::LimitsConfig& l, const AddressKey& a, int64_t now_ns) {
  if (l.address_reset_rate == 0) return true;
  Entry* e = find_or_add(a, now_ns);
  if (e == nullptr) return true;
  e->last_ns = now_ns;
  return e->resets.take(now_ns, l.address_reset_rate, l.address_reset_burst);
}

void AddressGuard::refuse(const config::LimitsConfig& l, const AddressKey& a, int64_t now_ns) {
  if (l.refuse_for.count() <= 0) return;
  Entry* e = find_or_add(a, now_ns);
  if (e == nullptr) return;
  e->last_ns = now_ns;
  e->refused_until_ns = now_ns + l.refuse_for.count();
}

}  // namespace ringlb::core::proxy

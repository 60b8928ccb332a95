#pragma once
// Guards against hostile clients: what a downstream connection counts about its peer's frames,
// and what a shard remembers per client address, so that a peer that abuses HTTP/2 (rapid
// reset, floods of empty or control frames, header-list bombs) costs only itself. Every limit
// comes from config::LimitsConfig; a limit that trips names an AbuseReason, which the connection
// turns into GOAWAY(ENHANCE_YOUR_CALM) and a counter. Owner: one shard.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "core/config/config.h"

namespace ringlb::core::proxy {

/// Why a client connection was sent away (ListenerCounters::abuse; the GOAWAY's debug data).
enum class AbuseReason : uint8_t {
  kResetRate,         // streams reset or refused faster than limits.reset_rate
  kAddressResetRate,  // ... from one address, over its connections (limits.address_reset_rate)
  kHeaderList,        // a second request header list past proxy.max_header_list_size
  kEmptyFrames,       // limits.max_empty_frames empty frames in a row
  kWindowUpdates,     // WINDOW_UPDATE frames out of proportion to the DATA frames sent
  kPriority,          // PRIORITY frames out of proportion to the streams opened
  kControlFrames,     // PING/SETTINGS faster than limits.control_rate
  kOutboundFlood,     // control frames queued for a client that does not read (nghttp2 FLOODED)
  kProtocol,          // a protocol violation nghttp2 does not see (a stream id going backwards)
  kContinuations,     // a header block split into too many CONTINUATION frames
};
inline constexpr size_t kAbuseReasons = 10;
/// "reset_rate", "address_reset_rate", "header_list", "empty_frames", "window_updates",
/// "priority", "control_frames", "outbound_flood", "protocol", "continuations".
std::string_view abuse_label(size_t r);

/// Which stage of a client connection took too long (ListenerCounters::timeouts).
enum class TimeoutStage : uint8_t {
  kHandshake,  // proxy.handshake_timeout: no preface and SETTINGS
  kHeaders,    // proxy.header_timeout: a header block left incomplete
  kBody,       // proxy.body_timeout: a request body stalled
  kSend,       // proxy.send_timeout: a response the client does not read
  kIdle,       // proxy.idle_timeout: no stream
};
inline constexpr size_t kTimeoutStages = 5;
/// "handshake", "headers", "body", "send", "idle".
std::string_view timeout_label(size_t s);

/// A token bucket that starts full: `burst` events at once, then `rate` per second.
class TokenBucket {
 public:
  /// Takes one token; false when none is left (the limit tripped).
  bool take(int64_t now_ns, uint32_t rate, uint32_t burst);
  /// Gives one token back (up to `burst`): earned by a stream that completed normally, so a
  /// busy client's share of cancelled calls (deadlines) never looks like an attack.
  void refund(uint32_t burst) {
    if (last_ns_ >= 0 && tokens_ < burst) tokens_ += 1.0;
  }

 private:
  int64_t last_ns_ = -1;  // -1: full, never used
  double tokens_ = 0;
};

/// What one connection counts of its peer's frames (nghttp2's on_begin_frame sees each frame
/// header, CONTINUATION included, before its payload is processed).
class FrameGuard {
 public:
  /// The frame header just read. A reason if a limit tripped.
  std::optional<AbuseReason> on_frame(const config::LimitsConfig& l, int64_t now_ns, uint8_t type,
                                      uint8_t flags, size_t length);
  /// A stream was opened by the peer / a DATA frame was sent to it.
  void on_stream_opened() { ++streams_; }
  void on_data_sent() { ++data_sent_; }

 private:
  TokenBucket control_;
  uint64_t streams_ = 0;
  uint64_t data_sent_ = 0;
  uint64_t window_updates_ = 0;
  uint64_t priorities_ = 0;
  uint32_t empty_run_ = 0;
};

/// A client address as a table key (IPv4 as v4-mapped IPv6); the port is left out.
struct AddressKey {
  std::array<uint8_t, 16> bytes{};
  bool valid = false;
  static AddressKey of(const sockaddr_storage& a);
  bool operator==(const AddressKey&) const = default;
};

/// Per shard: client addresses that reset streams across their connections, and those refused
/// for a while after abuse. Bounded: past kMaxEntries, entries idle for a while are dropped,
/// and if none is, a new address goes untracked (its connections still have their own limits).
class AddressGuard {
 public:
  static constexpr size_t kMaxEntries = 4096;
  /// True while new connections from `a` are refused.
  bool refused(const AddressKey& a, int64_t now_ns) const;
  /// One stream reset or refused for `a`; false when the address's bucket is empty (never
  /// when limits.address_reset_rate is 0: off).
  bool on_reset(const config::LimitsConfig& l, const AddressKey& a, int64_t now_ns);
  /// `a` was sent away for abuse: refuse its new connections for limits.refuse_for.
  void refuse(const config::LimitsConfig& l, const AddressKey& a, int64_t now_ns);
  size_t size() const { return table_.size(); }

 private:
  struct Entry {
    TokenBucket resets;
    int64_t last_ns = 0;
    int64_t refused_until_ns = 0;
  };
  struct Hash {
    size_t operator()(const AddressKey& k) const;
  };
  Entry* find_or_add(const AddressKey& a, int64_t now_ns);

  std::unordered_map<AddressKey, Entry, Hash> table_;
};

}  // namespace ringlb::core::proxy

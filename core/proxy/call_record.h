#pragma once
// CallRecord: what one call was, filled in as it goes and handed to the shard's end-of-call hook
// once (metrics, access log). Owner: the shard of its call; the hook must copy what it keeps.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringlb::core::proxy {

struct CallRecord {
  static constexpr size_t kMaxTried = 4;  // endpoints named; `attempts` counts them all

  size_t listener = 0;
  int route = -1;         // index in the listener's routes; -1 = the default cluster / none
  int cluster = -1;       // index in Config::clusters; -1 = no route matched
  std::string_view path;  // :path as the client sent it; valid during the hook only
  std::array<std::string, kMaxTried> tried{};  // endpoint names, first attempt first (pooled:
                                               // capacity is reused, no allocation per call)
  uint8_t attempts = 0;                        // attempts started (transparent replays included)
  uint8_t replays = 0;         // of which transparent replays (nothing had reached a backend)
  uint8_t retries = 0;         // of which retries by policy (after a retryable status, a lost
                               // connection or a per-try timeout)
  uint8_t hedges = 0;          // of which hedged attempts
  bool grpc = false;           // the request was gRPC (content-type application/grpc...)
  bool truncated = false;      // the body outgrew the retry buffer: replays were no longer possible
  bool local = false;          // ringlb answered (an error) rather than a backend
  uint16_t http_status = 0;    // :status sent to the client
  int grpc_status = -1;        // grpc-status sent to the client (headers or trailers); -1 = none
  std::string message;         // why ringlb answered itself, empty otherwise
  int64_t start_ns = 0;        // request headers complete
  int64_t first_byte_ns = 0;   // response headers sent to the client; 0 = never
  int64_t end_ns = 0;          // the client's stream closed
  uint64_t request_bytes = 0;  // body bytes from the client
  uint64_t response_bytes = 0;  // body bytes to the client
  uint32_t reset_code = 0;      // RST_STREAM code that ended the client's stream, 0 = none
};

}  // namespace ringlb::core::proxy

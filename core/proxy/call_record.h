#pragma once
// CallRecord: what one call was, filled in as it goes and handed to the shard's end-of-call hook
// once (metrics, access log). Owner: the shard of its call; the hook must copy what it keeps.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringlb::core::proxy {

/// Response flags (CallRecord::flags), in the spirit of Envoy's: why a call did not simply
/// succeed. Several may be set. Short names (access log "flags") in call_flag_names().
enum CallFlag : uint16_t {
  kFlagNoRoute = 1u << 0,          // NR: no route and no default cluster (UNIMPLEMENTED)
  kFlagNoEndpoint = 1u << 1,       // UH: the cluster had no endpoint to pick
  kFlagConnectFailure = 1u << 2,   // UF: an attempt's connection never came up
  kFlagPerTryTimeout = 1u << 3,    // UT: an attempt's per-try timeout fired
  kFlagDeadline = 1u << 4,         // DT: the call's deadline passed (grpc-timeout / route)
  kFlagRetryLimit = 1u << 5,       // URX: retryable failure, but attempts, budget or deadline
                                   //      were used up: the last failure was forwarded
  kFlagClientReset = 1u << 6,      // DC: the client reset the stream or went away first
  kFlagUpstreamReset = 1u << 7,    // UR: a backend reset an attempt's stream
  kFlagConnectionLost = 1u << 8,   // UC: an attempt's upstream connection died under it
  kFlagOverflow = 1u << 9,         // UO: memory limit or a header list too large
  kFlagBudgetRefused = 1u << 10,   // RB: a retry or hedge was refused by the retry budget
  kFlagShutdown = 1u << 11,        // SD: ringlb's drain ended the call
  kFlagInvalidRequest = 1u << 12,  // IR: the request was refused as invalid (no backend saw it)
};

/// Why a retry by policy was made (CallRecord::retries_by).
enum class RetryReason : uint8_t { kStatus, kConnectionLost, kPerTryTimeout };
constexpr size_t kRetryReasons = 3;

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

  // Operations (metrics, access log). String views are valid during the hook only.
  uint16_t flags = 0;                               // CallFlag bits
  std::array<uint8_t, kRetryReasons> retries_by{};  // `retries`, by RetryReason
  uint8_t budget_refusals = 0;                      // retries or hedges the retry budget refused
  std::string_view authority;                       // :authority (or host)
  std::string_view user_agent;                      // user-agent
  std::string_view request_id;                      // x-request-id
  std::string_view peer;           // the client's address, "ip:port" (DownstreamConn)
  const char* tls = nullptr;       // the client's TLS version ("TLSv1.3"); null: cleartext
  std::string_view peer_identity;  // its verified certificate's identity (URI, DNS SAN or CN)
  std::string_view grpc_message;   // the grpc-message the client got (ringlb's or the backend's),
                                   // percent-decoded; empty = none
  int64_t upstream_ns = 0;         // the answering attempt: from its HEADERS sent to its response's
                                   // end (or the client's stream closing); 0 = no backend answered
};

/// "NR,UF,URX" for `flags`, "-" for none. Into `out` (at most 64 bytes), returns the length.
size_t call_flag_names(uint16_t flags, char* out);

}  // namespace ringlb::core::proxy

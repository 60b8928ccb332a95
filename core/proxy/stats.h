#pragma once
// Counters a shard keeps for operators (Prometheus via the admin's /metrics). Plain integers
// written only by the shard that owns them (no atomics, no shared cache lines on the hot path);
// the admin reads a copy the shard makes when asked (ShardMessage::kCollect -> ShardSnapshot).
// The metric names they become are in core/runtime/metrics.cc (render_metrics), which sums them
// over shards. Owner: one shard.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/h2/tls.h"
#include "core/proxy/call_record.h"
#include "core/proxy/guard.h"

namespace ringlb::core::proxy {

class Context;
enum class UpstreamEvent : uint8_t;  // cluster.h

/// A gRPC status as a counter slot: 0..16 are the codes, kNoStatus is "no grpc-status at all"
/// (a plain HTTP/2 call, or a stream reset before any status). Codes a backend sends outside
/// 0..16 count as UNKNOWN (2), as gRPC clients read them.
inline constexpr size_t kNoStatus = 17;
inline constexpr size_t kStatusSlots = 18;
inline size_t status_slot(int grpc_status) {
  if (grpc_status < 0) return kNoStatus;
  return grpc_status <= 16 ? static_cast<size_t>(grpc_status) : 2;
}
/// The label value of a slot: the code's name in upper snake case ("OK", "UNAVAILABLE", as
/// go-grpc-prometheus labels grpc_code), "none" for kNoStatus.
std::string_view status_label(size_t slot);

/// Per endpoint (kept in EndpointState, so it survives snapshot swaps; it starts again from
/// zero if the endpoint leaves the set, drains and is forgotten, then comes back).
struct EndpointCounters {
  uint64_t attempts = 0;  // attempts started (ClusterState::call_started)
  // Attempts ended, by what each got (Call::end_attempt; Attempt::status): the backend's
  // grpc-status, or the local outcome: UNAVAILABLE (connection failed or lost, refused, reset
  // by the backend as REFUSED_STREAM...), DEADLINE_EXCEEDED (per-try timeout), CANCELLED
  // (ringlb let go of it: the client went away, the call's deadline passed, a hedge lost),
  // "none" for a plain HTTP/2 answer.
  std::array<uint64_t, kStatusSlots> attempts_ended{};
  uint64_t connects = 0;          // upstream connections started (UpstreamConn::start)
  uint64_t connect_failures = 0;  // ... that never came up (UpstreamEvent::kConnectFailed)
  uint64_t connections_lost = 0;  // ... that died in use (UpstreamEvent::kConnectionLost)
  uint64_t ping_timeouts = 0;     // ... closed for a keepalive PING timeout
  uint64_t goaways = 0;           // GOAWAY frames received (the first per connection)
  uint64_t resets = 0;            // RST_STREAM frames received from the backend
};

/// Context::on_upstream_event's counting: one of connect_failures, connections_lost,
/// ping_timeouts, goaways.
void count_upstream_event(EndpointCounters& c, UpstreamEvent e);

inline constexpr size_t kTlsFailures = static_cast<size_t>(h2::TlsFailure::kCount);
/// Client TLS handshakes by outcome (ListenerCounters::tls_handshakes).
enum class TlsHandshake : uint8_t { kFull, kResumed, kFailed };
inline constexpr size_t kTlsHandshakes = 3;

/// Per cluster (kept in ClusterState).
struct ClusterCounters {
  uint64_t calls = 0;  // calls routed to this cluster (started)
  // Calls ended, by the grpc-status the client got (status_slot of CallRecord::grpc_status).
  std::array<uint64_t, kStatusSlots> calls_ended{};
  std::array<uint64_t, kRetryReasons> retries{};  // by RetryReason (CallRecord::retries_by)
  uint64_t hedges = 0;                            // hedged attempts started
  uint64_t replays = 0;          // transparent replays (nothing had reached a backend)
  uint64_t budget_refusals = 0;  // retries or hedges the retry budget refused
  uint64_t no_endpoint = 0;      // picks that found no endpoint (ClusterState::pick)
  uint64_t panic_picks = 0;      // picks made in panic mode (ClusterState::panics, at copy)
  std::array<uint64_t, kTlsFailures> tls_failures{};  // backend handshakes failed, by TlsFailure
};

/// Why a listener turned a client connection away (ListenerCounters::rejected).
enum class Rejection : uint8_t {
  kMaxConnections,  // accepted, then closed at once: proxy.max_connections on this shard
  kDraining,        // accepted while draining: told to go away at once (GOAWAY)
  kSetupFailed,     // accepted, its HTTP/2 session could not be set up
  kAcceptError,     // accept() itself failed (EMFILE, ENFILE, ENOMEM...)
  kAddressRefused,  // accepted, then closed at once: its address was sent away for abuse
};
inline constexpr size_t kRejections = 5;
/// "max_connections", "draining", "setup_failed", "accept_error", "address_refused".
std::string_view rejection_label(size_t r);

/// Per listener (kept by the Context, one per listener, by config index).
struct ListenerCounters {
  uint64_t open = 0;      // client connections open now (a gauge)
  uint64_t accepted = 0;  // client connections accepted (those rejected after accept included)
  std::array<uint64_t, kRejections> rejected{};           // by Rejection
  std::array<uint64_t, kAbuseReasons> abuse{};            // sent away (GOAWAY), by AbuseReason
  std::array<uint64_t, kTimeoutStages> timeouts{};        // stage timeouts, by TimeoutStage
  std::array<uint64_t, kTlsHandshakes> tls_handshakes{};  // by TlsHandshake
  std::array<uint64_t, kTlsFailures> tls_failures{};      // failed handshakes, by TlsFailure
};

/// Call latency buckets (upper bounds; +Inf follows): 0.5 ms to 10 s.
inline constexpr std::array<int64_t, 14> kLatencyBoundsNs = {
    500'000,       1'000'000,     2'500'000,     5'000'000,     10'000'000,
    25'000'000,    50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
inline constexpr size_t kLatencyBuckets = kLatencyBoundsNs.size() + 1;  // + the +Inf bucket

/// Per route and method.
struct MethodCounters {
  std::array<uint64_t, kStatusSlots> calls{};       // calls ended, by grpc-status slot
  std::array<uint64_t, kLatencyBuckets> latency{};  // calls by duration bucket (NOT cumulative)
  uint64_t latency_sum_ns = 0;                      // sum of durations
};

/// One row of a MethodTable, as copied into a ShardSnapshot.
struct MethodRow {
  std::string route;
  std::string method;
  MethodCounters counters;
};

/// Calls by route and method, with a bounded set of method labels: the first `max_rows`
/// (route, method) pairs seen get their own row (a method maps to one route per listener, so
/// that is the number of distinct methods unless listeners route one method differently);
/// later ones count under their route's "other" row. Lookups take string_views and allocate
/// nothing once a pair is known. Owner: one shard.
class MethodTable {
 public:
  explicit MethodTable(size_t max_rows = 200) : max_rows_(max_rows) {}
  /// The row for (`route`, `method`), made on first sight (or the route's "other" row once the
  /// table is full, or if `method` is not a usable_label()).
  MethodCounters& at(std::string_view route, std::string_view method);
  /// Every row (copies), in no particular order.
  std::vector<MethodRow> rows() const;
  size_t size() const { return map_.size(); }

 private:
  struct Key {
    std::string route, method;
  };
  struct View {
    std::string_view route, method;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(View v) const;
    size_t operator()(const Key& k) const { return (*this)(View{k.route, k.method}); }
  };
  struct Eq {
    using is_transparent = void;
    static View view(const Key& k) { return {k.route, k.method}; }
    static View view(View v) { return v; }
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return view(a).route == view(b).route && view(a).method == view(b).method;
    }
  };
  size_t max_rows_;
  size_t named_ = 0;  // rows with a method name of their own (not "other")
  std::unordered_map<Key, MethodCounters, Hash, Eq> map_;
};

/// A shard's counters that belong to no cluster: listeners and methods. Kept by the Context.
struct ProxyStats {
  std::vector<ListenerCounters> listeners;  // by listener index (config order)
  MethodTable methods;
};

/// The end-of-call counting (runtime::Shard::on_call_end): the call's cluster (calls by
/// code, retries, hedges, replays, budget refusals) and its route and method row (calls by
/// code, latency). One table lookup; no allocation once its method is known.
void count_call(Context& ctx, const CallRecord& record);

/// The label values a call counts under: route (the matched route's prefix, "default" for the
/// listener's default cluster, "none" when nothing matched or the call was refused before
/// routing) and method (its :path for gRPC calls; "non_grpc" for plain HTTP/2 calls, so their
/// arbitrary paths take no label values; "other" for unrouted calls, and, by MethodTable::at,
/// for paths that are not usable_label()s).
std::string_view route_label(const Context& ctx, const CallRecord& record);
std::string_view method_label(const CallRecord& record);
/// A method label of its own: printable ASCII, 1 to kMaxMethodLabel bytes.
bool usable_label(std::string_view method);
inline constexpr size_t kMaxMethodLabel = 256;

}  // namespace ringlb::core::proxy

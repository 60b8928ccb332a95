#pragma once
// ClusterState: a shard's view of one cluster: the current endpoint snapshot, its picker, and
// per-endpoint state (pools, calls in flight) keyed by address so it outlives snapshot swaps.
// Owner: one shard.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/list.h"
#include "core/base/result.h"
#include "core/config/config.h"
#include "core/h2/connection.h"
#include "core/h2/tls.h"
#include "core/io/timer.h"
#include "core/proxy/retry_policy.h"
#include "core/proxy/stats.h"
#include "lb/eligibility.h"
#include "lb/endpoint.h"
#include "lb/outlier.h"
#include "lb/picker.h"
#include "lb/slow_start.h"

namespace ringlb::core::proxy {

class Context;
class UpstreamConn;

/// One endpoint as a shard sees it, keyed by address: an endpoint that stays in the set keeps
/// its connections and its count of calls in flight across snapshots. Connections are opened on
/// demand and reused; another opens when every open one is at the peer's
/// SETTINGS_MAX_CONCURRENT_STREAMS. Owner: shard.
struct EndpointState {
  lb::Endpoint endpoint;  // a copy: the snapshot it came from may be gone before we are
  std::string key;
  uint64_t id = 0;  // unique on this shard, never reused: calls remember endpoints by it
  int index = -1;   // position in the cluster's current set; -1 once removed (draining)
  uint32_t outstanding = 0;
  // Eligibility, kept here so it survives snapshot swaps (copied into the cluster's
  // lb::Eligibility at its index): lb::kUnhealthy | kEjected | kDraining bits, slow-start share.
  uint8_t ineligible = 0;
  uint16_t weight_permille = lb::Eligibility::kFullWeight;
  // Passive outlier state: consecutive failures (this shard's attempts), and the ejection and
  // its backoff streak (set here at once on a local trip, then overwritten by what the control
  // thread decides for every shard: ClusterState::apply_eligibility).
  lb::EndpointOutlier outlier;
  int64_t ramp_start_ns = -1;  // slow start: when it (re)became eligible; -1 = not ramping
  // Connections that left `conns` (closing) but whose I/O has not all completed yet; they
  // still refer to this state, so it must outlive them.
  uint32_t closing = 0;
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> conns;
  // Keepalive: the PING interval this endpoint's server puts up with. 0 = the cluster's
  // keepalive.interval; doubled (up to kMaxKeepaliveInterval) each time the server answers our
  // PINGs with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"), and kept here so that new connections
  // to it start with it. Written by its UpstreamConns.
  int64_t keepalive_interval_ns = 0;
  // TLS: the newest session this endpoint's server issued to one of our connections; the next
  // connection offers it (an abbreviated handshake). Dropped when the cluster's TLS changes.
  h2::TlsSession tls_session;
  EndpointCounters counters;  // metrics (stats.h); copied into ShardSnapshot on request
  static constexpr int64_t kMaxKeepaliveInterval = 300'000'000'000;  // 5 min

  bool unused() const { return index < 0 && outstanding == 0 && closing == 0 && conns.empty(); }
};

/// What a shard saw happen to an upstream connection (Context::on_upstream_event). Every kind
/// but kGoaway counts as one local-origin failure of the endpoint (outlier ejection).
enum class UpstreamEvent : uint8_t {
  kConnectFailed,   // it never came up (refused, timed out, unreachable)
  kConnectionLost,  // it died while in use, not closed by us or after a GOAWAY
  kGoaway,          // the backend said GOAWAY
  kPingTimeout,     // it was in use, went silent and did not answer a PING in time (closed)
};

/// How an attempt ended, for passive outlier ejection (lb/outlier.h says how each counts).
using Outcome = lb::Outcome;

/// A cluster's [outlier] config as the detector takes it (shards and the control thread alike).
lb::OutlierPolicy outlier_policy(const config::OutlierConfig& o);

/// A shard's view of one cluster. Owner: shard.
///
/// Eligibility (who may take new calls; never membership): health (lb::kUnhealthy, set by the
/// control thread's health checks), ejection (lb::kEjected: this shard's own detector trips it at
/// once, the control thread confirms it or takes it back and tells every shard), slow start (a
/// weight share while an endpoint that joined or came back ramps up). One timer per cluster
/// ends ejections when due and moves ramps on.
struct ClusterState final : io::TimerHandler {
  const config::ClusterConfig* config = nullptr;
  std::shared_ptr<h2::TlsContext> tls;  // config->tls built (tls_contexts.h), or null
  size_t index = 0;
  uint64_t seed = 0;
  uint64_t* next_id = nullptr;  // the shard's EndpointState id counter
  Context* ctx = nullptr;       // timers, the time and reports; null when a test drives it alone
  lb::EndpointSetPtr set;
  std::unique_ptr<lb::Picker> picker;
  std::vector<uint32_t> outstanding;      // the picker's input, index-aligned with set
  lb::Eligibility eligibility;            // who may take calls now, index-aligned with set
  std::vector<EndpointState*> endpoints;  // index-aligned with set
  std::vector<EndpointState*> retiring;   // removed from the set, calls or connections left
  RetryBudget retry_budget;               // retries and hedges of calls to this cluster
  lb::OutlierDetector outlier;            // policy from config->outlier (setup())
  lb::SlowStart slow_start;               // policy from config->slow_start (setup())
  uint64_t panics = 0;                    // picks made in panic mode (too few eligible)
  ClusterCounters counters;               // metrics (stats.h); copied into ShardSnapshot
  io::Timer timer;                        // next ejection end or ramp step (tick())

  ClusterState() = default;
  ClusterState(ClusterState&&) = default;
  ~ClusterState();

  /// Reads the policies from `config` (set first) and binds to `owner` (may be null: no timers,
  /// no reports). Once, before the first apply(); the state must not move afterwards.
  void setup(Context* owner);
  /// Moves to a new snapshot without disturbing what stays: endpoints matched by key keep
  /// their state (eligibility, ejection, counts: also one that left and came back while it
  /// still had calls or connections); removed ones drain (no new calls, calls in flight
  /// finish, then GOAWAY). An endpoint new to this shard that joins a non-empty set starts its
  /// slow-start ramp at `now_ns`; the first set and a set that follows an empty one do not.
  void apply(lb::EndpointSetPtr next, int64_t now_ns = 0);
  /// An endpoint for a new attempt, preferring one whose id is not in `avoid`; nullptr when the
  /// cluster has no endpoints. Below config->outlier.panic_threshold percent eligible, picks
  /// among all members (panic; counted in `panics`).
  EndpointState* pick(std::span<const uint64_t> avoid);
  /// Marks `ep` (in)eligible (lb::kUnhealthy, kEjected, kDraining bits) and its slow-start
  /// share, without a new snapshot. The next pick sees it. Low level: it starts no ramp and
  /// arms no timer (apply_eligibility and record_outcome do).
  void set_eligibility(EndpointState& ep, uint8_t ineligible_bits, uint16_t weight_permille);

  /// Passive outlier ejection: how one attempt at `ep` ended (`now_ns`: ctx.now()). The call
  /// code calls it once per attempt that says something about the endpoint:
  ///  - kSuccess: the backend's grpc-status 0 (plain HTTP/2: a status below 500);
  ///  - kUnavailable: the backend's grpc-status 14 (plain HTTP/2: 502, 503, 504);
  ///  - kOtherStatus: any other grpc-status from the backend (the backend works);
  ///  - kLocalFailure: no answer from the backend on a live connection: the per-try timeout
  ///    fired, the backend reset the stream (any code but REFUSED_STREAM), the response broke
  ///    HTTP/2, or the stream ended without a status.
  /// Not reported: attempts that ended with their connection (connect failed, connection lost,
  /// PING timeout: Context::on_upstream_event counts those once per connection), refused or
  /// replayed ones (REFUSED_STREAM, above a GOAWAY), and ones ringlb cancelled (the call's
  /// deadline, a client reset, a hedge that lost): they say nothing about the endpoint.
  /// When the detector trips, `ep` is ejected on this shard at once (if max_ejected_percent
  /// allows), the ejection timer is armed, and the control thread is told
  /// (Context::report_ejection), which tells every shard. Cheap when nothing trips: two
  /// counters, no allocation.
  void record_outcome(EndpointState& ep, Outcome o, int64_t now_ns);
  /// The control thread's word on endpoint `key`: the bits under `mask` (lb::kUnhealthy,
  /// kEjected) become those of `bits`. With kEjected set: ejected until `until_ns` at backoff
  /// streak `streak`; with it cleared, the ejection is over (`streak` as control counts it). An
  /// endpoint that becomes eligible starts its slow-start ramp. Unknown keys are ignored.
  void apply_eligibility(std::string_view key, uint8_t mask, uint8_t bits, int64_t until_ns,
                         uint32_t streak, int64_t now_ns);
  /// Ends the ejections due at `now_ns`, moves slow-start ramps on, and re-arms the timer for
  /// what is next. The timer calls it; a test driving a cluster alone calls it by hand.
  void tick(int64_t now_ns);
  void on_timer(io::Timer& t) override;
  /// Endpoints of the current set that are ejected.
  size_t ejected_count() const;
  /// A connection that can take one more stream to `ep`, opening one if needed.
  base::Result<UpstreamConn*> connection_for(Context& ctx, EndpointState& ep);
  void call_started(EndpointState& ep);
  void call_finished(EndpointState& ep);
  /// Frees a removed endpoint once nothing refers to it.
  void maybe_forget(EndpointState& ep);

 private:
  /// Sets `ep`'s bits; when it becomes eligible (and slow start is on), its ramp starts at
  /// `now_ns`; when it stops being eligible, its ramp stops.
  void change_flags(EndpointState& ep, uint8_t bits, int64_t now_ns);
  void arm(int64_t deadline_ns);
  EndpointState* find(std::string_view key);
};

}  // namespace ringlb::core::proxy

#pragma once
// ClusterState: a shard's view of one cluster: the current endpoint snapshot, its picker, and
// per-endpoint state (pools, calls in flight) keyed by address so it outlives snapshot swaps.
// Owner: one shard.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/base/list.h"
#include "core/base/result.h"
#include "core/config/config.h"
#include "core/h2/connection.h"
#include "core/proxy/retry_policy.h"
#include "lb/eligibility.h"
#include "lb/endpoint.h"
#include "lb/picker.h"

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
  // Connections that left `conns` (closing) but whose I/O has not all completed yet; they
  // still refer to this state, so it must outlive them.
  uint32_t closing = 0;
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> conns;
  // Keepalive: the PING interval this endpoint's server puts up with. 0 = the cluster's
  // keepalive.interval; doubled (up to kMaxKeepaliveInterval) each time the server answers our
  // PINGs with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"), and kept here so that new connections
  // to it start with it. Written by its UpstreamConns.
  int64_t keepalive_interval_ns = 0;
  static constexpr int64_t kMaxKeepaliveInterval = 300'000'000'000;  // 5 min

  bool unused() const { return index < 0 && outstanding == 0 && closing == 0 && conns.empty(); }
};

/// What a shard saw happen to an upstream connection (Context::on_upstream_event).
enum class UpstreamEvent : uint8_t {
  kConnectFailed,   // it never came up (refused, timed out, unreachable)
  kConnectionLost,  // it died while in use, not closed by us or after a GOAWAY
  kGoaway,          // the backend said GOAWAY
  kPingTimeout,     // it was in use, went silent and did not answer a PING in time (closed)
};

/// A shard's view of one cluster. Owner: shard.
struct ClusterState {
  const config::ClusterConfig* config = nullptr;
  size_t index = 0;
  uint64_t seed = 0;
  uint64_t* next_id = nullptr;  // the shard's EndpointState id counter
  lb::EndpointSetPtr set;
  std::unique_ptr<lb::Picker> picker;
  std::vector<uint32_t> outstanding;      // the picker's input, index-aligned with set
  lb::Eligibility eligibility;            // who may take calls now, index-aligned with set
  std::vector<EndpointState*> endpoints;  // index-aligned with set
  std::vector<EndpointState*> retiring;   // removed from the set, calls or connections left
  RetryBudget retry_budget;               // retries and hedges of calls to this cluster

  ClusterState() = default;
  ClusterState(ClusterState&&) = default;
  ~ClusterState();

  /// Moves to a new snapshot without disturbing what stays: endpoints matched by key keep
  /// their state; removed ones drain (no new calls, calls in flight finish, then GOAWAY).
  void apply(lb::EndpointSetPtr next);
  /// An endpoint for a new attempt, preferring one whose id is not in `avoid`; nullptr when the
  /// cluster has no endpoints.
  EndpointState* pick(std::span<const uint64_t> avoid);
  /// Marks `ep` (in)eligible (lb::kUnhealthy, kEjected, kDraining bits) and its slow-start
  /// share, without a new snapshot. The next pick sees it.
  void set_eligibility(EndpointState& ep, uint8_t ineligible_bits, uint16_t weight_permille);
  /// A connection that can take one more stream to `ep`, opening one if needed.
  base::Result<UpstreamConn*> connection_for(Context& ctx, EndpointState& ep);
  void call_started(EndpointState& ep);
  void call_finished(EndpointState& ep);
  /// Frees a removed endpoint once nothing refers to it.
  void maybe_forget(EndpointState& ep);
};

}  // namespace ringlb::core::proxy

#pragma once
// Context: the proxy's half of a shard: the running config snapshot, the routers, each cluster's
// state (endpoint snapshot, picker, pools), the pool of calls and the client connections. Per-call
// code (calls, downstream and upstream connections) depends on this, never on the shard thread
// that drives it (runtime::Shard), so a test or benchmark can drive the proxy on one thread with
// an in-memory reactor and a fake clock.
// Owner: one shard thread; nothing here is touched by any other thread.
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/list.h"
#include "core/config/config.h"
#include "core/h2/host.h"
#include "core/proxy/call.h"
#include "core/proxy/call_record.h"
#include "core/proxy/cluster.h"
#include "core/proxy/guard.h"
#include "core/proxy/router.h"
#include "core/proxy/stats.h"
#include "lb/endpoint.h"
#include "lb/outlier.h"

namespace ringlb::core::proxy {

class DownstreamConn;

class Context : public h2::Host {
 public:
  /// `endpoint_sets`: one per cluster, in config order.
  Context(std::shared_ptr<const config::Config> config, unsigned index,
          const std::vector<lb::EndpointSetPtr>& endpoint_sets,
          base::Clock& clock = base::Clock::system());
  ~Context() override;

  /// The end-of-call hook: once per call, when its client stream and every attempt have let
  /// go. Metrics and the access log hang here. The record is valid during the call only.
  /// Its listener/route/cluster indices refer to call_config(), not config() (a reload may
  /// have come in between); a listener index past call_config().listeners is a listener that
  /// a reload had removed already when the call came.
  virtual void on_call_end(const CallRecord& record) { (void)record; }
  /// During on_call_end: the config snapshot the ending call was routed under.
  const config::Config& call_config() const {
    return ending_config_ != nullptr ? *ending_config_ : *config_;
  }
  /// Something happened to an upstream connection (upstream.cc calls this; the entry point for
  /// every kind). Every kind but kGoaway is one local-origin failure of `ep` for passive
  /// outlier ejection (ClusterState::record_outcome, which may eject it here and now); then
  /// report_upstream_event tells the control thread. Not virtual: hook report_upstream_event.
  void on_upstream_event(UpstreamEvent e, ClusterState& cluster, EndpointState& ep,
                         std::string_view detail);
  /// The telling part of on_upstream_event, after the shard has acted locally (calls replayed
  /// or failed, the failure counted). The shard posts it to the control thread.
  virtual void report_upstream_event(UpstreamEvent e, const ClusterState& cluster,
                                     const EndpointState& ep, std::string_view detail) {
    (void)e, (void)cluster, (void)ep, (void)detail;
  }
  /// This shard's outlier detector tripped on `ep` (`trip` says why): ejected here already for
  /// `duration_ns`, or, when that is 0, not ejected because max_ejected_percent would be passed.
  /// The shard tells the control thread, which decides what every shard sees.
  virtual void report_ejection(const ClusterState& cluster, const EndpointState& ep,
                               const lb::Trip& trip, int64_t duration_ns) {
    (void)cluster, (void)ep, (void)trip, (void)duration_ns;
  }

  const config::Config& config() const { return *config_; }
  /// The running snapshot (shared: calls that started under an older one keep that alive).
  const std::shared_ptr<const config::Config>& config_ptr() const { return config_; }
  /// Which config snapshot is running: 0 at start, then one more per reload.
  uint64_t generation() const { return generations_.back().id; }
  /// Routers: one per listener of the running config, in config order, then those of removed
  /// listeners whose client connections are still draining.
  const Router& router(size_t listener) const { return routers_[listener]; }
  ClusterState& cluster(size_t i) { return *clusters_[i]; }
  size_t cluster_count() const { return clusters_.size(); }
  bool draining() const { return draining_; }

  /// Takes a client connection (`fd`, non-blocking, connected) on listener `listener`. False if
  /// it was refused (over max_connections) and `fd` closed. While draining it is taken and told
  /// to go away at once (GOAWAY), not refused.
  bool adopt(size_t listener, int fd);
  /// A connection a listener accepted: adopted now, or, once this turn has adopted
  /// kAcceptsPerTurn, queued for the next turns (a burst of thousands of connects must not
  /// stall the calls on the connections already open). Draining adopts at once.
  void accepted(size_t listener, int fd);
  /// Adopts every queued connection now (before draining or a reload renumbers listeners).
  void adopt_queued();
  size_t queued_accepts() const { return accept_queue_.size() - accept_head_; }
  static constexpr uint32_t kAcceptsPerTurn = 64;
  /// True for a router kept only for the client connections of a removed listener.
  bool listener_removed(size_t listener) const { return listener >= config_->listeners.size(); }
  /// Cluster `cluster` now has endpoint set `set`.
  void apply_endpoints(size_t cluster, lb::EndpointSetPtr set);
  /// The control thread's word on one endpoint's eligibility (ClusterState::apply_eligibility).
  void apply_eligibility(size_t cluster, std::string_view key, uint8_t mask, uint8_t bits,
                         int64_t until_ns, uint32_t streak);
  /// A reload (context_reload.cc): the new snapshot and how its listeners and clusters map to
  /// the running ones.
  struct Reconfig {
    std::shared_ptr<const config::Config> config;
    uint64_t generation = 0;
    std::vector<int> listener_from;        // per new listener: its running index, or -1
    std::vector<int> cluster_from;         // per new cluster: its running index, or -1
    std::vector<lb::EndpointSetPtr> sets;  // per new cluster: its new set, or null (keep)
    // Router indices (running numbering) to keep even without client connections: a removed
    // listener's socket whose accept queue has not been taken yet.
    std::vector<size_t> pinned_routers;
  };
  /// Swaps the snapshot: clusters that stay keep their state (endpoints, connections,
  /// ejections) under the new config and policies; new ones start; removed ones drain (their
  /// calls in flight finish) and are freed once unused. Listeners: routers rebuilt; client
  /// connections of removed listeners are told to go (GOAWAY) and drain. Returns, per running
  /// router index, its new one (-1: dropped).
  std::vector<int> reconfigure(Reconfig& r);
  /// Closes every upstream connection now (shutdown).
  void close_upstreams();
  /// True while any connection, client or upstream, is open or has I/O still completing.
  bool connections_busy() const;

  /// A client connection started closing (it leaves the list) / finished its last I/O.
  void downstream_closed(DownstreamConn* c);
  void downstream_released() { --closing_downstreams_; }
  size_t downstream_count() const { return downstreams_.size(); }
  Call* alloc_call();
  /// The call is over: its record goes to on_call_end, then the call back to the pool.
  void end_call(Call* c);
  uint64_t calls() const { return calls_; }
  uint64_t connections() const { return connections_; }
  /// Listener and method counters (metrics: stats.h); clusters and endpoints keep their own.
  ProxyStats& stats() { return stats_; }
  /// Sheds now what relieve_memory_pressure() sheds at the start of a turn (a new call asks,
  /// before it is refused for the limit).
  void relieve() { relieve_memory_pressure(); }
  /// Client addresses this shard tracks across their connections (rapid reset, refusal).
  AddressGuard& addresses() { return addresses_; }
  /// Whether one more TLS handshake failure may be logged now (20/s, bursts of 50, per
  /// shard: scanners and misconfigured clients are counted in full, logged in part).
  bool tls_log_allowed() { return tls_log_.take(now(), 20, 50); }
  const ProxyStats& stats() const { return stats_; }

 protected:
  /// Over the buffer limit: resets the calls holding the most buffered bytes (a client that
  /// does not read its responses, say) until under 7/8 of the limit.
  void relieve_memory_pressure() override;
  /// Pooled calls, each counted at kCallBytes (the object and its header lists' capacity).
  size_t pooled_bytes() const override { return call_store_.size() * kCallBytes; }
  /// Frees idle calls beyond a reserve (an attack's thousands of streams leave them pooled).
  void shrink_pools() override;
  /// Adopts up to kAcceptsPerTurn queued connections.
  bool run_deferred() override;
  static constexpr size_t kCallBytes = sizeof(Call) + 1024;

  /// Stops new calls and connections and sends every client the two-phase GOAWAY.
  void start_draining();
  /// drain_timeout reached: every call still open ends now with UNAVAILABLE and `why` (gRPC
  /// trailers, or trailers-only; a plain HTTP/2 call is reset), its attempts reset, and every
  /// client gets its final GOAWAY. Connections then close once that is written.
  void end_calls(std::string_view why);
  /// Closes every client connection at once (the backstop after end_calls).
  void close_downstreams(const char* why);

 private:
  // context_reload.cc
  void remap_listeners(Reconfig& r, std::vector<int>& router_to);
  void remap_clusters(Reconfig& r);
  void sweep_retired();
  void rebuild_routers();

  std::shared_ptr<const config::Config> config_;
  // Config snapshots still referred to by calls that started under them (RouteMatch's policy
  // pointers): the running one last. Counted per call (Call::config_generation), no atomics.
  struct Generation {
    uint64_t id = 0;
    std::shared_ptr<const config::Config> config;
    uint64_t calls = 0;
  };
  std::vector<Generation> generations_;
  const config::Config* ending_config_ = nullptr;  // during on_call_end only
  std::vector<Router> routers_;
  // Routers of removed listeners (after the running ones in routers_): the listener's config
  // lives in `config`, a snapshot kept for it.
  struct RetiredListener {
    std::shared_ptr<const config::Config> config;
    size_t listener = 0;
  };
  std::vector<RetiredListener> retired_listeners_;
  // Stable: a ClusterState is a TimerHandler and calls and connections point at it.
  std::vector<std::unique_ptr<ClusterState>> clusters_;
  // Removed by a reload, still with calls or connections; `config` keeps its ClusterConfig.
  struct RetiredCluster {
    std::shared_ptr<const config::Config> config;
    uint64_t removed_in = 0;  // the generation that dropped it: older calls may still use it
    std::unique_ptr<ClusterState> state;
  };
  std::vector<RetiredCluster> retired_clusters_;
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> downstreams_;
  std::vector<std::unique_ptr<Call>> call_store_;
  std::vector<Call*> free_calls_;
  uint64_t next_endpoint_id_ = 0;   // EndpointState ids: unique on this shard
  int64_t shed_logged_ns_ = 0;      // the last "calls reset for memory" line
  size_t closing_downstreams_ = 0;  // closed, I/O not all completed yet
  bool draining_ = false;
  uint64_t connections_ = 0;
  uint64_t calls_ = 0;
  ProxyStats stats_;
  AddressGuard addresses_;
  TokenBucket tls_log_;
  struct Accepted {
    size_t listener;
    int fd;
  };
  std::vector<Accepted> accept_queue_;  // [accept_head_, end) wait to be adopted
  size_t accept_head_ = 0;
  uint64_t accept_turn_ = 0;  // the turn accepts_in_turn_ counts
  uint32_t accepts_in_turn_ = 0;
};

}  // namespace ringlb::core::proxy

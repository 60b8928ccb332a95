#pragma once
// HealthChecker: active gRPC health checks (grpc.health.v1.Health) from the control thread.
// For every endpoint of every cluster with health_check enabled it keeps one HTTP/2 connection
// open and reuses it: Check every `interval` (grpc-timeout on the wire, a local timer at
// `timeout`), and beside it a Watch stream where the server has one, so NOT_SERVING takes the
// endpoint out the moment the server says it. What each result means (thresholds, UNIMPLEMENTED,
// Watch's place) is decided in lb/health.h (HealthCheckState); this class is the I/O.
//
// It runs on the control thread's own reactor and timer queue, which the Controller owns and
// turns: the checker borrows both, and the Controller calls flush() once per loop turn. A small
// h2::Host of its own (over the borrowed reactor) gives its connections chunks, a session heap
// and a flush list. Nothing here blocks: connects, sends and receives are reactor ops.
//
// Owner: the control thread. The callback runs on it, synchronously, from inside the checker's
// I/O handling: it may read the checker but must not call set_endpoints().
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/list.h"
#include "core/config/config.h"
#include "core/h2/connection.h"
#include "core/h2/tls.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "lb/endpoint.h"
#include "lb/health.h"

namespace ringlb::core::h2 {
class Host;
}

namespace ringlb::core::runtime {

/// A TLS cluster's checks go over TLS like its calls (the same context and names).
struct HealthTls {
  std::shared_ptr<h2::TlsContext> context;         // null: cleartext
  const config::ClusterConfig* cluster = nullptr;  // the names (tls_names), read at connect
};

class HealthChecker final {
 public:
  /// Every change of an endpoint's health. `endpoint_key` is lb::endpoint_key() of the endpoint
  /// (what shards key their per-endpoint state by); endpoint_name() gives its text.
  using Callback = std::function<void(size_t cluster, const std::string& endpoint_key, bool healthy,
                                      std::string_view why)>;

  /// `reactor` and `timers` are the control thread's; both outlive the checker, and whoever
  /// owns them runs the timers with `clock`'s time.
  HealthChecker(io::Reactor& reactor, io::TimerQueue& timers, Callback on_change,
                base::Clock& clock = base::Clock::system());
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  /// Cluster `cluster` (config index) now has members `set`. New endpoints start healthy with a
  /// check due at once; checks stop for endpoints that left (no callback for them). A disabled
  /// `hc` stops every check of the cluster.
  void set_endpoints(size_t cluster, const std::string& cluster_name,
                     const config::HealthCheckConfig& hc, const lb::EndpointSet& set,
                     const HealthTls& tls = {});

  /// Once per loop turn, after the timers ran and before waiting: sends what the checks queued
  /// and frees closed connections. True if output is still queued (the caller must not sleep).
  bool flush();

  /// The endpoint's health as last reported (true for an endpoint not checked).
  bool healthy(size_t cluster, const std::string& endpoint_key) const;
  /// The endpoint's address as configured or discovered ("10.0.1.5:50051"), or nullptr.
  const std::string* endpoint_name(size_t cluster, const std::string& endpoint_key) const;
  /// Endpoints checked, over all clusters.
  size_t size() const;

 private:
  struct Cluster;
  struct Target;
  class Conn;

  void add_target(Cluster& c, size_t cluster, const std::string& key, const lb::Endpoint& ep);
  void remove_target(Target& t);
  void on_timer(Target& t);
  void start_check(Target& t, int64_t now);
  void open_connection(Target& t);
  /// The check in flight on `t` ended with `o` (`why` says what happened).
  void conclude(Target& t, lb::CheckOutcome o, std::string_view why);
  /// A Watch message on `t`'s connection.
  void on_watch(Target& t, lb::CheckOutcome o, std::string_view why);
  void report(Target& t, lb::HealthChange change, lb::CheckOutcome o, std::string_view why);
  Target* find(size_t cluster, const std::string& key) const;

  io::TimerQueue& timers_;
  Callback on_change_;
  std::unique_ptr<h2::Host> host_;
  std::vector<std::unique_ptr<Cluster>> clusters_;  // by config index; null: not checked
  // Every connection not yet released (a closing one is no longer any target's).
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> conns_;
};

}  // namespace ringlb::core::runtime

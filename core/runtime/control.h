#pragma once
// Controller: the control thread's event loop once the shards run. It takes the signals
// (SIGTERM/SIGINT: drain; a second one: exit at once), follows DNS names with c-ares through
// its own reactor and timers, runs the active health checks on them (health_checker.h), and
// hands each shard new endpoint snapshots by message. It keeps only the I/O: what an answer
// means and what it does to a cluster's members is decided in discovery/ (interpret_answer,
// SrvLookup, FollowedName), what a health check result means in lb/health.h.
// Owner: the control thread. Shards never call into it.
#include <signal.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "core/runtime/reports.h"
#include "discovery/answer.h"
#include "discovery/resolver.h"
#include "lb/endpoint.h"

namespace ringlb::core::runtime {

class HealthChecker;
class Shard;

/// The signals the control thread takes through its signalfd (blocked in every thread).
sigset_t control_signals();

class Controller final : public io::IoHandler,
                         public io::TimerHandler,
                         public discovery::ResolverIo {
 public:
  /// `reports`: what the shards post (may be null); the controller reads it on its thread.
  Controller(const config::Config& config, std::vector<Shard*> shards,
             ReportQueue* reports = nullptr);
  ~Controller();

  /// Reactor, signalfd, resolver; sends the first queries. False (and `error`) on failure.
  bool start(std::string& error);
  /// Serves until the first DNS outcome of every DNS cluster is in, or `max_wait_ns` passed.
  void await_first_answers(int64_t max_wait_ns);
  /// Serves until every shard has finished (after a drain). Returns the exit code.
  int run();
  /// A SIGTERM/SIGINT has been taken and the shards told to drain.
  bool draining() const { return draining_; }

  /// What the admin surface will show for one DNS cluster.
  struct DnsStatus {
    std::string cluster, name;
    size_t members = 0;
    std::string last_result;
    int64_t last_refresh_ns = 0;
  };
  std::vector<DnsStatus> dns_status() const;

  /// What the shards reported about one endpoint, for the admin surface.
  struct EndpointReports {
    uint64_t counts[5] = {};  // by ShardReport::Kind
    std::string last_detail;
    int64_t last_ns = 0;
    int64_t logged_ns = 0;
  };
  const std::unordered_map<std::string, EndpointReports>& endpoint_reports() const {
    return endpoint_reports_;
  }

  void on_complete(io::Op& op, const io::Completion& c) override;
  void on_timer(io::Timer& t) override;
  void watch(int fd, bool read, bool write) override;

 private:
  struct DnsCluster;
  struct Watch;
  void query(DnsCluster& c);
  void on_answer(DnsCluster& c, int status, std::span<const uint8_t> message);
  void on_srv_target(DnsCluster& c, uint64_t round, size_t index, int status,
                     std::span<const uint8_t> message);
  void finish(DnsCluster& c, const discovery::LookupResult& result);
  void rearm_resolver_timer();
  void post_goaway();
  void turn(int64_t max_wait_ns);
  bool shards_finished() const;
  void on_signal();
  void on_watch(Watch& w, io::Op& op, const io::Completion& c);
  void on_reports();
  // Active health checks (health_checker.h): built in start() when a cluster enables them, fed
  // every endpoint set the controller has (static at start, DNS at each publish), flushed in
  // turn(). on_health_change() is where a change of health goes.
  void start_health_checks();
  void on_health_change(size_t cluster, const std::string& endpoint_key, bool healthy,
                        std::string_view why);

  const config::Config& config_;
  std::vector<Shard*> shards_;
  std::unique_ptr<io::Reactor> reactor_;
  io::TimerQueue timers_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::vector<std::unique_ptr<DnsCluster>> dns_;
  std::unordered_map<int, Watch*> watches_;
  io::Timer resolver_timer_;
  io::Timer poll_timer_;
  io::Timer goaway_timer_;  // draining: the bound on waiting for every shard's kListenersClosed
  int signal_fd_ = -1;
  io::Op signal_op_;
  ReportQueue* reports_ = nullptr;
  io::Op reports_op_;
  std::unordered_map<std::string, EndpointReports> endpoint_reports_;  // by "cluster/endpoint"
  bool draining_ = false;
  size_t shards_left_ = 0;      // draining: shards that reported kListenersClosed
  bool goaway_posted_ = false;  // draining: every shard was sent kGoaway
  std::unique_ptr<HealthChecker> health_;  // after reactor_ and timers_: freed before them
};

}  // namespace ringlb::core::runtime

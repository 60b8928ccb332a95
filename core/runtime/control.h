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
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "core/runtime/metrics.h"
#include "core/runtime/reload_plan.h"
#include "core/runtime/reports.h"
#include "discovery/answer.h"
#include "discovery/resolver.h"
#include "lb/endpoint.h"
#include "lb/outlier.h"

namespace ringlb::core::runtime {

class AccessLog;
class AdminServer;
class HealthChecker;
struct HealthTls;
class Shard;

/// The signals the control thread takes through its signalfd (blocked in every thread).
sigset_t control_signals();

class Controller final : public io::IoHandler,
                         public io::TimerHandler,
                         public discovery::ResolverIo {
 public:
  /// `reports`: what the shards post (may be null); the controller reads it on its thread.
  /// `config`: the running snapshot; a reload replaces it (the shards get theirs by message).
  Controller(std::shared_ptr<const config::Config> config, std::vector<Shard*> shards,
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

  /// Asks every shard for a ShardSnapshot (ShardMessage::kCollect). `done` runs on the control
  /// thread once every shard answered or `timeout_ns` passed: `got` holds the snapshots that
  /// came (shard order), `missing` the shards that did not answer in time (a stuck loop).
  /// Collections may overlap; each gets its own answers.
  using CollectDone = std::function<void(std::vector<std::unique_ptr<ShardSnapshot>>& got,
                                         const std::vector<unsigned>& missing)>;
  void collect(int64_t timeout_ns, CollectDone done);
  /// /ready: the shards serve (listeners armed, every DNS cluster had its first answer) and no
  /// drain has begun.
  bool ready() const;
  /// Why the process is not ready ("starting", "waiting for the first DNS answer for cluster
  /// X", "draining"), or "" when it is (control_admin.cc).
  std::string readiness() const;
  size_t shard_count() const { return shards_.size(); }
  /// Test hook (POST /test/stall, only with RINGLB_TEST_HOOKS=1): shard `shard` blocks its
  /// thread for `ns` (ShardMessage::kStall). False when there is no such shard.
  bool stall_shard(unsigned shard, int64_t ns);
  /// server.cc: the shards were told to serve.
  void set_serving() { serving_ = true; }

  // For the admin surface (/metrics).
  size_t workers() const { return shards_.size(); }
  /// server.cc: the io backend the shards run on.
  void set_io_backend(io::IoBackend b) { io_backend_ = b; }
  io::IoBackend io_backend() const { return io_backend_; }
  /// DNS refreshes by result, per DNS cluster name (counted in finish()).
  const std::map<std::string, DnsRefreshCounters, std::less<>>& dns_refreshes() const {
    return dns_refreshes_;
  }

  /// Live reload (SIGHUP, POST /reload): reads and validates the config file again; on success
  /// applies it without dropping anything, else keeps the running config. `message` says what
  /// was done, or the error as "FILE:LINE:COLUMN: KEY: problem".
  struct ReloadResult {
    bool applied = false;
    std::string message;
  };
  ReloadResult reload();
  /// The running config snapshot (the last one reloaded) and its generation (0 at start).
  const config::Config& config() const { return *config_; }
  const std::shared_ptr<const config::Config>& config_ptr() const { return config_; }
  uint64_t generation() const { return generation_; }
  /// The access log (server.cc; null when off): a reload reopens its file (log rotation).
  void set_access_log(AccessLog* log) { access_log_ = log; }
  /// --log-level was given: a reload leaves the log level alone.
  void pin_log_level() { log_level_pinned_ = true; }

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
    uint64_t counts[ShardReport::kKinds] = {};  // by ShardReport::Kind
    std::string last_detail;
    int64_t last_ns = 0;
    int64_t logged_ns = 0;
  };
  const std::unordered_map<std::string, EndpointReports>& endpoint_reports() const {
    return endpoint_reports_;
  }

  /// Control thread: handles every report the shards posted so far (counts, logs, ejections
  /// decided for every shard). The reports eventfd calls it; public so tests can drive it.
  void on_reports();

  /// Health checks (control thread): the endpoint whose lb::endpoint_key is `endpoint_key`, of
  /// cluster `cluster` (config index), is serving or not. Sets or clears lb::kUnhealthy on
  /// every shard by message: while set, no new calls go to it (calls in flight finish); when
  /// cleared it is back, slow-starting if slow_start is on. Eligibility only, never membership;
  /// separate from ejection (an endpoint can be both). Idempotent (no message when nothing
  /// changes); logs each change once. Shards that do not know the endpoint ignore it, and learn
  /// it again when a DNS set brings the endpoint back.
  void set_health(size_t cluster, const std::string& endpoint_key, bool healthy);
  void set_health(size_t cluster, const lb::Endpoint& endpoint, bool healthy) {
    set_health(cluster, lb::endpoint_key(endpoint), healthy);
  }

  /// What the control thread has decided about one endpoint's eligibility; every shard has been
  /// told the same. Ejections come from the shards' reports, health from set_health.
  struct EndpointEligibility {
    std::string name;               // "ip:port"
    uint8_t bits = 0;               // lb::kUnhealthy | lb::kEjected
    lb::EndpointOutlier outlier;    // ejected until, backoff streak (the counts stay unused)
    int64_t ejected_at_ns = 0;      // when the current or last ejection began
    uint64_t ejections = 0;         // since start
    int64_t refused_logged_ns = 0;  // last "not ejected (cap)" line: at most one per 10 s
    int64_t logged_ns = 0;          // last "ejected" line
    uint32_t unlogged = 0;          // ejections since then that were not logged
    bool ejection_logged = false;   // the current or last one was: its end is logged too
  };
  /// Cluster `cluster`'s endpoints with something decided, by lb::endpoint_key.
  const std::unordered_map<std::string, EndpointEligibility>& eligibility(size_t cluster) const {
    return eligibility_[cluster];
  }

  void on_complete(io::Op& op, const io::Completion& c) override;
  void on_timer(io::Timer& t) override;
  void watch(int fd, bool read, bool write) override;

 private:
  struct DnsCluster;
  struct Watch;
  // One collect() in flight: the answers so far by shard index, and its deadline.
  struct Collection final : io::TimerHandler {
    Controller* owner = nullptr;
    uint64_t id = 0;
    CollectDone done;
    std::vector<std::unique_ptr<ShardSnapshot>> got;  // by shard index; null: not yet
    size_t answered = 0;
    io::Timer timer;
    void on_timer(io::Timer&) override { owner->finish_collection(id); }
    ~Collection() { owner->timers_.cancel(timer); }
  };
  // The admin (control_admin.cc): binds and starts it (start-up); a kSnapshot report goes to
  // the collection that asked for it; a collection ends (all answered, or its timer fired).
  bool start_admin(std::string& error);
  void on_snapshot_report(ShardReport* r);
  void finish_collection(uint64_t id);
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
  // Reload (control_reload.cc; reload_dns in control.cc, next to DnsCluster). `plan` maps the
  // running config (still config_ where it says "old") to the new one.
  std::vector<size_t> remap_cluster_state(const ReloadPlan& plan, const config::Config& next);
  std::vector<lb::EndpointSetPtr> reload_sets(const ReloadPlan& plan, const config::Config& next);
  void reload_dns(const ReloadPlan& plan, const std::vector<int>& cluster_to);
  void reload_health(const ReloadPlan& plan, const config::Config& old,
                     const std::vector<size_t>& removed_uids,
                     const std::vector<lb::EndpointSetPtr>& sets);
  lb::EndpointSetPtr dns_members(size_t cluster) const;
  void ensure_health_checker();
  /// Cluster `index`'s TLS for its health checks (the running config's).
  HealthTls health_tls(size_t index) const;
  /// The config index of the cluster HealthChecker knows as `uid`, or -1 (removed).
  int cluster_of_uid(size_t uid) const;
  // Active health checks (health_checker.h): built in start() when a cluster enables them, fed
  // every endpoint set the controller has (static at start, DNS at each publish), flushed in
  // turn(). on_health_change() is where a change of health goes.
  void start_health_checks();
  void on_health_change(size_t uid, const std::string& endpoint_key, bool healthy,
                        std::string_view why);
  // Eligibility (control_eligibility.cc).
  void on_ejection_report(const ShardReport& r, int64_t now);
  void log_ejection(const ShardReport& r, EndpointEligibility& e, int64_t duration_ns, int64_t now);
  void refuse_ejection(size_t cluster, EndpointEligibility& e, const ShardReport& r, int64_t now);
  void expire_ejections(int64_t now);
  void broadcast(size_t cluster, const std::string& key, uint8_t mask,
                 const EndpointEligibility& e);
  void rebroadcast_eligibility(size_t cluster);

  std::shared_ptr<const config::Config> config_;
  uint64_t generation_ = 0;        // reloads applied
  bool log_level_pinned_ = false;  // pin_log_level()
  // Per cluster (config index): an id that stays the same across reloads for as long as the
  // cluster does; the health checker knows clusters by it (config indices change on reload).
  std::vector<size_t> cluster_uid_;
  size_t next_uid_ = 0;
  std::vector<std::unique_ptr<DnsCluster>> dead_dns_;  // removed by a reload, queries may be out
  std::vector<Shard*> shards_;
  std::unique_ptr<io::Reactor> reactor_;
  io::TimerQueue timers_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::vector<std::unique_ptr<DnsCluster>> dns_;
  std::unordered_map<int, Watch*> watches_;
  std::unordered_set<Watch*> dying_watches_;  // closed by c-ares, cancels still pending
  io::Timer resolver_timer_;
  io::Timer poll_timer_;
  io::Timer goaway_timer_;  // draining: the bound on waiting for every shard's kListenersClosed
  int signal_fd_ = -1;
  io::Op signal_op_;
  ReportQueue* reports_ = nullptr;
  io::Op reports_op_;
  std::unordered_map<std::string, EndpointReports> endpoint_reports_;  // by "cluster/endpoint"
  std::vector<lb::OutlierDetector> outlier_;  // per cluster: its outlier policy
  // Per cluster, by lb::endpoint_key: what every shard has been told. Entries with nothing left
  // to remember (eligible, streak decayed) are dropped when ejections expire.
  std::vector<std::unordered_map<std::string, EndpointEligibility>> eligibility_;
  std::vector<size_t> members_;  // per cluster: its size as the last reporting shard saw it
  io::Timer eject_timer_;        // the next ejection to end
  std::map<std::string, DnsRefreshCounters, std::less<>> dns_refreshes_;  // by cluster name
  io::IoBackend io_backend_ = io::IoBackend::kEpoll;                      // set_io_backend()
  bool draining_ = false;
  bool serving_ = false;                   // set_serving()
  AccessLog* access_log_ = nullptr;        // run_server owns it; it outlives the controller
  size_t shards_left_ = 0;                 // draining: shards that reported kListenersClosed
  bool goaway_posted_ = false;             // draining: every shard was sent kGoaway
  std::unique_ptr<HealthChecker> health_;  // after reactor_ and timers_: freed before them
  // Collections in flight (collect()), by collect_id; each holds a timer on timers_ (so after
  // it: freed first). Late answers find no entry and are dropped.
  std::unordered_map<uint64_t, std::unique_ptr<Collection>> collections_;
  uint64_t next_collect_id_ = 1;
  std::unique_ptr<AdminServer> admin_;  // after reactor_ and timers_: freed before them
};

}  // namespace ringlb::core::runtime

#pragma once
// Controller: the control thread's event loop once the shards run. It takes the signals
// (SIGTERM/SIGINT: drain; a second one: exit at once), follows DNS names with c-ares through
// its own reactor and timers, and hands each shard new endpoint snapshots by message.
// Owner: the control thread. Shards never call into it.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/reactor.h"
#include "core/timer.h"
#include "discovery/membership.h"
#include "discovery/refresh.h"
#include "discovery/resolver.h"
#include "lb/endpoint.h"

namespace ringlb::core {

class Shard;

class Controller final : public IoHandler, public TimerHandler, public discovery::ResolverIo {
 public:
  Controller(const Config& config, std::vector<Shard*> shards);
  ~Controller();

  /// Reactor, signalfd, resolver; sends the first queries. False (and `error`) on failure.
  bool start(std::string& error);
  /// Serves until the first DNS outcome of every DNS cluster is in, or `max_wait_ns` passed.
  void await_first_answers(int64_t max_wait_ns);
  /// Serves until every shard has finished (after a drain). Returns the exit code.
  int run();

  /// What the admin surface will show for one DNS cluster.
  struct DnsStatus {
    std::string cluster, name;
    size_t members = 0;
    std::string last_result;
    int64_t last_refresh_ns = 0;
  };
  std::vector<DnsStatus> dns_status() const;

  void on_complete(Op& op, const Completion& c) override;
  void on_timer(Timer& t) override;
  void watch(int fd, bool read, bool write) override;

 private:
  struct DnsCluster;
  struct Watch;
  void query(DnsCluster& c);
  void on_answer(DnsCluster& c, int status, std::span<const uint8_t> message);
  void on_srv_target(DnsCluster& c, int status, std::span<const uint8_t> message, uint16_t port);
  void record(DnsCluster& c, discovery::QueryOutcome outcome, uint32_t ttl,
              const std::vector<lb::Endpoint>& endpoints, const std::string& detail);
  void publish(DnsCluster& c, const std::string& note);
  int64_t hold_for(const DnsCluster& c, size_t answer_size) const;
  void rearm_resolver_timer();
  void turn(int64_t max_wait_ns);
  bool shards_finished() const;
  void on_signal();
  void on_watch(Watch& w, Op& op, const Completion& c);

  const Config& config_;
  std::vector<Shard*> shards_;
  std::unique_ptr<Reactor> reactor_;
  TimerQueue timers_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::vector<std::unique_ptr<DnsCluster>> dns_;
  std::unordered_map<int, Watch*> watches_;
  Timer resolver_timer_;
  Timer poll_timer_;
  int signal_fd_ = -1;
  Op signal_op_;
  bool draining_ = false;
};

}  // namespace ringlb::core

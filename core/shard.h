#pragma once
// Shard: one thread, one reactor, its own listener sockets (SO_REUSEPORT), its client
// connections, its upstream pools and its counters. Owner: its own thread, except post_drain()
// and the atomics in ShardStats, which any thread may touch. Shard code takes no locks and makes
// no blocking calls.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/config.h"
#include "core/connection.h"
#include "core/list.h"
#include "core/proxy_stream.h"
#include "core/reactor.h"
#include "core/router.h"
#include "core/session_heap.h"
#include "core/timer.h"
#include "core/upstream.h"
#include "lb/endpoint.h"

namespace ringlb::core {

class DownstreamConn;

/// A message from the control thread: cluster `cluster` now has endpoint set `set`.
struct ShardMessage {
  ShardMessage* next = nullptr;
  size_t cluster = 0;
  lb::EndpointSetPtr set;
};

/// What the control thread hands a shard at start.
struct ShardSetup {
  unsigned index = 0;
  IoBackend backend = IoBackend::kEpoll;
  std::vector<int> listen_fds;                 // one per listener, this shard's own socket
  std::vector<lb::EndpointSetPtr> endpoint_sets;  // one per cluster
};

class Shard final : public IoHandler, public TimerHandler {
 public:
  Shard(const Config& config, ShardSetup setup);
  ~Shard();

  /// Thread body. Builds the reactor; `ready` is set to 1 (ok) or -1 (failed, see error()).
  void run(std::atomic<int>& ready);
  /// Any thread: stop accepting and drain. Idempotent.
  void post_drain();
  /// Any thread: hand the shard a new snapshot for a cluster. Lock-free (a Treiber stack the
  /// shard empties when its eventfd fires); the hot path keeps reading its own plain pointer.
  void post_endpoints(size_t cluster, lb::EndpointSetPtr set);
  /// Shard thread: applies every snapshot posted so far (the eventfd handler calls it; public
  /// so benchmarks can drive a shard that is not running).
  void drain_inbox();

  // Driving a shard without its thread: run(), loop() and the accept handler are built from
  // these three, so a benchmark or test that calls them directly (on one thread, in place of
  // run()) drives the same code. Production code calls them only through run().
  /// Installs `reactor` and arms what run() arms before its loop (wake eventfd, accepts). The
  /// caller's thread becomes the shard thread. False (see error()) if the eventfd failed.
  bool attach_reactor(std::unique_ptr<Reactor> reactor);
  /// One loop turn: due timers, flush dirty connections, reclaim retired ones, then one
  /// run_once() that waits until the next timer, capped at `max_wait_ns` when that is >= 0.
  void turn(int64_t max_wait_ns);
  /// Takes an accepted client connection (`fd`, non-blocking) on listener `listener`: what an
  /// accept completion does. False if the shard refused it (draining, connection cap) and
  /// closed `fd`.
  bool adopt(size_t listener, int fd);

  const std::string& error() const { return error_; }
  bool finished() const { return finished_.load(); }

  // For the shard's own objects.
  const Config& config() const { return config_; }
  Reactor& reactor() { return *reactor_; }
  TimerQueue& timers() { return timers_; }
  ChunkPool& chunks() { return chunks_; }
  SessionHeap& session_heap() { return session_heap_; }
  int64_t now() const { return now_ns_; }
  unsigned index() const { return setup_.index; }
  bool draining() const { return draining_; }
  const Router& router(size_t listener) const { return routers_[listener]; }
  ClusterState& cluster(size_t i) { return clusters_[i]; }

  void add_dirty(H2Connection* c) { dirty_.push_back(c); }
  void remove_dirty(H2Connection* c) { dirty_.remove(c); }
  /// A connection has completed every op; it is freed at the end of this loop turn.
  void retire(H2Connection* c);
  void downstream_closed(DownstreamConn* c);
  ProxyStream* alloc_stream();
  void free_stream(ProxyStream* s);
  void count_call() { ++calls_; }

  void on_complete(Op& op, const Completion& c) override;
  void on_timer(Timer& t) override;

 private:
  void loop();
  void flush_dirty();
  void begin_drain();
  void on_accept(size_t listener, const Completion& c);
  void close_upstreams();

  const Config& config_;
  ShardSetup setup_;
  SessionHeap session_heap_;  // before everything that owns an nghttp2 session: freed last
  std::unique_ptr<Reactor> reactor_;
  TimerQueue timers_;
  ChunkPool chunks_;
  std::vector<Router> routers_;
  std::vector<ClusterState> clusters_;
  std::vector<Op> accept_ops_;  // one per listener
  int wake_fd_ = -1;
  Op wake_op_;
  Timer drain_deadline_;
  Timer accept_retry_;
  int64_t now_ns_ = 0;
  IntrusiveList<H2Connection, &H2Connection::dirty_link> dirty_;
  IntrusiveList<H2Connection, &H2Connection::conn_link> downstreams_;
  std::vector<H2Connection*> graveyard_;
  std::vector<std::unique_ptr<ProxyStream>> stream_store_;
  std::vector<ProxyStream*> free_streams_;
  std::atomic<ShardMessage*> inbox_{nullptr};
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> finished_{false};
  bool draining_ = false;
  bool stop_ = false;
  uint64_t connections_ = 0;
  uint64_t calls_ = 0;
  std::string error_;
};

}  // namespace ringlb::core

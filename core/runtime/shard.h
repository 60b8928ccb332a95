#pragma once
// Shard: one thread, one reactor, its own listener sockets (SO_REUSEPORT), and the proxy state
// that thread owns (proxy::Context: client connections, upstream pools, calls, counters).
// Owner: its own thread, except the post_* methods, which any thread may call. Shard code takes
// no locks and makes no blocking calls.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "core/proxy/context.h"
#include "core/runtime/access_log.h"
#include "core/runtime/reports.h"
#include "lb/endpoint.h"

namespace ringlb::core::runtime {

/// The control thread's word on one endpoint's eligibility, the same for every shard: the bits
/// under `mask` (lb::kUnhealthy, lb::kEjected) become those of `bits`. With kEjected set it is
/// ejected until `until_ns` (CLOCK_MONOTONIC, the clock shards and control share); `streak` is
/// its backoff streak as the control thread counts it. Membership is never touched.
struct EligibilityUpdate {
  std::string key;  // lb::endpoint_key
  uint8_t mask = 0;
  uint8_t bits = 0;
  int64_t until_ns = 0;
  uint32_t streak = 0;
};

/// A reload, as one shard takes it (ShardMessage::kReconfigure): the new snapshot and its
/// mapping (proxy::Context::Reconfig), and this shard's sockets for the new listeners.
struct ShardReload {
  proxy::Context::Reconfig reconfig;
  std::vector<int> listen_fds;  // per new listener: this shard's socket, or -1 (it stays)
  ShardReload() = default;
  ShardReload(const ShardReload&) = delete;
  ShardReload& operator=(const ShardReload&) = delete;
  ~ShardReload();  // closes the sockets nobody took (a shard that stopped first)
};

/// A message from the control thread to one shard. Typed: each kind carries what it needs.
struct ShardMessage {
  enum class Kind : uint8_t {
    kEndpoints,    // cluster `cluster` now has endpoint set `set`
    kServe,        // start accepting clients (every DNS cluster had its first answer)
    kDrain,        // stop accepting, GOAWAY every client, finish calls, then stop
    kLeave,        // kDrain's first half: stop accepting, report kListenersClosed, await kGoaway
    kGoaway,       // kDrain's second half: every shard has closed its listeners
    kEligibility,  // endpoint `eligibility.key` of `cluster`: health or ejection changed
    kCollect,      // make a ShardSnapshot and post it back (ShardReport::kSnapshot, collect_id)
    kReconfigure,  // a reload: `reload` (new config snapshot, new listeners' sockets)
    kStall,        // test hook (RINGLB_TEST_HOOKS=1): block the thread for `stall_ns` (/live)
  };
  ShardMessage* next = nullptr;
  Kind kind = Kind::kEndpoints;
  size_t cluster = 0;
  lb::EndpointSetPtr set;
  EligibilityUpdate eligibility;        // kEligibility only
  uint64_t collect_id = 0;              // kCollect only
  std::unique_ptr<ShardReload> reload;  // kReconfigure only
  int64_t stall_ns = 0;                 // kStall only
};

/// What the control thread hands a shard at start.
struct ShardSetup {
  unsigned index = 0;
  unsigned workers = 1;  // shards in all: each gets its share of proxy.memory_limit
  io::IoBackend backend = io::IoBackend::kEpoll;
  // One per listener, this shard's own socket. The control thread may listen() on it before
  // kServe (taking over from another process); the shard owns it from then on.
  std::vector<int> listen_fds;
  std::vector<lb::EndpointSetPtr> endpoint_sets;  // one per cluster
  ReportQueue* reports = nullptr;                 // to the control thread; may be null (tests)
  AccessLogShard* access_log = nullptr;           // this shard's ring; null = log.access off
};

class Shard final : public proxy::Context, public io::IoHandler, public io::TimerHandler {
 public:
  Shard(std::shared_ptr<const config::Config> config, ShardSetup setup,
        base::Clock& clock = base::Clock::system());
  ~Shard() override;

  /// Thread body. Builds the reactor; `ready` is set to 1 (ok) or -1 (failed, see error()).
  /// Clients are not accepted before a kServe message (post_serve).
  void run(std::atomic<int>& ready);
  /// Any thread: start accepting clients. Idempotent.
  void post_serve();
  /// Any thread: stop accepting and drain. Idempotent.
  void post_drain();
  /// Any thread: a drain in two steps across shards (the control thread's SIGTERM). post_leave:
  /// close the listeners and report kListenersClosed; post_goaway (once every shard reported):
  /// tell the clients to go. So no client told to go reconnects to a shard still listening.
  void post_leave();
  void post_goaway();
  /// Any thread: hand the shard a new snapshot for a cluster. Lock-free (a Treiber stack the
  /// shard empties when its eventfd fires); the hot path keeps reading its own plain pointer.
  void post_endpoints(size_t cluster, lb::EndpointSetPtr set);
  /// Any thread: an endpoint's health or ejection changed (the control thread decides; every
  /// shard gets the same update).
  void post_eligibility(size_t cluster, EligibilityUpdate u);
  /// Any thread: make a ShardSnapshot and post it to the report queue as kSnapshot with
  /// `collect_id` (the admin's /metrics, /endpoints, /live).
  void post_collect(uint64_t collect_id);
  /// Any thread: a reload (control_reload.cc builds it). Messages posted before it use the
  /// running config's cluster indices, those after it the new one's.
  void post_reconfigure(std::unique_ptr<ShardReload> reload);
  /// Shard thread: applies a reload (kReconfigure; public so tests can drive it).
  void reconfigure(ShardReload& reload);
  /// Listeners this shard accepts on now (running config order), and removed ones whose
  /// socket is not closed yet.
  size_t listener_count() const { return listeners_.size(); }
  size_t closing_listener_count() const;
  /// Any thread; a test hook only (the admin's POST /test/stall with RINGLB_TEST_HOOKS=1): the
  /// shard blocks its thread for `ns`, as a stuck loop would, so /live can be seen failing.
  void post_stall(int64_t ns);
  /// Shard thread: this shard's state and counters, copied (kCollect calls it).
  void fill_snapshot(ShardSnapshot& s);
  /// Shard thread: handles every message posted so far (the eventfd handler calls it; public
  /// so benchmarks can drive a shard that is not running).
  void drain_inbox();

  // Driving a shard without its thread: run() and loop() are built from these, so a benchmark
  // or test that calls them directly (on one thread, in place of run()) drives the same code.
  /// Installs `reactor` and arms the wake eventfd. The caller's thread becomes the shard
  /// thread. False (see error()) if the eventfd failed.
  bool attach_reactor(std::unique_ptr<io::Reactor> reactor);
  /// Arms the accepts (what kServe does).
  void serve();

  const std::string& error() const { return error_; }
  bool finished() const { return finished_.load(); }

  void on_call_end(const proxy::CallRecord& record) override;
  void on_complete(io::Op& op, const io::Completion& c) override;
  void on_timer(io::Timer& t) override;
  void report_upstream_event(proxy::UpstreamEvent e, const proxy::ClusterState& cluster,
                             const proxy::EndpointState& ep, std::string_view detail) override;
  void report_ejection(const proxy::ClusterState& cluster, const proxy::EndpointState& ep,
                       const lb::Trip& trip, int64_t duration_ns) override;

 private:
  // One listening socket of this shard and its accept op; `router` is the Context router its
  // connections use. Heap-allocated: the reactor holds the op's address while it is armed.
  struct Listener final : io::IoHandler {
    explicit Listener(Shard& s, int f, size_t r) : shard(s), fd(f), router(r) { op.handler = this; }
    void on_complete(io::Op&, const io::Completion& c) override { shard.on_accept(*this, c); }
    Shard& shard;
    io::Op op;
    int fd = -1;
    size_t router = 0;
    bool removed = false;  // a reload removed it: once the accept op ends, hand_over closes it
  };
  void post(ShardMessage* m);
  bool all_listeners_closed() const;
  void handle(ShardMessage& m);
  void loop();
  void begin_drain();
  void on_accept(Listener& l, const io::Completion& c);
  /// Draining (or removed by a reload): accepts what waits in `l`'s queue, then closes it.
  void hand_over(Listener& l);
  /// Every listener is closed: report it, or GOAWAY (maybe_goaway) if nobody waits for that.
  void leave_done();
  /// GOAWAY to every client once this shard has left (left_) and may tell them (goaway_ok_).
  void maybe_goaway();

  ShardSetup setup_;
  std::vector<std::unique_ptr<Listener>> listeners_;  // running config order
  std::vector<std::unique_ptr<Listener>> closing_;    // removed by a reload, not yet freed
  int wake_fd_ = -1;
  io::Op wake_op_;
  io::Timer drain_deadline_;
  io::Timer accept_retry_;
  std::atomic<ShardMessage*> inbox_{nullptr};
  std::atomic<bool> finished_{false};
  bool serving_ = false;
  bool leaving_ = false;     // draining: the listeners are closing (or closed); no new accepts
  bool left_ = false;        // draining: every listener is closed
  bool goaway_ok_ = false;   // kDrain or kGoaway came: clients may be told to go
  bool last_words_ = false;  // drain_timeout reached: the calls left were ended (end_calls)
  bool stop_ = false;
  std::string error_;
};

}  // namespace ringlb::core::runtime

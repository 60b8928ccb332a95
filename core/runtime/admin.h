#pragma once
// AdminServer: the admin listener (HTTP/1.1) on the control thread's reactor: GET /metrics
// /ready /live /endpoints /config, POST /reload (and, with RINGLB_TEST_HOOKS=1 only, POST
// /test/stall). It never touches a shard's hot path: what it shows of the shards comes from
// Controller::collect() (one ShardSnapshot per shard, by message).
//
// Bounds, so that no admin client can stall the control thread or hold resources: at most
// admin.max_connections connections (more are answered 503 and closed); request line and
// headers at most 8 KiB (431), body at most 64 KiB (413); the whole request must arrive within
// admin.request_timeout, which is also the idle keep-alive limit and the bound on writing a
// response to a client that does not read. Output is queued and written without blocking.
// Collections are coalesced: any number of waiting /metrics /live /endpoints requests share at
// most one collection in flight plus one pending.
// Owner: the control thread (Controller owns it and turns its reactor).
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "core/runtime/http1.h"
#include "core/runtime/shard_snapshot.h"

namespace ringlb::core::runtime {

class Controller;

class AdminServer final : public io::IoHandler {
 public:
  static constexpr size_t kMaxHead = 8 * 1024;
  static constexpr size_t kMaxBody = 64 * 1024;
  static constexpr int64_t kCollectTimeoutNs = 1'000'000'000;

  /// `test_hooks`: POST /test/stall is served (RINGLB_TEST_HOOKS=1 at start), else 404.
  AdminServer(Controller& controller, io::Reactor& reactor, io::TimerQueue& timers,
              const config::AdminConfig& config, bool test_hooks);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  /// Binds (SO_REUSEPORT), listens, arms the accept, and logs the `admin: http://...` line.
  /// False with `error` on failure (a start-up error).
  bool start(std::string& error);
  /// The bound address ("127.0.0.1:9901"), once started.
  const std::string& address() const { return bound_; }

  void on_complete(io::Op& op, const io::Completion& c) override;  // the accept op

 private:
  struct Conn;
  enum class Need : uint8_t { kMetrics, kLive, kEndpoints };
  struct Waiter {
    uint64_t conn;
    Need need;
  };

  void on_accept(int fd);
  void on_conn_io(Conn& c, io::Op& op, const io::Completion& comp);
  void on_recv(Conn& c, const io::Completion& comp);
  void on_sent(Conn& c, const io::Completion& comp);
  void on_conn_timer(Conn& c);
  void try_parse(Conn& c);
  void dispatch(Conn& c, const http1::Request& req);
  void dispatch_test_hook(Conn& c, const http1::Request& req);
  /// Queues a whole response on `c` and starts writing it. `close` ends the connection after.
  void reply(Conn& c, int status, std::string_view content_type, std::string_view body,
             bool close = false, std::string_view extra = {});
  void reply_text(Conn& c, int status, std::string_view text, bool close = false) {
    reply(c, status, "text/plain; charset=utf-8", text, close);
  }
  void send_more(Conn& c);
  /// After the last response of a connection: half-close and read (and drop) what the peer
  /// still sends for a moment, so our answer is not lost to a reset.
  void linger(Conn& c);
  /// Ends a connection: cancels its ops; it is freed once they have completed (rule 6).
  void close_conn(Conn& c);
  void maybe_free(Conn& c);
  // Coalesced collections.
  void want_collection(Conn& c, Need need);
  void start_collection();
  void on_collected(std::vector<std::unique_ptr<ShardSnapshot>>& got,
                    const std::vector<unsigned>& missing);
  void answer(Conn& c, Need need, const std::vector<std::unique_ptr<ShardSnapshot>>& got,
              const std::vector<unsigned>& missing);

  Controller& controller_;
  io::Reactor& reactor_;
  io::TimerQueue& timers_;
  const config::AdminConfig config_;  // a copy: a reload does not change it (restart-only)
  const bool test_hooks_;
  int listen_fd_ = -1;
  io::Op accept_op_;
  std::string bound_;
  uint64_t next_conn_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  size_t serving_conns_ = 0;   // conns_ that count against max_connections
  size_t rejected_conns_ = 0;  // conns_ being answered 503 (bounded too)
  int64_t accept_error_logged_ns_ = 0;
  // Collections: `current_` waits for the one in flight; `next_` for the one after it (every
  // request there arrived after the one in flight started, so it needs a newer one).
  bool collecting_ = false;
  std::vector<Waiter> current_, next_;
};

/// GET /endpoints: every cluster with its DNS state and endpoints merged over the shards'
/// snapshots (admin_json.cc). `missing`: shards that did not answer. `now_ns`: monotonic.
std::string endpoints_json(const Controller& controller,
                           const std::vector<std::unique_ptr<ShardSnapshot>>& snapshots,
                           const std::vector<unsigned>& missing, int64_t now_ns);

}  // namespace ringlb::core::runtime

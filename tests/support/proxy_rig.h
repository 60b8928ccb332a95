#pragma once
// Test support: the proxy core (a proxy::Context: client connections, calls, upstream pools)
// driven on one thread, in memory, on a FakeClock: in-memory HTTP/2 clients in front of it,
// in-memory backends behind it, every byte moved by pump(). Time moves only by advance(). Owner:
// the test's thread.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/config/config.h"
#include "core/proxy/call.h"
#include "core/proxy/call_record.h"
#include "core/proxy/context.h"
#include "tests/support/h2_peers.h"
#include "tests/support/memory_reactor.h"

namespace ringlb::test {

/// A CallRecord kept after the hook returned (its path copied).
struct EndedCall {
  core::proxy::CallRecord rec;
  std::string path;
};

/// proxy::Context with a MemoryReactor and an end-of-call hook that keeps every record.
class TestContext final : public core::proxy::Context {
 public:
  TestContext(std::shared_ptr<const core::config::Config> config, core::base::Clock& clock);
  void on_call_end(const core::proxy::CallRecord& record) override;
  void report_upstream_event(core::proxy::UpstreamEvent e, const core::proxy::ClusterState& cluster,
                             const core::proxy::EndpointState& ep,
                             std::string_view detail) override;
  MemoryReactor& memory() { return *reactor_; }
  // What a shard does on SIGTERM and at drain_timeout.
  using core::proxy::Context::end_calls;
  using core::proxy::Context::start_draining;

  struct Event {
    core::proxy::UpstreamEvent kind;
    std::string endpoint;
    std::string detail;
  };
  std::vector<EndedCall> ended;
  std::vector<Event> events;  // every upstream event, in order

 private:
  MemoryReactor* reactor_ = nullptr;  // owned by the Host
};

class ProxyRig {
 public:
  /// `toml`: a whole ringlb config. Throws config::ConfigError if it is bad.
  explicit ProxyRig(std::string_view toml);
  ~ProxyRig();
  ProxyRig(const ProxyRig&) = delete;
  ProxyRig& operator=(const ProxyRig&) = delete;

  core::base::FakeClock clock;

  TestContext& ctx() { return *ctx_; }
  MemoryReactor& reactor() { return ctx_->memory(); }
  const std::vector<EndedCall>& ended() const { return ctx_->ended; }
  const std::vector<TestContext::Event>& events() const { return ctx_->events; }

  /// Opens a client connection on listener `listener`; returns its index.
  size_t add_client(size_t listener = 0, uint32_t stream_window = 65535);
  /// Client `i` (the first is opened on demand).
  H2Client& client(size_t i = 0);
  int client_fd(size_t i = 0) const { return clients_[i].fd; }
  /// How backends at `address` ("127.0.0.1:1") behave; shared by all their connections, so a
  /// change applies at once.
  H2Backend::Mode& mode(const std::string& address);
  /// Connections ringlb opened to `address` that came up, oldest first (closed ones included).
  std::vector<H2Backend*> backends(const std::string& address) const;
  /// The newest connection to `address`, or nullptr.
  H2Backend* backend(const std::string& address) const;
  /// All connections to every address, oldest first.
  size_t backend_count() const { return backends_.size(); }
  bool backend_open(const H2Backend* b) const;
  /// Backend connection `b` hangs up (ringlb reads EOF), as a server closing its socket.
  void hang_up(const H2Backend* b);

  /// Moves bytes and runs loop turns until nothing moves (at most `max_rounds` turns). False
  /// if it did not settle, or a peer's session failed (see error()).
  bool pump(int max_rounds = 200);
  /// Moves the fake clock and pumps.
  bool advance_ms(int64_t ms) {
    clock.advance(ms * 1'000'000);
    return pump();
  }
  const std::string& error() const { return error_; }

  /// ringlb's call for client `i`'s stream `id`, while its client stream is open.
  core::proxy::Call* call(int32_t id, size_t i = 0);

 private:
  struct ClientConn {
    std::unique_ptr<H2Client> peer;
    int fd = -1;
  };
  struct BackendConn {
    std::unique_ptr<H2Backend> peer;
    std::string address;
    int fd = -1;
    bool open = true;
  };
  bool step(bool* moved);
  bool fail(const std::string& why);

  std::shared_ptr<const core::config::Config> config_;
  std::unique_ptr<TestContext> ctx_;
  std::vector<ClientConn> clients_;
  std::vector<BackendConn> backends_;
  std::map<std::string, std::shared_ptr<H2Backend::Mode>> modes_;
  size_t connects_seen_ = 0;
  std::vector<uint8_t> buf_;
  std::string error_;
};

}  // namespace ringlb::test

// ringlb's per-call HTTP/2 path without sockets: one real DownstreamConn (nghttp2 server
// session) and one real UpstreamConn (nghttp2 client session) inside a real Shard, on a
// MemoryReactor that moves bytes through memory instead of the kernel. A bench-owned nghttp2
// client and a bench-owned nghttp2 backend speak to ringlb through it: per iteration a batch of
// gRPC unary calls (POST /bench.Echo/Call, 69-byte request and response bodies, grpc-status 0
// trailers), every call checked. BM_H2Path_PeersOnly runs the same client and backend talking to
// each other directly, so BM_H2Path minus BM_H2Path_PeersOnly is what ringlb adds per call.
//
// What is not measured: syscalls and the kernel (see bench/run.sh for that), the real
// reactors' own cost, connection setup (a warm-up call opens both connections before timing).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/runtime/access_log.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "tests/support/h2_peers.h"
#include "tests/support/memory_reactor.h"

namespace {

using namespace ringlb;
using core::io::Completion;
using core::io::Op;
using core::io::OpKind;
using test::MemoryReactor;

// ---------------------------------------------------------------------------------------------
// The bench's peers: plain nghttp2 (tests/support/h2_peers.h, shared with the unit tests), what a
// gRPC client and server put on the wire.

constexpr std::string_view kPath = "/bench.Echo/Call";
constexpr size_t kBodySize = 69;  // the 5-byte gRPC message header + 64 bytes of payload

const std::string kBody = [] {
  std::string b(kBodySize, '\0');
  b[4] = static_cast<char>(kBodySize - 5);  // uncompressed, length 64 (big-endian)
  for (size_t i = 5; i < kBodySize; ++i) b[i] = static_cast<char>('a' + i % 26);
  return b;
}();

/// The gRPC client: submits a batch of calls and checks what came back for each.
class Client {
 public:
  Client() : peer_(/*keep_bodies=*/false) {}

  bool pull(std::vector<uint8_t>& out) { return peer_.pull(out); }
  bool push(const std::vector<uint8_t>& in) { return peer_.push(in); }
  const std::string& error() const { return peer_.error(); }

  /// Submits `n` calls. False if nghttp2 refused one.
  bool start(size_t n) {
    static const test::Request kRequest = test::grpc_request(kPath, kBody);
    peer_.recycle();  // the last batch's streams (all closed) go back to the pool
    for (size_t i = 0; i < n; ++i) {
      if (peer_.submit(kRequest) < 0) return false;
    }
    return true;
  }
  bool all_done() const { return peer_.all_closed(); }
  /// Empty if every call ended well: status 200, grpc-status 0, 69 DATA bytes, no reset.
  std::string check() const {
    for (const test::H2Client::Stream* c : peer_.streams()) {
      if (c->status != 200 || c->grpc_status != 0 || c->body_bytes != kBodySize ||
          c->close_code != 0) {
        return "call failed: :status " + std::to_string(c->status) + ", grpc-status " +
               std::to_string(c->grpc_status) + ", " + std::to_string(c->body_bytes) +
               " DATA bytes, RST/close code " + std::to_string(c->close_code);
      }
    }
    return {};
  }

 private:
  test::H2Client peer_;
};

/// The gRPC backend: answers each complete request with 200, 69 bytes and grpc-status 0, or
/// grpc-status 3 if the request was not the one the client sends (wrong path or body size).
class Backend {
 public:
  Backend() : peer_(mode()) {}

  bool pull(std::vector<uint8_t>& out) { return peer_.pull(out); }
  bool push(const std::vector<uint8_t>& in) { return peer_.push(in); }
  const std::string& error() const { return peer_.error(); }
  /// The last batch's exchanges (all closed) go back to the pool.
  void recycle() { peer_.recycle(); }

 private:
  static std::shared_ptr<test::H2Backend::Mode> mode() {
    auto m = std::make_shared<test::H2Backend::Mode>();
    m->keep_bodies = false;
    m->response_body = kBody;
    m->expect_path = kPath;
    m->expect_body = kBodySize;
    return m;
  }

  test::H2Backend peer_;
};

// ---------------------------------------------------------------------------------------------
// Rigs: one batch of calls, pumped until every call has closed on the client.

constexpr int kMaxRounds = 64;  // a batch takes 4 shard turns today: 64 means it is stuck

core::config::Config make_config() {
  // One listener, one cluster, one static endpoint that is never really connected: the
  // MemoryReactor completes the connect without calling connect(2).
  return core::config::parse_config(
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"bench\"\n"
      "[[cluster]]\nname = \"bench\"\nendpoints = [\"127.0.0.1:1\"]\n",
      "<h2path bench>");
}

/// Client -> ringlb (DownstreamConn ... UpstreamConn) -> backend, all in memory.
class RinglbRig {
 public:
  /// `access_log`: with the access log on (every call a line, written to /dev/null by the
  /// writer thread), to measure what it costs the shard.
  explicit RinglbRig(bool access_log = false)
      : config_(std::make_shared<const core::config::Config>(make_config())) {
    core::runtime::ShardSetup setup;
    setup.endpoint_sets = core::runtime::initial_endpoint_sets(*config_);
    if (access_log) {
      int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      access_log_ = std::make_unique<core::runtime::AccessLog>(fd, true, "", 1, 1024, 1.0);
      if (std::string e; !access_log_->start(e)) error_ = e;
      setup.access_log = access_log_->shard(0);
    }
    shard_ = std::make_unique<core::runtime::Shard>(config_, std::move(setup));
    auto reactor = std::make_unique<MemoryReactor>();
    reactor_ = reactor.get();
    if (!shard_->attach_reactor(std::move(reactor))) {
      error_ = "attach_reactor: " + shard_->error();
      return;
    }
    // The client side of ringlb needs a real fd (the shard closes it, sets TCP_NODELAY and
    // shuts it down): an unconnected TCP socket, which never carries a byte. The upstream side
    // makes its own the same way (make_client_socket), equally unconnected.
    ds_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ds_fd_ < 0) {
      error_ = std::string("socket: ") + strerror(errno);
      return;
    }
    if (!shard_->adopt(0, ds_fd_)) error_ = "the shard refused the connection";
  }

  ~RinglbRig() {
    // Both peers hang up; the shard closes both connections and reclaims them, as it would
    // after real EOFs. Then the shard (and with it the reactor) goes.
    if (reactor_ != nullptr && ds_fd_ >= 0) {
      reactor_->inject_eof(ds_fd_);
      if (us_fd_ >= 0) reactor_->inject_eof(us_fd_);
      for (int i = 0; i < 8; ++i) shard_->turn(0);
    }
  }

  const std::string& error() const { return error_; }
  int64_t turns() const { return turns_; }

  /// One batch of `n` calls through ringlb. False (see error()) if any call failed.
  bool run(size_t n) {
    backend_.recycle();
    if (!client_.start(n)) return fail(client_.error());
    for (int round = 0; round < kMaxRounds; ++round) {
      if (!client_.pull(buf_)) return fail(client_.error());
      if (!buf_.empty()) reactor_->inject(ds_fd_, buf_);
      shard_->turn(0);
      ++turns_;
      if (us_fd_ < 0 && !reactor_->connects().empty()) us_fd_ = reactor_->connects().front();
      if (reactor_->connects().size() > 1) return fail("ringlb opened a second upstream");
      if (us_fd_ >= 0) {
        if (reactor_->take_wire(us_fd_, buf_) && !backend_.push(buf_)) {
          return fail(backend_.error());
        }
        if (!backend_.pull(buf_)) return fail(backend_.error());
        if (!buf_.empty()) reactor_->inject(us_fd_, buf_);
      }
      if (reactor_->take_wire(ds_fd_, buf_) && !client_.push(buf_)) return fail(client_.error());
      if (client_.all_done()) {
        std::string bad = client_.check();
        return bad.empty() ? true : fail(bad);
      }
      if (reactor_->closed(ds_fd_)) return fail("ringlb closed the client connection");
    }
    return fail("calls did not finish in " + std::to_string(kMaxRounds) + " loop turns");
  }

 private:
  bool fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    return false;
  }

  std::shared_ptr<const core::config::Config> config_;
  Client client_;
  Backend backend_;
  std::unique_ptr<core::runtime::AccessLog> access_log_;  // outlives the shard
  std::unique_ptr<core::runtime::Shard> shard_;
  MemoryReactor* reactor_ = nullptr;  // owned by the shard
  int ds_fd_ = -1;
  int us_fd_ = -1;
  std::vector<uint8_t> buf_;
  int64_t turns_ = 0;
  std::string error_;
};

/// Client <-> backend directly: the same sessions and calls without ringlb, to subtract.
class PeersRig {
 public:
  const std::string& error() const { return error_; }
  int64_t turns() const { return 0; }

  bool run(size_t n) {
    backend_.recycle();
    if (!client_.start(n)) return fail(client_.error());
    for (int round = 0; round < kMaxRounds; ++round) {
      if (!client_.pull(buf_)) return fail(client_.error());
      if (!backend_.push(buf_) || !backend_.pull(buf_)) return fail(backend_.error());
      if (!client_.push(buf_)) return fail(client_.error());
      if (client_.all_done()) {
        std::string bad = client_.check();
        return bad.empty() ? true : fail(bad);
      }
    }
    return fail("calls did not finish in " + std::to_string(kMaxRounds) + " rounds");
  }

 private:
  bool fail(const std::string& why) {
    if (error_.empty()) error_ = why;
    return false;
  }

  Client client_;
  Backend backend_;
  std::vector<uint8_t> buf_;
  std::string error_;
};

template <typename Rig, typename... Args>
void run_calls(benchmark::State& state, Args... args) {
  const auto n = static_cast<size_t>(state.range(0));
  Rig rig(args...);
  // A warm-up call opens the connections and settles SETTINGS, so timing sees the per-call
  // path only.
  if (!rig.error().empty() || !rig.run(1)) state.SkipWithError(rig.error().c_str());
  const int64_t turns_before = rig.turns();
  for (auto _ : state) {
    if (!rig.run(n)) {
      state.SkipWithError(rig.error().c_str());
      break;
    }
  }
  const auto calls = static_cast<double>(state.iterations()) * static_cast<double>(n);
  if (calls == 0) return;
  state.SetItemsProcessed(static_cast<int64_t>(calls));
  // Seconds per call (shown with an SI prefix: 2.5u = 2.5 us), whatever the batch size.
  state.counters["per_call"] =
      benchmark::Counter(calls, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  if (rig.turns() > 0) {
    state.counters["turns/call"] = static_cast<double>(rig.turns() - turns_before) / calls;
  }
}

void BM_H2Path(benchmark::State& state) {
  run_calls<RinglbRig>(state);
}
void BM_H2Path_AccessLog(benchmark::State& state) {
  run_calls<RinglbRig>(state, true);
}
void BM_H2Path_PeersOnly(benchmark::State& state) {
  run_calls<PeersRig>(state);
}

}  // namespace

BENCHMARK(BM_H2Path)->ArgName("concurrent")->Arg(1)->Arg(32);
BENCHMARK(BM_H2Path_AccessLog)->ArgName("concurrent")->Arg(1)->Arg(32);
BENCHMARK(BM_H2Path_PeersOnly)->ArgName("concurrent")->Arg(1)->Arg(32);

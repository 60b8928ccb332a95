// libFuzzer target: the bytes one client sends to ringlb. Each input is one client connection's
// byte stream, split into recv chunks wherever the 7-byte marker "~SPLIT~" occurs (the marker
// itself is dropped; an input without one arrives as a single chunk). The marker "~IDLE~" also
// splits, and moves the clock past proxy.idle_timeout there, so ringlb starts its two-phase
// GOAWAY (shutdown notice and PING) and what follows can answer it. The bytes go into a real
// runtime::Shard (DownstreamConn, ProxyStream, UpstreamConn, nghttp2 on both sides) over the
// in-memory reactor of tests/support/memory_reactor.h, driven on this thread the way
// bench/micro/h2path_bench.cc drives it, with a fake clock.
//
// Upstream side: cluster "echo" (127.0.0.1:1, the default) is an in-memory nghttp2 backend that
// answers each finished request with 200, a 69-byte gRPC message and grpc-status 0; requests
// whose :path starts with "/rst." get RST_STREAM and with "/goaway." a GOAWAY, so those paths
// reach the upstream error handling. Cluster "dead" (127.0.0.1:2, routes "/dead.") refuses every
// connect. After the last chunk the rig lets the calls run, jumps the clock a minute ahead (call
// deadlines, connect and idle timers), then both peers hang up and every connection must be
// closed and reclaimed: a shard still busy after that is reported as a bug, and anything not
// freed shows up as a leak (LeakSanitizer).
// Built and run by tests/fuzz/run.sh. RINGLB_FUZZ_LOG=1 keeps ringlb's own log lines;
// RINGLB_FUZZ_TRACE=1 prints one line per input (calls, connects, answers, bytes to the client),
// to check that a seed reaches what it is meant to.
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/log.h"
#include "core/config/config.h"
#include "core/io/reactor.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "tests/support/memory_reactor.h"

namespace {

using namespace ringlb;
using core::io::Completion;
using core::io::Op;
using core::io::OpKind;

constexpr std::string_view kSplit = "~SPLIT~";
constexpr std::string_view kIdle = "~IDLE~";
constexpr uint16_t kDeadPort = 2;
constexpr int kSettleTurns = 8;     // after each chunk and at the end: calls run to completion
constexpr int kShutdownTurns = 64;  // to close and reclaim everything; more means stuck
constexpr int64_t kTurnNs = 1'000'000;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "h2_downstream_fuzz: %s\n", why.c_str());
  std::abort();
}

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
          const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())), name.size(),
          value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// ---------------------------------------------------------------------------------------------
// The in-memory backend behind cluster "echo": one nghttp2 server session per upstream fd.

class Backend {
 public:
  Backend() {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_server_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, 1);
  }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  ~Backend() { nghttp2_session_del(session_); }

  /// Feeds what ringlb sent. False if the session failed: ringlb sent the backend something a
  /// conforming HTTP/2 server rejects.
  bool push(const std::vector<uint8_t>& in) {
    if (in.empty()) return true;
    ssize_t n = nghttp2_session_mem_recv(session_, in.data(), in.size());
    if (n < 0) error_ = nghttp2_strerror(static_cast<int>(n));
    return n >= 0;
  }
  /// What the backend wants to send, into `out`.
  bool pull(std::vector<uint8_t>& out) {
    out.clear();
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        error_ = nghttp2_strerror(static_cast<int>(n));
        return false;
      }
      if (n == 0) return true;
      out.insert(out.end(), data, data + n);
    }
  }
  const std::string& error() const { return error_; }

  static inline uint64_t answered = 0;  // responses submitted, all backends (for the trace)

 private:
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    if (f->hd.type != NGHTTP2_HEADERS ||
        std::string_view(reinterpret_cast<const char*>(name), namelen) != ":path") {
      return 0;
    }
    auto* b = static_cast<Backend*>(user);
    b->paths_[f->hd.stream_id] = std::string(reinterpret_cast<const char*>(value), valuelen);
    (void)s;
    return 0;
  }
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user) {
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    auto* b = static_cast<Backend*>(user);
    std::string path = b->paths_[f->hd.stream_id];
    b->paths_.erase(f->hd.stream_id);
    int32_t id = f->hd.stream_id;
    if (path.starts_with("/rst.")) {
      nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
      return 0;
    }
    if (path.starts_with("/goaway.")) {
      nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, nullptr, 0);
      return 0;
    }
    static const nghttp2_nv kHeaders[] = {nv(":status", "200"),
                                          nv("content-type", "application/grpc")};
    nghttp2_data_provider prd;
    prd.source.ptr = nullptr;
    prd.read_callback = read_body;
    nghttp2_submit_response(s, id, kHeaders, 2, &prd);
    ++answered;
    return 0;
  }
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source*, void*) {
    static const nghttp2_nv kTrailers[] = {nv("grpc-status", "0")};
    constexpr size_t kBody = 69;      // a 5-byte gRPC message header and 64 bytes
    size_t n = std::min(len, kBody);  // nghttp2 offers at least 16 KiB: one call is enough
    memset(buf, 'x', n);
    buf[0] = 0;
    buf[1] = buf[2] = buf[3] = 0;
    buf[4] = static_cast<uint8_t>(kBody - 5);
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_submit_trailer(s, id, kTrailers, 1);
    return static_cast<ssize_t>(n);
  }

  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::string> paths_;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// The reactor: a MemoryReactor, plus connects to the dead port refused, and a record of which
// upstream fds are open (fd numbers are reused within one input).

class RigReactor final : public core::io::Reactor {
 public:
  test::MemoryReactor& mem() { return mem_; }

  const char* name() const override { return "fuzz"; }
  void accept(int fd, Op& op) override { mem_.accept(fd, op); }
  void recv(int fd, Op& op) override { mem_.recv(fd, op); }
  void send(int fd, Op& op) override { mem_.send(fd, op); }
  void poll_in(int fd, Op& op) override { mem_.poll_in(fd, op); }
  void poll_out(int fd, Op& op) override { mem_.poll_out(fd, op); }
  void cancel(Op& op) override {
    // A refused connect is already queued with its result; like a send, it arrives as it is.
    if (std::find(refused_.begin(), refused_.end(), &op) == refused_.end()) mem_.cancel(op);
  }
  void forget(int fd) override { mem_.forget(fd); }
  void close(int fd) override {
    backends_.erase(fd);
    mem_.close(fd);
  }

  void connect(int fd, const sockaddr* addr, socklen_t len, Op& op) override {
    uint16_t port = 0;
    if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
      port = ntohs(reinterpret_cast<const sockaddr_in*>(addr)->sin_port);
    }
    if (port == kDeadPort) {
      op.kind = OpKind::kConnect;
      op.fd = fd;
      op.active = true;
      op.cancelled = false;
      refused_.push_back(&op);
      return;
    }
    backends_[fd] = std::make_unique<Backend>();
    mem_.connect(fd, addr, len, op);
  }

  int run_once(int64_t timeout_ns) override {
    std::vector<Op*> refused;
    refused.swap(refused_);
    for (Op* op : refused) {
      op->active = false;
      op->handler->on_complete(*op, Completion{-ECONNREFUSED, false, nullptr});
    }
    return static_cast<int>(refused.size()) + mem_.run_once(timeout_ns);
  }

  /// Moves bytes between ringlb's upstream connections and their backends. A backend whose
  /// session failed hangs up (the upstream sees EOF).
  void serve_backends() {
    for (auto& [fd, backend] : backends_) {
      if (!backend) continue;
      if (mem_.take_wire(fd, buf_) && !backend->push(buf_)) {
        report_backend_error(backend->error());
        backend.reset();
        mem_.inject_eof(fd);
        continue;
      }
      if (backend->pull(buf_) && !buf_.empty()) mem_.inject(fd, buf_);
    }
  }

 private:
  static void report_backend_error(const std::string& error) {
    // ringlb must only ever send a backend valid HTTP/2. Reported (once) rather than aborted on:
    // the backend's nghttp2 is stricter in places than the RFC.
    static bool reported = false;
    if (!reported) {
      std::fprintf(stderr, "h2_downstream_fuzz: a backend rejected what ringlb sent: %s\n",
                   error.c_str());
      reported = true;
    }
  }

  test::MemoryReactor mem_;
  std::vector<Op*> refused_;
  std::map<int, std::unique_ptr<Backend>> backends_;
  std::vector<uint8_t> buf_;
};

// ---------------------------------------------------------------------------------------------

std::shared_ptr<const core::config::Config> make_config() {
  // Small limits so a short input reaches them: a few streams, 16 KiB windows, 4 KiB headers.
  return std::make_shared<const core::config::Config>(core::config::parse_config(
      "[proxy]\nmax_concurrent_streams = 8\nstream_buffer = \"16KiB\"\n"
      "connection_window = \"64KiB\"\nmax_header_list_size = \"4KiB\"\n"
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"echo\"\n"
      "routes = [ { prefix = \"/dead.\", cluster = \"dead\" },\n"
      "           { prefix = \"/slow.\", cluster = \"echo\", timeout = \"50ms\" } ]\n"
      "[[cluster]]\nname = \"echo\"\nendpoints = [\"127.0.0.1:1\"]\nconnect_timeout = \"100ms\"\n"
      "[[cluster]]\nname = \"dead\"\nendpoints = [\"127.0.0.1:2\"]\n",
      "<h2_downstream_fuzz>"));
}

struct Chunk {
  std::string_view bytes;
  bool idle_after = false;  // the chunk ended at "~IDLE~"
};

std::vector<Chunk> split(std::string_view in) {
  std::vector<Chunk> chunks;
  for (;;) {
    // memmem: libFuzzer watches its arguments, so mutations learn the markers.
    const void* s = memmem(in.data(), in.size(), kSplit.data(), kSplit.size());
    const void* i = memmem(in.data(), in.size(), kIdle.data(), kIdle.size());
    if (s == nullptr && i == nullptr) break;
    const bool idle = s == nullptr || (i != nullptr && i < s);
    const char* at = static_cast<const char*>(idle ? i : s);
    size_t n = static_cast<size_t>(at - in.data());
    chunks.push_back({in.substr(0, n), idle});
    in.remove_prefix(n + (idle ? kIdle : kSplit).size());
  }
  if (!in.empty()) chunks.push_back({in, false});
  return chunks;
}

class Rig {
 public:
  explicit Rig(const std::shared_ptr<const core::config::Config>& config) {
    core::runtime::ShardSetup setup;
    setup.endpoint_sets = core::runtime::initial_endpoint_sets(*config);
    shard_ = std::make_unique<core::runtime::Shard>(config, std::move(setup), clock_);
    auto reactor = std::make_unique<RigReactor>();
    reactor_ = reactor.get();
    if (!shard_->attach_reactor(std::move(reactor))) die("attach_reactor: " + shard_->error());
    // A real, unconnected socket: the shard sets options on it and closes it.
    ds_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ds_fd_ < 0) die(std::string("socket: ") + strerror(errno));
    if (!shard_->adopt(0, ds_fd_)) die("the shard refused the connection");
  }

  ~Rig() {
    if (trace_) {
      std::fprintf(stderr,
                   "h2_downstream_fuzz: calls %llu, upstream connects %zu, backend "
                   "answers %llu, %zu bytes to the client, client closed by ringlb: %s\n",
                   static_cast<unsigned long long>(shard_->calls()),
                   reactor_->mem().connects().size(),
                   static_cast<unsigned long long>(Backend::answered - answered_before_),
                   to_client_, reactor_->mem().closed(ds_fd_) ? "yes" : "no");
      std::fprintf(stderr, "h2_downstream_fuzz: frames to the client:%s\n", frames().c_str());
    }
    shutdown();
  }

  void feed(std::string_view chunk) {
    // Once ringlb has closed the client, the fd number may belong to an upstream socket.
    if (!chunk.empty() && !reactor_->mem().closed(ds_fd_)) {
      reactor_->mem().inject(ds_fd_, std::vector<uint8_t>(chunk.begin(), chunk.end()));
    }
    settle(kSettleTurns);
  }

  void settle(int turns) {
    for (int i = 0; i < turns; ++i) turn();
  }

  void jump(int64_t ns) { clock_.advance(ns); }

 private:
  void turn() {
    clock_.advance(kTurnNs);
    shard_->turn(0);
    reactor_->serve_backends();
    if (!reactor_->mem().closed(ds_fd_) && reactor_->mem().take_wire(ds_fd_, out_)) {
      to_client_ += out_.size();
      if (trace_) sent_.insert(sent_.end(), out_.begin(), out_.end());
    }
  }

  // " SETTINGS HEADERS(1) ... GOAWAY(last 2147483647)": what ringlb sent, frame by frame.
  std::string frames() const {
    static const char* const kNames[] = {"DATA",          "HEADERS",      "PRIORITY", "RST_STREAM",
                                         "SETTINGS",      "PUSH_PROMISE", "PING",     "GOAWAY",
                                         "WINDOW_UPDATE", "CONTINUATION"};
    std::string out;
    for (size_t p = 0; p + 9 <= sent_.size();) {
      size_t len = (size_t{sent_[p]} << 16) | (size_t{sent_[p + 1]} << 8) | sent_[p + 2];
      uint8_t type = sent_[p + 3];
      uint32_t id = ((uint32_t{sent_[p + 5]} << 24) | (uint32_t{sent_[p + 6]} << 16) |
                     (uint32_t{sent_[p + 7]} << 8) | sent_[p + 8]) &
                    0x7fffffffu;
      out += " ";
      out += type < 10 ? kNames[type] : "?";
      if (id != 0) out += "(" + std::to_string(id) + ")";
      if (type == 7 && len >= 8 && p + 13 <= sent_.size()) {
        uint32_t last = ((uint32_t{sent_[p + 9]} << 24) | (uint32_t{sent_[p + 10]} << 16) |
                         (uint32_t{sent_[p + 11]} << 8) | sent_[p + 12]) &
                        0x7fffffffu;
        out += "(last " + std::to_string(last) + ")";
      }
      p += 9 + len;
    }
    return out;
  }

  // Both peers hang up, as Shard::loop ends: every connection closes and every op completes.
  void shutdown() {
    if (!reactor_->mem().closed(ds_fd_)) reactor_->mem().inject_eof(ds_fd_);
    shard_->close_upstreams();
    for (int i = 0; i < kShutdownTurns; ++i) {
      shard_->turn(0);
      shard_->flush_dirty();
      bool reaped = shard_->reap();
      if (!shard_->connections_busy() && !reaped && i > 0) {
        shard_.reset();
        return;
      }
    }
    die("connections still busy " + std::to_string(kShutdownTurns) +
        " turns after both peers hung up (downstreams: " +
        std::to_string(shard_->downstream_count()) + ")");
  }

  core::base::FakeClock clock_;
  std::unique_ptr<core::runtime::Shard> shard_;
  RigReactor* reactor_ = nullptr;  // owned by the shard
  int ds_fd_ = -1;
  std::vector<uint8_t> out_;
  size_t to_client_ = 0;
  std::vector<uint8_t> sent_;  // everything ringlb sent the client, when tracing
  const bool trace_ = getenv("RINGLB_FUZZ_TRACE") != nullptr;
  const uint64_t answered_before_ = Backend::answered;
};

std::shared_ptr<const core::config::Config> g_config;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* log = getenv("RINGLB_FUZZ_LOG");
  if (log == nullptr || std::string_view(log) != "1") {
    core::base::set_log_level(core::base::LogLevel::kError);
  }
  g_config = make_config();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Rig rig(g_config);
  for (const Chunk& chunk : split({reinterpret_cast<const char*>(data), size})) {
    rig.feed(chunk.bytes);
    if (chunk.idle_after) {
      rig.jump(g_config->proxy.idle_timeout.count());
      rig.settle(kSettleTurns);
    }
  }
  rig.settle(kSettleTurns);
  rig.jump(60'000'000'000);  // past every call deadline and connect timeout
  rig.settle(kSettleTurns);
  rig.jump(g_config->proxy.idle_timeout.count());  // idle: shutdown notice and PING
  rig.settle(kSettleTurns);
  rig.jump(2'000'000'000);  // the PING was not answered: final GOAWAY
  rig.settle(kSettleTurns);
  return 0;
}

// libFuzzer target: the bytes a backend sends to ringlb. A well-behaved in-memory gRPC client
// (tests/support/h2_peers.h) makes four calls through a real runtime::Shard (DownstreamConn,
// Call, UpstreamConn, nghttp2 on both sides) over the in-memory reactor of
// tests/support/memory_reactor.h, driven on this thread with a fake clock as in
// h2_downstream_fuzz.cc; the server side of every upstream connection ringlb opens is the input.
//
// Calls, opened in this order (upstream streams 1, 3, 5, 7 on a first connection that lets them
// all go): 1 a unary call (grpc-timeout 2S), 2 a server-streaming one (5S), 3 an upload whose
// 20 KiB body outgrows proxy.retry_buffer and the 16 KiB windows (5S), 4 a call with no deadline
// at all (only keepalive can end it if the backend goes quiet). Cluster "up" has one endpoint
// (127.0.0.1:1) and retries UNAVAILABLE and RESOURCE_EXHAUSTED.
//
// The input is split into chunks at markers (the markers themselves are dropped):
//   "~SPLIT~"   the next chunk goes out after ringlb has run a few loop turns;
//   "~WAIT~"    also moves the clock 300 ms (keepalive interval 250 ms, timeout 500 ms);
//   "~HANGUP~"  also closes every open upstream connection from the backend's side (EOF);
//   "~REFUSE~"  also makes every later connect fail (ECONNREFUSED): replays and retries fail.
// The first chunk is the backend's greeting (its preface SETTINGS, say): every upstream
// connection gets it as soon as it connects, the first one and any ringlb opens later (after a
// GOAWAY, a hang-up, a retry). Each later chunk goes to every upstream connection open then.
// What ringlb sends upstream is read and dropped (kept for the trace).
//
// After the last chunk the rig lets time pass in steps (keepalive PINGs and their timeouts,
// backoff, connect timeouts), then past every deadline and past keepalive's 5-minute quiet
// spacing. Every client call must then have ended
// with a gRPC answer: the stream closed cleanly with END_STREAM, :status 200 and a grpc-status
// (the backend's or ringlb's own), never a reset, a hang or bytes the client's nghttp2 rejects.
// Then both sides hang up and every connection must be closed and reclaimed: a shard still busy
// is reported as a bug, and anything not freed shows up as a leak (LeakSanitizer).
// Built and run by tests/fuzz/run.sh. RINGLB_FUZZ_LOG=1 keeps ringlb's own log lines;
// RINGLB_FUZZ_TRACE=1 prints, per input, the upstream connections with the frames ringlb sent
// each, and every call's outcome, to check that a seed reaches what it is meant to.
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/log.h"
#include "core/config/config.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "tests/support/h2_peers.h"
#include "tests/support/memory_reactor.h"

namespace {

using namespace ringlb;

constexpr std::string_view kSplit = "~SPLIT~";
constexpr std::string_view kWait = "~WAIT~";
constexpr std::string_view kHangup = "~HANGUP~";
constexpr std::string_view kRefuse = "~REFUSE~";
constexpr std::string_view kEndpoint = "127.0.0.1:1";
constexpr int kSettleTurns = 8;     // after each chunk: what it starts runs to completion
constexpr int kShutdownTurns = 64;  // to close and reclaim everything; more means stuck
constexpr int64_t kTurnNs = 1'000'000;
constexpr int64_t kWaitNs = 300'000'000;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int kTailSteps = 64;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "h2_upstream_fuzz: %s\n", why.c_str());
  std::abort();
}

std::shared_ptr<const core::config::Config> make_config() {
  // Small limits so a short input reaches them: 16 KiB stream windows, 4 KiB headers, an 8 KiB
  // replay buffer (the upload outgrows it); quick backoff so retries fit in the final steps.
  return std::make_shared<const core::config::Config>(core::config::parse_config(
      "[proxy]\nmax_concurrent_streams = 8\nstream_buffer = \"16KiB\"\n"
      "connection_window = \"64KiB\"\nmax_header_list_size = \"4KiB\"\nretry_buffer = \"8KiB\"\n"
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"up\"\n"
      "[[cluster]]\nname = \"up\"\nendpoints = [\"127.0.0.1:1\"]\nconnect_timeout = \"100ms\"\n"
      "retry = { on = [\"unavailable\", \"resource_exhausted\"], attempts = 3, backoff = \"5ms\","
      " max_backoff = \"20ms\" }\n",
      "<h2_upstream_fuzz>"));
}

std::string grpc_message(size_t n, char fill) {
  std::string m(5 + n, fill);
  m[0] = 0;
  m[1] = static_cast<char>(n >> 24);
  m[2] = static_cast<char>(n >> 16);
  m[3] = static_cast<char>(n >> 8);
  m[4] = static_cast<char>(n);
  return m;
}

// The client's calls (see the header comment).
std::vector<test::Request> make_calls() {
  std::vector<test::Request> calls;
  calls.push_back(test::grpc_request("/echo.Svc/Unary", grpc_message(10, 'u'), "2S"));
  calls.push_back(test::grpc_request("/echo.Svc/ServerStream", grpc_message(4, 's'), "5S"));
  calls.push_back(test::grpc_request(
      "/echo.Svc/Upload",
      grpc_message(8000, 'a') + grpc_message(8000, 'b') + grpc_message(4000, 'c'), "5S"));
  calls.push_back(test::grpc_request("/echo.Svc/NoDeadline", grpc_message(3, 'n')));
  return calls;
}

enum class After : uint8_t { kNothing, kWait, kHangup, kRefuse };

struct Chunk {
  std::string_view bytes;
  After after = After::kNothing;  // the marker that ended it
};

std::vector<Chunk> split(std::string_view in) {
  static constexpr std::array<std::pair<std::string_view, After>, 4> kMarkers = {{
      {kSplit, After::kNothing},
      {kWait, After::kWait},
      {kHangup, After::kHangup},
      {kRefuse, After::kRefuse},
  }};
  std::vector<Chunk> chunks;
  for (;;) {
    // memmem: libFuzzer watches its arguments, so mutations learn the markers.
    const char* first = nullptr;
    size_t which = 0;
    for (size_t m = 0; m < kMarkers.size(); ++m) {
      const auto* at = static_cast<const char*>(
          memmem(in.data(), in.size(), kMarkers[m].first.data(), kMarkers[m].first.size()));
      if (at != nullptr && (first == nullptr || at < first)) {
        first = at;
        which = m;
      }
    }
    if (first == nullptr) break;
    size_t n = static_cast<size_t>(first - in.data());
    chunks.push_back({in.substr(0, n), kMarkers[which].second});
    in.remove_prefix(n + kMarkers[which].first.size());
  }
  // Always at least the greeting, even if empty.
  if (!in.empty() || chunks.empty()) chunks.push_back({in, After::kNothing});
  return chunks;
}

// " SETTINGS HEADERS(1) ... GOAWAY(last 7)": HTTP/2 frames in `bytes`, one word each (a
// connection preface first is skipped).
std::string frame_names(const std::vector<uint8_t>& bytes) {
  static const char* const kNames[] = {"DATA",          "HEADERS",      "PRIORITY", "RST_STREAM",
                                       "SETTINGS",      "PUSH_PROMISE", "PING",     "GOAWAY",
                                       "WINDOW_UPDATE", "CONTINUATION"};
  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  size_t p = 0;
  if (bytes.size() >= kPreface.size() &&
      std::string_view(reinterpret_cast<const char*>(bytes.data()), kPreface.size()) == kPreface) {
    p = kPreface.size();
  }
  std::string out;
  while (p + 9 <= bytes.size()) {
    size_t len = (size_t{bytes[p]} << 16) | (size_t{bytes[p + 1]} << 8) | bytes[p + 2];
    uint8_t type = bytes[p + 3];
    uint8_t flags = bytes[p + 4];
    uint32_t id = ((uint32_t{bytes[p + 5]} << 24) | (uint32_t{bytes[p + 6]} << 16) |
                   (uint32_t{bytes[p + 7]} << 8) | bytes[p + 8]) &
                  0x7fffffffu;
    out += " ";
    out += type < 10 ? kNames[type] : "?";
    if ((type == 4 || type == 6) && (flags & 1) != 0) out += "+ACK";
    if (id != 0) out += "(" + std::to_string(id) + ")";
    p += 9 + len;
  }
  return out;
}

// The client frames that only a peer which rejected something sends here: this client never
// resets a stream nor says GOAWAY on its own. Returns the first such frame's description.
std::string rejection(const std::vector<uint8_t>& bytes) {
  size_t p = 0;
  static constexpr size_t kPrefaceLen = 24;
  if (bytes.size() >= kPrefaceLen && bytes[0] == 'P' && bytes[1] == 'R' && bytes[2] == 'I') {
    p = kPrefaceLen;
  }
  while (p + 9 <= bytes.size()) {
    size_t len = (size_t{bytes[p]} << 16) | (size_t{bytes[p + 1]} << 8) | bytes[p + 2];
    uint8_t type = bytes[p + 3];
    uint32_t id = ((uint32_t{bytes[p + 5]} << 24) | (uint32_t{bytes[p + 6]} << 16) |
                   (uint32_t{bytes[p + 7]} << 8) | bytes[p + 8]) &
                  0x7fffffffu;
    if ((type == NGHTTP2_RST_STREAM || type == NGHTTP2_GOAWAY) && p + 9 + len <= bytes.size()) {
      const uint8_t* q = bytes.data() + p + 9 + (type == NGHTTP2_GOAWAY ? 4 : 0);
      uint32_t code =
          len >= (type == NGHTTP2_GOAWAY ? 8u : 4u)
              ? (uint32_t{q[0]} << 24) | (uint32_t{q[1]} << 16) | (uint32_t{q[2]} << 8) | q[3]
              : 0;
      return std::string(type == NGHTTP2_GOAWAY ? "GOAWAY" : "RST_STREAM") + " on stream " +
             std::to_string(id) + " code " + nghttp2_http2_strerror(code);
    }
    p += 9 + len;
  }
  return {};
}

class Rig {
 public:
  explicit Rig(const std::shared_ptr<const core::config::Config>& config) {
    core::runtime::ShardSetup setup;
    setup.endpoint_sets = core::runtime::initial_endpoint_sets(*config);
    shard_ = std::make_unique<core::runtime::Shard>(config, std::move(setup), clock_);
    auto reactor = std::make_unique<test::MemoryReactor>();
    mem_ = reactor.get();
    if (!shard_->attach_reactor(std::move(reactor))) die("attach_reactor: " + shard_->error());
    // A real, unconnected socket: the shard sets options on it and closes it.
    ds_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ds_fd_ < 0) die(std::string("socket: ") + strerror(errno));
    if (!shard_->adopt(0, ds_fd_)) die("the shard refused the connection");
  }

  ~Rig() {
    if (trace_) print_trace();
    shutdown();
  }

  void start(const std::vector<test::Request>& calls, std::string_view greeting) {
    greeting_.assign(greeting.begin(), greeting.end());
    for (const test::Request& r : calls) {
      if (client_.submit(r) < 0) die("the client could not submit a call: " + client_.error());
    }
    settle(kSettleTurns);
  }

  /// Backend bytes to every open upstream connection, then a few turns.
  void feed(std::string_view chunk) {
    if (!chunk.empty()) {
      std::vector<uint8_t> bytes(chunk.begin(), chunk.end());
      for (Upstream& u : upstreams_) {
        if (open(u)) mem_->inject(u.fd, bytes);
      }
    }
    settle(kSettleTurns);
  }

  void hang_up() {
    for (Upstream& u : upstreams_) {
      if (open(u)) mem_->inject_eof(u.fd);
    }
    settle(kSettleTurns);
  }

  void refuse_connects() { mem_->set_connect_result(std::string(kEndpoint), -ECONNREFUSED); }

  void settle(int turns) {
    for (int i = 0; i < turns; ++i) turn();
  }

  void jump(int64_t ns) { clock_.advance(ns); }

  bool all_closed() const { return client_.all_closed(); }

  /// Every call has its answer: a clean END_STREAM with :status 200 and a grpc-status.
  void check_answers() {
    std::string bad;
    if (!client_.error().empty()) bad = "client session failed: " + client_.error();
    for (const test::H2Client::Stream* s : client_.streams()) {
      if (!bad.empty()) break;
      const std::string what = "call on client stream " + std::to_string(s->id) + " (" +
                               std::string(s->req.headers.find(":path")) + ")";
      if (!s->closed) {
        bad = what + " still open after every deadline and keepalive timeout passed (" +
              (s->status != 0 ? "response headers came" : "no response headers") + ")";
      } else if (s->rst_received) {
        bad = what + " was reset by ringlb (" + nghttp2_http2_strerror(s->rst_code) +
              ") instead of getting a gRPC status";
      } else if (s->close_code != NGHTTP2_NO_ERROR || !s->end_stream) {
        bad = what + " closed without END_STREAM (" + nghttp2_http2_strerror(s->close_code) + ")";
      } else if (s->status != 200) {
        bad = what + " answered :status " + std::to_string(s->status);
      } else if (s->header("grpc-status").empty()) {
        bad = what + " answered without grpc-status";
      }
    }
    if (bad.empty()) return;
    print_trace();  // what led there, before the abort skips the destructor
    die(bad);
  }

 private:
  struct Upstream {
    int fd = -1;
    bool open = true;                 // false once its fd was closed (and maybe reused)
    std::vector<uint8_t> to_backend;  // what ringlb sent, when tracing
  };

  bool open(Upstream& u) {
    if (u.open && !mem_->is_open(u.fd)) u.open = false;
    return u.open;
  }

  void turn() {
    clock_.advance(kTurnNs);
    const bool ds_open = !mem_->closed(ds_fd_);
    if (!client_.pull(buf_)) die("client session failed: " + client_.error());
    if (!buf_.empty()) {
      if (std::string r = rejection(buf_); !r.empty()) {
        die("the client's nghttp2 rejected what ringlb sent it: " + r);
      }
      // Once ringlb has closed the client, the fd number may belong to an upstream socket.
      if (ds_open) mem_->inject(ds_fd_, buf_);
    }
    shard_->turn(0);
    note_connects();
    for (Upstream& u : upstreams_) {
      if (!open(u)) continue;
      if (mem_->take_wire(u.fd, buf_) && trace_) {
        u.to_backend.insert(u.to_backend.end(), buf_.begin(), buf_.end());
      }
    }
    if (!mem_->closed(ds_fd_) && mem_->take_wire(ds_fd_, buf_)) {
      if (!client_.push(buf_)) die("ringlb sent the client bytes it rejects: " + client_.error());
    }
  }

  // New upstream connections: each gets the greeting as the first bytes its backend sends.
  void note_connects() {
    const auto& log = mem_->connect_log();
    for (; connects_seen_ < log.size(); ++connects_seen_) {
      const test::MemoryReactor::ConnectEntry& e = log[connects_seen_];
      for (Upstream& u : upstreams_) {
        if (u.fd == e.fd) u.open = false;  // the fd was closed and reused
      }
      if (e.res != 0) continue;  // refused or hanging: no backend behind it
      upstreams_.push_back({e.fd, true, {}});
      if (!greeting_.empty()) mem_->inject(e.fd, greeting_);
    }
  }

  void print_trace() {
    std::fprintf(stderr, "h2_upstream_fuzz: calls %llu, connects %zu (ok %zu)\n",
                 static_cast<unsigned long long>(shard_->calls()), mem_->connect_log().size(),
                 upstreams_.size());
    for (size_t i = 0; i < upstreams_.size(); ++i) {
      std::fprintf(stderr, "h2_upstream_fuzz: upstream %zu, ringlb sent:%s\n", i,
                   frame_names(upstreams_[i].to_backend).c_str());
    }
    for (const test::H2Client::Stream* s : client_.streams()) {
      std::fprintf(stderr,
                   "h2_upstream_fuzz: stream %d %s: %s, :status %d, grpc-status %s, %zu body "
                   "bytes, grpc-message \"%s\"\n",
                   s->id, std::string(s->req.headers.find(":path")).c_str(),
                   !s->closed        ? "OPEN"
                   : s->rst_received ? "reset"
                   : s->end_stream   ? "ended"
                                     : "closed",
                   s->status, std::string(s->header("grpc-status")).c_str(), s->body_bytes,
                   std::string(s->header("grpc-message")).c_str());
    }
  }

  // Both peers hang up, as Shard::loop ends: every connection closes and every op completes.
  void shutdown() {
    if (!mem_->closed(ds_fd_)) mem_->inject_eof(ds_fd_);
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
  test::MemoryReactor* mem_ = nullptr;  // owned by the shard
  int ds_fd_ = -1;
  test::H2Client client_{true, 65535};
  std::vector<Upstream> upstreams_;
  size_t connects_seen_ = 0;
  std::vector<uint8_t> greeting_;
  std::vector<uint8_t> buf_;
  const bool trace_ = getenv("RINGLB_FUZZ_TRACE") != nullptr;
};

std::shared_ptr<const core::config::Config> g_config;
std::vector<test::Request> g_calls;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* log = getenv("RINGLB_FUZZ_LOG");
  if (log == nullptr || std::string_view(log) != "1") {
    core::base::set_log_level(core::base::LogLevel::kError);
  }
  g_config = make_config();
  g_calls = make_calls();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<Chunk> chunks = split({reinterpret_cast<const char*>(data), size});
  Rig rig(g_config);
  rig.start(g_calls, chunks.front().bytes);
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i > 0) rig.feed(chunks[i].bytes);
    switch (chunks[i].after) {
      case After::kNothing:
        break;
      case After::kWait:
        rig.jump(kWaitNs);
        rig.settle(kSettleTurns);
        break;
      case After::kHangup:
        rig.hang_up();
        break;
      case After::kRefuse:
        rig.refuse_connects();
        break;
    }
  }
  // The backend says nothing more. Keepalive PINGs go unanswered and time out, retries and
  // replays find a backend that only greets, connects time out: one step at a time, then past
  // every deadline, then past the 5 minutes ringlb waits before a third PING to a backend that
  // sent no HEADERS or DATA since its last two (the ping-strike policy of gRPC servers; a call
  // with no deadline on such a connection ends only then), and steps more for what that started.
  rig.settle(kSettleTurns);
  for (int i = 0; i < 12; ++i) {
    rig.jump(kSecond);
    rig.settle(kSettleTurns);
  }
  rig.jump(60 * kSecond);
  rig.settle(kSettleTurns);
  rig.jump(300 * kSecond);
  rig.settle(kSettleTurns);
  // A call with no deadline may go through 3 attempts of up to 1 + 8 replays each, a connect
  // timeout or a PING timeout apiece: up to a minute more, in steps, while a call is open.
  for (int i = 0; i < kTailSteps && !rig.all_closed(); ++i) {
    rig.jump(kSecond);
    rig.settle(kSettleTurns);
  }
  rig.check_answers();
  return 0;
}

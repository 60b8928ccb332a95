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
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "tests/support/memory_reactor.h"

namespace {

using namespace ringlb;
using test::MemoryReactor;
using core::io::Completion;
using core::io::Op;
using core::io::OpKind;

// ---------------------------------------------------------------------------------------------
// The bench's own peers: plain nghttp2, what a gRPC client and server put on the wire.

constexpr std::string_view kPath = "/bench.Echo/Call";
constexpr size_t kBodySize = 69;  // the 5-byte gRPC message header + 64 bytes of payload

const std::array<uint8_t, kBodySize> kBody = [] {
  std::array<uint8_t, kBodySize> b{};
  b[4] = kBodySize - 5;  // uncompressed, length 64 (big-endian)
  for (size_t i = 5; i < kBodySize; ++i) b[i] = static_cast<uint8_t>('a' + i % 26);
  return b;
}();

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
          const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())), name.size(),
          value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

std::string_view sv(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

// Copies up to `len` of the 69 bytes from `*offset` on; sets EOF when all are out.
size_t copy_body(size_t* offset, uint8_t* buf, size_t len, uint32_t* flags) {
  size_t n = std::min(len, kBodySize - *offset);
  std::memcpy(buf, kBody.data() + *offset, n);
  *offset += n;
  if (*offset == kBodySize) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return n;
}

class Peer {
 public:
  Peer() = default;
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    if (session_ != nullptr) nghttp2_session_del(session_);
  }

  /// Everything the session wants to send, into `out` (replacing it). False on a session error.
  bool pull(std::vector<uint8_t>& out) {
    out.clear();
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) return fail("mem_send", n);
      if (n == 0) return true;
      out.insert(out.end(), data, data + n);
    }
  }
  /// Feeds what the other side sent. False on a session error.
  bool push(const std::vector<uint8_t>& in) {
    if (in.empty()) return true;
    ssize_t n = nghttp2_session_mem_recv(session_, in.data(), in.size());
    return n < 0 ? fail("mem_recv", n) : true;
  }
  const std::string& error() const { return error_; }

 protected:
  bool fail(const char* what, ssize_t rv) {
    if (error_.empty()) {
      error_ = std::string(what) + ": " + nghttp2_strerror(static_cast<int>(rv));
    }
    return false;
  }

  nghttp2_session* session_ = nullptr;
  std::string error_;
};

/// The gRPC client: submits a batch of calls and records what came back for each.
class Client final : public Peer {
 public:
  Client() {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }

  /// Submits `n` calls. False if nghttp2 refused one.
  bool start(size_t n) {
    static const nghttp2_nv kHeaders[] = {
        nv(":method", "POST"),
        nv(":scheme", "http"),
        nv(":path", kPath),
        nv(":authority", "bench"),
        nv("content-type", "application/grpc"),
        nv("te", "trailers"),
    };
    calls_.assign(n, Call{});  // the stream user data points here: no growth while in flight
    done_ = 0;
    for (Call& c : calls_) {
      nghttp2_data_provider prd;
      prd.source.ptr = &c;
      prd.read_callback = read_body;
      int32_t id =
          nghttp2_submit_request(session_, nullptr, kHeaders, std::size(kHeaders), &prd, &c);
      if (id < 0) return fail("submit_request", id);
    }
    return true;
  }
  bool all_done() const { return done_ == calls_.size(); }
  /// Empty if every call ended well: status 200, grpc-status 0, 69 DATA bytes, no reset.
  std::string check() const {
    for (const Call& c : calls_) {
      if (c.status != 200 || c.grpc_status != 0 || c.data != kBodySize || c.error != 0) {
        return "call failed: :status " + std::to_string(c.status) + ", grpc-status " +
               std::to_string(c.grpc_status) + ", " + std::to_string(c.data) +
               " DATA bytes, RST/close code " + std::to_string(c.error);
      }
    }
    return {};
  }

 private:
  struct Call {
    size_t sent = 0;
    int status = 0;
    int grpc_status = -1;
    size_t data = 0;
    uint32_t error = 0;
  };

  static Call* call_of(nghttp2_session* s, int32_t id) {
    return static_cast<Call*>(nghttp2_session_get_stream_user_data(s, id));
  }
  static int to_int(std::string_view v) {  // -1 unless a plain decimal number
    if (v.empty() || v.size() > 9) return -1;
    int n = 0;
    for (char ch : v) {
      if (ch < '0' || ch > '9') return -1;
      n = n * 10 + (ch - '0');
    }
    return n;
  }

  static ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                           nghttp2_data_source* src, void*) {
    return static_cast<ssize_t>(copy_body(&static_cast<Call*>(src->ptr)->sent, buf, len, flags));
  }
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    Call* c = call_of(s, f->hd.stream_id);
    if (c == nullptr) return 0;
    std::string_view n = sv(name, namelen);
    if (n == ":status") c->status = to_int(sv(value, valuelen));
    else if (n == "grpc-status") c->grpc_status = to_int(sv(value, valuelen));
    return 0;
  }
  static int on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t*, size_t len,
                           void*) {
    if (Call* c = call_of(s, id)) c->data += len;
    return 0;
  }
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* user) {
    if (Call* c = call_of(s, id)) {
      c->error = code;
      ++static_cast<Client*>(user)->done_;
    }
    return 0;
  }

  std::vector<Call> calls_;
  size_t done_ = 0;
};

/// The gRPC backend: answers each complete request with 200, 69 bytes and grpc-status 0, or
/// grpc-status 3 if the request was not the one the client sends (wrong path or body size).
class Backend final : public Peer {
 public:
  Backend() {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_server_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv));
  }

 private:
  struct Exchange {
    bool path_ok = false;
    size_t received = 0;
    size_t sent = 0;
  };

  // Pooled: a steady run allocates nothing per call. The pool owns every Exchange, so streams
  // still open when a failed run ends leak nothing.
  Exchange* alloc() {
    if (free_.empty()) {
      all_.push_back(std::make_unique<Exchange>());
      return all_.back().get();
    }
    Exchange* e = free_.back();
    free_.pop_back();
    *e = Exchange{};
    return e;
  }
  static Exchange* of(nghttp2_session* s, int32_t id) {
    return static_cast<Exchange*>(nghttp2_session_get_stream_user_data(s, id));
  }

  static int on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user) {
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
      nghttp2_session_set_stream_user_data(s, f->hd.stream_id,
                                           static_cast<Backend*>(user)->alloc());
    }
    return 0;
  }
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    Exchange* e = of(s, f->hd.stream_id);
    if (e != nullptr && sv(name, namelen) == ":path") e->path_ok = sv(value, valuelen) == kPath;
    return 0;
  }
  static int on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t*, size_t len,
                           void*) {
    if (Exchange* e = of(s, id)) e->received += len;
    return 0;
  }
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void*) {
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    Exchange* e = of(s, f->hd.stream_id);
    if (e == nullptr) return 0;
    static const nghttp2_nv kHeaders[] = {nv(":status", "200"),
                                          nv("content-type", "application/grpc")};
    nghttp2_data_provider prd;
    prd.source.ptr = e;
    prd.read_callback = read_body;
    nghttp2_submit_response(s, f->hd.stream_id, kHeaders, std::size(kHeaders), &prd);
    return 0;
  }
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void*) {
    static const nghttp2_nv kOk[] = {nv("grpc-status", "0")};
    static const nghttp2_nv kBad[] = {nv("grpc-status", "3")};
    auto* e = static_cast<Exchange*>(src->ptr);
    size_t n = copy_body(&e->sent, buf, len, flags);
    if (*flags & NGHTTP2_DATA_FLAG_EOF) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      bool ok = e->path_ok && e->received == kBodySize;
      nghttp2_submit_trailer(s, id, ok ? kOk : kBad, 1);
    }
    return static_cast<ssize_t>(n);
  }
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t, void* user) {
    if (Exchange* e = of(s, id)) static_cast<Backend*>(user)->free_.push_back(e);
    return 0;
  }

  std::vector<std::unique_ptr<Exchange>> all_;
  std::vector<Exchange*> free_;
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
  RinglbRig() : config_(std::make_shared<const core::config::Config>(make_config())) {
    core::runtime::ShardSetup setup;
    setup.endpoint_sets = core::runtime::initial_endpoint_sets(*config_);
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

template <typename Rig>
void run_calls(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  Rig rig;
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

void BM_H2Path(benchmark::State& state) { run_calls<RinglbRig>(state); }
void BM_H2Path_PeersOnly(benchmark::State& state) { run_calls<PeersRig>(state); }

}  // namespace

BENCHMARK(BM_H2Path)->ArgName("concurrent")->Arg(1)->Arg(32);
BENCHMARK(BM_H2Path_PeersOnly)->ArgName("concurrent")->Arg(1)->Arg(32);

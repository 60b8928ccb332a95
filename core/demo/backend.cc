#include "core/demo/backend.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "core/base/list.h"
#include "core/base/log.h"
#include "core/demo/options.h"
#include "core/h2/connection.h"
#include "core/h2/host.h"
#include "core/io/net.h"
#include "core/io/timer.h"
#include "proto/grpc.h"

namespace ringlb::core::demo {
namespace {

using proto::kFrameHeaderSize;
using proto::StatusCode;

enum : uint8_t { kWakeTag = 1, kAcceptTag = 2 };
constexpr int64_t kAcceptRetryNs = 100'000'000;  // after the multishot accept ends (EMFILE...)
constexpr int64_t kStopTurnNs = 1'000'000;
constexpr int kStopTurns = 1000;  // bounds the wait for cancelled ops at shutdown (~1 s)
// Generous limits: this backend stands in for a real service under benchmark load.
constexpr uint32_t kMaxStreams = 10000;
constexpr int32_t kStreamWindow = 1 << 20;
constexpr int32_t kConnectionWindow = 16 << 20;

class BackendServer;
class BackendConn;

// One call, from its request HEADERS to its stream's close. Pooled by the loop: once the pool
// and the message buffers have grown to the working set, a call costs no allocation of ours
// (nghttp2 allocates from the loop's SessionHeap).
struct Stream final : io::TimerHandler {
  enum class Problem : uint8_t { kNone, kTooBig, kBadPrefix };
  BackendConn* conn = nullptr;
  int32_t id = 0;
  Problem problem = Problem::kNone;
  std::string msg;      // the first request message (framed) as far as received; echoed back as is
  size_t sent = 0;      // bytes of msg handed to nghttp2 for the reply
  io::Timer delay;      // --delay-ms: the reply goes out when it fires
  base::ListLink link;  // in conn's streams_

  void on_timer(io::Timer&) override;
};

Stream* stream_of(nghttp2_session* session, int32_t id) {
  return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
}

// The loop: an h2::Host (reactor, timers, flush list, graveyard) that accepts on one listening
// socket. Everything here belongs to the loop thread but start() and the destructor.
class BackendServer final : public BackendLoop, public h2::Host, io::IoHandler, io::TimerHandler {
 public:
  BackendServer(int listen_fd, std::string name, int64_t delay_ns, io::IoBackend backend)
      : h2::Host(0),
        listen_fd_(listen_fd),
        name_(std::move(name)),
        delay_ns_(delay_ns),
        backend_(backend) {
    accept_op_.handler = wake_op_.handler = this;
    accept_retry_.handler = this;
    accept_op_.tag = kAcceptTag;
    wake_op_.tag = kWakeTag;
  }
  ~BackendServer() override;

  bool start(std::string& error);

  const std::string& name() const { return name_; }
  int64_t delay_ns() const { return delay_ns_; }
  Stream* alloc_stream(BackendConn* conn, int32_t id);
  void free_stream(Stream* s);
  void conn_closed(BackendConn* c);
  void conn_released(BackendConn* c);

 private:
  void run();
  void shut_down();
  void on_complete(io::Op& op, const io::Completion& c) override;
  void on_accept(const io::Completion& c);
  void on_timer(io::Timer&) override;

  int listen_fd_;
  int wake_fd_ = -1;  // the destructor's stop request
  std::string name_;
  int64_t delay_ns_;
  io::IoBackend backend_;
  io::Op accept_op_, wake_op_;
  io::Timer accept_retry_;
  bool stop_ = false;
  size_t closing_ = 0;  // connections closed whose ops have not all completed
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> conns_;
  std::vector<std::unique_ptr<Stream>> stream_store_;  // every Stream made; free_ the idle ones
  std::vector<Stream*> free_;
  std::atomic<int> ready_{0};  // 1 serving, -1 failed (error_ says why)
  std::string error_;
  std::thread thread_;
};

class BackendConn final : public h2::H2Connection {
 public:
  BackendConn(BackendServer& server, int fd) : h2::H2Connection(server), server_(server) {
    fd_ = fd;
  }
  bool init();
  /// Submits the reply to `s`: its first message echoed, or the error its request earned.
  void respond(Stream& s);

 private:
  void on_close(const char* why) override;
  void on_released() override { server_.conn_released(this); }

  static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* ud);
  static int on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                           size_t len, void*);
  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* ud);
  static int on_stream_close(nghttp2_session* session, int32_t id, uint32_t, void* ud);
  static ssize_t read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source* source, void*);

  BackendServer& server_;
  base::IntrusiveList<Stream, &Stream::link> streams_;
};

void Stream::on_timer(io::Timer&) {
  conn->respond(*this);
  conn->mark_dirty();  // the loop flushes once per turn: a burst of due replies shares syscalls
}

// ------------------------------------------------------------------------------------------
// BackendServer

BackendServer::~BackendServer() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  // Left open only if the loop never ran, or its ops did not finish within kStopTurns.
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

bool BackendServer::start(std::string& error) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    error = std::string("eventfd: ") + strerror(errno);
    return false;
  }
  thread_ = std::thread([this] { run(); });
  ready_.wait(0);
  if (ready_.load() > 0) return true;
  thread_.join();
  error = error_;
  return false;
}

void BackendServer::run() {
  pthread_setname_np(pthread_self(), "ringlb-backend");
  // Built here: an io_uring ring belongs to the thread that submits to it.
  std::unique_ptr<io::Reactor> reactor = io::make_reactor(backend_, error_);
  if (!reactor) {
    ready_.store(-1);
    ready_.notify_all();
    return;
  }
  set_reactor(std::move(reactor));
  this->reactor().poll_in(wake_fd_, wake_op_);
  this->reactor().accept(listen_fd_, accept_op_);
  ready_.store(1);
  ready_.notify_all();
  while (!stop_) turn(-1);
  shut_down();
}

// Closes every connection and waits (bounded) for every op to complete, so that no completion
// can name a connection or an op after the thread is gone.
void BackendServer::shut_down() {
  timers().cancel(accept_retry_);
  reactor().cancel(accept_op_);
  reactor().cancel(wake_op_);
  while (h2::H2Connection* c = conns_.front()) c->close("backend stopping");
  for (int i = 0; i < kStopTurns && (closing_ > 0 || accept_op_.active || wake_op_.active); ++i) {
    turn(kStopTurnNs);
  }
  reap();
  if (!accept_op_.active) reactor().close(std::exchange(listen_fd_, -1));
  if (!wake_op_.active) reactor().close(std::exchange(wake_fd_, -1));
  if (closing_ > 0) LOG_WARN("backend %s: %zu connections still closing", name_.c_str(), closing_);
}

void BackendServer::on_complete(io::Op& op, const io::Completion& c) {
  if (op.tag == kAcceptTag) {
    on_accept(c);
  } else if (c.res >= 0) {  // the wake eventfd: the destructor asks us to stop
    uint64_t v;
    (void)!::read(wake_fd_, &v, sizeof v);
    stop_ = true;
  }
}

void BackendServer::on_accept(const io::Completion& c) {
  if (c.res >= 0 && stop_) {
    ::close(c.res);  // accepted in the window between the stop request and the cancel
  } else if (c.res >= 0) {
    auto* conn = new BackendConn(*this, c.res);
    conns_.push_back(conn);
    if (!conn->init()) conn->close("session setup failed");
  } else if (c.res != -ECANCELED) {
    LOG_WARN("backend %s: accept: %s", name_.c_str(), strerror(-c.res));
  }
  if (!c.more && !stop_ && !accept_retry_.armed()) {
    timers().arm(accept_retry_, now() + kAcceptRetryNs);
  }
}

void BackendServer::on_timer(io::Timer&) {
  if (!accept_op_.active && !stop_) reactor().accept(listen_fd_, accept_op_);
}

Stream* BackendServer::alloc_stream(BackendConn* conn, int32_t id) {
  if (free_.empty()) {
    stream_store_.push_back(std::make_unique<Stream>());
    free_.push_back(stream_store_.back().get());
    free_.back()->delay.handler = free_.back();
  }
  Stream* s = free_.back();
  free_.pop_back();
  s->conn = conn;
  s->id = id;
  s->problem = Stream::Problem::kNone;
  s->msg.clear();  // keeps its capacity
  s->sent = 0;
  return s;
}

void BackendServer::free_stream(Stream* s) {
  timers().cancel(s->delay);
  s->conn = nullptr;
  free_.push_back(s);
}

void BackendServer::conn_closed(BackendConn* c) {
  conns_.remove(c);
  ++closing_;
}

void BackendServer::conn_released(BackendConn* c) {
  --closing_;
  retire(c);
}

// ------------------------------------------------------------------------------------------
// BackendConn

bool BackendConn::init() {
  // Built once (by whichever loop thread comes first); nghttp2 copies both into each session.
  static const struct Setup {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_option* opt = nullptr;
  } setup = [] {
    Setup s;
    nghttp2_session_callbacks_new(&s.cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(s.cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(s.cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(s.cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(s.cbs, on_stream_close);
    nghttp2_option_new(&s.opt);
    // No RFC 7540 priority tree here, so closed streams need not linger in the session.
    nghttp2_option_set_no_closed_streams(s.opt, 1);
    return s;
  }();
  if (nghttp2_session_server_new3(&session_, setup.cbs, this, setup.opt,
                                  server_.session_heap().mem()) != 0) {
    return false;
  }
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxStreams},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  io::set_nodelay(fd_);
  start_io();
  return true;
}

void BackendConn::respond(Stream& s) {
  // Echo the first message in place. A stream that ended mid-message echoes what came, so the
  // prefix is rewritten with the length actually echoed.
  proto::FrameHeader h;
  if (s.msg.size() >= kFrameHeaderSize && s.problem == Stream::Problem::kNone) {
    auto prefix = reinterpret_cast<const uint8_t*>(s.msg.data());
    std::optional<proto::FrameHeader> got = proto::decode_frame_header({prefix, kFrameHeaderSize});
    h.compressed = got && got->compressed;
    if (!got) s.problem = Stream::Problem::kBadPrefix;
  }
  if (s.problem != Stream::Problem::kNone) {
    // Trailers-only: one HEADERS frame that ends the stream, as gRPC servers send errors.
    static const std::string too_big = proto::percent_encode("request message larger than 4 MiB");
    static const std::string bad_prefix = proto::percent_encode("malformed message prefix");
    bool big = s.problem == Stream::Problem::kTooBig;
    nghttp2_nv nva[] = {
        make_nv(":status", "200"), make_nv("content-type", "application/grpc"),
        make_nv("x-backend", server_.name()),
        make_nv("grpc-status",
                proto::status_text(big ? StatusCode::kResourceExhausted : StatusCode::kInternal)),
        make_nv("grpc-message", big ? too_big : bad_prefix)};
    nghttp2_submit_response(session_, s.id, nva, std::size(nva), nullptr);
    return;
  }
  if (s.msg.size() < kFrameHeaderSize) s.msg.resize(kFrameHeaderSize);
  h.length = static_cast<uint32_t>(s.msg.size() - kFrameHeaderSize);
  proto::encode_frame_header(h, reinterpret_cast<uint8_t*>(s.msg.data()));
  nghttp2_nv nva[] = {make_nv(":status", "200"), make_nv("content-type", "application/grpc"),
                      make_nv("x-backend", server_.name())};
  nghttp2_data_provider body{{.ptr = &s}, read_body};
  nghttp2_submit_response(session_, s.id, nva, std::size(nva), &body);
}

void BackendConn::on_close(const char* why) {
  LOG_DEBUG("backend %s: connection closed: %s", server_.name().c_str(), why);
  // The session outlives this call (until the graveyard frees us) but calls back no more.
  while (Stream* s = streams_.front()) {
    streams_.remove(s);
    nghttp2_session_set_stream_user_data(session_, s->id, nullptr);
    server_.free_stream(s);
  }
  server_.conn_closed(this);
}

int BackendConn::on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* ud) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* c = static_cast<BackendConn*>(ud);
  Stream* s = c->server_.alloc_stream(c, frame->hd.stream_id);
  c->streams_.push_back(s);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
  return 0;
}

int BackendConn::on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                               size_t len, void*) {
  Stream* s = stream_of(session, id);
  // Keep the first message only: it is all we echo. Later bytes are read and dropped.
  while (s != nullptr && len > 0 && s->problem == Stream::Problem::kNone) {
    size_t want = kFrameHeaderSize;
    if (s->msg.size() >= kFrameHeaderSize) {
      auto prefix = reinterpret_cast<const uint8_t*>(s->msg.data());
      std::optional<proto::FrameHeader> h = proto::decode_frame_header({prefix, kFrameHeaderSize});
      if (!h || h->length > kMaxMessage) {
        s->problem = h ? Stream::Problem::kTooBig : Stream::Problem::kBadPrefix;
        break;
      }
      want += h->length;
    }
    if (s->msg.size() >= want) break;
    size_t take = std::min(len, want - s->msg.size());
    s->msg.append(reinterpret_cast<const char*>(data), take);
    data += take;
    len -= take;
  }
  return 0;
}

int BackendConn::on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void*) {
  bool ends = (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
              (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
  Stream* s = ends ? stream_of(session, frame->hd.stream_id) : nullptr;
  if (s == nullptr) return 0;
  BackendServer& server = s->conn->server_;
  if (server.delay_ns() == 0) {
    s->conn->respond(*s);  // the flush after this input sends it
  } else {
    server.timers().arm(s->delay, server.now() + server.delay_ns());
  }
  return 0;
}

int BackendConn::on_stream_close(nghttp2_session* session, int32_t id, uint32_t, void* ud) {
  if (Stream* s = stream_of(session, id)) {
    static_cast<BackendConn*>(ud)->streams_.remove(s);
    static_cast<BackendConn*>(ud)->server_.free_stream(s);
  }
  return 0;
}

ssize_t BackendConn::read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                               uint32_t* flags, nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  size_t n = std::min(length, s->msg.size() - s->sent);
  memcpy(buf, s->msg.data() + s->sent, n);
  s->sent += n;
  if (s->sent == s->msg.size()) {
    // gRPC ends every response with trailers, so the DATA frames must not end the stream.
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv trailer = make_nv("grpc-status", proto::status_text(StatusCode::kOk));
    if (nghttp2_submit_trailer(session, id, &trailer, 1) != 0) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
  }
  return static_cast<ssize_t>(n);
}

}  // namespace

std::unique_ptr<BackendLoop> BackendLoop::start(int listen_fd, std::string name, int64_t delay_ns,
                                                io::IoBackend backend, std::string& error) {
  auto server = std::make_unique<BackendServer>(listen_fd, std::move(name), delay_ns, backend);
  if (!server->start(error)) return nullptr;
  return server;
}

}  // namespace ringlb::core::demo

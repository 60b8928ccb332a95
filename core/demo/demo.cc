#include "core/demo/demo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ringlb::core::demo {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kFrameHeader = 5;  // gRPC message prefix: flag byte + big-endian length
// gRPC's default receive limit; a bigger request gets RESOURCE_EXHAUSTED instead of our RAM.
constexpr uint32_t kMaxMessage = 4 * 1024 * 1024;
// Stop pulling frames out of nghttp2 once this much waits for the socket: that is backpressure.
constexpr size_t kWriteHighWater = 64 * 1024;
constexpr size_t kReadChunk = 64 * 1024;

uint32_t load_be32(const char* p) {
  auto b = reinterpret_cast<const uint8_t*>(p);
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
}

void append_frame_header(std::string& out, uint32_t n) {
  char h[kFrameHeader] = {0, char(n >> 24), char(n >> 16), char(n >> 8), char(n)};
  out.append(h, kFrameHeader);
}

std::string_view as_view(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

// Every name and value handed to nghttp2 here outlives its frame (literals, or strings owned by
// the loop or the client), so nghttp2 need not copy them.
nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// Walks "--key value", "--key=value" and bare "--flag" arguments (a key listed in `flags` takes
// no value), calling on_option(key, value). Prints why and returns false on a bad one.
bool parse_options(int argc, char** argv, std::initializer_list<std::string_view> flags,
                   const char* usage,
                   const std::function<bool(std::string_view, std::string_view)>& on_option) {
  for (int i = 0; i < argc; ++i) {
    const char* raw = argv[i];
    std::string_view arg = raw, value;
    bool is_flag = std::find(flags.begin(), flags.end(), arg) != flags.end();
    if (auto eq = arg.find('='); eq != arg.npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (!is_flag && i + 1 < argc) {
      value = argv[++i];
    } else if (!is_flag) {
      arg = {};  // a value-taking option at the end: reported below
    }
    if (!arg.starts_with("--") || !on_option(arg, value)) {
      fprintf(stderr, "bad argument '%s'\nusage: %s\n", raw, usage);
      return false;
    }
  }
  return true;
}

sockaddr_in ipv4(uint32_t host_order_addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(host_order_addr);
  return a;
}

// "127.0.0.1:80": IPv4 literals only, which is all a test backend needs.
bool parse_address(std::string_view text, sockaddr_in& out) {
  auto colon = text.rfind(':');
  uint16_t port = 0;
  if (colon == text.npos || !parse_number(text.substr(colon + 1), port)) return false;
  out = ipv4(0, port);
  return inet_pton(AF_INET, std::string(text.substr(0, colon)).c_str(), &out.sin_addr) == 1;
}

// A nonblocking listening socket, or -1 with errno set.
int open_listener(const sockaddr_in& addr, bool reuseport) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
      listen(fd, 4096) == 0) {
    return fd;
  }
  int saved = errno;
  close(fd);
  errno = saved;
  return -1;
}

uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// ------------------------------------------------------------------------------------------
// The test backend. A BackendLoop is one thread it starts and owns (level-triggered epoll,
// nonblocking sockets); everything in it belongs to that thread but the constructor and
// destructor, which run on the creating thread and start and stop (join) the loop.

class BackendLoop {
 public:
  BackendLoop(int listen_fd, std::string name, std::chrono::milliseconds delay)
      : listen_fd_(listen_fd), name_(std::move(name)), delay_(delay) {
    add_fd(listen_fd_, &listen_fd_);
    add_fd(stop_fd_, &stop_fd_);
    nghttp2_session_callbacks_new(&callbacks_);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks_, on_begin_headers);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks_, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks_, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks_, on_stream_close);
    thread_ = std::thread([this] { run(); });
  }
  ~BackendLoop() {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
    while (!conns_.empty()) close_conn(conns_.begin()->second);
    nghttp2_session_callbacks_del(callbacks_);
    close(listen_fd_);
    close(stop_fd_);
    close(epoll_fd_);
  }
  BackendLoop(const BackendLoop&) = delete;
  BackendLoop& operator=(const BackendLoop&) = delete;

 private:
  // Serves until the destructor pokes stop_fd_. Delayed replies go out when epoll_wait's
  // timeout (the earliest due reply) expires: a timer in the loop, never a sleep.
  void run() {
    epoll_event events[256];
    for (;;) {
      int timeout = -1;
      if (!delayed_.empty()) {
        auto wait =
            std::chrono::ceil<std::chrono::milliseconds>(delayed_.front().due - Clock::now());
        timeout = int(std::max<int64_t>(0, wait.count()));
      }
      int n = epoll_wait(epoll_fd_, events, 256, timeout);
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &stop_fd_) return;
        if (tag == &listen_fd_) {
          accept_all();
          continue;
        }
        auto* c = static_cast<Conn*>(tag);
        bool ok = !(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || read_some(c);
        if (!ok || !flush(c)) close_conn(c);
      }
      fire_delayed();
    }
  }

  // One call. Pooled per connection: once a connection's pool and buffers have grown to its
  // working set, a call costs no allocation of ours (nghttp2 still makes its own).
  struct Stream {
    int32_t id = 0;
    std::string in;   // the first request message (framed), as far as received
    std::string out;  // the framed response message
    size_t out_off = 0;
    bool too_big = false;
  };
  struct Conn {
    BackendLoop* loop = nullptr;
    int fd = -1;
    uint64_t serial = 0;  // names the connection in delayed_, which may outlive it
    nghttp2_session* session = nullptr;
    std::string wbuf;  // bytes nghttp2 produced that the socket has not taken yet
    size_t woff = 0;
    bool epollout = false;
    bool dirty = false;  // in dirty_
    std::vector<std::unique_ptr<Stream>> pool;
    std::vector<Stream*> free;
  };
  // A reply waiting out --delay-ms. Names rather than points: the call may be reset meanwhile.
  struct Delayed {
    Clock::time_point due;
    uint64_t conn_serial;
    int32_t stream_id;
  };

  void add_fd(int fd, void* tag) {
    epoll_event ev{EPOLLIN, {.ptr = tag}};
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void accept_all() {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
      if (fd < 0) return;  // EAGAIN, or out of fds: level-triggered epoll brings us back
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto* c = new Conn;
      c->loop = this;
      c->fd = fd;
      c->serial = ++serials_;
      conns_.emplace(c->serial, c);
      nghttp2_session_server_new(&c->session, callbacks_, c);
      // Generous limits: this backend stands in for a real service under benchmark load.
      nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10000},
                                           {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
      nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2);
      nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 16 << 20);
      add_fd(fd, c);
      if (!flush(c)) close_conn(c);
    }
  }

  // Reads until EAGAIN, bounded so that one busy peer cannot starve the rest. False = close.
  bool read_some(Conn* c) {
    for (int i = 0; i < 8; ++i) {
      ssize_t r = recv(c->fd, rbuf_.get(), kReadChunk, 0);
      if (r == 0) return false;
      if (r < 0) return errno == EAGAIN || errno == EINTR;
      if (nghttp2_session_mem_recv(c->session, rbuf_.get(), size_t(r)) < 0) return false;
      if (size_t(r) < kReadChunk) return true;
    }
    return true;
  }

  // Moves nghttp2's output to the socket until either runs dry. False = close the connection.
  bool flush(Conn* c) {
    for (;;) {
      while (c->wbuf.size() - c->woff < kWriteHighWater) {
        const uint8_t* data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) return false;
        if (n == 0) break;
        c->wbuf.append(as_view(data, size_t(n)));
      }
      if (c->woff == c->wbuf.size()) break;
      ssize_t w = send(c->fd, c->wbuf.data() + c->woff, c->wbuf.size() - c->woff, MSG_NOSIGNAL);
      if (w < 0 && errno == EAGAIN) break;
      if (w < 0 && errno != EINTR) return false;
      c->woff += size_t(std::max<ssize_t>(w, 0));
      if (c->woff == c->wbuf.size()) {
        c->wbuf.clear();  // keeps its capacity
        c->woff = 0;
      }
    }
    bool pending = c->woff < c->wbuf.size();
    if (pending != c->epollout) {
      epoll_event ev{uint32_t(pending ? EPOLLIN | EPOLLOUT : EPOLLIN), {.ptr = c}};
      epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c->fd, &ev);
      c->epollout = pending;
    }
    return pending || nghttp2_session_want_read(c->session) ||
           nghttp2_session_want_write(c->session);
  }

  void close_conn(Conn* c) {
    nghttp2_session_del(c->session);
    close(c->fd);  // also drops it from the epoll set
    conns_.erase(c->serial);
    delete c;  // and its streams, open or not: nghttp2 no longer refers to them
  }

  void fire_delayed() {
    auto now = Clock::now();
    while (!delayed_.empty() && delayed_.front().due <= now) {
      Delayed d = delayed_.front();
      delayed_.pop_front();
      auto it = conns_.find(d.conn_serial);
      if (it == conns_.end()) continue;  // the connection went meanwhile
      Conn* c = it->second;
      Stream* s = stream_of(c->session, d.stream_id);
      if (s == nullptr) continue;  // the call was reset meanwhile
      respond(c, s);
      if (!c->dirty) dirty_.push_back(c);
      c->dirty = true;
    }
    // One flush per connection, not per reply: a burst of due replies shares its syscalls.
    for (Conn* c : dirty_) {
      c->dirty = false;
      if (!flush(c)) close_conn(c);
    }
    dirty_.clear();
  }

  void respond(Conn* c, Stream* s) {
    if (s->too_big) {
      nghttp2_nv nva[] = {make_nv(":status", "200"), make_nv("content-type", "application/grpc"),
                          make_nv("x-backend", name_), make_nv("grpc-status", "8"),
                          make_nv("grpc-message", "request message larger than 4 MiB")};
      nghttp2_submit_response(c->session, s->id, nva, std::size(nva), nullptr);
      return;
    }
    // Echo the first message's payload; a stream that ended mid-message echoes what came.
    std::string_view payload;
    if (s->in.size() >= kFrameHeader) {
      payload = std::string_view(s->in).substr(kFrameHeader, load_be32(s->in.data() + 1));
    }
    append_frame_header(s->out, uint32_t(payload.size()));
    s->out.append(payload);
    nghttp2_nv nva[] = {make_nv(":status", "200"), make_nv("content-type", "application/grpc"),
                        make_nv("x-backend", name_)};
    nghttp2_data_provider body{{.ptr = s}, read_body};
    nghttp2_submit_response(c->session, s->id, nva, std::size(nva), &body);
  }

  static ssize_t read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* s = static_cast<Stream*>(source->ptr);
    size_t n = std::min(length, s->out.size() - s->out_off);
    memcpy(buf, s->out.data() + s->out_off, n);
    s->out_off += n;
    if (s->out_off == s->out.size()) {
      // gRPC ends every response with trailers, so the DATA frames must not end the stream.
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_nv trailer = make_nv("grpc-status", "0");
      if (nghttp2_submit_trailer(session, id, &trailer, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
    }
    return ssize_t(n);
  }

  static Stream* stream_of(nghttp2_session* session, int32_t id) {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* ud) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    auto* c = static_cast<Conn*>(ud);
    if (c->free.empty()) c->free.push_back(c->pool.emplace_back(new Stream).get());
    Stream* s = c->free.back();
    c->free.pop_back();
    s->id = frame->hd.stream_id;
    s->in.clear();
    s->out.clear();
    s->out_off = 0;
    s->too_big = false;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                           size_t len, void*) {
    Stream* s = stream_of(session, id);
    // Keep the first message only: it is all we echo. Later bytes are read and dropped.
    while (s != nullptr && len > 0 && !s->too_big) {
      size_t want = kFrameHeader;
      if (s->in.size() >= kFrameHeader) {
        uint32_t n = load_be32(s->in.data() + 1);
        s->too_big = n > kMaxMessage;
        want += n;
      }
      if (s->too_big || s->in.size() >= want) break;
      size_t take = std::min(len, want - s->in.size());
      s->in.append(as_view(data, take));
      data += take;
      len -= take;
    }
    return 0;
  }

  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* ud) {
    bool ends = (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
                (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    Stream* s = ends ? stream_of(session, frame->hd.stream_id) : nullptr;
    auto* c = static_cast<Conn*>(ud);
    if (s == nullptr) return 0;
    if (c->loop->delay_.count() == 0) {
      c->loop->respond(c, s);
    } else {  // one fixed delay keeps the queue in due order
      c->loop->delayed_.push_back({Clock::now() + c->loop->delay_, c->serial, s->id});
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, int32_t id, uint32_t, void* ud) {
    if (Stream* s = stream_of(session, id)) static_cast<Conn*>(ud)->free.push_back(s);
    return 0;
  }

  int listen_fd_;
  int epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  int stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  std::string name_;
  std::chrono::milliseconds delay_;
  nghttp2_session_callbacks* callbacks_ = nullptr;
  uint64_t serials_ = 0;
  std::unordered_map<uint64_t, Conn*> conns_;
  std::deque<Delayed> delayed_;
  std::vector<Conn*> dirty_;  // connections with delayed replies to flush
  std::unique_ptr<uint8_t[]> rbuf_ = std::make_unique<uint8_t[]>(kReadChunk);
  std::thread thread_;
};
using Backends = std::vector<std::unique_ptr<BackendLoop>>;  // stopped when it goes

// ------------------------------------------------------------------------------------------
// The demo client: one HTTP/2 connection, blocking socket, up to kInFlight calls at a time.

class DemoClient {
 public:
  static constexpr int kInFlight = 32;

  DemoClient(int calls, uint16_t port)
      : calls_(calls), port_(port), authority_("127.0.0.1:" + std::to_string(port)) {
    // A protobuf `{string text = 1}` message, so a real gRPC service would parse it too.
    std::string_view text = "hello from ringlb demo";
    append_frame_header(request_, uint32_t(2 + text.size()));
    request_ += {'\x0a', char(text.size())};
    request_ += text;
  }

  /// Runs every call; false if the connection failed. Call outcomes are in tally() and failed().
  bool run() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = ipv4(INADDR_LOOPBACK, port_);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};  // a hung proxy must fail the demo, not hang it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session* session;
    nghttp2_session_client_new(&session, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, 1);
    for (auto& slot : slots_) free_.push_back(&slot);

    auto rbuf = std::make_unique<uint8_t[]>(kReadChunk);
    bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (!ok) error("connect to " + authority_ + ": " + strerror(errno));
    while (ok && done_ < calls_) {
      while (!free_.empty() && submitted_ < calls_ && submit(session)) {
      }
      ok = send_all(fd, session);
      if (!ok || done_ >= calls_) break;
      ssize_t r = nghttp2_session_want_read(session) ? recv(fd, rbuf.get(), kReadChunk, 0) : 0;
      if (r <= 0) {
        ok = false;
        error(r == 0            ? std::string("the server closed the connection")
              : errno == EAGAIN ? std::string("no answer within 10 s")
                                : std::string("recv: ") + strerror(errno));
      } else if (nghttp2_session_mem_recv(session, rbuf.get(), size_t(r)) < 0) {
        ok = false;
        error("HTTP/2 protocol error from the server");
      }
    }
    if (ok) {
      nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR);
      ok = send_all(fd, session);
    }
    failed_ += calls_ - done_;  // never answered
    nghttp2_session_del(session);
    close(fd);
    return ok;
  }

  const std::map<std::string, int>& tally() const { return tally_; }
  int failed() const { return failed_; }
  const std::string& first_error() const { return first_error_; }

 private:
  struct Call {
    std::string backend;
    std::string body;
    int http_status = 0;
    int grpc_status = -1;
    size_t sent = 0;
  };

  void error(std::string what) {
    if (first_error_.empty()) first_error_ = std::move(what);
  }

  bool submit(nghttp2_session* session) {
    Call* call = free_.back();
    call->backend.clear();
    call->body.clear();
    call->http_status = 0;
    call->grpc_status = -1;
    call->sent = 0;
    nghttp2_nv nva[] = {make_nv(":method", "POST"),
                        make_nv(":scheme", "http"),
                        make_nv(":path", "/demo.Echo/Say"),
                        make_nv(":authority", authority_),
                        make_nv("content-type", "application/grpc"),
                        make_nv("te", "trailers")};
    nghttp2_data_provider body{{.ptr = call}, read_request};
    if (nghttp2_submit_request(session, nullptr, nva, std::size(nva), &body, call) < 0) {
      return false;
    }
    free_.pop_back();
    ++submitted_;
    return true;
  }

  bool send_all(int fd, nghttp2_session* session) {
    const uint8_t* data;
    for (ssize_t n; (n = nghttp2_session_mem_send(session, &data)) != 0;) {
      if (n < 0) return error(std::string("nghttp2: ") + nghttp2_strerror(int(n))), false;
      while (n > 0) {
        ssize_t w = send(fd, data, size_t(n), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return error(std::string("send: ") + strerror(errno)), false;
        data += w;
        n -= w;
      }
    }
    return true;
  }

  static ssize_t read_request(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void* ud) {
    const std::string& request = static_cast<DemoClient*>(ud)->request_;
    auto* call = static_cast<Call*>(source->ptr);
    size_t n = std::min(length, request.size() - call->sent);
    memcpy(buf, request.data() + call->sent, n);
    call->sent += n;
    if (call->sent == request.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return ssize_t(n);
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    auto* call =
        static_cast<Call*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    std::string_view n = as_view(name, namelen), v = as_view(value, valuelen);
    if (call == nullptr) return 0;
    if (n == ":status") parse_number(v, call->http_status);
    if (n == "x-backend") call->backend.assign(v);
    if (n == "grpc-status") parse_number(v, call->grpc_status);
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                           size_t len, void*) {
    auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, id));
    if (call != nullptr && call->body.size() < kMaxMessage) call->body.append(as_view(data, len));
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, int32_t id, uint32_t error_code, void* ud) {
    auto* self = static_cast<DemoClient*>(ud);
    auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, id));
    if (call == nullptr) return 0;
    ++self->done_;
    self->free_.push_back(call);
    if (error_code != NGHTTP2_NO_ERROR) {
      self->error(std::string("stream reset: ") + nghttp2_http2_strerror(error_code));
    } else if (call->http_status != 200) {
      self->error("HTTP status " + std::to_string(call->http_status));
    } else if (call->grpc_status != 0) {
      self->error("grpc-status " + std::to_string(call->grpc_status));
    } else if (call->body != self->request_) {
      self->error("the reply did not echo the request");
    } else {
      ++self->tally_[call->backend.empty() ? "(no x-backend)" : call->backend];
      return 0;
    }
    ++self->failed_;
    return 0;
  }

  int calls_;
  uint16_t port_;
  std::string authority_;
  std::string request_;  // the framed request message, the same for every call
  Call slots_[kInFlight];
  std::vector<Call*> free_;
  int submitted_ = 0, done_ = 0, failed_ = 0;
  std::map<std::string, int> tally_;
  std::string first_error_;
};

// ------------------------------------------------------------------------------------------
// Demo process plumbing.

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
}

bool can_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = ipv4(INADDR_LOOPBACK, port);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// Asks the proxy to drain and waits; a proxy that ignores SIGTERM for 10 s is killed.
void stop_proxy(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int status;
  for (auto deadline = Clock::now() + 10s; waitpid(pid, &status, WNOHANG) == 0;) {
    if (Clock::now() > deadline) {
      fprintf(stderr, "ringlb demo: the proxy ignored SIGTERM for 10 s; killing it\n");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::string write_config(uint16_t port, const std::vector<uint16_t>& endpoints) {
  char path[] = "/tmp/ringlb-demo-XXXXXX.toml";
  int fd = mkstemps(path, 5);
  if (fd < 0) return {};
  std::string list;
  for (uint16_t p : endpoints) {
    list += (list.empty() ? "\"127.0.0.1:" : ", \"127.0.0.1:") + std::to_string(p) + "\"";
  }
  std::string text =
      "# Written by `ringlb demo`; removed when the demo exits.\n"
      "[proxy]\nworkers = 1\ndrain_timeout = \"1s\"\n\n"
      "[[listener]]\naddress = \"127.0.0.1:" +
      std::to_string(port) +
      "\"\ncluster = \"demo\"\n\n"
      "[[cluster]]\nname = \"demo\"\nlb = \"round_robin\"\nendpoints = [" +
      list + "]\n";
  bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
  close(fd);
  if (!ok) unlink(path);
  return ok ? path : "";
}

// Forks and execs the proxy. The child gets its own process group, so Ctrl-C reaches only the
// demo, which then stops the proxy in order; PDEATHSIG covers a demo that dies uncleanly.
pid_t spawn_proxy(const char* self_exe, const std::string& config, const sigset_t& old_mask) {
  const char* args[] = {self_exe, "--config", config.c_str(), nullptr};
  pid_t parent = getpid();
  fflush(stdout);  // or the child would inherit, and one day repeat, buffered output
  pid_t pid = fork();
  if (pid != 0) return pid;
  // The child of a threaded process: async-signal-safe calls only until exec.
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  execvp(self_exe, const_cast<char* const*>(args));
  const char msg[] = "ringlb demo: cannot exec the proxy\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(127);
}

void print_tally(const DemoClient& client, int calls, int backends, bool direct) {
  printf("%d calls over one HTTP/2 connection%s:\n", calls, direct ? " (--direct)" : "");
  // By length first, so backend-10 follows backend-9.
  auto shorter = [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  };
  std::map<std::string, int, decltype(shorter)> rows(client.tally().begin(), client.tally().end());
  for (int k = 1; k <= backends; ++k) rows.try_emplace("backend-" + std::to_string(k), 0);
  int most = 1, width = 10;
  for (auto& [name, n] : rows) most = std::max(most, n), width = std::max(width, int(name.size()));
  for (auto& [name, n] : rows) {
    std::string bar(size_t(n * 30 / most), '#');
    printf("  %-*s %5d%s%s\n", width, name.c_str(), n, bar.empty() ? "" : "  ", bar.c_str());
  }
  if (client.failed() > 0) {
    printf("  %-*s %5d  (first: %s)\n", width, "FAILED", client.failed(),
           client.first_error().c_str());
  }
  fflush(stdout);
}

}  // namespace

int run_backend(int argc, char** argv) {
  const char* usage =
      "ringlb backend --listen 127.0.0.1:PORT --name NAME [--delay-ms N] [--threads N]";
  std::string name = "backend";
  unsigned delay_ms = 0, threads = 1;
  sockaddr_in addr{};
  bool ok = parse_options(argc, argv, {}, usage, [&](std::string_view k, std::string_view v) {
    if (k == "--listen") return parse_address(v, addr);
    if (k == "--name") return name.assign(v), !v.empty();
    if (k == "--delay-ms") return parse_number(v, delay_ms);
    if (k == "--threads") return parse_number(v, threads) && threads >= 1 && threads <= 256;
    return false;
  });
  if (!ok || addr.sin_family != AF_INET) {
    if (ok) fprintf(stderr, "ringlb backend: --listen is required\nusage: %s\n", usage);
    return 2;
  }
  // Block the stop signals before any thread starts, so all inherit the mask; main sigwaits.
  sigset_t stop_signals, old_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  std::vector<int> fds;
  for (unsigned i = 0; i < threads; ++i) {
    // With port 0 the other threads' sockets join the port the first one got (SO_REUSEPORT).
    if (i == 1) addr.sin_port = htons(local_port(fds[0]));
    int fd = open_listener(addr, true);
    if (fd < 0) {
      fprintf(stderr, "ringlb backend: cannot listen on %s:%u: %s\n", inet_ntoa(addr.sin_addr),
              ntohs(addr.sin_port), strerror(errno));
      for (int f : fds) close(f);
      return 1;
    }
    fds.push_back(fd);
  }
  printf("ringlb backend %s listening on %s:%u (h2c, %u thread%s, delay %u ms)\n", name.c_str(),
         inet_ntoa(addr.sin_addr), local_port(fds[0]), threads, threads == 1 ? "" : "s", delay_ms);
  fflush(stdout);
  {
    Backends loops;
    for (int fd : fds) loops.push_back(std::make_unique<BackendLoop>(fd, name, delay_ms * 1ms));
    int sig;
    sigwait(&stop_signals, &sig);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return 0;
}

int run_demo(int argc, char** argv, const char* self_exe) {
  const char* usage = "ringlb demo [--port N] [--backends K] [--calls N] [--exit]";
  uint16_t port = 8080;
  int backends = 3, calls = 300;
  bool exit_after = false, direct = false;  // --direct (hidden): no proxy, calls go to backend 1
  bool ok = parse_options(argc, argv, {"--exit", "--direct"}, usage, [&](auto k, auto v) {
    if (k == "--port") return parse_number(v, port) && port != 0;
    if (k == "--backends") return parse_number(v, backends) && backends >= 1 && backends <= 64;
    if (k == "--calls") return parse_number(v, calls) && calls >= 1;
    if (k == "--exit") return exit_after = true;
    if (k == "--direct") return direct = true;
    return false;
  });
  if (!ok) return 2;

  // Signals are taken by sigwait, never by handlers: block them before any thread starts so
  // every thread inherits the mask. SIGCHLD says the proxy died while we wait for Ctrl-C.
  sigset_t wait_signals, stop_signals, old_mask;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  wait_signals = stop_signals;
  sigaddset(&wait_signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &wait_signals, &old_mask);

  if (!direct) {
    // Bind as the proxy would, to say clearly that the port is taken before starting anything.
    int fd = open_listener(ipv4(INADDR_LOOPBACK, port), false);
    if (fd < 0 && errno == EADDRINUSE) {
      fprintf(stderr, "ringlb demo: port %u on 127.0.0.1 is busy; pick another with --port N\n",
              port);
    } else if (fd < 0) {
      fprintf(stderr, "ringlb demo: cannot listen on 127.0.0.1:%u: %s\n", port, strerror(errno));
    }
    if (fd < 0) return 1;
    close(fd);
  }

  int rc = 0;
  pid_t proxy = -1;
  std::string config;
  {
    Backends loops;  // stopped when this block ends, on every path
    std::vector<uint16_t> ports;
    for (int k = 1; k <= backends; ++k) {
      int fd = open_listener(ipv4(INADDR_LOOPBACK, 0), false);
      if (fd < 0) return fprintf(stderr, "ringlb demo: backend: %s\n", strerror(errno)), 1;
      ports.push_back(local_port(fd));
      loops.push_back(std::make_unique<BackendLoop>(fd, "backend-" + std::to_string(k), 0ms));
    }
    if (!direct) {
      config = write_config(port, ports);
      if (config.empty()) {
        fprintf(stderr, "ringlb demo: cannot write a config under /tmp: %s\n", strerror(errno));
        return 1;
      }
      proxy = spawn_proxy(self_exe, config, old_mask);
      if (proxy < 0) perror("ringlb demo: fork");
      // Wait for the listener; sigtimedwait doubles as the retry pause and catches Ctrl-C.
      auto deadline = Clock::now() + 10s;
      timespec pause{0, 50'000'000};
      int status;
      bool up = false;
      while (proxy > 0 && !(up = can_connect(port))) {
        if (waitpid(proxy, &status, WNOHANG) == proxy) {
          fprintf(stderr, "ringlb demo: the proxy (%s --config %s) %s before listening\n", self_exe,
                  config.c_str(), describe_exit(status).c_str());
          proxy = -1;
        } else if (Clock::now() > deadline) {
          fprintf(stderr,
                  "ringlb demo: the proxy did not accept connections on 127.0.0.1:%u "
                  "within 10 s\n",
                  port);
          break;
        } else if (sigtimedwait(&stop_signals, nullptr, &pause) > 0) {
          break;
        }
      }
      if (!up) {
        stop_proxy(proxy);
        unlink(config.c_str());
        return 1;
      }
    }

    uint16_t target = direct ? ports[0] : port;
    printf(direct ? "ringlb demo: %d backends; --direct: calls go straight to backend-1 on "
                    "127.0.0.1:%u\n"
                  : "ringlb demo: %d backends behind ringlb on 127.0.0.1:%u\n",
           backends, target);
    fflush(stdout);
    DemoClient client(calls, target);
    client.run();
    print_tally(client, calls, backends, direct);
    rc = client.failed() > 0 ? 1 : 0;

    if (!exit_after) {
      printf(
          "Send your own calls: h2load -n 1000 -c 1 -m 10 -H 'content-type: application/grpc'"
          " -H 'te: trailers' http://127.0.0.1:%u/demo.Echo/Say  (or any gRPC client, "
          "plaintext)\nCtrl-C to stop.\n",
          target);
      fflush(stdout);
      rc = 0;  // the picture is shown; from here on the demo is a running service
      for (siginfo_t info; sigwaitinfo(&wait_signals, &info) < 0 || info.si_signo == SIGCHLD;) {
        int status;
        if (proxy > 0 && waitpid(proxy, &status, WNOHANG) == proxy) {
          fprintf(stderr, "ringlb demo: the proxy %s\n", describe_exit(status).c_str());
          proxy = -1;
          rc = 1;
          break;
        }
      }
    }
    stop_proxy(proxy);
  }
  if (!config.empty()) unlink(config.c_str());
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return rc;
}

}  // namespace ringlb::core::demo

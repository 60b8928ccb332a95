#include "core/runtime/admin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/base/clock.h"
#include "core/base/log.h"
#include "core/config/config_json.h"
#include "core/io/net.h"
#include "core/runtime/control.h"
#include "core/runtime/metrics.h"

namespace ringlb::core::runtime {
namespace {

enum : uint8_t { kRecvTag = 1, kSendTag = 2 };
// Connections answered 503 at once (over max_connections) are bounded too: past this many on
// top of max_connections, a new one is closed without an answer.
constexpr size_t kRejectedPerServing = 1;
// How long a finished connection keeps reading (and dropping) what the peer still sends after
// our last answer, so closing it does not reset the answer away. At most request_timeout.
constexpr int64_t kLingerNs = 1'000'000'000;
// Input buffered beyond one whole request while a response is pending (pipelining): past it the
// client is not playing by the rules and the connection ends.
constexpr size_t kMaxBuffered = AdminServer::kMaxHead + AdminServer::kMaxBody + 4096;
constexpr int64_t kMaxStallMs = 60'000;
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kJson = "application/json";
constexpr std::string_view kPrometheus = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kIndex =
    "ringlb admin\n"
    "GET  /metrics    Prometheus text format 0.0.4\n"
    "GET  /ready      200 when serving, 503 while starting or draining\n"
    "GET  /live       200 while every shard's loop turns\n"
    "GET  /endpoints  clusters, endpoints and their eligibility (JSON)\n"
    "GET  /config     the running config (JSON, secrets redacted)\n"
    "POST /reload     reload the config file (as SIGHUP)\n";

}  // namespace

/// One admin client connection. Its ops and buffers belong to the reactor while active; the
/// connection is freed only once neither is (close_conn, maybe_free).
struct AdminServer::Conn final : io::IoHandler, io::TimerHandler {
  enum class State : uint8_t {
    kReading,    // waiting for (the rest of) a request
    kBusy,       // a request is being answered (a collection may be under way)
    kWriting,    // a response is going out
    kLingering,  // the last response is out; dropping input until EOF or the timer
    kClosing,    // ops cancelled; freed when they complete
  };
  Conn(AdminServer& o, uint64_t i, int f) : owner(o), id(i), fd(f) {
    recv_op.handler = send_op.handler = this;
    recv_op.tag = kRecvTag;
    send_op.tag = kSendTag;
    timer.handler = this;
  }
  void on_complete(io::Op& op, const io::Completion& c) override { owner.on_conn_io(*this, op, c); }
  void on_timer(io::Timer&) override { owner.on_conn_timer(*this); }

  AdminServer& owner;
  const uint64_t id;
  const int fd;
  State state = State::kReading;
  bool rejected = false;      // over max_connections: answered 503 and closed
  bool close_after = false;   // the response being written is the connection's last
  bool peer_closed = false;   // EOF seen
  bool head_request = false;  // the request being answered is a HEAD
  bool keep_alive = true;     // the request being answered allows another after it
  io::Op recv_op, send_op;
  io::Timer timer;
  std::string in;   // received, not yet parsed
  std::string out;  // the response being written
  size_t out_off = 0;
  iovec iov{};
};

AdminServer::AdminServer(Controller& controller, io::Reactor& reactor, io::TimerQueue& timers,
                         const config::AdminConfig& config, bool test_hooks)
    : controller_(controller),
      reactor_(reactor),
      timers_(timers),
      config_(config),
      test_hooks_(test_hooks) {
  accept_op_.handler = this;
}

AdminServer::~AdminServer() {
  // The reactor is not turned again (the process is stopping): close what is left outright.
  for (auto& [id, c] : conns_) {
    timers_.cancel(c->timer);
    reactor_.forget(c->fd);
    ::close(c->fd);
  }
  if (listen_fd_ >= 0) {
    reactor_.forget(listen_fd_);
    ::close(listen_fd_);
  }
}

bool AdminServer::start(std::string& error) {
  const io::SocketAddress& a = config_.address;
  listen_fd_ = io::make_listen_socket(reinterpret_cast<const sockaddr*>(&a.storage), a.len, error);
  if (listen_fd_ < 0) return false;
  bound_ = io::local_address(listen_fd_).text;
  reactor_.accept(listen_fd_, accept_op_);
  LOG_INFO("admin: http://%s/ (/metrics /ready /live /endpoints /config, POST /reload)",
           bound_.c_str());
  return true;
}

void AdminServer::on_complete(io::Op&, const io::Completion& c) {
  if (c.res >= 0) {
    on_accept(c.res);
  } else if (c.res != -ECANCELED) {
    int64_t now = base::mono_now_ns();
    if (now - accept_error_logged_ns_ >= 10'000'000'000) {
      accept_error_logged_ns_ = now;
      LOG_WARN("admin: accept: %s", strerror(-c.res));
    }
  }
  if (!c.more && listen_fd_ >= 0) reactor_.accept(listen_fd_, accept_op_);
}

void AdminServer::on_accept(int fd) {
  const size_t max = config_.max_connections;
  bool over = serving_conns_ >= max;
  if (over && rejected_conns_ >= max * kRejectedPerServing) {
    ::close(fd);  // a flood: not even a 503
    return;
  }
  uint64_t id = next_conn_id_++;
  auto owned = std::make_unique<Conn>(*this, id, fd);
  Conn& c = *owned;
  conns_.emplace(id, std::move(owned));
  reactor_.recv(fd, c.recv_op);
  if (over) {
    c.rejected = true;
    ++rejected_conns_;
    c.state = Conn::State::kBusy;
    reply_text(c, 503, "too many admin connections\n", true);
    return;
  }
  ++serving_conns_;
  timers_.arm(c.timer, base::mono_now_ns() + config_.request_timeout.count());
}

void AdminServer::on_conn_io(Conn& c, io::Op& op, const io::Completion& comp) {
  if (c.state == Conn::State::kClosing) {
    maybe_free(c);
    return;
  }
  if (&op == &c.recv_op) {
    on_recv(c, comp);
  } else {
    on_sent(c, comp);
  }
}

void AdminServer::on_recv(Conn& c, const io::Completion& comp) {
  if (comp.res <= 0) {
    c.peer_closed = true;
    // Reading (or lingering): nothing more will come, so nothing more to do. Busy or writing:
    // the answer still goes out (a half-closed client may read it), then the connection ends.
    if (c.state == Conn::State::kReading || c.state == Conn::State::kLingering || comp.res < 0) {
      close_conn(c);
    } else {
      c.close_after = true;
    }
    return;
  }
  if (c.state == Conn::State::kLingering) return;  // dropped
  bool was_idle = c.in.empty();
  c.in.append(reinterpret_cast<const char*>(comp.data), static_cast<size_t>(comp.res));
  if (c.in.size() > kMaxBuffered) {
    close_conn(c);
    return;
  }
  if (c.state != Conn::State::kReading) return;  // parsed once the current answer is out
  // The first byte of a request starts its clock (until then the keep-alive idle limit ran).
  if (was_idle) timers_.arm(c.timer, base::mono_now_ns() + config_.request_timeout.count());
  try_parse(c);
}

void AdminServer::try_parse(Conn& c) {
  http1::ParseResult r = http1::parse_request(c.in, kMaxHead, kMaxBody);
  if (r.status == http1::ParseStatus::kIncomplete) return;
  c.state = Conn::State::kBusy;
  timers_.cancel(c.timer);
  if (r.status != http1::ParseStatus::kDone) {
    c.head_request = false;
    reply_text(c, http1::status_for(r.status), r.error + "\n", true);
    return;
  }
  c.in.erase(0, r.consumed);
  c.head_request = r.request.method == "HEAD";
  c.keep_alive = r.request.keep_alive;
  dispatch(c, r.request);
}

void AdminServer::dispatch(Conn& c, const http1::Request& req) {
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  auto wrong_method = [&](std::string_view allow) {
    std::string extra = "Allow: " + std::string(allow) + "\r\n";
    reply(c, 405, kTextPlain, "method not allowed; allowed: " + std::string(allow) + "\n", false,
          extra);
  };
  bool get_path = path == "/" || path == "/metrics" || path == "/ready" || path == "/live" ||
                  path == "/endpoints" || path == "/config";
  if (get_path && !get) return wrong_method("GET, HEAD");
  if (path == "/reload" && req.method != "POST") return wrong_method("POST");
  if (path == "/") {
    reply_text(c, 200, kIndex);
  } else if (path == "/metrics") {
    want_collection(c, Need::kMetrics);
  } else if (path == "/live") {
    want_collection(c, Need::kLive);
  } else if (path == "/endpoints") {
    want_collection(c, Need::kEndpoints);
  } else if (path == "/ready") {
    std::string why = controller_.readiness();
    reply_text(c, why.empty() ? 200 : 503, why.empty() ? "ready\n" : why + "\n");
  } else if (path == "/config") {
    reply(c, 200, kJson, config::config_to_json(controller_.config()) + "\n");
  } else if (path == "/reload") {
    Controller::ReloadResult r = controller_.reload();
    reply_text(c, r.applied ? 200 : 400, r.message + "\n");
  } else if (test_hooks_ && path.starts_with("/test/")) {
    dispatch_test_hook(c, req);
  } else {
    reply_text(c, 404, "not found: " + path + " (see GET /)\n");
  }
}

void AdminServer::dispatch_test_hook(Conn& c, const http1::Request& req) {
  if (req.path != "/test/stall") {
    reply_text(c, 404, "not found: " + req.path + "\n");
    return;
  }
  if (req.method != "POST") {
    reply(c, 405, kTextPlain, "method not allowed; allowed: POST\n", false, "Allow: POST\r\n");
    return;
  }
  auto number = [&](std::string_view key, int64_t& out) {
    std::optional<std::string_view> v = http1::query_param(req.query, key);
    if (!v || v->empty()) return false;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
    return ec == std::errc() && p == v->data() + v->size();
  };
  int64_t shard = -1, ms = -1;
  if (!number("shard", shard) || !number("ms", ms) || shard < 0 || ms < 0 || ms > kMaxStallMs) {
    reply_text(c, 400, "expected ?shard=N&ms=M (M at most 60000)\n");
    return;
  }
  if (!controller_.stall_shard(static_cast<unsigned>(shard), ms * 1'000'000)) {
    reply_text(c, 400, "no shard " + std::to_string(shard) + "\n");
    return;
  }
  LOG_WARN("admin: test hook: stalling shard %lld for %lld ms", static_cast<long long>(shard),
           static_cast<long long>(ms));
  reply_text(c, 200, "stalling shard " + std::to_string(shard) + "\n");
}

void AdminServer::reply(Conn& c, int status, std::string_view content_type, std::string_view body,
                        bool close, std::string_view extra) {
  if (close || !c.keep_alive || c.peer_closed) c.close_after = true;
  c.out = http1::response(status, content_type, body, !c.close_after, extra, c.head_request);
  c.out_off = 0;
  c.state = Conn::State::kWriting;
  // A client that does not read its answer gets request_timeout to take it, then is dropped.
  timers_.arm(c.timer, base::mono_now_ns() + config_.request_timeout.count());
  send_more(c);
}

void AdminServer::send_more(Conn& c) {
  c.iov.iov_base = c.out.data() + c.out_off;
  c.iov.iov_len = c.out.size() - c.out_off;
  c.send_op.iov = &c.iov;
  c.send_op.iovcnt = 1;
  reactor_.send(c.fd, c.send_op);
}

void AdminServer::on_sent(Conn& c, const io::Completion& comp) {
  if (comp.res < 0) {
    close_conn(c);
    return;
  }
  c.out_off += static_cast<size_t>(comp.res);
  if (c.out_off < c.out.size()) {
    send_more(c);
    return;
  }
  c.out.clear();
  c.out.shrink_to_fit();  // a /metrics answer can be large; idle connections keep nothing
  if (c.close_after) {
    linger(c);
    return;
  }
  c.state = Conn::State::kReading;
  c.head_request = false;
  c.keep_alive = true;
  timers_.arm(c.timer, base::mono_now_ns() + config_.request_timeout.count());
  if (!c.in.empty()) try_parse(c);  // a pipelined request is already here
}

void AdminServer::linger(Conn& c) {
  if (c.peer_closed || !c.recv_op.active) {
    close_conn(c);
    return;
  }
  c.state = Conn::State::kLingering;
  c.in.clear();
  ::shutdown(c.fd, SHUT_WR);
  timers_.arm(c.timer,
              base::mono_now_ns() + std::min<int64_t>(kLingerNs, config_.request_timeout.count()));
}

void AdminServer::on_conn_timer(Conn& c) {
  if (c.state == Conn::State::kReading && !c.in.empty()) {
    LOG_DEBUG("admin: closing a connection whose request did not arrive within %lld ms",
              static_cast<long long>(config_.request_timeout.count() / 1'000'000));
  }
  close_conn(c);
}

void AdminServer::close_conn(Conn& c) {
  if (c.state == Conn::State::kClosing) return;
  c.state = Conn::State::kClosing;
  timers_.cancel(c.timer);
  if (c.rejected) {
    --rejected_conns_;
  } else {
    --serving_conns_;
  }
  if (c.recv_op.active) reactor_.cancel(c.recv_op);
  if (c.send_op.active) reactor_.cancel(c.send_op);
  maybe_free(c);
}

void AdminServer::maybe_free(Conn& c) {
  if (c.recv_op.active || c.send_op.active) return;  // their completions still come (rule 6)
  reactor_.close(c.fd);
  conns_.erase(c.id);  // frees c
}

void AdminServer::want_collection(Conn& c, Need need) {
  next_.push_back({c.id, need});
  if (!collecting_) start_collection();
}

void AdminServer::start_collection() {
  collecting_ = true;
  current_.swap(next_);
  next_.clear();
  controller_.collect(kCollectTimeoutNs,
                      [this](std::vector<std::unique_ptr<ShardSnapshot>>& got,
                             const std::vector<unsigned>& missing) { on_collected(got, missing); });
}

void AdminServer::on_collected(std::vector<std::unique_ptr<ShardSnapshot>>& got,
                               const std::vector<unsigned>& missing) {
  std::vector<Waiter> waiters;
  waiters.swap(current_);
  collecting_ = false;
  for (const Waiter& w : waiters) {
    auto it = conns_.find(w.conn);
    // Gone meanwhile (timed out, reset): nobody to answer.
    if (it == conns_.end() || it->second->state != Conn::State::kBusy) continue;
    answer(*it->second, w.need, got, missing);
  }
  if (!next_.empty()) start_collection();
}

void AdminServer::answer(Conn& c, Need need, const std::vector<std::unique_ptr<ShardSnapshot>>& got,
                         const std::vector<unsigned>& missing) {
  switch (need) {
    case Need::kMetrics:
      reply(c, 200, kPrometheus, render_metrics(controller_, got));
      return;
    case Need::kEndpoints:
      reply(c, 200, kJson, endpoints_json(controller_, got, missing, base::mono_now_ns()) + "\n");
      return;
    case Need::kLive:
      break;
  }
  if (missing.empty()) {
    reply_text(c, 200, "live\n");
    return;
  }
  std::string text = "stuck: shard";
  if (missing.size() > 1) text += "s";
  for (size_t i = 0; i < missing.size(); ++i) {
    text += (i == 0 ? " " : ", ") + std::to_string(missing[i]);
  }
  text += " did not answer within " + std::to_string(kCollectTimeoutNs / 1'000'000) + " ms\n";
  reply_text(c, 503, text);
}

}  // namespace ringlb::core::runtime

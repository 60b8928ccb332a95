#include "core/runtime/health_checker.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/base/log.h"
#include "core/h2/host.h"
#include "core/io/net.h"
#include "core/proxy/tls_contexts.h"
#include "proto/grpc.h"
#include "proto/health.h"

namespace ringlb::core::runtime {

using lb::CheckOutcome;
using lb::HealthChange;

namespace {

constexpr unsigned kHostIndex = 0xffff;  // names the control thread's host in h2 log lines
constexpr size_t kMaxBody = 4096;        // a response is 2 bytes; a Watch few times that
constexpr std::string_view kCheckPath = "/grpc.health.v1.Health/Check";
constexpr std::string_view kWatchPath = "/grpc.health.v1.Health/Watch";

std::string_view as_view(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

// A small decimal header value (":status", "grpc-status"); -1 if it is not one.
int parse_small(std::string_view v) {
  if (v.empty() || v.size() > 4) return -1;
  int n = 0;
  for (char ch : v) {
    if (ch < '0' || ch > '9') return -1;
    n = n * 10 + (ch - '0');
  }
  return n;
}

std::string ms_text(config::Duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + "ms";
}

// The controller's reactor, lent to an h2::Host (which holds one): every call passes through.
// The controller keeps ownership and turns it.
class LentReactor final : public io::Reactor {
 public:
  explicit LentReactor(io::Reactor& r) : r_(r) {}
  const char* name() const override { return r_.name(); }
  void accept(int fd, io::Op& op) override { r_.accept(fd, op); }
  void recv(int fd, io::Op& op) override { r_.recv(fd, op); }
  void send(int fd, io::Op& op) override { r_.send(fd, op); }
  void connect(int fd, const sockaddr* a, socklen_t n, io::Op& op) override {
    r_.connect(fd, a, n, op);
  }
  void poll_in(int fd, io::Op& op) override { r_.poll_in(fd, op); }
  void poll_out(int fd, io::Op& op) override { r_.poll_out(fd, op); }
  void cancel(io::Op& op) override { r_.cancel(op); }
  void close(int fd) override { r_.close(fd); }
  void forget(int fd) override { r_.forget(fd); }
  int run_once(int64_t timeout_ns) override { return r_.run_once(timeout_ns); }

 private:
  io::Reactor& r_;
};

class CheckHost final : public h2::Host {
 public:
  CheckHost(io::Reactor& r, base::Clock& clock) : h2::Host(kHostIndex, clock) {
    set_reactor(std::make_unique<LentReactor>(r));
  }
};

}  // namespace

/// One checked cluster: its policy and the request every check sends. Owner: the checker.
struct HealthChecker::Cluster {
  std::string name;
  lb::HealthPolicy policy;
  config::Duration timeout{};
  std::string request;                  // the framed HealthCheckRequest
  std::string grpc_timeout;             // the header value
  std::shared_ptr<h2::TlsContext> tls;  // the cluster's TLS, or null
  config::ClusterConfig names;          // a copy, for tls_names (its tls and dns keys)
  std::unordered_map<std::string, std::unique_ptr<Target>> targets;  // by lb::endpoint_key
};

/// One checked endpoint. Owner: its Cluster. Its connection, if any, points back at it until it
/// is detached or closes.
struct HealthChecker::Target final : io::TimerHandler {
  Target(HealthChecker& o, Cluster& c, size_t i, std::string k, const lb::Endpoint& e, int64_t now)
      : owner(o), cluster(c), index(i), key(std::move(k)), endpoint(e), state(c.policy, now) {
    timer.handler = this;
  }
  void on_timer(io::Timer&) override { owner.on_timer(*this); }

  HealthChecker& owner;
  Cluster& cluster;
  size_t index;  // the cluster's config index
  std::string key;
  lb::Endpoint endpoint;
  lb::HealthCheckState state;
  Conn* conn = nullptr;  // what checks go over; null until the next check opens one
  io::Timer timer;       // the deadline of the check in flight, else the next check
  std::string last_failure;
};

/// The HTTP/2 connection to one endpoint: at most one Check and one Watch stream at a time.
/// Owner: the checker (conns_) until released, then the host (retire). Closes itself when
/// detached from its target.
class HealthChecker::Conn final : public h2::H2Connection {
 public:
  Conn(h2::Host& host, HealthChecker& owner, Target& t);
  /// Socket, session, connect. A failure closes the connection (and fails the check).
  void start();
  /// New streams can go out on it (not closing, no GOAWAY received).
  bool usable() const {
    return !closing() && session_ != nullptr && nghttp2_session_check_request_allowed(session_);
  }
  bool watching() const { return watch_.id > 0; }
  bool watch_refused() const { return watch_refused_; }
  /// Submits a Check (or a Watch). False if nghttp2 would not take it.
  bool submit(bool watch);
  /// The check in flight timed out: reset its stream, and close the whole connection if nothing
  /// at all came in since the check was sent (a dead peer or a silent network: start afresh).
  void abandon_check();
  /// The target is going away: close without telling it.
  void detach(const char* why);
  /// At the checker's destruction only: no reactor turn will complete the ops any more.
  void abandon_now();

  Target* target = nullptr;
  bool retired = false;  // released and handed to the host, which frees it

 private:
  struct Stream {
    int32_t id = -1;  // -1: none; callbacks for other ids are for abandoned streams
    bool watch = false;
    int http_status = 0;
    int grpc_status = -1;
    std::string grpc_message;
    std::string body;  // received, not yet decoded
    size_t sent = 0;   // of the request
    void reset(int32_t new_id) {
      id = new_id;
      http_status = 0;
      grpc_status = -1;
      grpc_message.clear();
      body.clear();
      sent = 0;
    }
  };

  void on_connected(int res) override;
  void after_input() override { ++inputs_; }
  void on_close(const char* why) override;
  void on_released() override;
  Stream* stream(int32_t id);
  void on_stream_closed(Stream& s, uint32_t error_code);
  CheckOutcome check_outcome(const Stream& s, uint32_t error_code, std::string& why) const;
  void deliver_watch_messages(Stream& s);

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* ud);
  static int on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                           void* ud);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* ud);
  static ssize_t read_request(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void* ud);

  HealthChecker& owner_;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  std::string authority_;
  std::string request_;  // copied from the cluster: a connection may outlive its target
  std::string grpc_timeout_;
  std::unique_ptr<h2::TlsTransport> tls_;
  Stream check_, watch_;
  uint64_t inputs_ = 0;         // reads processed
  uint64_t check_inputs_ = 0;   // inputs_ when the check in flight was sent
  bool watch_refused_ = false;  // Watch came back UNIMPLEMENTED here: poll with Check only
};

// ---------------------------------------------------------------------------------------------
// Conn

HealthChecker::Conn::Conn(h2::Host& host, HealthChecker& owner, Target& t)
    : h2::H2Connection(host),
      target(&t),
      owner_(owner),
      addr_(t.endpoint.addr),
      addr_len_(t.endpoint.addr_len),
      authority_(t.endpoint.name),
      request_(t.cluster.request),
      grpc_timeout_(t.cluster.grpc_timeout) {
  watch_.watch = true;
}

void HealthChecker::Conn::start() {
  static nghttp2_session_callbacks* const callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
  }();
  fd_ = io::make_client_socket(addr_.ss_family);
  if (fd_ < 0) {
    std::string why = std::string("socket: ") + strerror(-std::exchange(fd_, -1));
    close(why.c_str());
    return;
  }
  if (nghttp2_session_client_new3(&session_, callbacks, this, nullptr,
                                  host_.session_heap().mem()) != 0) {
    close("nghttp2 session setup failed");
    return;
  }
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
  if (target != nullptr && target->cluster.tls) {
    tls_ =
        proxy::client_transport(&host_.chunks(), target->cluster.tls, target->cluster.names, addr_);
    set_transport(tls_.get());
  }
  host_.reactor().connect(fd_, reinterpret_cast<const sockaddr*>(&addr_), addr_len_, connect_op_);
}

void HealthChecker::Conn::on_connected(int res) {
  if (res < 0) {
    std::string why = std::string("connect: ") + strerror(-res);
    close(why.c_str());
    return;
  }
  start_io();  // what was submitted meanwhile goes out in this turn's flush
}

bool HealthChecker::Conn::submit(bool watch) {
  Stream& s = watch ? watch_ : check_;
  std::string_view path = watch ? kWatchPath : kCheckPath;
  nghttp2_nv nva[] = {make_nv(":method", "POST"),
                      make_nv(":scheme", "http"),
                      make_nv(":path", path),
                      make_nv(":authority", authority_),
                      make_nv("content-type", "application/grpc"),
                      make_nv("te", "trailers"),
                      make_nv("user-agent", "ringlb/" RINGLB_VERSION " health-check"),
                      make_nv("grpc-timeout", grpc_timeout_)};
  // A Watch has no deadline: it lasts as long as the connection.
  const size_t n = watch ? std::size(nva) - 1 : std::size(nva);
  nghttp2_data_provider body{{.ptr = &s}, read_request};
  int32_t id = nghttp2_submit_request(session_, nullptr, nva, n, &body, &s);
  if (id < 0) return false;
  s.reset(id);
  if (!watch) check_inputs_ = inputs_;
  mark_dirty();
  return true;
}

void HealthChecker::Conn::abandon_check() {
  if (check_.id > 0) {
    nghttp2_session_set_stream_user_data(session_, check_.id, nullptr);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, check_.id, NGHTTP2_CANCEL);
    check_.id = -1;
    mark_dirty();
  }
  if (inputs_ == check_inputs_) close("no answer at all since the check was sent");
}

void HealthChecker::Conn::detach(const char* why) {
  target = nullptr;
  close(why);
}

void HealthChecker::Conn::abandon_now() {
  target = nullptr;
  close("shutting down");
  // The cancels above complete only in a reactor turn that will not come: drop what the reactor
  // knows of the socket and close it, so the object can be freed now.
  if (fd_ >= 0) host_.reactor().close(fd_);
  fd_ = -1;
}

void HealthChecker::Conn::on_close(const char* why) {
  check_.id = watch_.id = -1;
  Target* t = std::exchange(target, nullptr);
  if (t == nullptr) return;
  t->conn = nullptr;  // the next check opens a new connection
  if (t->state.in_flight()) {
    const bool tls_failed = tls_ && !tls_->handshake_done();
    owner_.conclude(*t, CheckOutcome::kFailed,
                    std::string(tls_failed ? "TLS handshake failed: " : "connection closed: ") +
                        (tls_failed && tls_->failed() ? tls_->failure_reason().c_str() : why));
  }
}

void HealthChecker::Conn::on_released() {
  retired = true;
  owner_.conns_.remove(this);
  host_.retire(this);
}

HealthChecker::Conn::Stream* HealthChecker::Conn::stream(int32_t id) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, id));
  return s != nullptr && s->id == id ? s : nullptr;
}

void HealthChecker::Conn::on_stream_closed(Stream& s, uint32_t error_code) {
  s.id = -1;
  Target* t = target;
  if (t == nullptr) return;
  if (s.watch) {
    // Ended by the server (or reset): the next check opens another, unless there is no Watch.
    if (s.grpc_status == static_cast<int>(proto::StatusCode::kUnimplemented)) {
      watch_refused_ = true;
      LOG_DEBUG("cluster %s: endpoint %s has no Watch: polling Check only", t->cluster.name.c_str(),
                t->endpoint.name.c_str());
    }
    return;
  }
  std::string why;
  CheckOutcome o = check_outcome(s, error_code, why);
  owner_.conclude(*t, o, why);
}

CheckOutcome HealthChecker::Conn::check_outcome(const Stream& s, uint32_t error_code,
                                                std::string& why) const {
  if (error_code != NGHTTP2_NO_ERROR) {
    why = std::string("stream reset: ") + nghttp2_http2_strerror(error_code);
    return CheckOutcome::kFailed;
  }
  if (s.http_status != 200) {
    why = "HTTP status " + std::to_string(s.http_status);
    return CheckOutcome::kFailed;
  }
  if (s.grpc_status < 0) {
    why = "no grpc-status";
    return CheckOutcome::kFailed;
  }
  auto code = static_cast<proto::StatusCode>(s.grpc_status);
  if (code == proto::StatusCode::kUnimplemented) {
    why = "UNIMPLEMENTED";
    return CheckOutcome::kUnsupported;
  }
  if (code != proto::StatusCode::kOk) {
    why = "grpc-status " + std::string(proto::status_name(code));
    if (!s.grpc_message.empty()) why += ": " + proto::percent_decode(s.grpc_message);
    return CheckOutcome::kFailed;
  }
  auto body = std::span(reinterpret_cast<const uint8_t*>(s.body.data()), s.body.size());
  auto h = proto::decode_frame_header(body);
  if (!h || h->compressed || body.size() != proto::kFrameHeaderSize + h->length) {
    why = "not one uncompressed HealthCheckResponse";
    return CheckOutcome::kFailed;
  }
  auto status = proto::decode_health_response(body.subspan(proto::kFrameHeaderSize));
  if (!status) {
    why = "HealthCheckResponse does not parse";
    return CheckOutcome::kFailed;
  }
  why = proto::serving_status_name(*status);
  if (*status == proto::ServingStatus::kServing) return CheckOutcome::kServing;
  if (*status == proto::ServingStatus::kNotServing) return CheckOutcome::kNotServing;
  return CheckOutcome::kFailed;  // UNKNOWN, SERVICE_UNKNOWN, or newer than this code
}

void HealthChecker::Conn::deliver_watch_messages(Stream& s) {
  // Each complete message is one status; the stream stays open for the next.
  for (;;) {
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.body.data()), s.body.size());
    auto h = proto::decode_frame_header(bytes);
    if (!h) return;  // fewer than 5 bytes so far
    if (h->compressed || h->length > kMaxBody) {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL);
      s.id = -1;
      return;
    }
    if (bytes.size() < proto::kFrameHeaderSize + h->length) return;
    auto status = proto::decode_health_response(bytes.subspan(proto::kFrameHeaderSize, h->length));
    s.body.erase(0, proto::kFrameHeaderSize + h->length);
    if (!status || target == nullptr) continue;
    CheckOutcome o = *status == proto::ServingStatus::kServing      ? CheckOutcome::kServing
                     : *status == proto::ServingStatus::kNotServing ? CheckOutcome::kNotServing
                                                                    : CheckOutcome::kFailed;
    owner_.on_watch(*target, o, proto::serving_status_name(*status));
  }
}

int HealthChecker::Conn::on_header(nghttp2_session*, const nghttp2_frame* frame,
                                   const uint8_t* name, size_t namelen, const uint8_t* value,
                                   size_t valuelen, uint8_t, void* ud) {
  Stream* s = static_cast<Conn*>(ud)->stream(frame->hd.stream_id);
  if (s == nullptr) return 0;
  std::string_view n = as_view(name, namelen), v = as_view(value, valuelen);
  if (n == ":status") {
    s->http_status = parse_small(v);
  } else if (n == "grpc-status") {
    int code = parse_small(v);
    s->grpc_status = code < 0 ? static_cast<int>(proto::StatusCode::kUnknown) : code;
  } else if (n == "grpc-message") {
    s->grpc_message.assign(v.substr(0, 256));
  }
  return 0;
}

int HealthChecker::Conn::on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data,
                                       size_t len, void* ud) {
  auto* c = static_cast<Conn*>(ud);
  Stream* s = c->stream(id);
  if (s == nullptr) return 0;
  if (s->body.size() + len > kMaxBody) {
    // Not a health response: fail the stream (a Check then counts as failed).
    nghttp2_submit_rst_stream(c->session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    return 0;
  }
  s->body.append(as_view(data, len));
  if (s->watch) c->deliver_watch_messages(*s);
  return 0;
}

int HealthChecker::Conn::on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code,
                                         void* ud) {
  auto* c = static_cast<Conn*>(ud);
  if (Stream* s = c->stream(id)) c->on_stream_closed(*s, error_code);
  return 0;
}

ssize_t HealthChecker::Conn::read_request(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                                          uint32_t* flags, nghttp2_data_source* source, void* ud) {
  auto* c = static_cast<Conn*>(ud);
  auto* s = static_cast<Stream*>(source->ptr);
  if (s->id != id) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // abandoned: reset it
  size_t n = std::min(length, c->request_.size() - s->sent);
  memcpy(buf, c->request_.data() + s->sent, n);
  s->sent += n;
  if (s->sent == c->request_.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

// ---------------------------------------------------------------------------------------------
// HealthChecker

HealthChecker::HealthChecker(io::Reactor& reactor, io::TimerQueue& timers, Callback on_change,
                             base::Clock& clock)
    : timers_(timers),
      on_change_(std::move(on_change)),
      host_(std::make_unique<CheckHost>(reactor, clock)) {}

HealthChecker::~HealthChecker() {
  for (auto& c : clusters_) {
    if (!c) continue;
    for (auto& [key, t] : c->targets) timers_.cancel(t->timer);
  }
  // The controller is going away with its reactor: no turn will complete our ops any more.
  while (h2::H2Connection* h = conns_.front()) {
    conns_.remove(h);
    auto* conn = static_cast<Conn*>(h);
    conn->abandon_now();
    if (!conn->retired) delete conn;  // else the host frees it with its graveyard
  }
  clusters_.clear();
  host_->reap();
}

void HealthChecker::set_endpoints(size_t cluster, const std::string& cluster_name,
                                  const config::HealthCheckConfig& hc, const lb::EndpointSet& set,
                                  const HealthTls& tls) {
  if (clusters_.size() <= cluster) clusters_.resize(cluster + 1);
  std::unique_ptr<Cluster>& c = clusters_[cluster];
  if (!hc.enabled) {
    if (c) {
      for (auto& [key, t] : c->targets) remove_target(*t);
      c.reset();
    }
    return;
  }
  if (!c) {
    c = std::make_unique<Cluster>();
    c->name = cluster_name;
    c->policy = {hc.interval.count(), hc.timeout.count(), hc.unhealthy, hc.healthy};
    c->timeout = hc.timeout;
    std::string message = proto::encode_health_request(hc.service);
    uint8_t prefix[proto::kFrameHeaderSize];
    proto::encode_frame_header({false, static_cast<uint32_t>(message.size())}, prefix);
    c->request.assign(as_view(prefix, sizeof prefix));
    c->request += message;
    char value[16];
    c->grpc_timeout.assign(value, proto::format_grpc_timeout(hc.timeout, value));
  }
  c->tls = tls.context;  // new connections; open ones keep theirs
  if (tls.context && tls.cluster != nullptr) c->names = *tls.cluster;
  std::unordered_set<std::string> members;
  for (const lb::Endpoint& ep : set.endpoints) {
    std::string key = lb::endpoint_key(ep);
    if (!c->targets.contains(key)) add_target(*c, cluster, key, ep);
    members.insert(std::move(key));
  }
  for (auto it = c->targets.begin(); it != c->targets.end();) {
    if (members.contains(it->first)) {
      ++it;
      continue;
    }
    remove_target(*it->second);
    it = c->targets.erase(it);
  }
}

void HealthChecker::add_target(Cluster& c, size_t cluster, const std::string& key,
                               const lb::Endpoint& ep) {
  const int64_t now = host_->refresh_now();
  auto t = std::make_unique<Target>(*this, c, cluster, key, ep, now);
  timers_.arm(t->timer, t->state.wake_at_ns());
  c.targets.emplace(key, std::move(t));
}

void HealthChecker::remove_target(Target& t) {
  timers_.cancel(t.timer);
  if (Conn* conn = std::exchange(t.conn, nullptr)) conn->detach("endpoint removed");
}

void HealthChecker::on_timer(Target& t) {
  const int64_t now = host_->refresh_now();
  if (t.state.timed_out(now)) {
    conclude(t, CheckOutcome::kFailed, "no answer within " + ms_text(t.cluster.timeout));
    if (t.conn != nullptr) t.conn->abandon_check();
  }
  if (t.state.due(now)) start_check(t, now);
  timers_.arm(t.timer, t.state.wake_at_ns());
}

void HealthChecker::start_check(Target& t, int64_t now) {
  t.state.start_check(now);
  if (t.conn != nullptr && !t.conn->usable()) {
    std::exchange(t.conn, nullptr)->detach("the server is going away (GOAWAY)");
  }
  if (t.conn == nullptr) {
    open_connection(t);
    if (t.conn == nullptr) return;  // failed at once; the check has been counted
  }
  if (!t.conn->submit(false)) {
    t.conn->close("could not submit the check");  // fails the check, see Conn::on_close
    return;
  }
  if (!t.conn->watching() && !t.conn->watch_refused()) t.conn->submit(true);
}

void HealthChecker::open_connection(Target& t) {
  auto* conn = new Conn(*host_, *this, t);
  conns_.push_back(conn);
  t.conn = conn;
  conn->start();  // on failure Conn::on_close clears t.conn and fails the check
}

void HealthChecker::conclude(Target& t, CheckOutcome o, std::string_view why) {
  const bool was_unsupported = t.state.unsupported();
  HealthChange change = t.state.finish_check(o);
  if (t.state.unsupported() && !was_unsupported) {
    LOG_WARN(
        "cluster %s: endpoint %s has no grpc.health.v1 service (UNIMPLEMENTED): checking "
        "only that it answers",
        t.cluster.name.c_str(), t.endpoint.name.c_str());
  }
  if (o == CheckOutcome::kFailed) {
    t.last_failure.assign(why);
    LOG_DEBUG("cluster %s: endpoint %s: health check failed: %s", t.cluster.name.c_str(),
              t.endpoint.name.c_str(), t.last_failure.c_str());
  }
  timers_.arm(t.timer, t.state.wake_at_ns());
  report(t, change, o, why);
}

void HealthChecker::on_watch(Target& t, CheckOutcome o, std::string_view why) {
  report(t, t.state.on_watch(o, host_->refresh_now()), o, std::string("Watch: ") += why);
}

void HealthChecker::report(Target& t, HealthChange change, CheckOutcome o, std::string_view why) {
  if (change == HealthChange::kNone) return;
  std::string text;
  if (change == HealthChange::kBecameHealthy) {
    text = std::to_string(t.state.successes()) + " checks in a row answered " +
           (t.state.unsupported() ? "(UNIMPLEMENTED: liveness only)" : "SERVING");
  } else if (o == CheckOutcome::kNotServing) {
    text = why;
  } else {
    text = std::to_string(t.state.failures()) + " failed checks in a row, the last: ";
    text += why;
  }
  on_change_(t.index, t.key, change == HealthChange::kBecameHealthy, text);
}

bool HealthChecker::flush() {
  host_->refresh_now();
  host_->flush_dirty();
  host_->reap();
  return host_->has_dirty();
}

HealthChecker::Target* HealthChecker::find(size_t cluster, const std::string& key) const {
  if (cluster >= clusters_.size() || !clusters_[cluster]) return nullptr;
  auto it = clusters_[cluster]->targets.find(key);
  return it == clusters_[cluster]->targets.end() ? nullptr : it->second.get();
}

bool HealthChecker::healthy(size_t cluster, const std::string& key) const {
  const Target* t = find(cluster, key);
  return t == nullptr || t->state.healthy();
}

const std::string* HealthChecker::endpoint_name(size_t cluster, const std::string& key) const {
  const Target* t = find(cluster, key);
  return t == nullptr ? nullptr : &t->endpoint.name;
}

size_t HealthChecker::size() const {
  size_t n = 0;
  for (const auto& c : clusters_) n += c ? c->targets.size() : 0;
  return n;
}

}  // namespace ringlb::core::runtime

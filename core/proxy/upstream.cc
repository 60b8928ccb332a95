#include "core/proxy/upstream.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/base/log.h"
#include "core/io/net.h"
#include "core/proxy/call.h"
#include "core/proxy/context.h"
#include "core/proxy/tls_contexts.h"

namespace ringlb::core::proxy {
namespace {

// Until the peer's SETTINGS arrive we take up to this many attempts (what gRPC servers commonly
// advertise); nghttp2 holds their HEADERS until then (see start()).
constexpr uint32_t kAssumedPeerMaxStreams = 100;

// gRPC servers (grpc-go, grpc-core) count a PING that comes within 5 min of the previous one as
// a strike unless they sent HEADERS or DATA since (the first after that is free), and at the
// third strike (the fourth such PING) send GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and
// close the connection, calls and all. So a call that stays quiet for long (a slow handler, a
// long poll) must not draw a PING every interval: after this many PINGs with no HEADERS or DATA
// from the server (one more may cross a server's write and count), we ping at most once per
// kQuietPingSpacing until it sends some.
constexpr uint8_t kPingsWithoutData = 2;
constexpr int64_t kQuietPingSpacing = 300'000'000'000;  // 5 min: those servers' default minimum

constexpr std::string_view kTooManyPings = "too_many_pings";

int64_t ms_of(int64_t ns) {
  return ns / 1'000'000;
}

UpstreamConn* conn_of(void* user) {
  return static_cast<UpstreamConn*>(user);
}

struct Callbacks {
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_option* opt = nullptr;
};

}  // namespace

UpstreamConn::UpstreamConn(Context& ctx, ClusterState& cluster, EndpointState& endpoint)
    : h2::H2Connection(ctx), ctx_(ctx), cluster_(cluster), endpoint_(endpoint) {
  connect_timer_.handler = ping_timer_.handler = this;
}

UpstreamConn::~UpstreamConn() = default;

base::Result<void> UpstreamConn::start() {
  static const Callbacks cbs = [] {
    Callbacks c;
    nghttp2_session_callbacks_new(&c.cb);
    nghttp2_session_callbacks_set_on_header_callback(c.cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c.cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(c.cb, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c.cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(c.cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(c.cb, send_body);
    nghttp2_option_new(&c.opt);
    nghttp2_option_set_no_auto_window_update(c.opt, 1);
    // No request HEADERS leave before the server's SETTINGS (which lift this to its own limit,
    // or none): our preface and SETTINGS go out at once, requests wait until it is ready.
    nghttp2_option_set_peer_max_concurrent_streams(c.opt, 0);
    nghttp2_option_set_max_continuations(c.opt, 8);
    nghttp2_option_set_no_closed_streams(c.opt, 1);
    return c;
  }();
  const lb::Endpoint& ep = endpoint_.endpoint;
  std::memcpy(&addr_, &ep.addr, ep.addr_len);
  addr_len_ = ep.addr_len;
  int fd = io::make_client_socket(addr_.ss_family);
  if (fd < 0) return base::fail(strerror(-fd), -fd);
  fd_ = fd;
  if (nghttp2_session_client_new3(&session_, cbs.cb, this, cbs.opt, ctx_.session_heap().mem()) !=
      0) {
    ctx_.reactor().close(fd_);
    fd_ = -1;
    return base::fail("nghttp2 session setup failed");
  }
  const config::ProxyConfig& pc = ctx_.config().proxy;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pc.stream_buffer},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, pc.max_header_list_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(pc.connection_window));
  if (cluster_.tls) start_tls();
  state_ = State::kConnecting;
  ctx_.reactor().connect(fd_, reinterpret_cast<const sockaddr*>(&addr_), addr_len_, connect_op_);
  ++endpoint_.counters.connects;
  ctx_.timers().arm(connect_timer_, ctx_.now() + cluster_.config->connect_timeout.count());
  return {};
}

void UpstreamConn::start_tls() {
  tls_ = client_transport(&ctx_.chunks(), cluster_.tls, *cluster_.config, addr_);
  tls_->set_session(endpoint_.tls_session.get());
  tls_->set_on_session(
      [](void* self, SSL_SESSION* s) {
        static_cast<UpstreamConn*>(self)->endpoint_.tls_session.reset(s);
      },
      this);
  set_transport(tls_.get());
}

bool UpstreamConn::has_room() const {
  uint32_t max = kAssumedPeerMaxStreams;
  if (session_ != nullptr && ready_) {
    max = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  }
  return attempts.size() < max;
}

base::Result<void> UpstreamConn::submit(Attempt& a, h2::HeaderBlock& headers, bool end_stream) {
  const bool was_idle = attempts.empty() || busy_pending_;
  busy_pending_ = false;
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = read_body;
  int32_t id = nghttp2_submit_request(session_, nullptr, headers.nva(), headers.count(),
                                      end_stream ? nullptr : &prd, &a);
  if (id < 0) return base::fail(nghttp2_strerror(id));
  a.stream_id = id;
  if (a.conn != this) {  // else it was parked here, and is on the list already
    a.conn = this;
    attempts.push_back(&a);
  }
  mark_dirty();  // no-op while connecting; start_io() flushes everything queued
  if (was_idle) on_busy();
  return {};
}

void UpstreamConn::on_busy() {
  const config::KeepaliveConfig& ka = cluster_.config->keepalive;
  if (!ready_ || !ka.enabled) return;  // on_ready() arms the timer
  // Silence counts from now: a call waits keepalive.interval before it draws a PING.
  const int64_t now = ctx_.now();
  waiting_since_ns_ = now;
  if (ping_sent_ns_ != 0 && last_recv_ns_ >= ping_sent_ns_) ping_sent_ns_ = 0;  // answered
  // Reused after a long silence: it may have died unseen (no calls, no pings). The PING goes
  // out ahead of the request, and the timer holds it to keepalive.timeout.
  if (ping_sent_ns_ == 0 && now - last_recv_ns_ >= ka.idle.count()) {
    ctx_.timers().cancel(ping_timer_);
    send_ping();
  }
  arm_keepalive();
}

void UpstreamConn::resume(const Attempt& a) {
  if (!open() || a.stream_id == 0) return;  // parked: nothing submitted yet
  nghttp2_session_resume_data(session_, a.stream_id);
  mark_dirty();
}

void UpstreamConn::consume(const Attempt& a, size_t n) {
  if (!open() || n == 0 || a.stream_id == 0) return;
  nghttp2_session_consume_stream(session_, a.stream_id, n);
  mark_dirty();
}

void UpstreamConn::reset(Attempt& a, uint32_t code) {
  if (!closing() && a.stream_id != 0) {  // a parked attempt has no stream to reset
    nghttp2_session_set_stream_user_data(session_, a.stream_id, nullptr);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, a.stream_id, code);
    mark_dirty();
  }
  attempt_done(a);
}

void UpstreamConn::attempt_done(Attempt& a) {
  if (a.unsent_link.linked()) unsent_.remove(&a);
  attempts.remove(&a);
  a.conn = nullptr;
  if (goaway_ && attempts.empty()) close_gracefully();
}

std::optional<uint32_t> UpstreamConn::peer_max_header_list() const {
  if (!ready_) return std::nullopt;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);
}

void UpstreamConn::park(Attempt& a) {
  a.conn = this;
  a.stream_id = 0;
  attempts.push_back(&a);
}

void UpstreamConn::defer(Attempt& a) {
  if (a.conn != this) {                 // else parked here already, waiting for our SETTINGS
    busy_pending_ |= attempts.empty();  // submit() sees the first attempt after none
    park(a);
  }
  if (!a.unsent_link.linked()) unsent_.push_back(&a);
  mark_dirty();
}

void UpstreamConn::before_flush() {
  if (unsent_.empty()) return;
  submitting_ = true;
  while (Attempt* a = unsent_.front()) {
    unsent_.remove(a);
    if (a->conn == this && a->stream_id == 0) a->call->on_upstream_settings(*a);
    if (!open()) break;
  }
  submitting_ = false;
}

void UpstreamConn::release_parked() {
  // Calls may end or replay while they hear of it: walk a copy. Once per connection, over the
  // attempts that came while it connected.
  std::vector<Attempt*> parked;
  attempts.for_each([&](Attempt* a) {
    if (a->stream_id == 0) parked.push_back(a);
  });
  for (Attempt* a : parked) {
    if (a->conn == this && a->stream_id == 0) a->call->on_upstream_settings(*a);
  }
}

void UpstreamConn::retire() {
  goaway_ = true;
  if (attempts.empty()) close_gracefully();
}

void UpstreamConn::close_gracefully() {
  if (state_ == State::kConnecting) {
    close("endpoint removed");
    return;
  }
  if (!open()) return;
  // GOAWAY(NO_ERROR); nghttp2 then wants neither read nor write and flush() closes us.
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  mark_dirty();
}

void UpstreamConn::on_connected(int res) {
  if (res < 0) {
    std::string why = std::string("connect failed: ") + strerror(-res);
    close(why.c_str());
    return;
  }
  tcp_up_ = true;
  if (tls_) {  // the handshake and the server's SETTINGS get a connect_timeout of their own
    ctx_.timers().arm(connect_timer_, ctx_.now() + cluster_.config->connect_timeout.count());
  }
  start_io();  // the connect timer runs on until the server's SETTINGS
}

void UpstreamConn::on_ready() {
  ready_ = true;
  ctx_.timers().cancel(connect_timer_);
  last_recv_ns_ = ctx_.now();
  if (!attempts.empty()) arm_keepalive();
  release_parked();  // only the first SETTINGS releases what waited for them
}

void UpstreamConn::after_input() {
  last_recv_ns_ = ctx_.now();  // any bytes prove the server alive; the timer looks lazily
}

void UpstreamConn::on_timer(io::Timer& t) {
  if (&t == &ping_timer_) {
    on_ping_timer();
  } else {
    on_connect_timeout();
  }
}

void UpstreamConn::on_connect_timeout() {
  if (tls_ && tcp_up_ && !tls_->handshake_done()) {
    tls_->fail(h2::TlsFailure::kTimeout, "handshake timeout");
    close(tls_->failure_reason().c_str());
    return;
  }
  if (ready_ || closing()) return;
  const int64_t ms = ms_of(cluster_.config->connect_timeout.count());
  std::string why = state_ == State::kConnecting
                        ? "connect timed out after " + std::to_string(ms) + " ms"
                        : "connected, but no HTTP/2 SETTINGS from the backend within " +
                              std::to_string(ms) + " ms (connect_timeout)";
  close(why.c_str());
}

int64_t UpstreamConn::keepalive_interval_ns() const {
  const int64_t configured = cluster_.config->keepalive.interval.count();
  return std::max(configured, endpoint_.keepalive_interval_ns);
}

void UpstreamConn::arm_keepalive() {
  if (ping_timer_.armed() || !ready_ || !cluster_.config->keepalive.enabled) return;
  const int64_t due = ping_sent_ns_ != 0
                          ? ping_sent_ns_ + cluster_.config->keepalive.timeout.count()
                          : std::max(last_recv_ns_, waiting_since_ns_) + keepalive_interval_ns();
  ctx_.timers().arm(ping_timer_, due);
}

void UpstreamConn::on_ping_timer() {
  if (!open() || !ready_) return;
  const int64_t now = ctx_.now();
  const int64_t timeout = cluster_.config->keepalive.timeout.count();
  // A PING in flight is judged even if the attempts that drew it have all moved on (per-try
  // timeouts, the endpoint ejected): a connection that did not answer is dead, and closing it
  // now, not at its next use, is what tells the endpoint's state.
  if (ping_sent_ns_ != 0 && last_recv_ns_ < ping_sent_ns_) {
    if (now - ping_sent_ns_ < timeout) {
      ctx_.timers().arm(ping_timer_, ping_sent_ns_ + timeout);
      return;
    }
    ping_timed_out_ = true;
    std::string why = "PING timeout after " + std::to_string(ms_of(now - ping_sent_ns_)) +
                      " ms (nothing from the backend: hung or unreachable)";
    close(why.c_str());
    return;
  }
  ping_sent_ns_ = 0;             // answered (by its ACK or anything else)
  if (attempts.empty()) return;  // idle: the next submit re-arms
  int64_t due = std::max(last_recv_ns_, waiting_since_ns_) + keepalive_interval_ns();
  if (pings_without_data_ >= kPingsWithoutData) {
    due = std::max(due, last_ping_ns_ + kQuietPingSpacing);
  }
  if (now < due) {
    ctx_.timers().arm(ping_timer_, due);
    return;
  }
  send_ping();
  ctx_.timers().arm(ping_timer_, now + timeout);
}

void UpstreamConn::on_ping_ack(const uint8_t* opaque) {
  // Any bytes prove the connection alive (after_input); the ACK of our latest PING also starts
  // the next interval now rather than when the timer would have looked.
  if (ping_sent_ns_ == 0 || std::memcmp(opaque, &ping_seq_, sizeof ping_seq_) != 0) return;
  ping_sent_ns_ = 0;
  last_recv_ns_ = ctx_.now();
  ctx_.timers().cancel(ping_timer_);
  if (!attempts.empty()) arm_keepalive();
}

void UpstreamConn::on_server_wrote() {
  // HEADERS or DATA: the server forgives the PINGs it had counted (ping strikes).
  const bool held_back = pings_without_data_ >= kPingsWithoutData;
  pings_without_data_ = 0;
  if (!held_back) return;
  last_recv_ns_ = ctx_.now();
  ctx_.timers().cancel(ping_timer_);  // it waited for kQuietPingSpacing: back to the interval
  if (!attempts.empty()) arm_keepalive();
}

void UpstreamConn::send_ping() {
  uint8_t opaque[8];
  const uint64_t seq = ++ping_seq_;
  std::memcpy(opaque, &seq, sizeof opaque);
  if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, opaque) != 0) return;
  ping_sent_ns_ = last_ping_ns_ = ctx_.now();
  ping_interval_ns_ = keepalive_interval_ns();
  if (pings_without_data_ < UINT8_MAX) ++pings_without_data_;
  mark_dirty();
}

void UpstreamConn::on_close(const char* why) {
  LOG_DEBUG("shard %u: upstream %s closed: %s", ctx_.index(), name().c_str(), why);
  std::string tls_why;
  if (tls_ && tcp_up_ && !tls_->handshake_done() && !ctx_.draining()) {
    // The backend's TLS failed: counted, logged (bounded), and the calls are told why.
    if (!tls_->failed()) tls_->fail(h2::TlsFailure::kProtocol, std::string("closed: ") + why);
    ++cluster_.counters.tls_failures[static_cast<size_t>(tls_->failure())];
    if (ctx_.tls_log_allowed()) {
      LOG_WARN("tls: cluster %s endpoint %s: handshake failed: %s", cluster_.config->name.c_str(),
               name().c_str(), tls_->failure_reason().c_str());
    }
    tls_why = "TLS handshake failed: " + tls_->failure_reason();
    why = tls_why.c_str();
  }
  ctx_.timers().cancel(connect_timer_);
  ctx_.timers().cancel(ping_timer_);
  if (!goaway_ && !ctx_.draining()) {  // not retired, not after a GOAWAY, not shutting down
    UpstreamEvent e = !ready_           ? UpstreamEvent::kConnectFailed
                      : ping_timed_out_ ? UpstreamEvent::kPingTimeout
                                        : UpstreamEvent::kConnectionLost;
    ctx_.on_upstream_event(e, cluster_, endpoint_, why);
  }
  goaway_ = true;
  endpoint_.conns.remove(this);
  ++endpoint_.closing;
  // Calls may replay or reset other attempts while we tell them: walk a copy.
  std::vector<Attempt*> gone;
  attempts.for_each([&](Attempt* a) { gone.push_back(a); });
  // Before the server's SETTINGS no HEADERS went out: the backend cannot have seen any.
  const AttemptEnd how = ready_ ? AttemptEnd::kConnectionLost : AttemptEnd::kConnectFailed;
  for (Attempt* a : gone) {
    if (a->conn != this) continue;  // already let go of by an earlier call's reaction
    if (a->stream_id != 0) nghttp2_session_set_stream_user_data(session_, a->stream_id, nullptr);
    // One still deferred to our flush was never submitted: the backend cannot have seen it.
    a->call->on_attempt_closed(*a, a->stream_id == 0 ? AttemptEnd::kConnectFailed : how,
                               NGHTTP2_INTERNAL_ERROR, why);
  }
  while (Attempt* a = unsent_.front()) unsent_.remove(a);
}

void UpstreamConn::on_released() {
  --endpoint_.closing;
  cluster_.maybe_forget(endpoint_);
  ctx_.retire(this);
}

Attempt* UpstreamConn::attempt_of(int32_t id) const {
  // Pooled calls outlive their streams: trust the pointer only if it still names this stream.
  auto* a = static_cast<Attempt*>(nghttp2_session_get_stream_user_data(session_, id));
  return a != nullptr && a->conn == this && a->stream_id == id ? a : nullptr;
}

int UpstreamConn::on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                            size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                            void* user) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  Attempt* a = conn_of(user)->attempt_of(f->hd.stream_id);
  if (a == nullptr) return 0;
  bool trailer = f->headers.cat == NGHTTP2_HCAT_HEADERS;
  if (!a->call->add_response_header(*a, {reinterpret_cast<const char*>(name), namelen},
                                    {reinterpret_cast<const char*>(value), valuelen}, flags,
                                    trailer)) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets this stream only (ringlb's reset)
  }
  return 0;
}

int UpstreamConn::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  UpstreamConn* c = conn_of(user);
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      if (c->pings_without_data_ != 0) c->on_server_wrote();
      Attempt* a = c->attempt_of(f->hd.stream_id);
      if (a == nullptr) return 0;
      a->call->on_response_headers(*a, end, f->headers.cat == NGHTTP2_HCAT_HEADERS);
      break;
    }
    case NGHTTP2_DATA: {
      if (c->pings_without_data_ != 0) c->on_server_wrote();
      Attempt* a = c->attempt_of(f->hd.stream_id);
      if (a != nullptr && end) a->call->on_response_end(*a);
      break;
    }
    case NGHTTP2_RST_STREAM:
      ++c->endpoint_.counters.resets;
      if (Attempt* a = c->attempt_of(f->hd.stream_id)) a->peer_reset = true;
      break;
    case NGHTTP2_SETTINGS:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) == 0 && !c->ready_) c->on_ready();
      break;
    case NGHTTP2_PING:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) != 0) c->on_ping_ack(f->ping.opaque_data);
      break;
    case NGHTTP2_GOAWAY:
      c->on_goaway(f->goaway);
      break;
    default:
      break;
  }
  return 0;
}

void UpstreamConn::on_goaway(const nghttp2_goaway& g) {
  // No new streams here. nghttp2 closes the ones above the last stream id with REFUSED_STREAM:
  // the backend never saw them, so their calls are replayed elsewhere.
  const std::string_view debug(reinterpret_cast<const char*>(g.opaque_data), g.opaque_data_len);
  if (g.error_code == NGHTTP2_ENHANCE_YOUR_CALM && debug == kTooManyPings) {
    // The server's ping policy is stricter than our interval: this endpoint gets twice the
    // interval (on this shard), for its connections now and later. Doubled from the interval
    // this connection pinged at, so several connections told at once double it once.
    const int64_t was = ping_interval_ns_ != 0 ? ping_interval_ns_ : keepalive_interval_ns();
    const int64_t next = std::min(was * 2, EndpointState::kMaxKeepaliveInterval);
    if (next > endpoint_.keepalive_interval_ns) {
      endpoint_.keepalive_interval_ns = next;
      LOG_WARN(
          "shard %u: upstream %s: GOAWAY too_many_pings; its keepalive interval goes from "
          "%lld to %lld ms",
          ctx_.index(), name().c_str(), static_cast<long long>(ms_of(was)),
          static_cast<long long>(ms_of(next)));
    }
  }
  if (!goaway_) {
    std::string detail = g.error_code == NGHTTP2_NO_ERROR ? "GOAWAY (no error)"
                                                          : nghttp2_http2_strerror(g.error_code);
    // The debug data says why ("too_many_pings", "max_age"...), when it is short and printable.
    const bool printable =
        std::all_of(debug.begin(), debug.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
    if (!debug.empty() && debug.size() <= 64 && printable) {
      detail.append(" (").append(debug).append(")");
    }
    ctx_.on_upstream_event(UpstreamEvent::kGoaway, cluster_, endpoint_, detail);
  }
  goaway_ = true;
}

int UpstreamConn::on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (Attempt* a = conn_of(user)->attempt_of(f->hd.stream_id)) a->call->on_attempt_sent(*a);
  return 0;
}

int UpstreamConn::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data,
                                size_t len, void* user) {
  UpstreamConn* c = conn_of(user);
  c->credit_connection(len);
  Attempt* a = c->attempt_of(id);
  if (a == nullptr) {
    nghttp2_session_consume_stream(s, id, len);
    return 0;
  }
  a->call->on_response_data(*a, data, len);
  return 0;
}

int UpstreamConn::on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void* user) {
  UpstreamConn* c = conn_of(user);
  Attempt* a = c->attempt_of(id);
  if (a != nullptr) {
    nghttp2_session_set_stream_user_data(s, id, nullptr);
    if (error_code == NGHTTP2_REFUSED_STREAM && c->goaway_) {
      // Past the last stream id of the backend's GOAWAY: nghttp2 closes it as refused, with no
      // RST_STREAM on the wire. The backend said it did not process it, as a RST_STREAM
      // (REFUSED_STREAM) says: UNAVAILABLE, replayed if it can be; and a graceful GOAWAY is no
      // failure of the endpoint's.
      a->peer_reset = a->refused_by_goaway = true;
    }
    a->call->on_attempt_closed(*a, AttemptEnd::kStream, error_code, {});
  }
  return 0;
}

ssize_t UpstreamConn::read_body(nghttp2_session*, int32_t id, uint8_t*, size_t len, uint32_t* flags,
                                nghttp2_data_source*, void* user) {
  Attempt* a = conn_of(user)->attempt_of(id);
  if (a == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // stale: reset it
  bool eof = false;
  size_t n = a->call->request_ready(*a, len, &eof);
  // NO_COPY: nghttp2 calls send_body next, in this same mem_send, to copy the bytes out.
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  return n == 0 ? static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED) : static_cast<ssize_t>(n);
}

int UpstreamConn::send_body(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                            size_t length, nghttp2_data_source*, void* user) {
  UpstreamConn* c = conn_of(user);
  Attempt* a = c->attempt_of(frame->hd.stream_id);
  if (a == nullptr) return NGHTTP2_ERR_CALLBACK_FAILURE;  // read_body just saw it: cannot happen
  c->append_data_frame(*frame, framehd,
                       [&](mem::ChunkQueue& out) { a->call->request_send(*a, out, length); });
  return 0;
}

}  // namespace ringlb::core::proxy

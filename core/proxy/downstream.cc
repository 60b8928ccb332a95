#include "core/proxy/downstream.h"

#include <sys/socket.h>

#include "core/base/log.h"
#include "core/io/net.h"
#include "core/proxy/context.h"

namespace ringlb::core::proxy {
namespace {

enum : uint8_t { kIdleTimer = 1, kDrainTimer = 2, kStageTimer = 3, kLingerTimer = 4 };
// Clients that never answer the drain PING still get the final GOAWAY after this.
constexpr int64_t kDrainPingWaitNs = 1'000'000'000;
// A request body makes progress with each complete DATA frame or this many payload bytes: a
// body sent a byte at a time never does, and body_timeout ends it.
constexpr uint32_t kBodyProgressBytes = 1024;
// A header block decoding past this many times max_header_list_size is a bomb (on_header).
constexpr size_t kBombFactor = 4;

DownstreamConn* conn_of(void* user) {
  return static_cast<DownstreamConn*>(user);
}

// Built once per shard (and again if a reload changes a limit in them); nghttp2 copies the
// callback table and the options into each session.
struct Callbacks {
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_option* opt = nullptr;
  uint32_t outbound = 0;  // max_outbound_control_frames the options were built for
  uint32_t reset_rate = 0;
  uint32_t reset_burst = 0;
  // thread_local: freed when the shard's thread ends (never copied).
  Callbacks() = default;
  Callbacks(const Callbacks&) = delete;
  Callbacks& operator=(const Callbacks&) = delete;
  ~Callbacks() {
    if (opt != nullptr) nghttp2_option_del(opt);
    if (cb != nullptr) nghttp2_session_callbacks_del(cb);
  }
};

}  // namespace

DownstreamConn::DownstreamConn(Context& ctx, int fd, size_t listener_index)
    : h2::H2Connection(ctx), ctx_(ctx), listener_index_(listener_index) {
  fd_ = fd;
  idle_timer_.handler = drain_timer_.handler = stage_timer_.handler = linger_timer_.handler = this;
  idle_timer_.tag = kIdleTimer;
  drain_timer_.tag = kDrainTimer;
  stage_timer_.tag = kStageTimer;
  linger_timer_.tag = kLingerTimer;
}

DownstreamConn::~DownstreamConn() = default;

bool DownstreamConn::init(const sockaddr_storage& peer, socklen_t peer_len) {
  const config::ProxyConfig& pc = ctx_.config().proxy;
  io::set_nodelay(fd_);
  address_ = AddressKey::of(peer);
  if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
    peer_ = io::format_address(reinterpret_cast<const sockaddr*>(&peer), peer_len);
  }
  // The session (about 10 KiB of nghttp2 state) waits for the client's first bytes
  // (start_session): a connection that never speaks costs only this object (and, on a TLS
  // listener, BoringSSL's SSL object) until handshake_timeout closes it.
  if (const std::shared_ptr<h2::TlsContext>& t = ctx_.router(listener_index_).tls) {
    tls_ = std::make_unique<h2::TlsTransport>(&ctx_.chunks(), t);
    set_transport(tls_.get());
  }
  start_io();
  accepted_ns_ = ctx_.now();
  if (pc.idle_timeout.count() > 0) {
    ctx_.timers().arm(idle_timer_, ctx_.now() + pc.idle_timeout.count());
  }
  if (pc.handshake_timeout.count() > 0) watch_until(accepted_ns_ + pc.handshake_timeout.count());
  return true;
}

bool DownstreamConn::start_session() {
  thread_local Callbacks cbs;
  if (cbs.cb == nullptr) {
    nghttp2_session_callbacks_new(&cbs.cb);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs.cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs.cb, on_frame_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs.cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs.cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs.cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs.cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs.cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs.cb, send_body);
  }
  const config::ProxyConfig& pc = ctx_.config().proxy;
  const config::LimitsConfig& lim = ctx_.config().limits;
  if (cbs.opt == nullptr || cbs.outbound != lim.max_outbound_control_frames ||
      cbs.reset_rate != lim.reset_rate || cbs.reset_burst != lim.reset_burst) {
    if (cbs.opt != nullptr) nghttp2_option_del(cbs.opt);
    nghttp2_option_new(&cbs.opt);
    cbs.outbound = lim.max_outbound_control_frames;
    cbs.reset_rate = lim.reset_rate;
    cbs.reset_burst = lim.reset_burst;
    // Windows are given back by hand: the stream's when an attempt has taken the bytes (flow
    // coupling), the connection's on receipt (credit_connection).
    nghttp2_option_set_no_auto_window_update(cbs.opt, 1);
    // CVE-2023-44487 (rapid reset): our own limits (count_reset) trip first and say why with
    // ENHANCE_YOUR_CALM; nghttp2's, at four times ours, is only a backstop.
    nghttp2_option_set_stream_reset_rate_limit(cbs.opt, 4ull * lim.reset_burst,
                                               4ull * lim.reset_rate);
    // CVE-2024-28182 (CONTINUATION flood).
    nghttp2_option_set_max_continuations(cbs.opt, 8);
    nghttp2_option_set_max_settings(cbs.opt, 32);
    // ACKs and RST_STREAMs queued for a client that does not read: NGHTTP2_ERR_FLOODED.
    nghttp2_option_set_max_outbound_ack(cbs.opt, lim.max_outbound_control_frames);
    // No RFC 7540 priority tree, so closed streams need not linger (up to
    // max_concurrent_streams of them per connection otherwise).
    nghttp2_option_set_no_closed_streams(cbs.opt, 1);
  }
  if (nghttp2_session_server_new3(&session_, cbs.cb, this, cbs.opt, ctx_.session_heap().mem()) !=
      0) {
    return false;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, pc.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pc.stream_buffer},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, pc.max_header_list_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(pc.connection_window));
  return true;
}

void DownstreamConn::after_input() {
  if (tls_ && !tls_counted_ && tls_->handshake_done()) {
    tls_counted_ = true;
    ++counters()->tls_handshakes[static_cast<size_t>(tls_->resumed() ? TlsHandshake::kResumed
                                                                     : TlsHandshake::kFull)];
  }
}

void DownstreamConn::tls_failed(const char* why) {
  // A connection that closes before sending a byte (a TCP health check) tried no TLS.
  if (!tls_->failed() && !tls_->started()) return;
  if (!tls_->failed()) tls_->fail(h2::TlsFailure::kProtocol, std::string("closed: ") + why);
  ListenerCounters& c = *counters();
  ++c.tls_handshakes[static_cast<size_t>(TlsHandshake::kFailed)];
  ++c.tls_failures[static_cast<size_t>(tls_->failure())];
  if (ctx_.tls_log_allowed()) {
    LOG_WARN("tls: listener %s peer %s: handshake failed: %s",
             ctx_.router(listener_index_).listener_name().c_str(),
             peer_.empty() ? "?" : peer_.c_str(), tls_->failure_reason().c_str());
  }
}

void DownstreamConn::start_drain() {
  if (draining_ || !open()) return;
  if (!requested_ && !drain_deferred_) {
    // No request yet: this may be a connection accepted just now (the last of a closing
    // listener's queue) with calls waiting for it on the client's side. grpc-core fails those
    // ("GOAWAY received") when the GOAWAY comes with our SETTINGS, retries off. So the notice
    // waits for the first request (sent once the client has our SETTINGS) or, for a client
    // with nothing to send, kDrainPingWaitNs; either way the client then moves on unharmed.
    drain_deferred_ = true;
    ctx_.timers().arm(drain_timer_, ctx_.now() + kDrainPingWaitNs);
    return;
  }
  drain_deferred_ = false;
  if (session_ == nullptr) {  // not a byte from the client yet: no calls to lose
    close("draining; the client had sent nothing");
    return;
  }
  draining_ = true;
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
  ctx_.timers().arm(drain_timer_, ctx_.now() + kDrainPingWaitNs);
  mark_dirty();
}

void DownstreamConn::send_final_goaway() {
  if (final_goaway_sent_ || !open()) return;
  final_goaway_sent_ = true;
  drain_deferred_ = false;
  ctx_.timers().cancel(drain_timer_);
  if (session_ == nullptr) {
    close("draining; the client had sent nothing");
    return;
  }
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  mark_dirty();
}

void DownstreamConn::on_timer(io::Timer& t) {
  if (t.tag == kStageTimer) {
    on_stage_timer();
  } else if (t.tag == kLingerTimer) {
    close("went away (GOAWAY), and the client did not read it");
  } else if (t.tag == kDrainTimer) {
    if (drain_deferred_) {
      requested_ = true;  // waited long enough: the notice goes now
      start_drain();
      return;
    }
    send_final_goaway();
  } else if (calls.empty() && !draining_) {
    if (ListenerCounters* k = counters()) ++k->timeouts[static_cast<size_t>(TimeoutStage::kIdle)];
    start_drain();  // idle: the same polite two-phase goodbye
  }
}

void DownstreamConn::submit_response(int32_t id, h2::HeaderBlock& headers, bool end_stream) {
  if (!open()) return;
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = read_body;
  int rv = nghttp2_submit_response(session_, id, headers.nva(), headers.count(),
                                   end_stream ? nullptr : &prd);
  if (rv != 0) LOG_DEBUG("submit_response: %s", nghttp2_strerror(rv));
  const config::Duration t = ctx_.config().proxy.send_timeout;
  if (!end_stream && t.count() > 0) watch_until(ctx_.now() + t.count());
  mark_dirty();
}

void DownstreamConn::resume(int32_t id) {
  if (!open()) return;
  nghttp2_session_resume_data(session_, id);
  mark_dirty();
}

void DownstreamConn::consume(int32_t id, size_t n) {
  if (!open() || n == 0) return;
  nghttp2_session_consume_stream(session_, id, n);
  mark_dirty();
}

void DownstreamConn::reset(int32_t id, uint32_t code) {
  // A stream nghttp2 no longer knows was closed by the client (its RST_STREAM) or completed:
  // nothing to reset. on_frame_send remembers the ones we do reset.
  if (!open() || nghttp2_session_find_stream(session_, id) == nullptr) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, code);
  mark_dirty();
}

void DownstreamConn::call_done(Call* c) {
  calls.remove(c);
  const config::Duration idle = ctx_.config().proxy.idle_timeout;
  if (calls.empty() && idle.count() > 0 && !draining_ && open()) {
    ctx_.timers().arm(idle_timer_, ctx_.now() + idle.count());
  }
}

Call* DownstreamConn::call_of(int32_t id) const {
  // Pooled calls outlive their streams: trust the pointer only if it still names this stream.
  auto* c = static_cast<Call*>(nghttp2_session_get_stream_user_data(session_, id));
  return c != nullptr && c->ds == this && c->ds_id == id ? c : nullptr;
}

void DownstreamConn::on_close(const char* why) {
  LOG_DEBUG("shard %u: downstream closed: %s", ctx_.index(), why);
  if (tls_ && !tls_->handshake_done()) tls_failed(why);
  ctx_.timers().cancel(idle_timer_);
  ctx_.timers().cancel(drain_timer_);
  ctx_.timers().cancel(stage_timer_);
  ctx_.timers().cancel(linger_timer_);
  calls.for_each([this](Call* c) {
    nghttp2_session_set_stream_user_data(session_, c->ds_id, nullptr);
    c->on_downstream_closed(NGHTTP2_CANCEL);
  });
  ctx_.downstream_closed(this);
}

void DownstreamConn::on_released() {
  ctx_.downstream_released();
  ctx_.retire(this);
}

int DownstreamConn::on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  DownstreamConn* c = conn_of(user);
  c->frames_.on_stream_opened();
  Call* call = c->ctx_.alloc_call();
  call->begin(c, f->hd.stream_id);
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, call);
  c->calls.push_back(call);
  c->ctx_.timers().cancel(c->idle_timer_);
  return 0;
}

int DownstreamConn::on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                              size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                              void* user) {
  DownstreamConn* c = conn_of(user);
  // An HPACK bomb: a small block that decodes to a huge list (references to a large table
  // entry). A list past the limit is answered RESOURCE_EXHAUSTED once its block ends; one that
  // goes on to kBombFactor times the limit, or a second one on the connection, is an attack:
  // GOAWAY, and nothing more is decoded. So a block never costs more than that much decoding.
  const size_t limit = c->ctx_.config().proxy.max_header_list_size;
  c->header_list_bytes_ += namelen + valuelen + 32;
  if (c->header_list_bytes_ > kBombFactor * limit) {
    c->abuse(AbuseReason::kHeaderList, "a header block that decodes far past max_header_list_size");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  Call* call = c->call_of(f->hd.stream_id);
  if (call == nullptr) return 0;
  const bool over_before = call->headers_too_large();
  if (!call->add_request_header({reinterpret_cast<const char*>(name), namelen},
                                {reinterpret_cast<const char*>(value), valuelen}, flags) &&
      !over_before && ++c->oversized_lists_ > 1) {
    c->abuse(AbuseReason::kHeaderList, "a second request header list past max_header_list_size");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int DownstreamConn::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  DownstreamConn* c = conn_of(user);
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      c->header_started_ns_ = 0;
      Call* call = c->call_of(f->hd.stream_id);
      if (call == nullptr) return 0;
      if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        c->requested_ = true;
        call->watch.body_progress_ns = c->ctx_.now();
        call->on_request_headers(end);
        if (!end && c->ctx_.config().proxy.body_timeout.count() > 0) {
          c->watch_until(c->ctx_.now() + c->ctx_.config().proxy.body_timeout.count());
        }
        if (c->drain_deferred_) c->start_drain();
      } else if (end)
        call->on_request_end();  // request trailers: end of the request
      break;
    }
    case NGHTTP2_DATA: {
      Call* call = c->call_of(f->hd.stream_id);
      if (call == nullptr) break;
      call->watch.body_progress_ns = c->ctx_.now();
      call->watch.body_partial = 0;
      if (end) call->on_request_end();
      break;
    }
    case NGHTTP2_SETTINGS:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) == 0) c->handshaken_ = true;
      break;
    case NGHTTP2_RST_STREAM:
      if (!c->count_reset()) return NGHTTP2_ERR_CALLBACK_FAILURE;
      break;
    case NGHTTP2_PING:
      if ((f->hd.flags & NGHTTP2_FLAG_ACK) && c->draining_) c->send_final_goaway();
      break;
    default:
      break;
  }
  return 0;
}

int DownstreamConn::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data,
                                  size_t len, void* user) {
  DownstreamConn* c = conn_of(user);
  c->credit_connection(len);
  Call* call = c->call_of(id);
  if (call == nullptr) {
    nghttp2_session_consume_stream(s, id, len);  // a stream no call tracks: keep it open
    return 0;
  }
  if ((call->watch.body_partial += static_cast<uint32_t>(len)) >= kBodyProgressBytes) {
    call->watch.body_progress_ns = c->ctx_.now();
    call->watch.body_partial = 0;
  }
  call->on_request_data(data, len);
  return 0;
}

int DownstreamConn::on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code,
                                    void* user) {
  DownstreamConn* c = conn_of(user);
  if (error_code == NGHTTP2_NO_ERROR) c->resets_.refund(c->ctx_.config().limits.reset_burst);
  Call* call = c->call_of(id);
  if (call != nullptr) {
    nghttp2_session_set_stream_user_data(s, id, nullptr);
    call->on_downstream_closed(error_code);
  }
  return 0;
}

ssize_t DownstreamConn::read_body(nghttp2_session*, int32_t id, uint8_t*, size_t len,
                                  uint32_t* flags, nghttp2_data_source*, void* user) {
  DownstreamConn* c = conn_of(user);
  Call* call = c->call_of(id);
  if (call == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // stale: reset it
  bool eof = false;
  size_t n = call->response_ready(len, &eof);
  // NO_COPY: nghttp2 calls send_body next, in this same mem_send, to move the bytes.
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (h2::HeaderBlock* t = call->pending_trailers()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(c->session_, id, t->nva(), t->count());
      t->clear();
    }
    return static_cast<ssize_t>(n);
  }
  return n == 0 ? static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED) : static_cast<ssize_t>(n);
}

int DownstreamConn::send_body(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                              size_t length, nghttp2_data_source*, void* user) {
  DownstreamConn* c = conn_of(user);
  Call* call = c->call_of(frame->hd.stream_id);
  // read_body sized this frame a moment ago, in the same mem_send: the call is still there.
  if (call == nullptr) return NGHTTP2_ERR_CALLBACK_FAILURE;
  c->append_data_frame(*frame, framehd,
                       [&](mem::ChunkQueue& out) { call->response_send(out, length); });
  c->frames_.on_data_sent();
  return 0;
}

}  // namespace ringlb::core::proxy

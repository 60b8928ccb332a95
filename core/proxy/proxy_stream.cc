#include "core/proxy/proxy_stream.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/proxy/downstream.h"
#include "core/base/log.h"
#include "core/proxy/context.h"
#include "core/proxy/upstream.h"

namespace ringlb::core::proxy {

using proto::StatusCode;

namespace {

constexpr int kMaxAttempts = 3;  // connect failures only: nothing reached a backend

// gRPC's mapping of RST_STREAM codes to status (PROTOCOL-HTTP2.md, "Errors").
StatusCode status_for_reset(uint32_t code) {
  switch (code) {
    case NGHTTP2_REFUSED_STREAM: return StatusCode::kUnavailable;
    case NGHTTP2_CANCEL: return StatusCode::kCancelled;
    case NGHTTP2_ENHANCE_YOUR_CALM: return StatusCode::kResourceExhausted;
    case NGHTTP2_INADEQUATE_SECURITY: return StatusCode::kPermissionDenied;
    default: return StatusCode::kInternal;
  }
}

// HTTP status for a failure answered to a plain (non-gRPC) HTTP/2 request.
const char* http_status_for(StatusCode code) {
  switch (code) {
    case StatusCode::kUnimplemented: return "404";
    case StatusCode::kDeadlineExceeded: return "504";
    case StatusCode::kResourceExhausted: return "431";
    case StatusCode::kUnavailable: return "503";
    default: return "502";
  }
}

template <typename Conn>
ProxyStream* validated(nghttp2_session* s, int32_t id, Conn* ProxyStream::*conn,
                       int32_t ProxyStream::*sid) {
  auto* st = static_cast<ProxyStream*>(nghttp2_session_get_stream_user_data(s, id));
  if (st == nullptr || st->*conn == nullptr || (st->*conn)->session() != s || st->*sid != id) {
    return nullptr;
  }
  return st;
}

// The NO_COPY half of a data source: the read callback sized this DATA frame a moment ago, in
// the same mem_send, so `conn` still owns session `s` and `body` holds `length` bytes.
int send_body_frame(h2::H2Connection* conn, nghttp2_session* s, const nghttp2_frame& frame,
                    const uint8_t* framehd, mem::ChunkQueue& body, size_t length) {
  if (conn == nullptr || conn->session() != s || length > body.size()) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;  // cannot happen, see above
  }
  conn->append_data_frame(frame, framehd, body, length);
  return 0;
}

}  // namespace

ProxyStream* ProxyStream::of_downstream(nghttp2_session* s, int32_t id) {
  return validated(s, id, &ProxyStream::ds, &ProxyStream::ds_id);
}

ProxyStream* ProxyStream::of_upstream(nghttp2_session* s, int32_t id) {
  return validated(s, id, &ProxyStream::us, &ProxyStream::us_id);
}

ProxyStream::ProxyStream(Context& ctx) : ctx_(ctx) {
  req_body_.set_pool(&ctx.chunks());
  resp_body_.set_pool(&ctx.chunks());
  deadline_.handler = this;
}

void ProxyStream::start(DownstreamConn* d, int32_t id) {
  ds = d;
  ds_id = id;
  us = nullptr;
  us_id = 0;
  cluster_ = nullptr;
  endpoint_ = nullptr;
  last_failed_endpoint_ = nullptr;
  attempts_ = 0;
  req_headers.clear();
  resp_headers_.clear();
  trailers_.clear();
  req_body_taken_ = 0;
  req_end_ = resp_started_ = resp_end_ = is_grpc_ = headers_too_large_ = false;
  ds_done_ = false;
  us_done_ = true;
}

bool ProxyStream::add_request_header(std::string_view name, std::string_view value,
                                     uint8_t flags) {
  if (headers_too_large_) return false;
  if (req_headers.list_size() + name.size() + value.size() + 32 >
      ctx_.config().proxy.max_header_list_size) {
    headers_too_large_ = true;
    return false;
  }
  req_headers.add(name, value, flags);
  return true;
}

void ProxyStream::on_request_headers(bool end_stream) {
  req_end_ = end_stream;
  is_grpc_ = proto::is_grpc_content_type(req_headers.find("content-type"));
  if (headers_too_large_) {
    fail(StatusCode::kResourceExhausted,
         "request header list exceeds proxy.max_header_list_size (" +
             std::to_string(ctx_.config().proxy.max_header_list_size) + " bytes)");
    return;
  }
  std::string_view path = req_headers.find(":path");
  const Router& router = ctx_.router(ds->listener_index());
  RouteMatch m = router.match(path);
  if (m.cluster < 0) {
    fail(StatusCode::kUnimplemented, "ringlb: no route for path \"" + std::string(path) +
                                         "\" on listener " + router.listener_name());
    return;
  }
  cluster_ = &ctx_.cluster(static_cast<size_t>(m.cluster));
  int64_t timeout = 0;
  if (auto t = proto::parse_grpc_timeout(req_headers.find("grpc-timeout"))) timeout = t->count();
  if (m.timeout_ns > 0 && (timeout == 0 || m.timeout_ns < timeout)) timeout = m.timeout_ns;
  if (timeout > 0) ctx_.timers().arm(deadline_, ctx_.now() + timeout);
  dispatch();
}

void ProxyStream::dispatch() {
  ++attempts_;
  ClusterState& cl = *cluster_;
  lb::PickContext pick{.outstanding = cl.outstanding};
  int i = cl.picker->pick(pick);
  if (i >= 0 && cl.endpoints[static_cast<size_t>(i)] == last_failed_endpoint_ &&
      cl.set->size() > 1) {
    i = cl.picker->pick(pick);  // one more draw, away from the failure
  }
  if (i < 0) {
    std::string msg = "ringlb: cluster \"" + cl.config->name + "\" has no endpoints";
    if (!cl.set->note.empty()) msg += " (" + cl.set->note + ")";
    fail(StatusCode::kUnavailable, msg);
    return;
  }
  EndpointState& ep = *cl.endpoints[static_cast<size_t>(i)];
  std::string error;
  UpstreamConn* c = cl.connection_for(ctx_, ep, error);
  if (c == nullptr) {
    fail(StatusCode::kUnavailable, "ringlb: cannot open a connection to " + ep.endpoint.name +
                                       " (cluster \"" + cl.config->name + "\"): " + error);
    return;
  }
  endpoint_ = &ep;
  cl.call_started(ep);
  us = c;
  us_done_ = false;
  if (!c->submit(this, req_end_ && req_body_.empty(), error)) {
    us = nullptr;
    us_done_ = true;
    endpoint_ = nullptr;
    cl.call_finished(ep);
    fail(StatusCode::kInternal, "ringlb: cannot submit the call upstream: " + error);
  }
}

void ProxyStream::on_request_data(const uint8_t* data, size_t len) {
  if (us_done_ && resp_end_) {
    // The call is already answered (an error, say); keep the client's window open, drop bytes.
    nghttp2_session_consume(ds->session(), ds_id, len);
    return;
  }
  req_body_.append(data, len);
  resume_upstream();
}

void ProxyStream::on_request_end() {
  req_end_ = true;
  resume_upstream();
}

void ProxyStream::resume_upstream() {
  if (us != nullptr && !us_done_) {
    nghttp2_session_resume_data(us->session(), us_id);
    us->mark_dirty();
  }
}

void ProxyStream::resume_downstream() {
  if (ds != nullptr && !ds_done_ && resp_started_) {
    nghttp2_session_resume_data(ds->session(), ds_id);
    ds->mark_dirty();
  }
}

ssize_t ProxyStream::read_request_body(nghttp2_session* s, int32_t id, uint8_t*, size_t len,
                                       uint32_t* flags, nghttp2_data_source* src, void*) {
  auto* st = static_cast<ProxyStream*>(src->ptr);
  if (st->us == nullptr || st->us->session() != s || st->us_id != id) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // a stale source: reset that stream
  }
  if (st->ds_done_) return NGHTTP2_ERR_DEFERRED;  // the client left; our RST_STREAM is queued
  // NO_COPY: nghttp2 calls send_request_data next, in this same mem_send, and the bytes move
  // straight from req_body_ into the connection's output there.
  size_t n = std::min(len, st->req_body_.size());
  if (n > 0) {
    st->req_body_taken_ += n;
    // Only now may the client send more: this is the end-to-end flow-control coupling.
    nghttp2_session_consume(st->ds->session(), st->ds_id, n);
    st->ds->mark_dirty();
  }
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (st->req_end_ && n == st->req_body_.size()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  return n == 0 ? static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED) : static_cast<ssize_t>(n);
}

int ProxyStream::send_request_data(nghttp2_session* s, nghttp2_frame* frame,
                                   const uint8_t* framehd, size_t length,
                                   nghttp2_data_source* src, void*) {
  auto* st = static_cast<ProxyStream*>(src->ptr);
  return send_body_frame(st->us, s, *frame, framehd, st->req_body_, length);
}

bool ProxyStream::add_response_header(std::string_view name, std::string_view value,
                                      uint8_t flags, bool trailer) {
  h2::HeaderBlock& h = trailer ? trailers_ : resp_headers_;
  if (h.list_size() + name.size() + value.size() + 32 >
      ctx_.config().proxy.max_header_list_size) {
    return false;
  }
  h.add(name, value, flags);
  return true;
}

void ProxyStream::on_response_headers(bool end_stream, bool trailer) {
  if (trailer) {
    resp_end_ = true;
    resume_downstream();
    return;
  }
  std::string_view status = resp_headers_.find(":status");
  if (!status.empty() && status[0] == '1') {  // informational: not forwarded
    resp_headers_.clear();
    return;
  }
  if (ds_done_ || resp_started_) return;
  resp_started_ = true;
  nghttp2_data_provider prd;
  prd.source.ptr = this;
  prd.read_callback = &ProxyStream::read_response_body;
  if (end_stream) resp_end_ = true;  // trailers-only response
  int rv = nghttp2_submit_response(ds->session(), ds_id, resp_headers_.nva(), resp_headers_.count(),
                                   end_stream ? nullptr : &prd);
  if (rv != 0) LOG_DEBUG("submit_response: %s", nghttp2_strerror(rv));
  resp_headers_.clear();
  ds->mark_dirty();
}

void ProxyStream::on_response_data(const uint8_t* data, size_t len) {
  if (ds_done_ || resp_end_) {
    nghttp2_session_consume(us->session(), us_id, len);
    return;
  }
  resp_body_.append(data, len);
  resume_downstream();
}

void ProxyStream::on_response_end() {
  resp_end_ = true;
  resume_downstream();
}

ssize_t ProxyStream::read_response_body(nghttp2_session* s, int32_t id, uint8_t*, size_t len,
                                        uint32_t* flags, nghttp2_data_source* src, void*) {
  auto* st = static_cast<ProxyStream*>(src->ptr);
  if (st->ds == nullptr || st->ds->session() != s || st->ds_id != id) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  size_t n = std::min(len, st->resp_body_.size());  // moved by send_response_data (NO_COPY)
  if (n > 0 && !st->us_done_) {
    nghttp2_session_consume(st->us->session(), st->us_id, n);
    st->us->mark_dirty();
  }
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (st->resp_end_ && n == st->resp_body_.size()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!st->trailers_.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(s, id, st->trailers_.nva(), st->trailers_.count());
      st->trailers_.clear();
    }
    return static_cast<ssize_t>(n);
  }
  return n == 0 ? static_cast<ssize_t>(NGHTTP2_ERR_DEFERRED) : static_cast<ssize_t>(n);
}

int ProxyStream::send_response_data(nghttp2_session* s, nghttp2_frame* frame,
                                    const uint8_t* framehd, size_t length,
                                    nghttp2_data_source* src, void*) {
  auto* st = static_cast<ProxyStream*>(src->ptr);
  return send_body_frame(st->ds, s, *frame, framehd, st->resp_body_, length);
}

void ProxyStream::detach_upstream() {
  if (us == nullptr) return;
  // Bytes still buffered for the client no longer belong to a live upstream stream; give the
  // connection-level window back now (they stay bounded by this stream's buffer).
  if (!resp_body_.empty() && us->open()) {
    nghttp2_session_consume_connection(us->session(), resp_body_.size());
    us->mark_dirty();
  }
  UpstreamConn* c = us;
  EndpointState* ep = endpoint_;
  us = nullptr;  // before stream_done: it may close the connection, which walks its streams
  c->stream_done(this);
  if (ep != nullptr) cluster_->call_finished(*ep);
  us_id = 0;
  us_done_ = true;
}

void ProxyStream::on_upstream_closed(uint32_t error_code, bool conn_gone, bool never_connected,
                                     std::string_view why) {
  const EndpointState* ep = endpoint_;
  if (ds_done_ || resp_end_) {  // the client has its full answer (or has gone)
    detach_upstream();
    endpoint_ = nullptr;
    maybe_release();
    return;
  }
  // Failure path. Detaching may free the endpoint (removed from the set, its last call), so
  // its name is copied first.
  std::string name = ep != nullptr ? ep->endpoint.name : std::string("?");
  detach_upstream();
  endpoint_ = nullptr;
  // Nothing reached the backend if it never connected, or if it refused the stream before any
  // body was taken: safe to send the call elsewhere.
  bool unprocessed = never_connected || (error_code == NGHTTP2_REFUSED_STREAM && !conn_gone);
  if (unprocessed && !resp_started_ && req_body_taken_ == 0 && attempts_ < kMaxAttempts) {
    last_failed_endpoint_ = ep;
    dispatch();
    return;
  }
  if (conn_gone) {
    fail(StatusCode::kUnavailable, "ringlb: upstream " + name + ": " + std::string(why));
  } else {
    char msg[160];
    snprintf(msg, sizeof msg, "ringlb: upstream %s reset the stream (HTTP/2 error %u)",
             name.c_str(), error_code);
    fail(status_for_reset(error_code), msg);
  }
}

void ProxyStream::fail(StatusCode code, std::string_view message) {
  ctx_.timers().cancel(deadline_);
  if (us != nullptr && !us_done_) {
    // The backend must see the cancellation; we wait for its close callback to let go.
    nghttp2_session_set_stream_user_data(us->session(), us_id, nullptr);
    nghttp2_submit_rst_stream(us->session(), NGHTTP2_FLAG_NONE, us_id, NGHTTP2_CANCEL);
    us->mark_dirty();
    detach_upstream();
  }
  if (ds_done_) {
    maybe_release();
    return;
  }
  if (!resp_started_) {
    respond_trailers_only(code, message);
  } else if (!resp_end_) {
    if (is_grpc_) {
      trailers_.clear();
      trailers_.add("grpc-status", proto::status_text(code));
      trailers_.add("grpc-message", proto::percent_encode(message));
      resp_end_ = true;
      resume_downstream();
    } else {
      resp_end_ = true;
      nghttp2_submit_rst_stream(ds->session(), NGHTTP2_FLAG_NONE, ds_id, NGHTTP2_INTERNAL_ERROR);
    }
  }
  ds->mark_dirty();
  maybe_release();
}

void ProxyStream::respond_trailers_only(StatusCode code, std::string_view message) {
  resp_started_ = true;
  resp_end_ = true;
  h2::HeaderBlock& h = trailers_;
  h.clear();
  h.add(":status", is_grpc_ ? "200" : http_status_for(code));
  h.add("content-type", "application/grpc");
  h.add("grpc-status", proto::status_text(code));
  h.add("grpc-message", proto::percent_encode(message));
  int rv = nghttp2_submit_response(ds->session(), ds_id, h.nva(), h.count(), nullptr);
  if (rv != 0) LOG_DEBUG("submit_response (error): %s", nghttp2_strerror(rv));
  h.clear();
}

void ProxyStream::on_timer(io::Timer&) {
  fail(StatusCode::kDeadlineExceeded, "ringlb: deadline exceeded before the backend answered");
}

void ProxyStream::on_downstream_closed(uint32_t error_code) {
  (void)error_code;
  if (!req_body_.empty() && ds->open()) {
    nghttp2_session_consume_connection(ds->session(), req_body_.size());
  }
  req_body_.clear();
  ds->stream_done(this);
  ds = nullptr;
  ds_id = 0;
  ds_done_ = true;
  ctx_.timers().cancel(deadline_);
  if (us != nullptr && !us_done_) {
    // Client cancelled (or finished while the backend still streams): cancel upstream.
    nghttp2_session_set_stream_user_data(us->session(), us_id, nullptr);
    nghttp2_submit_rst_stream(us->session(), NGHTTP2_FLAG_NONE, us_id, NGHTTP2_CANCEL);
    us->mark_dirty();
    detach_upstream();
  }
  maybe_release();
}

void ProxyStream::maybe_release() {
  if (!ds_done_ || !us_done_) return;
  ctx_.timers().cancel(deadline_);
  req_body_.clear();
  resp_body_.clear();
  ctx_.free_stream(this);
}

}  // namespace ringlb::core::proxy

#include "core/proxy/call.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string>

#include "core/base/log.h"
#include "core/proxy/cluster.h"
#include "core/proxy/context.h"
#include "core/proxy/downstream.h"
#include "core/proxy/upstream.h"

namespace ringlb::core::proxy {

using proto::StatusCode;

namespace {

// Transparent replays (nothing reached a backend) per call, on top of the first attempt. They
// also stop at the call's deadline; this bounds a call that has none.
constexpr uint8_t kMaxReplays = 8;

// gRPC's mapping of RST_STREAM codes to status (PROTOCOL-HTTP2.md, "Errors").
StatusCode status_for_reset(uint32_t code) {
  switch (code) {
    case NGHTTP2_REFUSED_STREAM:
      return StatusCode::kUnavailable;
    case NGHTTP2_CANCEL:
      return StatusCode::kCancelled;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return StatusCode::kResourceExhausted;
    case NGHTTP2_INADEQUATE_SECURITY:
      return StatusCode::kPermissionDenied;
    default:
      return StatusCode::kInternal;
  }
}

// HTTP status for a failure answered to a plain (non-gRPC) HTTP/2 request.
const char* http_status_for(StatusCode code) {
  switch (code) {
    case StatusCode::kUnimplemented:
      return "404";
    case StatusCode::kDeadlineExceeded:
      return "504";
    case StatusCode::kResourceExhausted:
    case StatusCode::kUnavailable:
      return "503";
    default:
      return "502";
  }
}

int parse_int(std::string_view s, int fallback) {
  int v = fallback;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size() ? v : fallback;
}

}  // namespace

Call::Call(Context& ctx) : ctx_(ctx) {
  req_body_.set_pool(&ctx.chunks());
  resp_body_.set_pool(&ctx.chunks());
  deadline_.handler = this;
  for (Attempt& a : attempts_) a.call = this;
}

void Call::begin(DownstreamConn* d, int32_t id) {
  ds = d;
  ds_id = id;
  phase_ = Phase::kHeaders;
  req_end_ = headers_too_large_ = false;
  cluster_ = nullptr;
  deadline_ns_ = 0;
  req_taken_ = 0;
  for (Attempt& a : attempts_) {
    a.state = Attempt::State::kFree;
    a.conn = nullptr;
    a.endpoint = nullptr;
  }
  tried_ids_ = {};
  req_headers_.clear();
  resp_headers_.clear();
  trailers_.clear();
  req_body_.reset(ctx_.config().proxy.retry_buffer);
  resp_body_.clear();
  // Keep the record's strings' capacity: pooled calls allocate nothing once warm.
  std::array<std::string, CallRecord::kMaxTried> tried = std::move(record_.tried);
  std::string message = std::move(record_.message);
  record_ = CallRecord{};
  for (std::string& s : tried) s.clear();
  message.clear();
  record_.tried = std::move(tried);
  record_.message = std::move(message);
  record_.listener = d->listener_index();
}

bool Call::add_request_header(std::string_view name, std::string_view value, uint8_t flags) {
  if (headers_too_large_) return false;
  if (req_headers_.list_size() + name.size() + value.size() + 32 >
      ctx_.config().proxy.max_header_list_size) {
    headers_too_large_ = true;
    return false;
  }
  if (name == "grpc-timeout") {
    // Held back: each attempt sends the time left, the smaller of the client's and the route's.
    if (auto t = proto::parse_grpc_timeout(value)) {
      deadline_ns_ = t->count();  // relative until on_request_headers
      return true;
    }
  }
  req_headers_.add(name, value, flags);
  return true;
}

void Call::on_request_headers(bool end_stream) {
  req_end_ = end_stream;
  record_.start_ns = ctx_.now();
  record_.grpc = proto::is_grpc_content_type(req_headers_.find("content-type"));
  phase_ = Phase::kWaiting;
  if (headers_too_large_) {
    fail(StatusCode::kResourceExhausted,
         "ringlb: request header list exceeds proxy.max_header_list_size (" +
             std::to_string(ctx_.config().proxy.max_header_list_size) + " bytes)");
    return;
  }
  if (ctx_.over_buffer_limit()) {
    fail(StatusCode::kResourceExhausted,
         "ringlb: this worker holds " + std::to_string(ctx_.buffered() >> 20) +
             " MiB of buffered data, its share of proxy.memory_limit; try again shortly");
    return;
  }
  const Router& router = ctx_.router(ds->listener_index());
  std::string_view path = req_headers_.find(":path");
  RouteMatch m = router.match(path);
  record_.route = m.route;
  record_.cluster = m.cluster;
  if (m.cluster < 0) {
    fail(StatusCode::kUnimplemented, "ringlb: no route for path \"" + std::string(path) +
                                         "\" on listener " + router.listener_name());
    return;
  }
  cluster_ = &ctx_.cluster(static_cast<size_t>(m.cluster));
  int64_t timeout = deadline_ns_;
  if (m.timeout_ns > 0 && (timeout == 0 || m.timeout_ns < timeout)) timeout = m.timeout_ns;
  deadline_ns_ = timeout > 0 ? ctx_.now() + timeout : 0;
  if (deadline_ns_ > 0) ctx_.timers().arm(deadline_, deadline_ns_);
  dispatch();
}

void Call::dispatch() {
  const size_t known = std::min<size_t>(record_.attempts, tried_ids_.size());
  EndpointState* ep = cluster_->pick({tried_ids_.data(), known});
  if (ep == nullptr) {
    std::string msg = "ringlb: cluster \"" + cluster_->config->name + "\" has no endpoints";
    if (!cluster_->set->note.empty()) msg += " (" + cluster_->set->note + ")";
    fail(StatusCode::kUnavailable, msg);
    return;
  }
  start_attempt(*free_attempt(), *ep);
}

Attempt* Call::free_attempt() {
  for (Attempt& a : attempts_) {
    if (!a.active()) return &a;
  }
  return nullptr;  // dispatch runs only when no attempt is active
}

void Call::start_attempt(Attempt& a, EndpointState& ep) {
  auto conn = cluster_->connection_for(ctx_, ep);
  if (!conn) {
    fail(StatusCode::kUnavailable, "ringlb: cannot open a connection to " + ep.endpoint.name +
                                       " (cluster \"" + cluster_->config->name +
                                       "\"): " + conn.error().message);
    return;
  }
  if (record_.attempts < CallRecord::kMaxTried) {
    tried_ids_[record_.attempts] = ep.id;
    record_.tried[record_.attempts].assign(ep.endpoint.name);
  }
  ++record_.attempts;
  a.state = Attempt::State::kStarted;
  a.endpoint = &ep;
  a.read_pos = 0;  // a new attempt only starts while the whole body is held
  a.peer_reset = a.header_overflow = false;
  cluster_->call_started(ep);
  // The backend learns the time left, the smaller of the client's and the route's deadline.
  const size_t mark = req_headers_.count();
  if (deadline_ns_ > 0) {
    char text[16];
    int64_t left = std::max<int64_t>(deadline_ns_ - ctx_.now(), 1'000'000);
    size_t n = proto::format_grpc_timeout(std::chrono::nanoseconds(left), text);
    req_headers_.add("grpc-timeout", std::string_view(text, n));
  }
  auto submitted = (*conn)->submit(a, req_headers_, req_end_ && req_body_.end() == 0);
  req_headers_.truncate(mark);
  if (!submitted) {
    a.state = Attempt::State::kFree;
    a.endpoint = nullptr;
    cluster_->call_finished(ep);
    fail(StatusCode::kInternal,
         "ringlb: cannot submit the call upstream: " + submitted.error().message);
  }
}

void Call::on_request_data(const uint8_t* data, size_t len) {
  record_.request_bytes += len;
  if (phase_ == Phase::kAnswered || !has_attempts()) {
    // Already answered (an error, say): keep the client's window open, drop the bytes.
    if (ds != nullptr) ds->consume(ds_id, len);
    return;
  }
  req_body_.append(data, len);
  resume_attempts();
}

void Call::on_request_end() {
  req_end_ = true;
  resume_attempts();
}

void Call::resume_attempts() {
  for (Attempt& a : attempts_) {
    if (a.active() && a.conn != nullptr) a.conn->resume(a);
  }
}

void Call::resume_downstream() {
  if (ds != nullptr && (phase_ == Phase::kResponding || phase_ == Phase::kAnswered)) {
    ds->resume(ds_id);
  }
}

bool Call::has_attempts() const {
  return std::any_of(attempts_.begin(), attempts_.end(),
                     [](const Attempt& a) { return a.active(); });
}

size_t Call::request_ready(const Attempt& a, size_t max, bool* eof) const {
  const size_t n = static_cast<size_t>(std::min<uint64_t>(max, req_body_.end() - a.read_pos));
  *eof = req_end_ && a.read_pos + n == req_body_.end();
  return n;
}

void Call::request_send(Attempt& a, mem::ChunkQueue& out, size_t n) {
  req_body_.copy_to(out, a.read_pos, n);
  a.read_pos += n;
  if (a.read_pos > req_taken_) {
    // Only now may the client send more: the end-to-end flow-control coupling.
    if (ds != nullptr) ds->consume(ds_id, static_cast<size_t>(a.read_pos - req_taken_));
    req_taken_ = a.read_pos;
  }
  req_body_.release_before(active_readers_min_pos());
}

uint64_t Call::active_readers_min_pos() const {
  uint64_t pos = req_body_.end();
  for (const Attempt& a : attempts_) {
    if (a.active()) pos = std::min(pos, a.read_pos);
  }
  return pos;
}

void Call::on_attempt_sent(Attempt& a) {
  if (a.state == Attempt::State::kStarted) a.state = Attempt::State::kSent;
}

bool Call::add_response_header(Attempt& a, std::string_view name, std::string_view value,
                               uint8_t flags, bool trailer) {
  h2::HeaderBlock& h = trailer ? trailers_ : resp_headers_;
  if (h.list_size() + name.size() + value.size() + 32 > ctx_.config().proxy.max_header_list_size) {
    a.header_overflow = true;
    return false;
  }
  h.add(name, value, flags);
  return true;
}

void Call::on_response_headers(Attempt& a, bool end_stream, bool trailer) {
  if (trailer) {
    if (a.state != Attempt::State::kCommitted) return;
    record_.grpc_status = parse_int(trailers_.find("grpc-status"), -1);
    phase_ = Phase::kAnswered;
    resume_downstream();
    return;
  }
  std::string_view status = resp_headers_.find(":status");
  if (!status.empty() && status[0] == '1') {  // informational: not forwarded
    resp_headers_.clear();
    return;
  }
  if (phase_ != Phase::kWaiting || ds == nullptr) {
    resp_headers_.clear();
    return;
  }
  commit(a);
  record_.http_status = static_cast<uint16_t>(parse_int(status, 0));
  record_.first_byte_ns = ctx_.now();
  if (end_stream) {  // trailers-only
    record_.grpc_status = parse_int(resp_headers_.find("grpc-status"), -1);
    phase_ = Phase::kAnswered;
  } else {
    phase_ = Phase::kResponding;
  }
  ds->submit_response(ds_id, resp_headers_, end_stream);
  resp_headers_.clear();
}

void Call::commit(Attempt& a) {
  a.state = Attempt::State::kCommitted;
  req_body_.commit(active_readers_min_pos());
  reset_attempts(&a);
  req_body_.release_before(a.read_pos);
}

void Call::on_response_data(Attempt& a, const uint8_t* data, size_t len) {
  if (ds == nullptr || a.state != Attempt::State::kCommitted || phase_ == Phase::kAnswered) {
    if (a.conn != nullptr) a.conn->consume(a, len);
    return;
  }
  resp_body_.append(data, len);
  resume_downstream();
}

void Call::on_response_end(Attempt& a) {
  if (a.state != Attempt::State::kCommitted) return;
  phase_ = Phase::kAnswered;
  resume_downstream();
}

size_t Call::response_ready(size_t max, bool* eof) const {
  const size_t n = std::min(max, resp_body_.size());
  *eof = phase_ == Phase::kAnswered && n == resp_body_.size();
  return n;
}

void Call::response_send(mem::ChunkQueue& out, size_t n) {
  n = std::min(n, resp_body_.size());
  resp_body_.move_to(out, n);
  record_.response_bytes += n;
  for (Attempt& a : attempts_) {
    // The backend may send as much again: the end-to-end coupling, response side.
    if (a.state == Attempt::State::kCommitted && a.conn != nullptr) a.conn->consume(a, n);
  }
}

bool Call::replayable(const Attempt& a, AttemptEnd how, uint32_t code) const {
  if (req_body_.truncated()) return false;
  switch (how) {
    case AttemptEnd::kConnectFailed:
      return true;
    // Lost before its HEADERS went out, or refused (RST_STREAM or above a GOAWAY's last stream
    // id, which nghttp2 reports as REFUSED_STREAM): the backend never processed it.
    case AttemptEnd::kConnectionLost:
      return a.state == Attempt::State::kStarted;
    case AttemptEnd::kStream:
      return a.state == Attempt::State::kStarted || code == NGHTTP2_REFUSED_STREAM;
  }
  return false;
}

void Call::on_attempt_closed(Attempt& a, AttemptEnd how, uint32_t code, std::string_view why) {
  const bool committed = a.state == Attempt::State::kCommitted;
  const bool again = !committed && replayable(a, how, code);
  if (committed && (phase_ == Phase::kAnswered || ds == nullptr)) {
    end_attempt(a);  // the normal end of a call
    maybe_release();
    return;
  }
  if (ds == nullptr || (!committed && phase_ != Phase::kWaiting)) {
    end_attempt(a);
    maybe_release();
    return;
  }
  const bool in_time = deadline_ns_ == 0 || ctx_.now() < deadline_ns_;
  if (again && in_time && record_.replays < kMaxReplays && !has_other_attempt(a)) {
    end_attempt(a);
    ++record_.replays;
    dispatch();
    return;
  }
  fail_from(a, how, code, why);
}

bool Call::has_other_attempt(const Attempt& a) const {
  return std::any_of(attempts_.begin(), attempts_.end(),
                     [&](const Attempt& o) { return &o != &a && o.active(); });
}

void Call::fail_from(Attempt& a, AttemptEnd how, uint32_t code, std::string_view why) {
  // Ending the attempt may free its endpoint (removed from the set, its last call): the name
  // is copied first.
  std::string name = a.endpoint != nullptr ? a.endpoint->endpoint.name : std::string("?");
  const bool peer_reset = a.peer_reset;
  const bool overflow = a.header_overflow;
  const bool truncated = req_body_.truncated();
  end_attempt(a);
  std::string msg;
  StatusCode status;
  if (how != AttemptEnd::kStream) {
    status = StatusCode::kUnavailable;
    msg = "ringlb: upstream " + name + ": " + std::string(why);
  } else if (overflow) {
    status = StatusCode::kResourceExhausted;
    msg = "ringlb: upstream " + name + "'s response header list exceeds " +
          "proxy.max_header_list_size; ringlb reset the stream";
  } else if (peer_reset) {
    char b[96];
    snprintf(b, sizeof b, " reset the stream (HTTP/2 error %u)", code);
    status = status_for_reset(code);
    msg = "ringlb: upstream " + name + b;
  } else {
    char b[128];
    snprintf(b, sizeof b, ": ringlb reset the stream (HTTP/2 error %u: the response broke HTTP/2)",
             code);
    status = StatusCode::kInternal;
    msg = "ringlb: upstream " + name + b;
  }
  if (record_.replays > 0) msg += " (after " + std::to_string(record_.attempts) + " attempts)";
  if (truncated && status == StatusCode::kUnavailable)
    msg += "; not replayed: body past proxy.retry_buffer";
  record_.truncated = truncated;
  fail(status, msg);
}

void Call::end_attempt(Attempt& a) {
  if (a.conn != nullptr) a.conn->attempt_done(a);
  EndpointState* ep = a.endpoint;
  a.state = Attempt::State::kFree;
  a.endpoint = nullptr;
  if (ep != nullptr) cluster_->call_finished(*ep);  // may free ep (retired, its last call)
}

void Call::reset_attempt(Attempt& a) {
  if (a.conn != nullptr) a.conn->reset(a, NGHTTP2_CANCEL);  // the backend sees the cancel
  end_attempt(a);
}

void Call::reset_attempts(const Attempt* keep) {
  for (Attempt& a : attempts_) {
    if (&a != keep && a.active()) reset_attempt(a);
  }
}

void Call::fail(StatusCode code, std::string_view message) {
  ctx_.timers().cancel(deadline_);
  reset_attempts(nullptr);
  record_.truncated = record_.truncated || req_body_.truncated();
  if (ds == nullptr) {
    maybe_release();
    return;
  }
  record_.local = true;
  record_.message.assign(message);
  if (phase_ == Phase::kHeaders || phase_ == Phase::kWaiting) {
    respond_locally(code, message);
  } else if (phase_ == Phase::kResponding) {
    phase_ = Phase::kAnswered;
    if (record_.grpc) {
      trailers_.clear();
      trailers_.add("grpc-status", proto::status_text(code));
      trailers_.add("grpc-message", proto::percent_encode(message));
      record_.grpc_status = static_cast<int>(code);
      resume_downstream();
    } else {
      ds->reset(ds_id, NGHTTP2_INTERNAL_ERROR);  // mid-body: nothing else tells a plain client
    }
  }
  maybe_release();
}

void Call::respond_locally(StatusCode code, std::string_view message) {
  phase_ = Phase::kAnswered;
  trailers_.clear();
  resp_body_.clear();
  h2::HeaderBlock& h = resp_headers_;
  h.clear();
  if (record_.grpc) {
    h.add(":status", "200");
    h.add("content-type", "application/grpc");
    h.add("grpc-status", proto::status_text(code));
    h.add("grpc-message", proto::percent_encode(message));
    record_.http_status = 200;
    record_.grpc_status = static_cast<int>(code);
    ds->submit_response(ds_id, h, true);
  } else {
    // A plain HTTP/2 client gets an HTTP status and the reason as text.
    const char* status = headers_too_large_ ? "431" : http_status_for(code);
    h.add(":status", status);
    h.add("content-type", "text/plain; charset=utf-8");
    record_.http_status = static_cast<uint16_t>(parse_int(status, 502));
    resp_body_.append(reinterpret_cast<const uint8_t*>(message.data()), message.size());
    resp_body_.append(reinterpret_cast<const uint8_t*>("\n"), 1);
    ds->submit_response(ds_id, h, false);
  }
  h.clear();
}

void Call::shed() {
  static constexpr std::string_view kWhy =
      "ringlb: this worker is over its share of proxy.memory_limit and this call held the most "
      "buffered data";
  resp_body_.clear();
  if (ds != nullptr && (phase_ == Phase::kHeaders || phase_ == Phase::kWaiting)) {
    fail(StatusCode::kResourceExhausted, kWhy);
  } else {
    ctx_.timers().cancel(deadline_);
    reset_attempts(nullptr);
    if (ds != nullptr && phase_ != Phase::kAnswered) {
      record_.local = true;
      record_.message.assign(kWhy);
      record_.grpc_status = static_cast<int>(StatusCode::kResourceExhausted);
    }
    trailers_.clear();
    phase_ = Phase::kAnswered;
    if (ds != nullptr) ds->reset(ds_id, NGHTTP2_ENHANCE_YOUR_CALM);
  }
  if (!has_attempts()) req_body_.reset(0);  // no attempt reads it any more
  maybe_release();
}

void Call::on_timer(io::Timer&) {
  fail(StatusCode::kDeadlineExceeded,
       phase_ == Phase::kResponding ? "ringlb: deadline exceeded while the backend was answering"
                                    : "ringlb: deadline exceeded before the backend answered");
}

void Call::on_downstream_closed(uint32_t error_code) {
  record_.end_ns = ctx_.now();
  record_.reset_code = error_code;
  ds->call_done(this);
  ds = nullptr;
  ds_id = 0;
  ctx_.timers().cancel(deadline_);
  // The client has its whole answer, or has gone: a backend still sending is cancelled.
  reset_attempts(nullptr);
  maybe_release();
}

void Call::maybe_release() {
  if (ds != nullptr || has_attempts() || phase_ == Phase::kIdle) return;
  ctx_.timers().cancel(deadline_);
  phase_ = Phase::kIdle;
  record_.path = req_headers_.find(":path");  // the headers stay untouched until the next begin
  ctx_.end_call(this);
  req_body_.reset(0);
  resp_body_.clear();
}

}  // namespace ringlb::core::proxy

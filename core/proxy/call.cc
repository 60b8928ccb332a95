#include "core/proxy/call.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string>

#include "core/base/log.h"
#include "core/proxy/cluster.h"
#include "core/proxy/context.h"
#include "core/proxy/downstream.h"
#include "core/proxy/retry_policy.h"
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

// What a backend's grpc-status says about the backend, for outlier ejection.
lb::Outcome outcome_of(int grpc_status) {
  if (grpc_status == 0) return lb::Outcome::kSuccess;
  if (grpc_status == static_cast<int>(StatusCode::kUnavailable)) return lb::Outcome::kUnavailable;
  return lb::Outcome::kOtherStatus;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
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
  retry_timer_.handler = this;
  hedge_timer_.handler = this;
  for (Attempt& a : attempts_) {
    a.call = this;
    a.per_try.handler = this;
  }
}

void Call::begin(DownstreamConn* d, int32_t id) {
  ds = d;
  ds_id = id;
  phase_ = Phase::kHeaders;
  req_end_ = headers_too_large_ = bad_timeout_ = false;
  retry_pending_ = hedging_ = false;
  watch = {};
  policy_attempts_ = 0;
  cluster_ = nullptr;
  retry_ = nullptr;
  hedge_ = nullptr;
  client_timeout_ns_ = -1;
  deadline_ns_ = 0;
  req_taken_ = 0;
  for (Attempt& a : attempts_) {
    a.state = Attempt::State::kFree;
    a.conn = nullptr;
    a.endpoint = nullptr;
    a.held = false;
    a.headers.clear();
    a.trailers.clear();
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
  grpc_message_.clear();
  ds_reset_ = false;
  const std::string_view peer = d->peer();
  const size_t n = std::min(peer.size(), sizeof peer_);
  std::copy_n(peer.data(), n, peer_);
  record_.peer = std::string_view(peer_, n);
  peer_identity_.clear();
  if (const h2::TlsTransport* tls = d->tls()) {
    record_.tls = tls->version();
    peer_identity_ = tls->peer_identity();
    record_.peer_identity = peer_identity_;
  }
}

bool Call::add_request_header(std::string_view name, std::string_view value, uint8_t flags) {
  if (headers_too_large_) return false;
  if (req_headers_.list_size() + name.size() + value.size() + 32 >
      ctx_.config().proxy.max_header_list_size) {
    headers_too_large_ = true;
    return false;
  }
  if (name == "grpc-timeout") {
    // Held back: each attempt sends the time left, the smaller of the client's and the route's,
    // re-encoded. A malformed value is never forwarded (a gRPC C++ backend that read one closed
    // the connection it shared with other clients' calls): it stays in req_headers_ only to be
    // named in the local answer. Of several values the smallest wins: none may lengthen another.
    if (auto t = proto::parse_grpc_timeout(value)) {
      if (client_timeout_ns_ < 0 || t->count() < client_timeout_ns_) {
        client_timeout_ns_ = t->count();
      }
      return true;
    }
    bad_timeout_ = true;
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
    record_.flags |= kFlagOverflow;
    fail(StatusCode::kResourceExhausted,
         "ringlb: request header list exceeds proxy.max_header_list_size (" +
             std::to_string(ctx_.config().proxy.max_header_list_size) + " bytes)");
    return;
  }
  if (bad_timeout_) {
    record_.flags |= kFlagInvalidRequest;
    fail(StatusCode::kInternal,  // what grpc-go and grpc-core servers answer for one
         "ringlb: malformed grpc-timeout " + proto::quote_value(req_headers_.find("grpc-timeout")) +
             " (1 to 8 digits, then one unit of H M S m u n); the call was not forwarded");
    return;
  }
  if (client_timeout_ns_ == 0) {  // valid, and already past: no backend could meet it
    record_.flags |= kFlagDeadline;
    fail(StatusCode::kDeadlineExceeded, "ringlb: the call arrived with grpc-timeout 0");
    return;
  }
  // Over the limit: the calls holding the most (slow readers) are shed first, so a new call is
  // refused only when what is held cannot be shed.
  if (ctx_.over_buffer_limit()) ctx_.relieve();
  if (ctx_.over_buffer_limit()) {
    record_.flags |= kFlagOverflow;
    fail(StatusCode::kResourceExhausted,
         "ringlb: this worker holds " + std::to_string(ctx_.held() >> 20) +
             " MiB for its peers (buffers, streams, calls), its share of proxy.memory_limit; "
             "try again shortly");
    return;
  }
  const Router& router = ctx_.router(ds->listener_index());
  std::string_view path = req_headers_.find(":path");
  RouteMatch m = router.match(path);
  record_.route = m.route;
  record_.cluster = m.cluster;
  if (m.cluster < 0) {
    record_.flags |= kFlagNoRoute;
    fail(StatusCode::kUnimplemented, "ringlb: no route for path \"" + std::string(path) +
                                         "\" on listener " + router.listener_name());
    return;
  }
  cluster_ = &ctx_.cluster(static_cast<size_t>(m.cluster));
  ++cluster_->counters.calls;
  retry_ = m.retry;
  hedge_ = m.hedge;
  // Both are at most kMaxGrpcTimeout / the config's 7 days: now + timeout cannot overflow.
  int64_t timeout = client_timeout_ns_ > 0 ? client_timeout_ns_ : 0;
  if (m.timeout_ns > 0 && (timeout == 0 || m.timeout_ns < timeout)) timeout = m.timeout_ns;
  deadline_ns_ = timeout > 0 ? ctx_.now() + timeout : 0;
  if (deadline_ns_ > 0) ctx_.timers().arm(deadline_, deadline_ns_);
  hedging_ = hedge_->enabled && record_.grpc &&
             (hedge_->methods.empty() || std::find(hedge_->methods.begin(), hedge_->methods.end(),
                                                   path) != hedge_->methods.end());
  cluster_->retry_budget.on_call(*retry_, ctx_.now());
  dispatch();
  if (hedging_ && phase_ == Phase::kWaiting) arm_hedge();
}

void Call::dispatch() {
  const size_t known = std::min<size_t>(record_.attempts, tried_ids_.size());
  EndpointState* ep = cluster_->pick({tried_ids_.data(), known});
  if (ep == nullptr) {
    record_.flags |= kFlagNoEndpoint;
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
    record_.flags |= kFlagConnectFailure;
    fail(StatusCode::kUnavailable, "ringlb: cannot open a connection to " + ep.endpoint.name +
                                       " (cluster \"" + cluster_->config->name +
                                       "\"): " + conn.error().message);
    return;
  }
  if (record_.attempts < CallRecord::kMaxTried) {
    tried_ids_[record_.attempts] = ep.id;
    record_.tried[record_.attempts].assign(ep.endpoint.name);
  }
  // Attempts before this one that may have reached a backend (transparent replays do not count).
  a.previous = record_.attempts - record_.replays;
  ++record_.attempts;
  a.state = Attempt::State::kStarted;
  a.endpoint = &ep;
  a.read_pos = 0;  // a new attempt only starts while the whole body is held
  a.started_ns = ctx_.now();
  a.sent_ns = 0;
  a.peer_reset = a.refused_by_goaway = a.header_overflow = a.held = false;
  a.headers.clear();
  a.trailers.clear();
  cluster_->call_started(ep);
  // Per-try timeouts end in a retry: gRPC calls only (plain HTTP/2 has the deadline alone). A
  // wait for the backend's SETTINGS (UpstreamConn::park) counts.
  if (int64_t t = record_.grpc ? per_try_ns(*retry_, ctx_.now(), deadline_ns_) : 0; t > 0) {
    ctx_.timers().arm(a.per_try, ctx_.now() + t);
  }
  send_attempt(a, **conn);
}

void Call::send_attempt(Attempt& a, UpstreamConn& conn) {
  // The request header list is checked against the backend's SETTINGS_MAX_HEADER_LIST_SIZE: a
  // list past it, sent, may make the backend close the connection and fail every other call on
  // it. Until its SETTINGS arrive the limit is unknown, and nothing would go out anyway (the
  // connection is not ready): the attempt waits for them (on_upstream_settings).
  const std::optional<uint32_t> limit = conn.peer_max_header_list();
  if (!limit) {
    conn.park(a);
    return;
  }
  if (!conn.submitting()) {
    conn.defer(a);  // submitted at the connection's flush, this turn, unless cancelled first
    return;
  }
  // The backend learns the time left, the smaller of the client's and the route's deadline.
  const size_t mark = req_headers_.count();
  if (deadline_ns_ > 0) {
    char text[16];
    int64_t left = std::max<int64_t>(deadline_ns_ - ctx_.now(), 1'000'000);
    size_t n = proto::format_grpc_timeout(std::chrono::nanoseconds(left), text);
    req_headers_.add("grpc-timeout", std::string_view(text, n));
  }
  if (a.previous > 0) {
    char text[12];
    int n = snprintf(text, sizeof text, "%u", a.previous);
    req_headers_.add("grpc-previous-rpc-attempts", std::string_view(text, static_cast<size_t>(n)));
  }
  if (const size_t size = req_headers_.list_size(); size > *limit) {
    req_headers_.truncate(mark);
    record_.flags |= kFlagOverflow;
    refuse_attempt(a, size, *limit);
    return;
  }
  auto submitted = conn.submit(a, req_headers_, req_end_ && req_body_.end() == 0);
  req_headers_.truncate(mark);
  if (!submitted) {
    end_attempt(a);
    fail(StatusCode::kInternal,
         "ringlb: cannot submit the call upstream: " + submitted.error().message);
  }
}

void Call::on_upstream_settings(Attempt& a) {
  if (a.conn == nullptr || a.state != Attempt::State::kStarted) return;
  send_attempt(a, *a.conn);
}

void Call::refuse_attempt(Attempt& a, size_t list_size, uint32_t limit) {
  // Copied first: ending the attempt may free its endpoint.
  std::string msg = "ringlb: the request header list is " + std::to_string(list_size) +
                    " bytes, more than the " + std::to_string(limit) + " that upstream " +
                    a.endpoint->endpoint.name +
                    " accepts (its SETTINGS_MAX_HEADER_LIST_SIZE; names + values + 32 per "
                    "field); the call was not sent";
  a.status = static_cast<int>(StatusCode::kResourceExhausted);
  end_attempt(a);
  // Not retried: the same list would be refused again. A hedge already under way elsewhere
  // may still answer (the header lists differ only in grpc-previous-rpc-attempts).
  if (!has_attempts()) fail(StatusCode::kResourceExhausted, msg);
}

void Call::on_request_data(const uint8_t* data, size_t len) {
  record_.request_bytes += len;
  if (phase_ == Phase::kAnswered || (!has_attempts() && !retry_pending_)) {
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
  if (a.sent_ns == 0) a.sent_ns = ctx_.now();
}

bool Call::add_response_header(Attempt& a, std::string_view name, std::string_view value,
                               uint8_t flags, bool trailer) {
  h2::HeaderBlock& h = trailer ? a.trailers : a.headers;
  if (h.list_size() + name.size() + value.size() + 32 > ctx_.config().proxy.max_header_list_size) {
    a.header_overflow = true;
    record_.flags |= kFlagOverflow;
    return false;
  }
  h.add(name, value, flags);
  return true;
}

void Call::on_response_headers(Attempt& a, bool end_stream, bool trailer) {
  if (trailer) {
    if (a.state == Attempt::State::kCommitted) {
      trailers_.clear();
      std::swap(trailers_, a.trailers);
      if (record_.grpc && trailers_.find("grpc-status").empty()) {
        // The client must learn how the call ended: gRPC reads a missing status as UNKNOWN.
        trailers_.add("grpc-status", proto::status_text(StatusCode::kUnknown));
        trailers_.add("grpc-message",
                      proto::percent_encode("ringlb: upstream " + a.endpoint->endpoint.name +
                                            " ended the response without grpc-status"));
      }
      record_.grpc_status = parse_int(trailers_.find("grpc-status"), -1);
      note_grpc_message(trailers_.find("grpc-message"));
      a.status = record_.grpc_status;
      if (record_.grpc) note_outcome(a, outcome_of(record_.grpc_status));
      phase_ = Phase::kAnswered;
      resume_downstream();
    } else if (a.held && phase_ == Phase::kWaiting && ds != nullptr) {
      on_final_status(a, a.trailers, false);
    }
    return;
  }
  std::string_view status = a.headers.find(":status");
  if (!status.empty() && status[0] == '1') {  // informational: not forwarded
    a.headers.clear();
    return;
  }
  if (phase_ != Phase::kWaiting || ds == nullptr) {
    a.headers.clear();
    return;
  }
  // The per-try timer stops when the call commits to this attempt or the attempt ends, not
  // here: held headers are no answer yet (many servers send theirs before they work).
  if (!record_.grpc) {
    forward_headers(a, end_stream);
    return;
  }
  if (status != "200" || end_stream) {
    on_final_status(a, a.headers, true);
  } else if (retry_->attempts > 1 || hedging_) {
    a.held = true;  // until its first DATA or its trailers: an error may still be retried
  } else {
    forward_headers(a, false);
  }
}

void Call::on_final_status(Attempt& a, h2::HeaderBlock& block, bool trailers_only) {
  const int http = parse_int(a.headers.find(":status"), 0);
  int code = parse_int(block.find("grpc-status"), -1);
  std::string why;
  if (http != 200 || code < 0) {
    // gRPC's HTTP mapping: a non-200 answer, or a 200 without grpc-status, is the proxy's to
    // explain (the HTTP status and content-type say what came instead).
    code = static_cast<int>(http != 200 ? proto::status_for_http(http) : StatusCode::kUnknown);
    note_outcome(a, http == 200 ? lb::Outcome::kLocalFailure : outcome_of(code));
    why = proto::missing_status_message(a.endpoint->endpoint.name, http,
                                        a.headers.find("content-type"));
  } else {
    note_outcome(a, outcome_of(code));
  }
  a.status = code;
  const int64_t pushback = parse_pushback_ms(block.find("grpc-retry-pushback-ms"),
                                             !block.find("grpc-retry-pushback-ms").empty());
  if (retry_->retries(code)) {
    if (has_other_attempt(a)) {  // a hedge is still running: it may yet answer
      let_go(a);
      return;
    }
    int64_t delay = 0;
    if (may_retry(pushback, &delay)) {
      let_go(a);
      schedule_retry(delay, RetryReason::kStatus);
      return;
    }
    if (retry_->attempts > 1) record_.flags |= kFlagRetryLimit;  // a policy that retries
  }
  if (!why.empty()) {
    reset_attempt(a);
    fail(static_cast<StatusCode>(code), why);
    return;
  }
  if (trailers_only) {
    forward_headers(a, true);
    return;
  }
  forward_headers(a, false);  // headers held, then trailers with no message between
  trailers_.clear();
  std::swap(trailers_, a.trailers);
  record_.grpc_status = code;
  note_grpc_message(trailers_.find("grpc-message"));
  phase_ = Phase::kAnswered;
  resume_downstream();
}

void Call::forward_headers(Attempt& a, bool end_stream) {
  commit(a);
  h2::HeaderBlock& h = a.headers;
  record_.http_status = static_cast<uint16_t>(parse_int(h.find(":status"), 0));
  record_.first_byte_ns = ctx_.now();
  if (!record_.grpc) {
    a.status = -1;  // plain HTTP/2: no grpc-status (unless trailers bring one)
    const int http = record_.http_status;
    note_outcome(a, http >= 502 && http <= 504 ? lb::Outcome::kUnavailable
                    : http >= 500              ? lb::Outcome::kOtherStatus
                                               : lb::Outcome::kSuccess);
  } else if (end_stream) {
    note_outcome(a, outcome_of(parse_int(h.find("grpc-status"), -1)));
  }
  if (end_stream) {  // trailers-only
    record_.grpc_status = parse_int(h.find("grpc-status"), -1);
    note_grpc_message(h.find("grpc-message"));
    phase_ = Phase::kAnswered;
  } else {
    phase_ = Phase::kResponding;
  }
  ds->submit_response(ds_id, h, end_stream);
  h.clear();
}

void Call::commit(Attempt& a) {
  a.state = Attempt::State::kCommitted;
  a.held = false;
  ctx_.timers().cancel(a.per_try);
  ctx_.timers().cancel(hedge_timer_);
  req_body_.commit(active_readers_min_pos());
  reset_attempts(&a);
  req_body_.release_before(a.read_pos);
}

void Call::on_response_data(Attempt& a, const uint8_t* data, size_t len) {
  if (a.held && ds != nullptr && phase_ == Phase::kWaiting) forward_headers(a, false);
  if (ds == nullptr || a.state != Attempt::State::kCommitted || phase_ == Phase::kAnswered) {
    if (a.conn != nullptr) a.conn->consume(a, len);
    return;
  }
  resp_body_.append(data, len);
  resume_downstream();
}

void Call::on_response_end(Attempt& a) {
  if (a.held && ds != nullptr && phase_ == Phase::kWaiting) {
    // Held headers, then END_STREAM on an empty DATA frame: no message and no trailers, so no
    // grpc-status. Judged as trailers without one would be (UNKNOWN, retried if the policy
    // says so), not left to the stream's close, which would read as a broken response.
    on_final_status(a, a.trailers, false);
    return;
  }
  if (a.state != Attempt::State::kCommitted) return;
  if (record_.grpc && phase_ == Phase::kResponding) {
    note_outcome(a, lb::Outcome::kLocalFailure);
    // END_STREAM on DATA: the backend sent no trailers, so no grpc-status.
    trailers_.clear();
    trailers_.add("grpc-status", proto::status_text(StatusCode::kUnknown));
    grpc_message_ =
        "ringlb: upstream " + a.endpoint->endpoint.name + " ended the response without grpc-status";
    trailers_.add("grpc-message", proto::percent_encode(grpc_message_));
    record_.grpc_status = static_cast<int>(StatusCode::kUnknown);
    a.status = record_.grpc_status;
  }
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
  if (how == AttemptEnd::kConnectFailed) record_.flags |= kFlagConnectFailure;
  if (how == AttemptEnd::kConnectionLost) record_.flags |= kFlagConnectionLost;
  if (how == AttemptEnd::kStream && a.peer_reset) record_.flags |= kFlagUpstreamReset;
  const bool in_time = deadline_ns_ == 0 || ctx_.now() < deadline_ns_;
  if (again && in_time && record_.replays < kMaxReplays && !has_other_attempt(a)) {
    a.status = static_cast<int>(StatusCode::kUnavailable);  // it never reached the backend
    end_attempt(a);
    ++record_.replays;
    dispatch();
    return;
  }
  // Reset by the backend or broken HTTP/2 on a live connection says the endpoint is unwell;
  // connection-level ends are counted once per connection (Context::on_upstream_event).
  if (how == AttemptEnd::kStream && !a.header_overflow && !a.refused_by_goaway) {
    note_outcome(a, lb::Outcome::kLocalFailure);
  }
  if (committed) {  // mid-response: the client gets what was sent, then the error
    fail_from(a, how, code, why);
    return;
  }
  StatusCode status;
  std::string msg = failure_message(a, how, code, why, &status);
  a.status = static_cast<int>(status);
  // A call that never reached a backend but ran out of replays (or time) is not retried on
  // top: the policy is for backends that answered badly or went away mid-call. The policy is
  // gRPC's: a plain HTTP/2 request (a POST, say) that may have been processed is not re-sent.
  const bool retryable =
      record_.grpc && !again && !a.header_overflow && retry_->retries(static_cast<int>(status));
  // Never reached a backend, but out of replays or time: forwarded for want of tries.
  if (again && !has_other_attempt(a)) record_.flags |= kFlagRetryLimit;
  end_attempt(a);
  retry_or_fail(retryable,
                how == AttemptEnd::kStream ? RetryReason::kStatus : RetryReason::kConnectionLost,
                status, msg);
}

bool Call::has_other_attempt(const Attempt& a) const {
  return std::any_of(attempts_.begin(), attempts_.end(),
                     [&](const Attempt& o) { return &o != &a && o.active(); });
}

std::string Call::failure_message(const Attempt& a, AttemptEnd how, uint32_t code,
                                  std::string_view why, StatusCode* status) const {
  const std::string name = a.endpoint != nullptr ? a.endpoint->endpoint.name : std::string("?");
  std::string msg;
  if (how != AttemptEnd::kStream) {
    *status = StatusCode::kUnavailable;
    msg = "ringlb: upstream " + name + ": " + std::string(why);
  } else if (a.header_overflow) {
    *status = StatusCode::kResourceExhausted;
    msg = "ringlb: upstream " + name + "'s response header list exceeds " +
          "proxy.max_header_list_size; ringlb reset the stream";
  } else if (a.peer_reset) {
    char b[96];
    snprintf(b, sizeof b, " reset the stream (HTTP/2 error %u)", code);
    *status = status_for_reset(code);
    msg = "ringlb: upstream " + name + b;
  } else {
    char b[128];
    snprintf(b, sizeof b, ": ringlb reset the stream (HTTP/2 error %u: the response broke HTTP/2)",
             code);
    *status = StatusCode::kInternal;
    msg = "ringlb: upstream " + name + b;
  }
  if (record_.attempts > 1) msg += " (after " + std::to_string(record_.attempts) + " attempts)";
  if (req_body_.truncated() && *status == StatusCode::kUnavailable) {
    msg += "; not retried: body past proxy.retry_buffer";
  }
  return msg;
}

void Call::fail_from(Attempt& a, AttemptEnd how, uint32_t code, std::string_view why) {
  StatusCode status;
  // Ending the attempt may free its endpoint (removed from the set, its last call): the
  // message, which names it, is made first.
  std::string msg = failure_message(a, how, code, why, &status);
  a.status = static_cast<int>(status);
  end_attempt(a);
  record_.truncated = req_body_.truncated();
  fail(status, msg);
}

void Call::note_outcome(Attempt& a, lb::Outcome o) {
  if (a.endpoint != nullptr) cluster_->record_outcome(*a.endpoint, o, ctx_.now());
}

void Call::end_attempt(Attempt& a) {
  ctx_.timers().cancel(a.per_try);
  if (a.state == Attempt::State::kCommitted && a.sent_ns > 0) {
    record_.upstream_ns = ctx_.now() - a.sent_ns;
  }
  a.held = false;
  if (a.conn != nullptr) a.conn->attempt_done(a);
  EndpointState* ep = a.endpoint;
  if (ep != nullptr)
    ++ep->counters.attempts_ended[status_slot(std::exchange(a.status, Attempt::kCancelled))];
  a.state = Attempt::State::kFree;
  a.endpoint = nullptr;
  if (ep != nullptr) cluster_->call_finished(*ep);  // may free ep (retired, its last call)
}

void Call::let_go(Attempt& a) {
  // Its answer is complete. If the request is still going out (a client stream), stop it.
  if (a.read_pos == req_body_.end() && req_end_) {
    end_attempt(a);
  } else {
    reset_attempt(a);
  }
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
  ctx_.timers().cancel(retry_timer_);
  ctx_.timers().cancel(hedge_timer_);
  retry_pending_ = false;
  reset_attempts(nullptr);
  record_.truncated = record_.truncated || req_body_.truncated();
  if (ds == nullptr) {
    maybe_release();
    return;
  }
  record_.local = true;
  record_.message.assign(message);
  if (record_.grpc && phase_ != Phase::kAnswered) grpc_message_.assign(message);
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
      ds_reset_ = true;
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
    const char* status = headers_too_large_ ? "431" : bad_timeout_ ? "400" : http_status_for(code);
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
  record_.flags |= kFlagOverflow;
  if (ds != nullptr && (phase_ == Phase::kHeaders || phase_ == Phase::kWaiting)) {
    fail(StatusCode::kResourceExhausted, kWhy);
  } else {
    ctx_.timers().cancel(deadline_);
    ctx_.timers().cancel(retry_timer_);
    ctx_.timers().cancel(hedge_timer_);
    retry_pending_ = false;
    reset_attempts(nullptr);
    if (ds != nullptr && phase_ != Phase::kAnswered) {
      record_.local = true;
      record_.message.assign(kWhy);
      record_.grpc_status = static_cast<int>(StatusCode::kResourceExhausted);
      if (record_.grpc) grpc_message_.assign(kWhy);
    }
    trailers_.clear();
    phase_ = Phase::kAnswered;
    ds_reset_ = true;
    if (ds != nullptr) ds->reset(ds_id, NGHTTP2_ENHANCE_YOUR_CALM);
  }
  if (!has_attempts()) req_body_.reset(0);  // no attempt reads it any more
  maybe_release();
}

void Call::on_timer(io::Timer& t) {
  if (&t == &retry_timer_) {
    retry_pending_ = false;
    if (ds != nullptr && phase_ == Phase::kWaiting) dispatch();
    return;
  }
  if (&t == &hedge_timer_) {
    hedge();
    return;
  }
  for (Attempt& a : attempts_) {
    if (&t == &a.per_try) {
      on_per_try_timeout(a);
      return;
    }
  }
  record_.flags |= kFlagDeadline;
  fail(StatusCode::kDeadlineExceeded,
       phase_ == Phase::kResponding ? "ringlb: deadline exceeded while the backend was answering"
                                    : "ringlb: deadline exceeded before the backend answered");
}

void Call::on_downstream_closed(uint32_t error_code) {
  record_.end_ns = ctx_.now();
  record_.reset_code = error_code;
  // Gone before the whole answer was queued, or reset by the client (not by ringlb) while it
  // went out. A drain that ended the call (SD) closes the connections itself.
  if ((phase_ != Phase::kAnswered || (error_code != 0 && !ds_reset_)) &&
      (record_.flags & kFlagShutdown) == 0) {
    record_.flags |= kFlagClientReset;
  }
  ds->call_done(this);
  ds = nullptr;
  ds_id = 0;
  ctx_.timers().cancel(deadline_);
  ctx_.timers().cancel(retry_timer_);
  ctx_.timers().cancel(hedge_timer_);
  retry_pending_ = false;
  // The client has its whole answer, or has gone: a backend still sending is cancelled.
  reset_attempts(nullptr);
  maybe_release();
}

void Call::maybe_release() {
  if (ds != nullptr || has_attempts() || phase_ == Phase::kIdle) return;
  ctx_.timers().cancel(deadline_);
  phase_ = Phase::kIdle;
  fill_request_fields();
  record_.grpc_message = grpc_message_;
  ctx_.end_call(this);
  req_body_.reset(0);
  resp_body_.clear();
}

void Call::note_grpc_message(std::string_view encoded) {
  if (encoded.empty()) return;
  grpc_message_.clear();
  // Decoded into reused capacity (no allocation once warm); long ones need not be kept whole.
  const size_t n = std::min<size_t>(encoded.size(), 1024);
  for (size_t i = 0; i < n; ++i) {
    const char c = encoded[i];
    int hi, lo;
    if (c == '%' && i + 2 < encoded.size() && (hi = hex_value(encoded[i + 1])) >= 0 &&
        (lo = hex_value(encoded[i + 2])) >= 0) {
      grpc_message_.push_back(static_cast<char>(hi << 4 | lo));
      i += 2;
    } else {
      grpc_message_.push_back(c);
    }
  }
}

void Call::fill_request_fields() {
  // One pass over the request headers (they stay untouched until the next begin): the record's
  // views point into them.
  std::string_view host;
  req_headers_.for_each([&](std::string_view name, std::string_view value) {
    switch (name.size()) {
      case 4:
        if (name == "host" && host.empty()) host = value;
        break;
      case 5:
        if (name == ":path" && record_.path.empty()) record_.path = value;
        break;
      case 10:
        if (name == ":authority" && record_.authority.empty()) {
          record_.authority = value;
        } else if (name == "user-agent" && record_.user_agent.empty()) {
          record_.user_agent = value;
        }
        break;
      case 12:
        if (name == "x-request-id" && record_.request_id.empty()) record_.request_id = value;
        break;
      default:
        break;
    }
  });
  if (record_.authority.empty()) record_.authority = host;
}

}  // namespace ringlb::core::proxy

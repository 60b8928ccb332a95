// DownstreamConn's defences against a hostile client (guard.h): frame accounting, resets, the
// abuse GOAWAY, and the stage timeouts. Owner: one shard.
#include <algorithm>
#include <cinttypes>
#include <string>

#include "core/base/log.h"
#include "core/proxy/context.h"
#include "core/proxy/downstream.h"

namespace ringlb::core::proxy {
namespace {

constexpr int64_t kLingerNs = 1'000'000'000;  // see go_away(): a client that does not read

DownstreamConn* conn_of(void* user) {
  return static_cast<DownstreamConn*>(user);
}

}  // namespace

ListenerCounters* DownstreamConn::counters() const {
  std::vector<ListenerCounters>& all = ctx_.stats().listeners;
  return listener_index_ < all.size() ? &all[listener_index_] : nullptr;
}

void DownstreamConn::abuse(AbuseReason r, std::string_view detail) {
  if (going_away() || !open()) return;
  if (ListenerCounters* k = counters()) ++k->abuse[static_cast<size_t>(r)];
  const int64_t now = ctx_.now();
  ctx_.addresses().refuse(ctx_.config().limits, address_, now);
  const std::string_view label = abuse_label(static_cast<size_t>(r));
  LOG_WARN("shard %u: client %s sent away (GOAWAY ENHANCE_YOUR_CALM): %.*s: %.*s", ctx_.index(),
           peer_.empty() ? "?" : peer_.c_str(), static_cast<int>(label.size()), label.data(),
           static_cast<int>(detail.size()), detail.data());
  const uint32_t code =
      r == AbuseReason::kProtocol ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_ENHANCE_YOUR_CALM;
  // A header list refused as a bomb was never processed: the last stream id stays below it.
  go_away(code, label, r == AbuseReason::kHeaderList ? header_stream_ : 0);
  ctx_.timers().arm(linger_timer_, now + kLingerNs);
}

void DownstreamConn::on_input_error(int err) {
  if (err == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
    abuse(AbuseReason::kContinuations, "a header block in too many CONTINUATION frames");
    return;
  }
  if (err != NGHTTP2_ERR_FLOODED) return;
  // Control frames (PING/SETTINGS ACKs, RST_STREAMs) piled up for a client that sends but does
  // not read: nghttp2 stopped; no GOAWAY would be read either.
  if (ListenerCounters* k = counters()) {
    ++k->abuse[static_cast<size_t>(AbuseReason::kOutboundFlood)];
  }
  ctx_.addresses().refuse(ctx_.config().limits, address_, ctx_.now());
  LOG_WARN("shard %u: client %s closed: outbound_flood: over %u control frames queued unread",
           ctx_.index(), peer_.empty() ? "?" : peer_.c_str(),
           ctx_.config().limits.max_outbound_control_frames);
}

void DownstreamConn::timed_out(TimeoutStage s, const char* why) {
  if (ListenerCounters* k = counters()) ++k->timeouts[static_cast<size_t>(s)];
  LOG_DEBUG("shard %u: client %s: %s", ctx_.index(), peer_.empty() ? "?" : peer_.c_str(), why);
}

bool DownstreamConn::count_reset() {
  const config::LimitsConfig& l = ctx_.config().limits;
  const int64_t now = ctx_.now();
  if (!resets_.take(now, l.reset_rate, l.reset_burst)) {
    abuse(AbuseReason::kResetRate, "streams reset faster than limits.reset_rate");
    return false;
  }
  if (!ctx_.addresses().on_reset(l, address_, now)) {
    abuse(AbuseReason::kAddressResetRate,
          "streams reset over this address's connections faster than limits.address_reset_rate");
    return false;
  }
  return true;
}

void DownstreamConn::remember_reset(int32_t id) {
  reset_ids_[reset_next_] = id;
  reset_next_ = static_cast<uint8_t>((reset_next_ + 1) % reset_ids_.size());
}

bool DownstreamConn::recently_reset(int32_t id) const {
  return std::find(reset_ids_.begin(), reset_ids_.end(), id) != reset_ids_.end();
}

int DownstreamConn::on_begin_frame(nghttp2_session* s, const nghttp2_frame_hd* hd, void* user) {
  DownstreamConn* c = conn_of(user);
  if (c->going_away()) return NGHTTP2_ERR_CALLBACK_FAILURE;
  const int64_t now = c->ctx_.now();
  if (hd->type == NGHTTP2_HEADERS) {
    // RFC 9113 5.1.1: a new stream's id must be above every earlier one. nghttp2 forgets closed
    // streams (no_closed_streams) and so ignores such a HEADERS; only a late one for a stream
    // we reset (trailers in flight) is no fault.
    const int32_t id = hd->stream_id;
    if (id > c->max_stream_id_) {
      c->max_stream_id_ = id;
    } else if ((id & 1) == 1 && nghttp2_session_find_stream(s, id) == nullptr &&
               !c->recently_reset(id)) {
      c->abuse(AbuseReason::kProtocol, "HEADERS with a stream id below an earlier stream's");
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    c->header_list_bytes_ = 0;
    // Late trailers for a stream we reset are dropped by nghttp2 without a word: no header
    // stage to time (it would end only with the next frame).
    if (nghttp2_session_find_stream(s, id) != nullptr || !c->recently_reset(id)) {
      c->header_started_ns_ = now;
      c->header_stream_ = id;
      const config::Duration t = c->ctx_.config().proxy.header_timeout;
      if (t.count() > 0) c->watch_until(now + t.count());
    }
  } else if (hd->type != NGHTTP2_CONTINUATION) {
    c->header_started_ns_ = 0;  // a header block ends before any other frame may begin
  }
  if (auto r = c->frames_.on_frame(c->ctx_.config().limits, now, hd->type, hd->flags, hd->length)) {
    c->abuse(*r, "frames past limits");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int DownstreamConn::on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* user) {
  if (f->hd.type != NGHTTP2_RST_STREAM) return 0;
  DownstreamConn* c = conn_of(user);
  c->remember_reset(f->hd.stream_id);
  if (f->hd.stream_id == c->header_stream_) c->header_started_ns_ = 0;
  // Streams nghttp2 refused or reset for the client's fault count as its resets (a client can
  // provoke resets as cheaply as it can send them). Returning an error here would fail the
  // send, so the limit only starts the GOAWAY.
  if (client_fault_code(f->rst_stream.error_code)) c->count_reset();
  return 0;
}

bool DownstreamConn::client_fault_code(uint32_t code) {
  return code == NGHTTP2_PROTOCOL_ERROR || code == NGHTTP2_FLOW_CONTROL_ERROR ||
         code == NGHTTP2_STREAM_CLOSED || code == NGHTTP2_FRAME_SIZE_ERROR ||
         code == NGHTTP2_REFUSED_STREAM;
}

void DownstreamConn::watch_until(int64_t due_ns) {
  if (!stage_timer_.armed() || due_ns < stage_timer_.deadline_ns) {
    ctx_.timers().arm(stage_timer_, due_ns);
  }
}

void DownstreamConn::on_stage_timer() {
  if (!open() || going_away()) return;
  const config::ProxyConfig& pc = ctx_.config().proxy;
  const int64_t now = ctx_.now();
  int64_t next = INT64_MAX;
  if (!handshaken_ && pc.handshake_timeout.count() > 0) {
    const int64_t due = accepted_ns_ + pc.handshake_timeout.count();
    if (now >= due) {
      if (tls_ && !tls_->handshake_done())
        tls_->fail(h2::TlsFailure::kTimeout, "handshake timeout");
      timed_out(TimeoutStage::kHandshake, "no HTTP/2 preface and SETTINGS (handshake_timeout)");
      close("no HTTP/2 preface within proxy.handshake_timeout");
      return;
    }
    next = std::min(next, due);
  }
  if (header_started_ns_ != 0 && pc.header_timeout.count() > 0) {
    const int64_t due = header_started_ns_ + pc.header_timeout.count();
    if (now >= due) {
      timed_out(TimeoutStage::kHeaders, "request header block incomplete (header_timeout)");
      close("request headers incomplete within proxy.header_timeout");
      return;
    }
    next = std::min(next, due);
  }
  if (pc.send_timeout.count() > 0 && send_stalled_ns(now) > 0) {
    if (send_stalled_ns(now) >= pc.send_timeout.count()) {
      timed_out(TimeoutStage::kSend, "the socket took no byte (send_timeout)");
      close("client not reading: no byte sent within proxy.send_timeout");
      return;
    }
    next = std::min(next, now - send_stalled_ns(now) + pc.send_timeout.count());
  }
  next = std::min(next, watch_calls(now));
  if (next != INT64_MAX && open()) ctx_.timers().arm(stage_timer_, next);
}

int64_t DownstreamConn::watch_calls(int64_t now) {
  if (session_ == nullptr || calls.empty()) return INT64_MAX;
  const config::ProxyConfig& pc = ctx_.config().proxy;
  const int64_t body = pc.body_timeout.count();
  const int64_t send = pc.send_timeout.count();
  const bool conn_window_shut = nghttp2_session_get_remote_window_size(session_) <= 0;
  int64_t next = INT64_MAX;
  std::vector<int32_t> stalled_body, stalled_send;
  calls.for_each([&](Call* call) {
    if (call->phase() == Call::Phase::kHeaders) return;  // the header stage's business
    // The body: only while the client may send (its stream window open); a backend that is
    // slow to take the body shuts the window, which is no fault of the client's.
    if (body > 0 && !call->request_ended() &&
        nghttp2_session_get_stream_local_window_size(session_, call->ds_id) > 0) {
      const int64_t due = call->watch.body_progress_ns + body;
      if (now >= due) {
        stalled_body.push_back(call->ds_id);
      } else {
        next = std::min(next, due);
      }
    }
    // The response: bytes wait and the client's window (stream or connection) is shut.
    bool eof = false;
    const bool waiting = call->response_ready(1, &eof) > 0;
    if (send > 0 && waiting &&
        (conn_window_shut ||
         nghttp2_session_get_stream_remote_window_size(session_, call->ds_id) <= 0)) {
      if (call->watch.send_blocked_ns == 0) call->watch.send_blocked_ns = now;
      const int64_t due = call->watch.send_blocked_ns + send;
      if (now >= due) {
        stalled_send.push_back(call->ds_id);
      } else {
        next = std::min(next, due);
      }
    } else {
      call->watch.send_blocked_ns = 0;
      if (send > 0 && waiting) next = std::min(next, now + send);
    }
  });
  for (int32_t id : stalled_body) {
    timed_out(TimeoutStage::kBody, "request body stalled (body_timeout)");
    reset(id, NGHTTP2_CANCEL);
  }
  for (int32_t id : stalled_send) {
    timed_out(TimeoutStage::kSend, "response not read (send_timeout)");
    reset(id, NGHTTP2_CANCEL);
  }
  return next;
}

}  // namespace ringlb::core::proxy

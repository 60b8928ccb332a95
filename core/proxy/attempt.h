#pragma once
// Attempt: one upstream stream serving a call: the endpoint it went to, the connection and
// stream, how far into the request body it has read, and its per-try timer. A call owns its
// attempts (a small fixed array: no allocation); an attempt is free when `conn` is null.
// Owner: the shard of its call.
#include <cstdint>

#include "core/base/list.h"
#include "core/h2/headers.h"
#include "core/io/timer.h"

namespace ringlb::core::proxy {

class Call;
class UpstreamConn;
struct EndpointState;

struct Attempt {
  enum class State : uint8_t {
    kFree,       // not in use
    kStarted,    // submitted on `conn` (or parked there, stream_id 0, until the backend's
                 // SETTINGS arrive); nothing of it may have reached the backend yet
    kSent,       // its HEADERS went out: the backend may be processing it
    kCommitted,  // its response was accepted: the call's answer comes from here
  };

  Call* call = nullptr;
  State state = State::kFree;
  UpstreamConn* conn = nullptr;
  EndpointState* endpoint = nullptr;
  int32_t stream_id = 0;           // 0 while parked (UpstreamConn::park): nothing submitted yet
  uint32_t previous = 0;           // the grpc-previous-rpc-attempts it carries (0: not sent)
  uint64_t read_pos = 0;           // absolute position in the call's request body
  int64_t started_ns = 0;          // ctx.now() when started: its per-try timeout counts from here
  int64_t sent_ns = 0;             // ctx.now() when its HEADERS went out (CallRecord::upstream_ns)
  bool peer_reset = false;         // the backend sent RST_STREAM (vs. a reset ringlb made)
  bool refused_by_goaway = false;  // ... or its GOAWAY left it out (nghttp2: REFUSED_STREAM)
  bool header_overflow = false;    // ringlb reset it: its response headers passed the limit
  // Its response headers arrived but no message yet: they wait in `headers` until the first
  // DATA (the call commits) or the trailers (whose grpc-status may still be retried).
  bool held = false;
  // What it got, for metrics (EndpointCounters::attempts_ended, counted as it ends): the
  // backend's grpc-status or the local outcome; -1 = no grpc-status (plain HTTP/2). An attempt
  // that ends with no other word was let go of by ringlb: CANCELLED.
  static constexpr int kCancelled = 1;  // proto::StatusCode::kCancelled
  int status = kCancelled;
  io::Timer per_try;           // the retry policy's per-try timeout, until the call commits to it
  h2::HeaderBlock headers;     // its response headers as they arrive (kept while held)
  h2::HeaderBlock trailers;    // its trailers as they arrive
  base::ListLink conn_link;    // in UpstreamConn::attempts
  base::ListLink unsent_link;  // in UpstreamConn's attempts to submit at its next flush

  bool active() const { return state != State::kFree; }
};

}  // namespace ringlb::core::proxy

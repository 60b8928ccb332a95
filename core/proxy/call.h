#pragma once
// Call: one client stream, from its request HEADERS to the last byte of the answer, served by
// one or more attempts (upstream streams). Owner: one shard; pooled, reset on reuse.
//
// The request body goes into a bounded retry buffer, so an attempt that never reached a backend
// (connect failed, REFUSED_STREAM, above a GOAWAY's last stream id, lost before its HEADERS went
// out) is replayed on another endpoint, body included, until the call commits to the attempt
// whose response it accepts. Flow control is coupled end to end per stream: the client may send
// more only when an attempt has taken its bytes, and the backend only when the client's
// connection has taken the response; connection-level windows are returned on receipt (see
// Context::credit), so one stalled stream never stalls the others on its connection.
//
// Retries by policy (the route's RetryPolicy): a gRPC status the policy names, read from a
// trailers-only response or from the trailers of a response that carried no message yet (its
// headers are held until the first DATA or the trailers), a connection lost under the attempt
// (UNAVAILABLE), or a per-try timeout, starts another attempt on another endpoint after a
// jittered backoff (or the server's grpc-retry-pushback-ms), within the attempt count, the
// deadline and the cluster's retry budget. Hedging (opt-in per route) starts a second attempt
// after a delay; the first response accepted wins and the other is reset.
//
// Per-call code talks to the two sides only through their small interfaces (DownstreamConn,
// UpstreamConn): it never calls nghttp2 itself.
//
// Lifetime: referenced by its downstream stream until that closes, and by each active attempt
// until that attempt's upstream stream lets go; it returns to the pool when all have let go,
// after its CallRecord went to the end-of-call hook.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/list.h"
#include "core/config/config.h"
#include "core/h2/headers.h"
#include "core/io/timer.h"
#include "core/mem/buffer.h"
#include "core/proxy/attempt.h"
#include "core/proxy/call_record.h"
#include "core/proxy/retry_buffer.h"
#include "lb/outlier.h"
#include "proto/grpc.h"

namespace ringlb::core::proxy {

class Context;
class DownstreamConn;
struct ClusterState;
struct EndpointState;

/// How an attempt's upstream stream ended, as far as replay is concerned.
enum class AttemptEnd : uint8_t {
  kStream,          // the stream closed (normally or by RST_STREAM `code`)
  kConnectFailed,   // the connection never came up: nothing reached the backend
  kConnectionLost,  // the connection died under the stream
};

class Call final : public io::TimerHandler {
 public:
  /// Context: the config snapshot (Context::generation()) this call started under; the
  /// snapshot lives until its last call ends (context_reload.cc).
  uint64_t config_generation = 0;

  /// Where the response stands, as the client sees it.
  enum class Phase : uint8_t {
    kIdle,        // in the pool
    kHeaders,     // receiving the request headers
    kWaiting,     // attempts under way, nothing sent to the client yet
    kResponding,  // response headers sent; body and trailers follow
    kAnswered,    // the whole answer is queued for the client
  };
  static constexpr size_t kMaxAttempts = 2;  // at once (a hedge will use the second)

  explicit Call(Context& ctx);

  /// Prepares a pooled call for a new client stream `id` on `ds`.
  void begin(DownstreamConn* ds, int32_t id);

  // Downstream (client) events.
  bool add_request_header(std::string_view name, std::string_view value, uint8_t flags);
  void on_request_headers(bool end_stream);
  void on_request_data(const uint8_t* data, size_t len);
  void on_request_end();
  /// The client's stream closed (normally, by RST_STREAM, or with its connection).
  void on_downstream_closed(uint32_t error_code);

  // Upstream (backend) events, per attempt.
  void on_attempt_sent(Attempt& a);
  bool add_response_header(Attempt& a, std::string_view name, std::string_view value, uint8_t flags,
                           bool trailer);
  void on_response_headers(Attempt& a, bool end_stream, bool trailer);
  void on_response_data(Attempt& a, const uint8_t* data, size_t len);
  void on_response_end(Attempt& a);
  void on_attempt_closed(Attempt& a, AttemptEnd how, uint32_t code, std::string_view why);
  /// Attempt `a` waited on its connection (UpstreamConn::park) for the backend's SETTINGS; they
  /// came: send it now, or refuse it if its header list is past what the backend accepts.
  void on_upstream_settings(Attempt& a);

  // The sides' data sources. Request: what attempt `a` may send next (<= max); `eof` when that
  // ends the body. Response likewise for the client.
  size_t request_ready(const Attempt& a, size_t max, bool* eof) const;
  void request_send(Attempt& a, mem::ChunkQueue& out, size_t n);
  size_t response_ready(size_t max, bool* eof) const;
  void response_send(mem::ChunkQueue& out, size_t n);
  /// Trailers to send after the last DATA, or nullptr.
  h2::HeaderBlock* pending_trailers() { return trailers_.empty() ? nullptr : &trailers_; }

  /// Ends the call with a status: trailers-only if nothing was sent yet, else trailers after
  /// what is buffered (gRPC) or a reset (plain HTTP/2). Resets every attempt.
  void fail(proto::StatusCode code, std::string_view message);

  /// The shard is over its memory limit and this call holds much of it: drop what it buffers,
  /// cancel its attempts, and answer RESOURCE_EXHAUSTED (trailers-only) or, mid-response,
  /// RST_STREAM(ENHANCE_YOUR_CALM), which gRPC clients see as RESOURCE_EXHAUSTED.
  void shed();
  /// Bytes this call holds in its own buffers (request and response bodies).
  size_t buffered_bytes() const { return req_body_.held() + resp_body_.size(); }

  void on_timer(io::Timer& t) override;

  Phase phase() const { return phase_; }
  /// Adds CallFlag bits to the record (Context: kFlagShutdown before ending a call at drain).
  void add_flags(uint16_t f) { record_.flags |= f; }
  const CallRecord& record() const { return record_; }

  base::ListLink ds_link;  // in DownstreamConn::calls
  // The downstream connection's stage timeouts (body_timeout, send_timeout); its own fields.
  struct Watch {
    int64_t body_progress_ns = 0;  // the request body last made progress (a frame, or 1 KiB)
    uint32_t body_partial = 0;     // bytes of DATA payload since then
    int64_t send_blocked_ns = 0;   // response bytes first seen waiting on the client; 0: none
  } watch;
  /// The request's headers are complete / the client ended the request. Past the header list
  /// limit (the call is then answered RESOURCE_EXHAUSTED).
  bool request_ended() const { return req_end_; }
  bool headers_too_large() const { return headers_too_large_; }
  DownstreamConn* ds = nullptr;
  int32_t ds_id = 0;

 private:
  void dispatch();
  Attempt* free_attempt();
  void start_attempt(Attempt& a, EndpointState& ep);
  void arm_hedge();
  void hedge();
  void on_per_try_timeout(Attempt& a);
  void send_attempt(Attempt& a, UpstreamConn& conn);
  void refuse_attempt(Attempt& a, size_t list_size, uint32_t limit);
  bool replayable(const Attempt& a, AttemptEnd how, uint32_t code) const;
  bool has_other_attempt(const Attempt& a) const;
  void end_attempt(Attempt& a);
  /// Tells the cluster's outlier detector how attempt `a` went (ClusterState::record_outcome).
  void note_outcome(Attempt& a, lb::Outcome o);
  void let_go(Attempt& a);
  void reset_attempt(Attempt& a);
  void reset_attempts(const Attempt* keep);
  void commit(Attempt& a);
  /// Sends `a`'s response headers (and, with `end_stream`, ends the answer there).
  void forward_headers(Attempt& a, bool end_stream);
  /// `a`'s answer is complete and carried no message: `status` (and its pushback) decide
  /// whether it is retried or goes to the client. `block` holds its grpc-status.
  void on_final_status(Attempt& a, h2::HeaderBlock& block, bool trailers_only);
  /// Whether one more attempt may start (policy attempts, body still whole, the deadline, the
  /// server's pushback, then the cluster's retry budget, which this spends); `delay` is when.
  bool may_retry(int64_t pushback_ms, int64_t* delay_ns);
  void schedule_retry(int64_t delay_ns, RetryReason why);
  /// Attempt `a` ended (already let go of) without an answer the client gets: a retry if
  /// allowed, else carry on with another running attempt, else fail with `status`.
  void retry_or_fail(bool retryable, RetryReason why, proto::StatusCode status,
                     std::string_view message);
  /// The grpc-message the client gets from a backend (`encoded` as on the wire), kept decoded
  /// for the record.
  void note_grpc_message(std::string_view encoded);
  /// Points the record's request fields at req_headers_ (which stay until the next begin).
  void fill_request_fields();
  std::string failure_message(const Attempt& a, AttemptEnd how, uint32_t code, std::string_view why,
                              proto::StatusCode* status) const;
  void fail_from(Attempt& a, AttemptEnd how, uint32_t code, std::string_view why);
  void respond_locally(proto::StatusCode code, std::string_view message);
  void resume_downstream();
  void resume_attempts();
  bool has_attempts() const;
  void maybe_release();
  uint64_t active_readers_min_pos() const;

  Context& ctx_;
  Phase phase_ = Phase::kIdle;
  bool req_end_ = false;            // the client sent END_STREAM
  bool headers_too_large_ = false;  // the request header list passed the limit
  bool bad_timeout_ = false;        // a grpc-timeout was malformed (kept in req_headers_)
  bool retry_pending_ = false;      // retry_timer_ runs: the next attempt starts when it fires
  bool hedging_ = false;            // this call may be hedged (route policy and method)
  uint8_t policy_attempts_ = 0;     // attempts started by retry or hedge
  ClusterState* cluster_ = nullptr;
  const config::RetryPolicy* retry_ = nullptr;  // the route's; points into the config
  const config::HedgePolicy* hedge_ = nullptr;
  int64_t client_timeout_ns_ = -1;  // the client's grpc-timeout (the smallest), -1 = none
  int64_t deadline_ns_ = 0;         // 0 = none
  uint64_t req_taken_ = 0;          // body bytes the client's window was given back for
  std::array<Attempt, kMaxAttempts> attempts_;
  std::array<uint64_t, CallRecord::kMaxTried> tried_ids_{};  // EndpointState ids, for avoid
  h2::HeaderBlock req_headers_;  // kept until the call commits, so it can be re-sent
  h2::HeaderBlock resp_headers_;
  h2::HeaderBlock trailers_;
  RetryBuffer req_body_;
  mem::ChunkQueue resp_body_;
  io::Timer deadline_;
  io::Timer retry_timer_;  // the backoff before a retry
  io::Timer hedge_timer_;  // the delay before a hedged attempt
  CallRecord record_;
  std::string grpc_message_;   // CallRecord::grpc_message's text (capacity reused)
  char peer_[64];              // CallRecord::peer's text, copied from the connection at begin
  std::string peer_identity_;  // CallRecord::peer_identity's, likewise (mutual TLS)
  bool ds_reset_ = false;      // ringlb reset the client's stream (not a client disconnect)
};

}  // namespace ringlb::core::proxy

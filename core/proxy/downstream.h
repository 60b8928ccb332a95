#pragma once
// DownstreamConn: one client connection, an nghttp2 server session, and the downstream side's
// interface that calls use (submit a response, resume, consume, reset, trailers). It owns the
// session's callbacks, the zero-copy response DATA path included. Owner: one shard.
//
// Hostile clients (guard.h): it counts what the client's frames cost (resets, empty frames,
// WINDOW_UPDATE/PRIORITY/PING/SETTINGS floods, header-list bombs) and sends a client past a
// limit away with GOAWAY(ENHANCE_YOUR_CALM); one stage timer holds each stage of the
// connection to its timeout (handshake, an incomplete header block, a stalled request body, a
// response the client does not read), armed lazily so a busy connection costs no timer work
// per call.
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/list.h"
#include "core/h2/connection.h"
#include "core/h2/headers.h"
#include "core/h2/tls.h"
#include "core/io/timer.h"
#include "core/proxy/call.h"
#include "core/proxy/guard.h"
#include "core/proxy/stats.h"

namespace ringlb::core::proxy {

class Context;

class DownstreamConn final : public h2::H2Connection, public io::TimerHandler {
 public:
  DownstreamConn(Context& ctx, int fd, size_t listener_index);
  ~DownstreamConn() override;
  /// Starts reading. `peer` is the client's address (ss_family 0 if unknown). The nghttp2
  /// session and our SETTINGS wait for the client's first bytes (start_session).
  bool init(const sockaddr_storage& peer, socklen_t peer_len);
  /// Two-phase GOAWAY: a shutdown notice and a PING now, the final GOAWAY when the PING returns.
  /// On a connection that has had no request yet, the notice waits for the first one (or 1 s).
  void start_drain();
  /// The final GOAWAY now, whatever the PING (drain_timeout reached).
  void finish_drain() { send_final_goaway(); }

  // The downstream side, as calls see it.
  /// Sends response headers on stream `id`; the body (if !end_stream) comes from the call's
  /// response_ready/response_send, trailers from its pending_trailers().
  void submit_response(int32_t id, h2::HeaderBlock& headers, bool end_stream);
  /// The call has more response bytes (or its end) for stream `id`.
  void resume(int32_t id);
  /// The call's attempts took `n` request bytes: the client may send that many more.
  void consume(int32_t id, size_t n);
  /// RST_STREAM on `id`; the call still hears of the close (on_downstream_closed).
  void reset(int32_t id, uint32_t code);
  /// The call is done with stream `id` (its close was reported).
  void call_done(Call* c);

  size_t listener_index() const { return listener_index_; }
  /// A reload renumbered the routers (Context::reconfigure).
  void set_listener_index(size_t i) { listener_index_ = i; }
  /// The client's address, "ip:port" (learnt once, by init()); "" if unknown.
  std::string_view peer() const { return peer_; }
  /// The TLS session (a TLS listener), or null: cleartext.
  const h2::TlsTransport* tls() const { return tls_.get(); }
  base::IntrusiveList<Call, &Call::ds_link> calls;

  void on_timer(io::Timer& t) override;

 private:
  // The shutdown notice makes nghttp2 want nothing more on an idle connection; the drain still
  // waits for the PING (or its timer) before the final GOAWAY.
  bool hold_open() const override { return draining_ && !final_goaway_sent_; }
  void on_close(const char* why) override;
  void on_released() override;
  void on_input_error(int err) override;
  bool start_session() override;
  void after_input() override;  // counts a finished TLS handshake
  ListenerCounters* counters() const;
  /// The client broke a limit: counted, its address refused for a while, GOAWAY.
  void abuse(AbuseReason r, std::string_view detail);
  void timed_out(TimeoutStage s, const char* why);
  /// One stream reset by the client, or refused/reset by us for its fault. False if that
  /// tripped a limit (the connection is going away).
  bool count_reset();
  void remember_reset(int32_t id);
  static bool client_fault_code(uint32_t code);
  bool recently_reset(int32_t id) const;
  /// The stage timer is due by `due_ns` at the latest.
  void watch_until(int64_t due_ns);
  void on_stage_timer();
  /// Checks each call's body and response stalls; the earliest next check, or INT64_MAX.
  int64_t watch_calls(int64_t now);
  void send_final_goaway();
  Call* call_of(int32_t id) const;
  /// The TLS handshake failed (or the connection closed before it ended): counted and logged.
  void tls_failed(const char* why);

  static int on_begin_frame(nghttp2_session* s, const nghttp2_frame_hd* hd, void* user);
  static int on_frame_send(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void* user);
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void* user);
  static int send_body(nghttp2_session* s, nghttp2_frame* frame, const uint8_t* framehd,
                       size_t length, nghttp2_data_source* src, void* user);

  Context& ctx_;
  size_t listener_index_;
  std::unique_ptr<h2::TlsTransport> tls_;  // a TLS listener's: the transport of this connection
  std::string peer_;                       // getpeername at init, as text (CallRecord::peer)
  io::Timer idle_timer_;
  io::Timer drain_timer_;
  io::Timer stage_timer_;   // the stage timeouts, armed only while a stage is pending
  io::Timer linger_timer_;  // after go_away(): a client that does not read is closed
  AddressKey address_;
  FrameGuard frames_;
  TokenBucket resets_;
  int64_t accepted_ns_ = 0;
  int64_t header_started_ns_ = 0;        // a header block began; 0: none open
  int32_t header_stream_ = 0;            // ... on this stream
  size_t header_list_bytes_ = 0;         // ... and its list so far (RFC 9113 sizes)
  int32_t max_stream_id_ = 0;            // the highest stream id the client has opened
  std::array<int32_t, 32> reset_ids_{};  // streams reset lately (their late frames are no fault)
  uint8_t reset_next_ = 0;
  uint8_t oversized_lists_ = 0;  // request header lists past max_header_list_size
  bool handshaken_ = false;      // the client's preface and SETTINGS arrived
  bool tls_counted_ = false;     // the TLS handshake's outcome was counted
  bool draining_ = false;
  bool final_goaway_sent_ = false;
  bool requested_ = false;       // the client has sent at least one request
  bool drain_deferred_ = false;  // start_drain() waits for the first request (or drain_timer_)
};

}  // namespace ringlb::core::proxy

#pragma once
// DownstreamConn: one client connection, an nghttp2 server session, and the downstream side's
// interface that calls use (submit a response, resume, consume, reset, trailers). It owns the
// session's callbacks, the zero-copy response DATA path included. Owner: one shard.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/list.h"
#include "core/h2/connection.h"
#include "core/h2/headers.h"
#include "core/io/timer.h"
#include "core/proxy/call.h"

namespace ringlb::core::proxy {

class Context;

class DownstreamConn final : public h2::H2Connection, public io::TimerHandler {
 public:
  DownstreamConn(Context& ctx, int fd, size_t listener_index);
  ~DownstreamConn() override;
  /// Creates the session and queues SETTINGS. False if nghttp2 could not be set up.
  bool init();
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
  base::IntrusiveList<Call, &Call::ds_link> calls;

  void on_timer(io::Timer& t) override;

 private:
  // The shutdown notice makes nghttp2 want nothing more on an idle connection; the drain still
  // waits for the PING (or its timer) before the final GOAWAY.
  bool hold_open() const override { return draining_ && !final_goaway_sent_; }
  void on_close(const char* why) override;
  void on_released() override;
  void send_final_goaway();
  Call* call_of(int32_t id) const;

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
  std::string peer_;  // getpeername at init, as text (CallRecord::peer)
  io::Timer idle_timer_;
  io::Timer drain_timer_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
  bool requested_ = false;       // the client has sent at least one request
  bool drain_deferred_ = false;  // start_drain() waits for the first request (or drain_timer_)
};

}  // namespace ringlb::core::proxy

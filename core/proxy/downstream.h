#pragma once
// DownstreamConn: one client connection, an nghttp2 server session. Owner: one shard.
#include <cstddef>

#include "core/h2/connection.h"
#include "core/base/list.h"
#include "core/proxy/proxy_stream.h"
#include "core/io/timer.h"

namespace ringlb::core::proxy {

class Context;

class DownstreamConn final : public h2::H2Connection, public io::TimerHandler {
 public:
  DownstreamConn(Context& ctx, int fd, size_t listener_index);
  ~DownstreamConn() override;
  /// Creates the session and queues SETTINGS. False if nghttp2 could not be set up.
  bool init();
  /// Two-phase GOAWAY: a shutdown notice and a PING now, the final GOAWAY when the PING returns.
  void start_drain();

  size_t listener_index() const { return listener_index_; }
  base::IntrusiveList<ProxyStream, &ProxyStream::ds_link> streams;

  void on_timer(io::Timer& t) override;
  void stream_done(ProxyStream* s);
  void stream_begun();

 private:
  void on_close(const char* why) override;
  void on_released() override;
  void send_final_goaway();

  static int on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void* user);

  Context& ctx_;
  size_t listener_index_;
  io::Timer idle_timer_;
  io::Timer drain_timer_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
};

}  // namespace ringlb::core::proxy

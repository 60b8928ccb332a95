#pragma once
// DownstreamConn: one client connection, an nghttp2 server session. Owner: one shard.
#include <cstddef>

#include "core/connection.h"
#include "core/list.h"
#include "core/proxy_stream.h"
#include "core/timer.h"

namespace ringlb::core {

class DownstreamConn final : public H2Connection, public TimerHandler {
 public:
  DownstreamConn(Shard& shard, int fd, size_t listener_index);
  ~DownstreamConn() override;
  /// Creates the session and queues SETTINGS. False if nghttp2 could not be set up.
  bool init();
  /// Two-phase GOAWAY: a shutdown notice and a PING now, the final GOAWAY when the PING returns.
  void start_drain();

  size_t listener_index() const { return listener_index_; }
  IntrusiveList<ProxyStream, &ProxyStream::ds_link> streams;

  void on_timer(Timer& t) override;
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

  size_t listener_index_;
  Timer idle_timer_;
  Timer drain_timer_;
  bool draining_ = false;
  bool final_goaway_sent_ = false;
};

}  // namespace ringlb::core

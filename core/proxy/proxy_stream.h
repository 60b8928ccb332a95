#pragma once
// ProxyStream: one call, from the client's HEADERS to the last trailer, bridged between a
// downstream stream and an upstream stream. Owner: one shard; pooled, reset on reuse.
//
// Flow control is coupled end to end: bytes received on one side are handed to nghttp2 as
// consumed (so a WINDOW_UPDATE can go out) only when the other side's session has taken them
// for sending. A stream therefore never buffers more than the window ringlb advertises
// (`proxy.stream_buffer`) per direction, whatever the peers do.
//
// Lifetime: the stream is referenced by its downstream side until that side's nghttp2 stream
// closes (or the connection dies), and by its upstream side likewise; it returns to the pool when
// both have let go.
#include <cstdint>
#include <string_view>

#include "core/mem/buffer.h"
#include "core/h2/headers.h"
#include "core/base/list.h"
#include "core/io/timer.h"
#include "proto/grpc.h"

namespace ringlb::core::proxy {

class Context;
class DownstreamConn;
class UpstreamConn;
struct ClusterState;
struct EndpointState;

class ProxyStream final : public io::TimerHandler {
 public:
  explicit ProxyStream(Context& ctx);

  /// Prepares a pooled stream for a new call on `ds`.
  void start(DownstreamConn* ds, int32_t ds_id);

  // Downstream (client) events.
  bool add_request_header(std::string_view name, std::string_view value, uint8_t flags);
  void on_request_headers(bool end_stream);
  void on_request_data(const uint8_t* data, size_t len);
  void on_request_end();
  /// The client's stream closed (normally, by RST_STREAM, or with its connection).
  void on_downstream_closed(uint32_t error_code);

  // Upstream (backend) events.
  bool add_response_header(std::string_view name, std::string_view value, uint8_t flags,
                           bool trailer);
  void on_response_headers(bool end_stream, bool trailer);
  void on_response_data(const uint8_t* data, size_t len);
  void on_response_end();
  /// The backend's stream closed. `conn_gone` when the whole connection went away;
  /// `never_connected` when it never came up, so nothing reached the backend.
  void on_upstream_closed(uint32_t error_code, bool conn_gone, bool never_connected,
                          std::string_view why);

  /// Ends the call with a gRPC status: trailers-only if nothing was sent yet, else trailers
  /// after what is buffered. Resets the upstream stream so the backend sees the cancel.
  void fail(proto::StatusCode code, std::string_view message);

  void on_timer(io::Timer& t) override;

  /// The call nghttp2 hands back as stream user data for `id` on `s`, or nullptr. Pooled
  /// streams outlive their calls, and nghttp2 can hand back the user data of a request it never
  /// sent (cancelled while connecting), so a pointer is trusted only if the stream still names
  /// that session and id.
  static ProxyStream* of_downstream(nghttp2_session* s, int32_t id);
  static ProxyStream* of_upstream(nghttp2_session* s, int32_t id);

  // nghttp2 data source callbacks (source->ptr is the ProxyStream). The read callbacks only size
  // the next DATA frame and set NGHTTP2_DATA_FLAG_NO_COPY; the send callbacks (registered on the
  // upstream and downstream sessions) then move the bytes into the connection's output.
  static ssize_t read_request_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                                   uint32_t* flags, nghttp2_data_source* src, void* user);
  static ssize_t read_response_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                                    uint32_t* flags, nghttp2_data_source* src, void* user);
  static int send_request_data(nghttp2_session* s, nghttp2_frame* frame, const uint8_t* framehd,
                               size_t length, nghttp2_data_source* src, void* user);
  static int send_response_data(nghttp2_session* s, nghttp2_frame* frame, const uint8_t* framehd,
                                size_t length, nghttp2_data_source* src, void* user);

  base::ListLink ds_link;  // in DownstreamConn::streams
  base::ListLink us_link;  // in UpstreamConn::streams
  base::ListLink free_link;

  DownstreamConn* ds = nullptr;
  int32_t ds_id = 0;
  UpstreamConn* us = nullptr;
  int32_t us_id = 0;

  h2::HeaderBlock req_headers;  // kept until the response starts, so an unsent call can be re-sent

 private:
  void dispatch();
  void detach_upstream();
  void maybe_release();
  void respond_trailers_only(proto::StatusCode code, std::string_view message);
  void resume_downstream();
  void resume_upstream();

  Context& ctx_;
  ClusterState* cluster_ = nullptr;
  EndpointState* endpoint_ = nullptr;
  const EndpointState* last_failed_endpoint_ = nullptr;  // a hint for the next pick only
  uint8_t attempts_ = 0;
  h2::HeaderBlock resp_headers_;
  h2::HeaderBlock trailers_;
  mem::ChunkQueue req_body_;
  mem::ChunkQueue resp_body_;
  io::Timer deadline_;
  uint64_t req_body_taken_ = 0;  // bytes the upstream session has taken for sending
  bool req_end_ = false;         // client sent END_STREAM
  bool resp_started_ = false;    // response HEADERS submitted downstream
  bool resp_end_ = false;        // nothing more will be added to resp_body_/trailers_
  bool is_grpc_ = false;
  bool headers_too_large_ = false;
  bool ds_done_ = true;          // downstream side has let go
  bool us_done_ = true;          // upstream side has let go
};

}  // namespace ringlb::core::proxy

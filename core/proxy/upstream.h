#pragma once
// UpstreamConn: one HTTP/2 connection from a shard to an endpoint (nghttp2 client session), and
// the upstream side's interface that calls use (submit an attempt, resume, consume, reset). It
// owns the session's callbacks, the zero-copy request DATA path included. Owner: one shard.
//
// Readiness: the connection is ready when the server's SETTINGS arrive (as gRPC clients see a
// transport READY), not when TCP connects: the kernel of a stopped process still completes the
// handshake. connect_timeout covers both. Until then our preface and SETTINGS go out but attempts
// wait, parked on the connection outside nghttp2 (the server's SETTINGS say how large a request
// header list it takes, and each is checked against that before it is submitted; nghttp2's peer
// limit of 0 streams until then is the backstop), so a connection that never gets ready ends its
// attempts as kConnectFailed: the backend cannot have seen them, and the calls replay them
// elsewhere.
//
// Keepalive: while attempts wait, a connection silent for keepalive.interval is pinged; nothing
// back (the ACK or any other bytes) within keepalive.timeout and it is closed as dead. Idle
// connections are not pinged, but one reused after keepalive.idle of silence is pinged with the
// new request. Servers' ping policies are respected (see kPingsWithoutData and too_many_pings).
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/base/list.h"
#include "core/base/result.h"
#include "core/h2/connection.h"
#include "core/h2/headers.h"
#include "core/h2/tls.h"
#include "core/io/timer.h"
#include "core/proxy/attempt.h"
#include "core/proxy/cluster.h"

namespace ringlb::core::proxy {

class Context;

class UpstreamConn final : public h2::H2Connection, public io::TimerHandler {
 public:
  UpstreamConn(Context& ctx, ClusterState& cluster, EndpointState& endpoint);
  ~UpstreamConn() override;
  /// Creates the socket and session and starts connecting.
  base::Result<void> start();

  // The upstream side, as calls see it.
  /// Submits attempt `a`'s request (its body, unless `end_stream`, comes from the call's
  /// request_ready/request_send). On success `a` is on this connection with its stream id.
  base::Result<void> submit(Attempt& a, h2::HeaderBlock& headers, bool end_stream);
  /// The call has more request bytes (or its end) for attempt `a`.
  void resume(const Attempt& a);
  /// The client's connection took `n` response bytes of `a`: the backend may send that many more.
  void consume(const Attempt& a, size_t n);
  /// RST_STREAM(code) for `a` (the backend sees the cancel) and lets go of it: no more
  /// callbacks for it.
  void reset(Attempt& a, uint32_t code);
  /// `a` is done with this connection (its close was reported, or it was reset).
  void attempt_done(Attempt& a);

  /// The backend's SETTINGS_MAX_HEADER_LIST_SIZE once its SETTINGS have arrived (UINT32_MAX if
  /// it set none); nullopt before, when nghttp2 would report RFC 9113's initial "unlimited",
  /// which says nothing about the backend.
  std::optional<uint32_t> peer_max_header_list() const;
  /// Holds attempt `a` on this connection, unsent (stream id 0), until the backend's SETTINGS
  /// arrive (the connection is ready): then its call's on_upstream_settings sends it, or
  /// refuses it if its header list is past the backend's limit. Nothing would go out before
  /// them anyway. If the connection closes first, the call hears of it as of any attempt that
  /// never reached the backend (kConnectFailed: replay).
  void park(Attempt& a);
  /// Holds attempt `a` (unsent, stream id 0) until this connection's next flush, in this loop
  /// turn, where its call submits it (on_upstream_settings). A call cancelled before then (a
  /// client's rapid reset) costs a list removal: nghttp2 never sees it. Cancelling a request
  /// nghttp2 has queued but not sent costs a walk of its queue, which a flood of resets in one
  /// turn would make quadratic.
  void defer(Attempt& a);
  /// True during the flush that submits deferred attempts: submit() goes to nghttp2 then.
  bool submitting() const { return submitting_; }

  /// Takes new streams: connecting or open, no GOAWAY from the peer.
  bool accepting() const { return !closing() && !goaway_; }
  bool has_room() const;
  EndpointState& endpoint() const { return endpoint_; }
  /// The endpoint left the set: take no new streams, close with GOAWAY once the last one ends.
  void retire();
  const std::string& name() const { return endpoint_.endpoint.name; }

  base::IntrusiveList<Attempt, &Attempt::conn_link> attempts;
  void on_timer(io::Timer& t) override;

 private:
  void on_connected(int res) override;
  void after_input() override;
  void before_flush() override;
  bool withholds_credit() const override { return false; }
  void on_close(const char* why) override;
  void on_released() override;
  void close_gracefully();
  void release_parked();
  Attempt* attempt_of(int32_t id) const;
  void on_ready();
  void on_connect_timeout();
  /// A TLS cluster: the transport, the name sent and verified, the session to resume.
  void start_tls();
  void on_goaway(const nghttp2_goaway& g);

  // Keepalive.
  void on_busy();  // the first attempt after none
  int64_t keepalive_interval_ns() const;
  void arm_keepalive();
  void on_ping_timer();
  void on_ping_ack(const uint8_t* opaque);
  void on_server_wrote();
  void send_ping();

  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_frame_send(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void* user);
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void* user);
  static int send_body(nghttp2_session* s, nghttp2_frame* frame, const uint8_t* framehd,
                       size_t length, nghttp2_data_source* src, void* user);

  Context& ctx_;
  ClusterState& cluster_;
  EndpointState& endpoint_;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  io::Timer connect_timer_;  // TCP connect, then (again) TLS and the server's SETTINGS
  std::unique_ptr<h2::TlsTransport> tls_;  // a TLS cluster's: this connection's transport
  bool tcp_up_ = false;                    // the TCP connect succeeded
  bool goaway_ = false;
  bool ready_ = false;         // the server's SETTINGS arrived: it reads and answers
  bool submitting_ = false;    // before_flush() is submitting the deferred attempts
  bool busy_pending_ = false;  // a deferred attempt came when none was on the connection
  base::IntrusiveList<Attempt, &Attempt::unsent_link> unsent_;  // deferred to the next flush

  // Keepalive state; written by this connection only. Times are the host's per-turn clock.
  io::Timer ping_timer_;            // armed only while attempts wait (lazily: re-armed on fire)
  int64_t last_recv_ns_ = 0;        // the last bytes received from the server
  int64_t waiting_since_ns_ = 0;    // attempts have waited since (silence counts from here too)
  int64_t ping_interval_ns_ = 0;    // the interval in force at our last PING
  int64_t ping_sent_ns_ = 0;        // our PING in flight since then; 0 = none
  int64_t last_ping_ns_ = 0;        // the last PING we sent
  uint64_t ping_seq_ = 0;           // opaque data of our latest PING, to know its ACK
  uint8_t pings_without_data_ = 0;  // PINGs since the server last sent HEADERS or DATA
  bool ping_timed_out_ = false;     // closed for a PING timeout (the event says so)
};

}  // namespace ringlb::core::proxy

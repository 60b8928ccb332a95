#pragma once
// UpstreamConn: one HTTP/2 connection from a shard to an endpoint (nghttp2 client session), and
// ClusterState: a shard's view of one cluster (snapshot, picker, per-endpoint pools and
// outstanding-call counts). Owner: one shard.
#include <netinet/in.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/h2/connection.h"
#include "core/base/list.h"
#include "core/proxy/proxy_stream.h"
#include "core/io/timer.h"
#include "lb/endpoint.h"
#include "lb/picker.h"

namespace ringlb::core::proxy {

class Context;
class UpstreamConn;

/// One endpoint as a shard sees it, keyed by address: it outlives snapshot swaps, so an endpoint
/// that stays in the set keeps its connections and its count of calls in flight. Owner: shard.
/// Connections are opened on demand and reused; another opens when every open one is at the
/// peer's SETTINGS_MAX_CONCURRENT_STREAMS.
struct EndpointState {
  lb::Endpoint endpoint;  // a copy: the snapshot it came from may be gone before we are
  std::string key;
  int index = -1;         // position in the cluster's current set; -1 once removed (draining)
  uint32_t outstanding = 0;
  // Connections that left `conns` (closing) but whose I/O has not all completed yet; they
  // still refer to this state, so it must outlive them.
  uint32_t closing = 0;
  base::IntrusiveList<h2::H2Connection, &h2::H2Connection::conn_link> conns;

  bool unused() const { return index < 0 && outstanding == 0 && closing == 0 && conns.empty(); }
};

/// A shard's view of one cluster: the current snapshot, its picker, and per-endpoint state.
/// Owner: shard.
struct ClusterState {
  const config::ClusterConfig* config = nullptr;
  size_t index = 0;
  uint64_t seed = 0;
  lb::EndpointSetPtr set;
  std::unique_ptr<lb::Picker> picker;
  std::vector<uint32_t> outstanding;        // the picker's input, index-aligned with set
  std::vector<EndpointState*> endpoints;    // index-aligned with set
  std::vector<EndpointState*> retiring;     // removed from the set, calls or connections left

  ClusterState() = default;
  ClusterState(ClusterState&&) = default;
  ~ClusterState();

  /// Moves to a new snapshot without disturbing what stays: endpoints matched by key keep
  /// their state; removed ones drain (no new calls, calls in flight finish, then GOAWAY).
  void apply(lb::EndpointSetPtr next);
  /// A connection that can take one more stream to `ep`, opening one if needed.
  /// nullptr (and `error`) if no socket could be made.
  UpstreamConn* connection_for(Context& ctx, EndpointState& ep, std::string& error);
  void call_started(EndpointState& ep);
  void call_finished(EndpointState& ep);
  /// Frees a removed endpoint once nothing refers to it.
  void maybe_forget(EndpointState& ep);
};

class UpstreamConn final : public h2::H2Connection, public io::TimerHandler {
 public:
  UpstreamConn(Context& ctx, ClusterState& cluster, EndpointState& endpoint);
  ~UpstreamConn() override;
  /// Creates the socket and session and starts connecting. False (and `error`) on failure.
  bool start(std::string& error);
  /// Submits the call's request; returns false (and `error`) if nghttp2 refused it.
  bool submit(ProxyStream* s, bool end_stream, std::string& error);

  /// Takes new streams: connecting or open, no GOAWAY from the peer.
  bool accepting() const { return !closing() && !goaway_; }
  bool has_room() const;
  bool connected() const { return state_ == State::kOpen; }
  EndpointState& endpoint() const { return endpoint_; }
  /// The endpoint left the set: take no new streams, close with GOAWAY once the last one ends.
  void retire();
  ClusterState& cluster() const { return cluster_; }
  const std::string& name() const;

  base::IntrusiveList<ProxyStream, &ProxyStream::us_link> streams;
  void stream_done(ProxyStream* s);
  void on_timer(io::Timer& t) override;

 private:
  void on_connected(int res) override;
  void after_input() override;
  void on_close(const char* why) override;
  void on_released() override;
  void fail_streams(const char* why);
  void close_gracefully();

  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void* user);

  Context& ctx_;
  ClusterState& cluster_;
  EndpointState& endpoint_;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  io::Timer connect_timer_;
  bool goaway_ = false;
  bool ever_connected_ = false;
  std::string close_reason_;
};

}  // namespace ringlb::core::proxy

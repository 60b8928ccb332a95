#include "core/proxy/upstream.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/base/log.h"
#include "core/io/net.h"
#include "core/proxy/context.h"

namespace ringlb::core::proxy {
namespace {

// Until the peer's SETTINGS arrive we assume what gRPC servers commonly advertise.
constexpr uint32_t kAssumedPeerMaxStreams = 100;

UpstreamConn* conn_of(void* user) { return static_cast<UpstreamConn*>(user); }

ProxyStream* stream_of(nghttp2_session* s, int32_t id) {
  return ProxyStream::of_upstream(s, id);
}

struct Callbacks {
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_option* opt = nullptr;
};

}  // namespace

ClusterState::~ClusterState() {
  // Shard teardown: connections are closed and reclaimed before this runs.
  for (EndpointState* ep : endpoints) delete ep;
  for (EndpointState* ep : retiring) delete ep;
}

void ClusterState::apply(lb::EndpointSetPtr next) {
  std::unordered_map<std::string, EndpointState*> old;
  old.reserve(endpoints.size());
  for (EndpointState* ep : endpoints) old.emplace(ep->key, ep);
  std::vector<EndpointState*> fresh(next->size());
  std::vector<uint32_t> counts(next->size());
  for (size_t i = 0; i < next->size(); ++i) {
    const lb::Endpoint& e = next->endpoints[i];
    std::string key = lb::endpoint_key(e);
    EndpointState* st;
    if (auto it = old.find(key); it != old.end()) {
      st = it->second;
      old.erase(it);
    } else {
      // Back from retirement? Reuse it, connections and all.
      auto r = std::find_if(retiring.begin(), retiring.end(),
                            [&](EndpointState* x) { return x->key == key; });
      if (r != retiring.end()) {
        st = *r;
        retiring.erase(r);
      } else {
        st = new EndpointState;
        st->key = std::move(key);
      }
    }
    st->endpoint = e;
    st->index = static_cast<int>(i);
    fresh[i] = st;
    counts[i] = st->outstanding;
  }
  // Install the new set before retiring anything: retiring can fail calls over to other
  // endpoints, and those picks must already see the new set.
  set = std::move(next);
  endpoints = std::move(fresh);
  outstanding = std::move(counts);
  lb::Policy policy = config->lb == config::LbPolicy::kP2c ? lb::Policy::kP2c : lb::Policy::kRoundRobin;
  picker = lb::make_picker(policy, *set, seed + set->version);
  for (auto& [key, st] : old) {
    st->index = -1;
    retiring.push_back(st);
    st->conns.for_each([](h2::H2Connection* h) { static_cast<UpstreamConn*>(h)->retire(); });
  }
  for (size_t i = 0; i < retiring.size();) {
    EndpointState* st = retiring[i];
    if (st->unused()) {
      retiring.erase(retiring.begin() + static_cast<std::ptrdiff_t>(i));
      delete st;
    } else {
      ++i;
    }
  }
}

void ClusterState::call_started(EndpointState& ep) {
  ++ep.outstanding;
  if (ep.index >= 0) ++outstanding[static_cast<size_t>(ep.index)];
}

void ClusterState::call_finished(EndpointState& ep) {
  --ep.outstanding;
  if (ep.index >= 0) --outstanding[static_cast<size_t>(ep.index)];
  else maybe_forget(ep);
}

void ClusterState::maybe_forget(EndpointState& ep) {
  if (!ep.unused()) return;
  auto it = std::find(retiring.begin(), retiring.end(), &ep);
  if (it != retiring.end()) {
    retiring.erase(it);
    delete &ep;
  }
}

UpstreamConn* ClusterState::connection_for(Context& ctx, EndpointState& ep, std::string& error) {
  UpstreamConn* found = nullptr;
  ep.conns.for_each([&found](h2::H2Connection* h) {
    auto* c = static_cast<UpstreamConn*>(h);
    if (found == nullptr && c->accepting() && c->has_room()) found = c;
  });
  if (found != nullptr) return found;
  auto* c = new UpstreamConn(ctx, *this, ep);
  if (!c->start(error)) {
    delete c;
    return nullptr;
  }
  ep.conns.push_back(c);
  return c;
}

UpstreamConn::UpstreamConn(Context& ctx, ClusterState& cluster, EndpointState& endpoint)
    : h2::H2Connection(ctx), ctx_(ctx), cluster_(cluster), endpoint_(endpoint) {
  connect_timer_.handler = this;
}

UpstreamConn::~UpstreamConn() = default;

const std::string& UpstreamConn::name() const { return endpoint_.endpoint.name; }

bool UpstreamConn::start(std::string& error) {
  static const Callbacks cbs = [] {
    Callbacks c;
    nghttp2_session_callbacks_new(&c.cb);
    nghttp2_session_callbacks_set_on_header_callback(c.cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c.cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c.cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(c.cb, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(c.cb, &ProxyStream::send_request_data);
    nghttp2_option_new(&c.opt);
    nghttp2_option_set_no_auto_window_update(c.opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(c.opt, kAssumedPeerMaxStreams);
    nghttp2_option_set_max_continuations(c.opt, 8);
    nghttp2_option_set_no_closed_streams(c.opt, 1);
    return c;
  }();
  const lb::Endpoint& ep = endpoint_.endpoint;
  std::memcpy(&addr_, &ep.addr, ep.addr_len);
  addr_len_ = ep.addr_len;
  int fd = io::make_client_socket(addr_.ss_family);
  if (fd < 0) {
    error = strerror(-fd);
    return false;
  }
  fd_ = fd;
  if (nghttp2_session_client_new3(&session_, cbs.cb, this, cbs.opt,
                                  ctx_.session_heap().mem()) != 0) {
    error = "nghttp2 session setup failed";
    ctx_.reactor().close(fd_);
    fd_ = -1;
    return false;
  }
  const config::ProxyConfig& pc = ctx_.config().proxy;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, pc.stream_buffer},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, pc.max_header_list_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(pc.connection_window));
  state_ = State::kConnecting;
  ctx_.reactor().connect(fd_, reinterpret_cast<const sockaddr*>(&addr_), addr_len_,
                           connect_op_);
  ctx_.timers().arm(connect_timer_, ctx_.now() + cluster_.config->connect_timeout.count());
  return true;
}

bool UpstreamConn::has_room() const {
  uint32_t max = kAssumedPeerMaxStreams;
  if (session_ != nullptr && ever_connected_) {
    max = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  }
  return streams.size() < max;
}

bool UpstreamConn::submit(ProxyStream* s, bool end_stream, std::string& error) {
  nghttp2_data_provider prd;
  prd.source.ptr = s;
  prd.read_callback = &ProxyStream::read_request_body;
  int32_t id = nghttp2_submit_request(session_, nullptr, s->req_headers.nva(),
                                      s->req_headers.count(), end_stream ? nullptr : &prd, s);
  if (id < 0) {
    error = nghttp2_strerror(id);
    return false;
  }
  s->us_id = id;
  streams.push_back(s);
  mark_dirty();  // no-op while connecting; start_io() flushes everything queued
  return true;
}

void UpstreamConn::stream_done(ProxyStream* s) {
  streams.remove(s);
  if (goaway_ && streams.empty()) close_gracefully();
}

void UpstreamConn::retire() {
  goaway_ = true;
  if (streams.empty()) close_gracefully();
}

void UpstreamConn::close_gracefully() {
  if (state_ == State::kConnecting) {
    close("endpoint removed");
    return;
  }
  if (!open()) return;
  // GOAWAY(NO_ERROR); nghttp2 then wants neither read nor write and flush() closes us.
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  mark_dirty();
}

void UpstreamConn::on_connected(int res) {
  ctx_.timers().cancel(connect_timer_);
  if (res < 0) {
    std::string why = std::string("connect failed: ") + strerror(-res);
    close(why.c_str());
    return;
  }
  ever_connected_ = true;
  start_io();
}

void UpstreamConn::on_timer(io::Timer&) {
  if (state_ != State::kConnecting) return;
  std::string why = "connect timed out after " +
                    std::to_string(cluster_.config->connect_timeout.count() / 1000000) + " ms";
  close(why.c_str());
}

void UpstreamConn::after_input() {}

void UpstreamConn::on_close(const char* why) {
  LOG_DEBUG("shard %u: upstream %s closed: %s", ctx_.index(), name().c_str(), why);
  ctx_.timers().cancel(connect_timer_);
  goaway_ = true;
  endpoint_.conns.remove(this);
  ++endpoint_.closing;
  fail_streams(why);
}

void UpstreamConn::fail_streams(const char* why) {
  const bool never = !ever_connected_;
  streams.for_each([&](ProxyStream* s) {
    nghttp2_session_set_stream_user_data(session_, s->us_id, nullptr);
    s->on_upstream_closed(NGHTTP2_INTERNAL_ERROR, true, never, why);
  });
}

void UpstreamConn::on_released() {
  --endpoint_.closing;
  cluster_.maybe_forget(endpoint_);
  ctx_.retire(this);
}

int UpstreamConn::on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                            size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                            void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  ProxyStream* st = stream_of(s, f->hd.stream_id);
  if (st == nullptr) return 0;
  bool trailer = f->headers.cat == NGHTTP2_HCAT_HEADERS;
  if (!st->add_response_header({reinterpret_cast<const char*>(name), namelen},
                               {reinterpret_cast<const char*>(value), valuelen}, flags, trailer)) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets this stream only
  }
  return 0;
}

int UpstreamConn::on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      ProxyStream* st = stream_of(s, f->hd.stream_id);
      if (st == nullptr) return 0;
      bool trailer = f->headers.cat == NGHTTP2_HCAT_HEADERS;
      st->on_response_headers(end, trailer);
      break;
    }
    case NGHTTP2_DATA: {
      ProxyStream* st = stream_of(s, f->hd.stream_id);
      if (st != nullptr && end) st->on_response_end();
      break;
    }
    case NGHTTP2_GOAWAY:
      // No new streams here; nghttp2 closes the unprocessed ones with REFUSED_STREAM, which
      // ProxyStream re-sends elsewhere when nothing of them was sent.
      conn_of(user)->goaway_ = true;
      break;
    default: break;
  }
  return 0;
}

int UpstreamConn::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data,
                                size_t len, void*) {
  ProxyStream* st = stream_of(s, id);
  if (st == nullptr) {
    nghttp2_session_consume(s, id, len);
    return 0;
  }
  st->on_response_data(data, len);
  return 0;
}

int UpstreamConn::on_stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void*) {
  ProxyStream* st = stream_of(s, id);
  if (st != nullptr) {
    nghttp2_session_set_stream_user_data(s, id, nullptr);
    st->on_upstream_closed(error_code, false, false, "stream closed");
  }
  return 0;
}

}  // namespace ringlb::core::proxy

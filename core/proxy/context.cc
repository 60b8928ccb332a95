#include "core/proxy/context.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_set>

#include "core/base/log.h"
#include "core/proxy/downstream.h"
#include "core/proxy/tls_contexts.h"

namespace ringlb::core::proxy {

Context::Context(std::shared_ptr<const config::Config> config, unsigned index,
                 const std::vector<lb::EndpointSetPtr>& endpoint_sets, base::Clock& clock)
    : h2::Host(index, clock),
      config_(std::move(config)),
      stats_{std::vector<ListenerCounters>(config_->listeners.size()),
             MethodTable(config_->metrics.max_methods)} {
  generations_.push_back({0, config_, 0});
  for (size_t i = 0; i < config_->listeners.size(); ++i) {
    routers_.emplace_back(config_->listeners[i], *config_).tls = listener_tls(config_, i);
  }
  for (size_t i = 0; i < config_->clusters.size(); ++i) {
    ClusterState& c = *clusters_.emplace_back(std::make_unique<ClusterState>());
    c.config = &config_->clusters[i];
    c.tls = cluster_tls(config_, i);
    c.index = i;
    c.seed = 0x9e3779b97f4a7c15ULL * (index + 1) + i;  // shards must not pick in lockstep
    c.next_id = &next_endpoint_id_;
    c.setup(this);  // held by unique_ptr: the state never moves after this
    c.apply(endpoint_sets[i]);
  }
  set_buffer_limit(config_->proxy.memory_limit);  // a shard sets its share
  set_turn_bytes(config_->limits.turn_bytes);
}

Context::~Context() {
  // Production drains first, so every connection is closed and retired by now; ~Host frees the
  // retired ones. Whatever drives a context by hand (tests, benchmarks, the fuzzer) closes its
  // connections and turns until they are retired before it drops the context.
  for (size_t i = accept_head_; i < accept_queue_.size(); ++i) ::close(accept_queue_[i].fd);
}

bool Context::adopt(size_t listener, int fd) {
  ListenerCounters& counts = stats_.listeners[listener];
  ++counts.accepted;
  if (downstreams_.size() >= config_->proxy.max_connections) {
    ++counts.rejected[static_cast<size_t>(Rejection::kMaxConnections)];
    ::close(fd);  // over the per-shard cap: refuse by closing
    return false;
  }
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) peer.ss_family = 0;
  const AddressKey key = AddressKey::of(peer);
  if (addresses_.refused(key, now())) {
    // Sent away for abuse a moment ago: closed before any HTTP/2 state is built for it.
    ++counts.rejected[static_cast<size_t>(Rejection::kAddressRefused)];
    ::close(fd);
    return false;
  }
  auto* conn = new DownstreamConn(*this, fd, listener);
  downstreams_.push_back(conn);
  ++connections_;
  ++counts.open;  // until downstream_closed
  if (!conn->init(peer, peer_len)) {
    ++counts.rejected[static_cast<size_t>(Rejection::kSetupFailed)];
    conn->close("session setup failed");
  } else if (draining_ || listener_removed(listener)) {
    ++counts.rejected[static_cast<size_t>(Rejection::kDraining)];
    // Accepted while draining (the last of a closing listener's queue): not refused, since a
    // close with the client's first bytes unread is a reset, and a gRPC client fails the calls
    // it queued for that connection. SETTINGS and the two-phase GOAWAY instead: whatever it
    // sent before the GOAWAY is served, and it takes its next calls to another connection.
    conn->start_drain();
  }
  return true;
}

void Context::accepted(size_t listener, int fd) {
  if (accept_turn_ != turn_number()) {
    accept_turn_ = turn_number();
    accepts_in_turn_ = 0;
  }
  if (draining_ || (queued_accepts() == 0 && accepts_in_turn_ < kAcceptsPerTurn)) {
    ++accepts_in_turn_;
    adopt(listener, fd);
  } else {
    accept_queue_.push_back({listener, fd});
  }
}

bool Context::run_deferred() {
  if (queued_accepts() == 0) return false;
  accept_turn_ = turn_number();
  accepts_in_turn_ = 0;
  while (accept_head_ < accept_queue_.size() && accepts_in_turn_ < kAcceptsPerTurn) {
    Accepted a = accept_queue_[accept_head_++];
    ++accepts_in_turn_;
    adopt(a.listener, a.fd);
  }
  if (accept_head_ == accept_queue_.size()) {
    accept_queue_.clear();
    if (accept_queue_.capacity() > 1024) accept_queue_.shrink_to_fit();
    accept_head_ = 0;
    return false;
  }
  return true;
}

void Context::adopt_queued() {
  while (accept_head_ < accept_queue_.size()) {
    Accepted a = accept_queue_[accept_head_++];
    adopt(a.listener, a.fd);
  }
  accept_queue_.clear();
  accept_head_ = 0;
}

// Messages are handled on a wake-up, when the turn's time may be long stale (an idle shard):
// these control-rate paths read the clock, so ramps and ejections start when they really do.
void Context::apply_endpoints(size_t cluster, lb::EndpointSetPtr set) {
  clusters_[cluster]->apply(std::move(set), clock().now_ns());
}

void Context::apply_eligibility(size_t cluster, std::string_view key, uint8_t mask, uint8_t bits,
                                int64_t until_ns, uint32_t streak) {
  clusters_[cluster]->apply_eligibility(key, mask, bits, until_ns, streak, clock().now_ns());
}

void Context::on_upstream_event(UpstreamEvent e, ClusterState& cluster, EndpointState& ep,
                                std::string_view detail) {
  // Told first, so the control thread's log has the failure before any ejection it caused.
  report_upstream_event(e, cluster, ep, detail);
  count_upstream_event(ep.counters, e);
  // GOAWAY is a backend going away politely (a deploy, a drain), not a failure.
  if (e != UpstreamEvent::kGoaway) cluster.record_outcome(ep, Outcome::kLocalFailure, now());
}

void Context::close_upstreams() {
  std::vector<ClusterState*> all;
  for (auto& c : clusters_) all.push_back(c.get());
  for (auto& r : retired_clusters_) all.push_back(r.state.get());
  for (ClusterState* cp : all) {
    ClusterState& c = *cp;
    for (auto* list : {&c.endpoints, &c.retiring}) {
      // Closing can free a retiring endpoint (and edit the list): walk a copy.
      std::vector<EndpointState*> eps = *list;
      for (EndpointState* ep : eps) {
        while (h2::H2Connection* h = ep->conns.front()) h->close("shutting down");
      }
    }
  }
}

bool Context::connections_busy() const {
  if (!downstreams_.empty() || closing_downstreams_ > 0) return true;
  std::vector<const ClusterState*> all;
  for (auto& c : clusters_) all.push_back(c.get());
  for (auto& r : retired_clusters_) all.push_back(r.state.get());
  for (const ClusterState* cp : all) {
    const ClusterState& c = *cp;
    for (const EndpointState* ep : c.endpoints) {
      if (!ep->conns.empty() || ep->closing > 0) return true;
    }
    for (const EndpointState* ep : c.retiring) {
      if (!ep->conns.empty() || ep->closing > 0) return true;
    }
  }
  return false;
}

void Context::relieve_memory_pressure() {
  // Rare (only while over the limit), so a scan of every call and a sort are fine here.
  std::vector<std::pair<size_t, Call*>> holders;
  for (auto& c : call_store_) {
    size_t b = c->phase() == Call::Phase::kIdle ? 0 : c->buffered_bytes();
    if (b >= 4096) holders.emplace_back(b, c.get());
  }
  std::sort(holders.begin(), holders.end(), [](auto& a, auto& b) { return a.first > b.first; });
  const size_t target = buffer_limit() / 8 * 7;
  size_t now = held();
  size_t shed = 0, freed = 0;
  for (auto& [bytes, call] : holders) {
    if (now <= target) break;
    call->shed();
    now -= std::min(now, bytes);
    freed += bytes;
    ++shed;
  }
  if (shed > 0 && (shed_logged_ns_ == 0 || this->now() - shed_logged_ns_ > 10'000'000'000)) {
    shed_logged_ns_ = this->now();
    LOG_WARN(
        "shard %u: over its share of proxy.memory_limit (%zu MiB): reset %zu calls holding "
        "the most buffered data (%zu KiB)",
        index(), buffer_limit() >> 20, shed, freed >> 10);
  }
}

void Context::shrink_pools() {
  // None kept: a pooled call left among the burst's freed memory would pin its pages; the
  // next calls are made anew (one allocation each, until the pool has refilled).
  constexpr size_t kReserve = 0;
  if (free_calls_.size() <= kReserve) return;
  std::unordered_set<const Call*> gone(free_calls_.begin() + kReserve, free_calls_.end());
  free_calls_.resize(kReserve);
  std::erase_if(call_store_,
                [&](const std::unique_ptr<Call>& c) { return gone.contains(c.get()); });
}

void Context::start_draining() {
  adopt_queued();
  draining_ = true;
  downstreams_.for_each(
      [](h2::H2Connection* c) { static_cast<DownstreamConn*>(c)->start_drain(); });
}

void Context::end_calls(std::string_view why) {
  std::vector<Call*> open;
  downstreams_.for_each([&](h2::H2Connection* h) {
    auto* d = static_cast<DownstreamConn*>(h);
    open.clear();
    d->calls.for_each([&](Call* c) {
      if (c->phase() != Call::Phase::kAnswered) open.push_back(c);
    });
    // fail() queues frames and may hand the call back to the pool; it closes no connection.
    for (Call* c : open) {
      if (c->ds == d && c->phase() != Call::Phase::kIdle) {
        c->add_flags(kFlagShutdown);
        c->fail(proto::StatusCode::kUnavailable, why);
      }
    }
    d->finish_drain();
  });
}

void Context::close_downstreams(const char* why) {
  while (h2::H2Connection* c = downstreams_.front()) c->close(why);
}

void Context::downstream_closed(DownstreamConn* c) {
  --stats_.listeners[c->listener_index()].open;
  downstreams_.remove(c);
  ++closing_downstreams_;
}

Call* Context::alloc_call() {
  ++calls_;
  Call* c;
  if (free_calls_.empty()) {
    call_store_.push_back(std::make_unique<Call>(*this));
    c = call_store_.back().get();
  } else {
    c = free_calls_.back();
    free_calls_.pop_back();
  }
  c->config_generation = generations_.back().id;
  ++generations_.back().calls;
  return c;
}

void Context::end_call(Call* c) {
  // The snapshot the call started under: the record's indices refer to it (call_config()).
  size_t g = generations_.size() - 1;
  while (g > 0 && generations_[g].id != c->config_generation) --g;
  ending_config_ = generations_[g].config.get();
  on_call_end(c->record());
  ending_config_ = nullptr;
  free_calls_.push_back(c);
  if (--generations_[g].calls == 0 && g + 1 < generations_.size()) {
    // The last call of an older snapshot: it goes, and what was removed with it may too.
    generations_.erase(generations_.begin() + static_cast<std::ptrdiff_t>(g));
    sweep_retired();
  }
}

}  // namespace ringlb::core::proxy

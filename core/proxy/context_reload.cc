// Context::reconfigure: a reload's new config snapshot, applied on the shard without dropping
// anything. What stays keeps its state; what is removed drains; calls in flight finish under
// the snapshot they started with (kept alive by a per-generation call count).
#include <algorithm>

#include "core/base/log.h"
#include "core/proxy/context.h"
#include "core/proxy/downstream.h"
#include "core/proxy/tls_contexts.h"

namespace ringlb::core::proxy {

std::vector<int> Context::reconfigure(Reconfig& r) {
  adopt_queued();  // their listener numbers are the running ones
  std::vector<int> router_to;
  remap_listeners(r, router_to);
  remap_clusters(r);
  config_ = r.config;
  set_turn_bytes(config_->limits.turn_bytes);
  generations_.push_back({r.generation, config_, 0});
  // Calls still reading their headers route under the new snapshot: they count under it.
  Generation& now = generations_.back();
  for (auto& c : call_store_) {
    if (c->phase() != Call::Phase::kHeaders || c->config_generation == now.id) continue;
    for (Generation& g : generations_) {
      if (g.id == c->config_generation) --g.calls;
    }
    c->config_generation = now.id;
    ++now.calls;
  }
  // Snapshots no call refers to any more go now.
  const uint64_t running = now.id;
  std::erase_if(generations_,
                [running](const Generation& g) { return g.calls == 0 && g.id != running; });
  rebuild_routers();
  sweep_retired();
  return router_to;
}

void Context::remap_listeners(Reconfig& r, std::vector<int>& router_to) {
  // Every router so far (running listeners, then removed ones still draining), by what it was
  // built from, and how many client connections (or closing sockets: pinned) still use it.
  const size_t running = config_->listeners.size();
  std::vector<RetiredListener> from;
  for (size_t i = 0; i < running; ++i) from.push_back({config_, i});
  for (RetiredListener& rl : retired_listeners_) from.push_back(std::move(rl));
  std::vector<size_t> users(from.size(), 0);
  downstreams_.for_each([&](h2::H2Connection* h) {
    size_t i = static_cast<DownstreamConn*>(h)->listener_index();
    if (i < users.size()) ++users[i];
  });
  for (size_t p : r.pinned_routers) {
    if (p < users.size()) ++users[p];
  }
  router_to.assign(from.size(), -1);
  for (size_t j = 0; j < r.listener_from.size(); ++j) {
    if (r.listener_from[j] >= 0)
      router_to[static_cast<size_t>(r.listener_from[j])] = static_cast<int>(j);
  }
  // Removed listeners keep a router while their connections drain: calls a client sent before
  // it saw the GOAWAY are still routed as that listener routed them.
  const size_t n = r.listener_from.size();
  retired_listeners_.clear();
  for (size_t k = 0; k < from.size(); ++k) {
    if (router_to[k] >= 0 || users[k] == 0) continue;
    router_to[k] = static_cast<int>(n + retired_listeners_.size());
    retired_listeners_.push_back(std::move(from[k]));
  }
  // Per-listener state kept in the context (counters...) follows router_to here too.
  std::vector<ListenerCounters> counts(n + retired_listeners_.size());
  for (size_t k = 0; k < router_to.size() && k < stats_.listeners.size(); ++k) {
    if (router_to[k] >= 0) counts[static_cast<size_t>(router_to[k])] = stats_.listeners[k];
  }
  stats_.listeners = std::move(counts);
  std::vector<DownstreamConn*> leaving;
  downstreams_.for_each([&](h2::H2Connection* h) {
    auto* d = static_cast<DownstreamConn*>(h);
    const size_t was = d->listener_index();
    if (was >= router_to.size() || router_to[was] < 0) return;  // cannot be: it had a user
    d->set_listener_index(static_cast<size_t>(router_to[was]));
    if (was < running && static_cast<size_t>(router_to[was]) >= n) leaving.push_back(d);
  });
  for (DownstreamConn* d : leaving) d->start_drain();  // its listener is gone: GOAWAY, drain
}

void Context::rebuild_routers() {
  routers_.clear();
  routers_.reserve(config_->listeners.size() + retired_listeners_.size());
  for (size_t i = 0; i < config_->listeners.size(); ++i) {
    routers_.emplace_back(config_->listeners[i], *config_).tls = listener_tls(config_, i);
  }
  // Cluster indices are the new config's; the routes' policies point into the kept snapshot.
  for (const RetiredListener& rl : retired_listeners_)
    routers_.emplace_back(rl.config->listeners[rl.listener], *config_).tls =
        listener_tls(rl.config, rl.listener);
}

void Context::remap_clusters(Reconfig& r) {
  const int64_t now = clock().now_ns();
  std::vector<std::unique_ptr<ClusterState>> next(r.config->clusters.size());
  for (size_t j = 0; j < next.size(); ++j) {
    const config::ClusterConfig& cc = r.config->clusters[j];
    lb::EndpointSetPtr set = j < r.sets.size() ? r.sets[j] : nullptr;
    const int from = r.cluster_from[j];
    if (from < 0) {
      auto& c = next[j] = std::make_unique<ClusterState>();
      c->config = &cc;
      c->tls = cluster_tls(r.config, j);
      c->index = j;
      c->seed = 0x9e3779b97f4a7c15ULL * (index() + 1) + j + (r.generation << 32);
      c->next_id = &next_endpoint_id_;
      c->setup(this);
      if (!set) set = std::make_shared<lb::EndpointSet>();
      c->apply(std::move(set));
      continue;
    }
    // Stays: endpoints, connections, ejections and counters kept; the policies are the new
    // config's from here on (new calls, new connections, the next ejection).
    auto& c = next[j] = std::move(clusters_[static_cast<size_t>(from)]);
    const bool lb_changed = c->config->lb != cc.lb;
    c->config = &cc;
    c->index = j;
    if (auto tls = cluster_tls(r.config, j); tls != c->tls) {
      // New certificates or CAs: no session of the old ones is offered again.
      c->tls = std::move(tls);
      for (auto* list : {&c->endpoints, &c->retiring}) {
        for (EndpointState* ep : *list) ep->tls_session.reset(nullptr);
      }
    }
    c->outlier = lb::OutlierDetector(outlier_policy(cc.outlier));
    c->slow_start = lb::SlowStart(cc.slow_start.count());
    if (set) {
      c->apply(std::move(set), now);  // like a DNS change: stays keep state, new ones ramp
    } else if (lb_changed && c->set) {
      lb::Policy policy =
          cc.lb == config::LbPolicy::kP2c ? lb::Policy::kP2c : lb::Policy::kRoundRobin;
      c->picker = lb::make_picker(policy, *c->set, c->seed + c->set->version);
    }
  }
  // Removed: no route names them any more; calls in flight finish (sweep_retired frees them).
  for (auto& c : clusters_) {
    if (!c) continue;
    c->index = SIZE_MAX;  // reports about it are dropped by the control thread
    retired_clusters_.push_back({config_, r.generation, std::move(c)});
  }
  clusters_ = std::move(next);
}

void Context::sweep_retired() {
  // A call that started before the cluster was removed may still be between attempts (no
  // endpoint counts it then): nothing is torn down while any such call remains.
  const uint64_t oldest = generations_.front().id;
  for (size_t i = 0; i < retired_clusters_.size();) {
    RetiredCluster& rc = retired_clusters_[i];
    if (oldest < rc.removed_in) {
      ++i;
      continue;
    }
    ClusterState& c = *rc.state;
    if (c.set && !c.set->empty()) c.apply(std::make_shared<lb::EndpointSet>(), clock().now_ns());
    if (c.endpoints.empty() && c.retiring.empty()) {
      retired_clusters_.erase(retired_clusters_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;  // connections still closing: the next sweep (a reload, an old call's end) frees it
    }
  }
}

}  // namespace ringlb::core::proxy

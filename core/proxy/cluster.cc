#include "core/proxy/cluster.h"

#include <algorithm>
#include <array>
#include <unordered_map>

#include "core/proxy/context.h"
#include "core/proxy/upstream.h"

namespace ringlb::core::proxy {

ClusterState::~ClusterState() {
  // Shard teardown: connections are closed and reclaimed before this runs.
  if (ctx != nullptr && timer.armed()) ctx->timers().cancel(timer);
  for (EndpointState* ep : endpoints) delete ep;
  for (EndpointState* ep : retiring) delete ep;
}

lb::OutlierPolicy outlier_policy(const config::OutlierConfig& o) {
  lb::OutlierPolicy p;
  p.enabled = o.enabled;
  p.consecutive_failures = o.consecutive_failures;
  p.consecutive_unavailable = o.consecutive_unavailable;
  p.base_ejection_ns = o.base_ejection.count();
  p.max_ejection_ns = o.max_ejection.count();
  p.max_ejected_percent = o.max_ejected_percent;
  return p;
}

void ClusterState::setup(Context* owner) {
  ctx = owner;
  timer.handler = this;
  outlier = lb::OutlierDetector(outlier_policy(config->outlier));
  slow_start = lb::SlowStart(config->slow_start.count());
}

void ClusterState::apply(lb::EndpointSetPtr next, int64_t now_ns) {
  // Slow start is for endpoints that join a cluster in service; the first set (start-up) and
  // the first answer after an empty one ramp nobody: all would ramp alike, which changes nothing.
  const bool ramp_new = slow_start.enabled() && set != nullptr && !set->empty();
  bool ramping = false;
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
        st->id = next_id != nullptr ? ++*next_id : 0;
        if (ramp_new) {
          st->ramp_start_ns = now_ns;
          st->weight_permille = slow_start.permille(0);
        }
      }
    }
    st->endpoint = e;
    st->index = static_cast<int>(i);
    ramping |= st->ramp_start_ns >= 0;  // new, or back from retirement mid-ramp
    fresh[i] = st;
    counts[i] = st->outstanding;
  }
  // Install the new set before retiring anything: retiring can fail calls over to other
  // endpoints, and those picks must already see the new set.
  set = std::move(next);
  endpoints = std::move(fresh);
  outstanding = std::move(counts);
  eligibility.resize(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    eligibility.set_flags(i, endpoints[i]->ineligible);
    eligibility.set_weight_permille(i, endpoints[i]->weight_permille);
  }
  lb::Policy policy =
      config->lb == config::LbPolicy::kP2c ? lb::Policy::kP2c : lb::Policy::kRoundRobin;
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
  if (ramping) arm(now_ns + slow_start.step_ns());
}

EndpointState* ClusterState::pick(std::span<const uint64_t> avoid) {
  // Endpoints this call already tried, by their index in the current set (a retry only: the
  // first attempt has none, and pays nothing for this).
  std::array<int, 8> avoid_index;
  size_t n = 0;
  for (uint64_t id : avoid) {
    for (size_t i = 0; i < endpoints.size() && n < avoid_index.size(); ++i) {
      if (endpoints[i]->id == id) avoid_index[n++] = static_cast<int>(i);
    }
  }
  lb::PickContext pc;
  pc.outstanding = outstanding;
  pc.eligibility = &eligibility;
  pc.avoid = std::span<const int>(avoid_index.data(), n);
  pc.attempt = static_cast<uint32_t>(avoid.size());
  pc.panic_percent = config->outlier.panic_threshold;
  int i = picker->pick(pc);
  panics += pc.panic;
  counters.no_endpoint += i < 0;
  return i < 0 ? nullptr : endpoints[static_cast<size_t>(i)];
}

void ClusterState::set_eligibility(EndpointState& ep, uint8_t ineligible_bits,
                                   uint16_t weight_permille) {
  ep.ineligible = ineligible_bits;
  ep.weight_permille = weight_permille;
  if (ep.index < 0) return;  // not in the set: nothing to pick from
  eligibility.set_flags(static_cast<size_t>(ep.index), ineligible_bits);
  eligibility.set_weight_permille(static_cast<size_t>(ep.index), weight_permille);
}

void ClusterState::call_started(EndpointState& ep) {
  ++ep.counters.attempts;
  ++ep.outstanding;
  if (ep.index >= 0) ++outstanding[static_cast<size_t>(ep.index)];
}

void ClusterState::call_finished(EndpointState& ep) {
  --ep.outstanding;
  if (ep.index >= 0)
    --outstanding[static_cast<size_t>(ep.index)];
  else
    maybe_forget(ep);
}

void ClusterState::maybe_forget(EndpointState& ep) {
  if (!ep.unused()) return;
  auto it = std::find(retiring.begin(), retiring.end(), &ep);
  if (it != retiring.end()) {
    retiring.erase(it);
    delete &ep;
  }
}

base::Result<UpstreamConn*> ClusterState::connection_for(Context& ctx, EndpointState& ep) {
  UpstreamConn* found = nullptr;
  ep.conns.for_each([&found](h2::H2Connection* h) {
    auto* c = static_cast<UpstreamConn*>(h);
    if (found == nullptr && c->accepting() && c->has_room()) found = c;
  });
  if (found != nullptr) return found;
  auto* c = new UpstreamConn(ctx, *this, ep);
  if (auto started = c->start(); !started) {
    delete c;
    return base::Unexpected(started.error());
  }
  ep.conns.push_back(c);
  return c;
}

}  // namespace ringlb::core::proxy

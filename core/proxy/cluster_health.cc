// ClusterState, its eligibility half: passive outlier ejection from this shard's own attempts,
// what the control thread says every shard should see (ejections confirmed or taken back, health
// checks), ejection ends and slow-start ramps on one timer per cluster. Membership (the snapshot)
// is never touched here. Owner: the shard of the cluster.
#include <algorithm>
#include <cstdint>
#include <optional>

#include "core/proxy/cluster.h"
#include "core/proxy/context.h"

namespace ringlb::core::proxy {

void ClusterState::record_outcome(EndpointState& ep, Outcome o, int64_t now_ns) {
  std::optional<lb::Trip> trip = outlier.count(ep.outlier, o);
  // A removed endpoint takes no new calls anyway: nothing to eject it from.
  if (!trip || ep.index < 0) return;
  // Rare, so one clock read: the turn's time can be seconds old when a completion wakes an idle
  // shard, and the ejection's length should not shrink by that much.
  if (ctx != nullptr) now_ns = std::max(now_ns, ctx->clock().now_ns());
  const int64_t d = outlier.eject(ep.outlier, now_ns, endpoints.size(), ejected_count());
  if (d > 0) {
    change_flags(ep, ep.ineligible | lb::kEjected, now_ns);
    arm(ep.outlier.ejected_until_ns);
  }
  if (ctx != nullptr) ctx->report_ejection(*this, ep, *trip, d);
}

void ClusterState::apply_eligibility(std::string_view key, uint8_t mask, uint8_t bits,
                                     int64_t until_ns, uint32_t streak, int64_t now_ns) {
  EndpointState* ep = find(key);
  if (ep == nullptr) return;  // not (or no longer) known here; a later set brings it fresh
  if (mask & lb::kEjected) {
    lb::EndpointOutlier& o = ep->outlier;
    if (bits & lb::kEjected) {
      o.ejected_until_ns = std::max<int64_t>(until_ns, 1);  // 0 would read as "not ejected"
      o.local_failures = o.unavailable = 0;
      arm(o.ejected_until_ns);
    } else if (o.ejected()) {
      o.ejected_until_ns = 0;
      o.returned_ns = now_ns;
    }
    o.streak = streak;
  }
  change_flags(*ep, static_cast<uint8_t>((ep->ineligible & ~mask) | (bits & mask)), now_ns);
}

void ClusterState::change_flags(EndpointState& ep, uint8_t bits, int64_t now_ns) {
  uint16_t w = ep.weight_permille;
  if (bits != 0) {
    ep.ramp_start_ns = -1;  // out of rotation: when it is back, it ramps from the floor again
  } else if (ep.ineligible != 0 && slow_start.enabled()) {
    ep.ramp_start_ns = now_ns;
    w = slow_start.permille(0);
    arm(now_ns + slow_start.step_ns());
  }
  set_eligibility(ep, bits, w);
}

void ClusterState::tick(int64_t now_ns) {
  int64_t next = INT64_MAX;
  auto expire = [&](EndpointState* ep) {
    if (!ep->outlier.ejected()) return;
    if (outlier.expire(ep->outlier, now_ns)) {
      change_flags(*ep, static_cast<uint8_t>(ep->ineligible & ~lb::kEjected), now_ns);
    } else {
      next = std::min(next, ep->outlier.ejected_until_ns);
    }
  };
  for (EndpointState* ep : endpoints) expire(ep);
  for (EndpointState* ep : retiring) expire(ep);  // it may come back before its time is up
  for (EndpointState* ep : endpoints) {
    if (ep->ramp_start_ns < 0) continue;
    const uint16_t w = slow_start.permille(now_ns - ep->ramp_start_ns);
    if (w >= lb::Eligibility::kFullWeight) {
      ep->ramp_start_ns = -1;
    } else {
      next = std::min(next, now_ns + slow_start.step_ns());
    }
    set_eligibility(*ep, ep->ineligible, w);
  }
  if (ctx == nullptr) return;
  if (next == INT64_MAX) {
    ctx->timers().cancel(timer);
  } else {
    ctx->timers().arm(timer, next);
  }
}

void ClusterState::on_timer(io::Timer&) {
  tick(ctx->now());
}

void ClusterState::arm(int64_t deadline_ns) {
  if (ctx == nullptr) return;
  if (!timer.armed() || deadline_ns < timer.deadline_ns) ctx->timers().arm(timer, deadline_ns);
}

size_t ClusterState::ejected_count() const {
  size_t n = 0;
  for (const EndpointState* ep : endpoints) n += ep->outlier.ejected();
  return n;
}

// Control-rate (a message per ejection or health change): a scan beats keeping an index.
EndpointState* ClusterState::find(std::string_view key) {
  for (auto* list : {&endpoints, &retiring}) {
    for (EndpointState* ep : *list) {
      if (ep->key == key) return ep;
    }
  }
  return nullptr;
}

}  // namespace ringlb::core::proxy

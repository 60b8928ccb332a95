// Controller, its eligibility half: what every shard should see of each endpoint's ejection and
// health. Shards eject at once on their own detector's word and report; here the ejection is
// confirmed for every shard (with the backoff the whole process has counted) or taken back
// (max_ejected_percent across the cluster), ends when due, and health checks set or clear
// lb::kUnhealthy. Every change reaches every shard as one ShardMessage::kEligibility; membership
// is never republished for any of it. Owner: the control thread.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <iterator>
#include <string>

#include "core/base/log.h"
#include "core/runtime/control.h"
#include "core/runtime/shard.h"
#include "lb/eligibility.h"

namespace ringlb::core::runtime {

namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kRefusedLogEveryNs = 10 * kS;
constexpr int64_t kEjectLogEveryNs = 1 * kS;

// "5s", "1.5s", "250ms": ejection lengths in log lines.
std::string duration_text(int64_t ns) {
  char buf[32];
  if (ns % kS == 0) {
    snprintf(buf, sizeof buf, "%" PRId64 "s", ns / kS);
  } else if (ns >= kS) {
    snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ns) / kS);
  } else {
    snprintf(buf, sizeof buf, "%" PRId64 "ms", ns / 1'000'000);
  }
  return buf;
}

}  // namespace

void Controller::broadcast(size_t cluster, const std::string& key, uint8_t mask,
                           const EndpointEligibility& e) {
  EligibilityUpdate u;
  u.key = key;
  u.mask = mask;
  u.bits = e.bits & mask;
  u.until_ns = e.outlier.ejected_until_ns;
  u.streak = e.outlier.streak;
  for (Shard* s : shards_) s->post_eligibility(cluster, u);
}

void Controller::on_ejection_report(const ShardReport& r, int64_t now) {
  auto& cluster = eligibility_[r.cluster];
  EndpointEligibility& e = cluster[r.key];
  e.name = r.endpoint;
  if (r.members > 0) members_[r.cluster] = r.members;
  if (e.outlier.ejected() && now < e.outlier.ejected_until_ns) {
    // Another shard got there first. The reporting one ejected on its own count: give it (and
    // everyone) the length decided then, so they all end together.
    if (r.kind == ShardReport::Kind::kEjected) broadcast(r.cluster, r.key, lb::kEjected, e);
    return;
  }
  if (r.kind == ShardReport::Kind::kNotEjected) {
    refuse_ejection(r.cluster, e, r, now);
    return;
  }
  const lb::OutlierDetector& detector = outlier_[r.cluster];
  if (e.outlier.ejected()) {  // due, and its timer has not fired yet
    detector.expire(e.outlier, now);
    e.bits &= static_cast<uint8_t>(~lb::kEjected);
  }
  size_t already = 0;
  for (const auto& [key, other] : cluster) {
    already += other.outlier.ejected() && now < other.outlier.ejected_until_ns;
  }
  const int64_t d = detector.eject(e.outlier, now, members_[r.cluster], already);
  if (d == 0) {
    refuse_ejection(r.cluster, e, r, now);
    broadcast(r.cluster, r.key, lb::kEjected, e);  // the reporting shard takes it back
    return;
  }
  e.bits |= lb::kEjected;
  e.ejected_at_ns = now;
  ++e.ejections;
  log_ejection(r, e, d, now);
  broadcast(r.cluster, r.key, lb::kEjected, e);
  if (!eject_timer_.armed() || e.outlier.ejected_until_ns < eject_timer_.deadline_ns) {
    timers_.arm(eject_timer_, e.outlier.ejected_until_ns);
  }
}

// One line per ejection and one when it ends, except for an endpoint ejected again less than
// kEjectLogEveryNs after the last line about it (only with a tiny base_ejection): those pairs
// are counted, and the next line says how many went unlogged.
void Controller::log_ejection(const ShardReport& r, EndpointEligibility& e, int64_t d,
                              int64_t now) {
  e.ejection_logged = e.logged_ns == 0 || now - e.logged_ns >= kEjectLogEveryNs;
  if (!e.ejection_logged) {
    ++e.unlogged;
    return;
  }
  std::string more;
  if (e.unlogged > 0) more = "; " + std::to_string(e.unlogged) + " more ejections not logged";
  e.logged_ns = now;
  e.unlogged = 0;
  LOG_WARN("cluster %s: endpoint %s ejected for %s: %s (shard %u; ejection %u in a row%s)",
           config_->clusters[r.cluster].name.c_str(), r.endpoint.c_str(), duration_text(d).c_str(),
           r.detail.c_str(), r.shard, e.outlier.streak, more.c_str());
}

// The cap said no (on the reporting shard, or here across the cluster): the endpoint stays in.
// Says so at most once per 10 s per endpoint: a failing endpoint trips again every few calls.
void Controller::refuse_ejection(size_t cluster, EndpointEligibility& e, const ShardReport& r,
                                 int64_t now) {
  if (e.refused_logged_ns != 0 && now - e.refused_logged_ns < kRefusedLogEveryNs) return;
  e.refused_logged_ns = now;
  const config::ClusterConfig& c = config_->clusters[cluster];
  const size_t members = members_[cluster];
  LOG_WARN(
      "cluster %s: endpoint %s not ejected (%s): max_ejected_percent = %u lets %zu of %zu "
      "endpoints be out at once, and they are (shard %u)",
      c.name.c_str(), r.endpoint.c_str(), r.detail.c_str(), c.outlier.max_ejected_percent,
      lb::max_ejectable(members, c.outlier.max_ejected_percent), members, r.shard);
}

void Controller::expire_ejections(int64_t now) {
  int64_t next = INT64_MAX;
  for (size_t c = 0; c < eligibility_.size(); ++c) {
    const lb::OutlierDetector& detector = outlier_[c];
    auto& cluster = eligibility_[c];
    for (auto it = cluster.begin(); it != cluster.end();) {
      EndpointEligibility& e = it->second;
      if (e.outlier.ejected() && detector.expire(e.outlier, now)) {
        e.bits &= static_cast<uint8_t>(~lb::kEjected);
        if (e.ejection_logged) {
          LOG_INFO("cluster %s: endpoint %s un-ejected after %s", config_->clusters[c].name.c_str(),
                   e.name.c_str(), duration_text(now - e.ejected_at_ns).c_str());
        }
        // Shards end it on their own timers at the same deadline; this makes sure they agree.
        broadcast(c, it->first, lb::kEjected, e);
      }
      if (e.outlier.ejected()) next = std::min(next, e.outlier.ejected_until_ns);
      const bool forgettable =
          e.bits == 0 && !e.outlier.ejected() && detector.decayed_streak(e.outlier, now) == 0 &&
          (e.refused_logged_ns == 0 || now - e.refused_logged_ns >= kRefusedLogEveryNs) &&
          (e.logged_ns == 0 || now - e.logged_ns >= kEjectLogEveryNs);
      it = forgettable ? cluster.erase(it) : std::next(it);
    }
  }
  if (next != INT64_MAX) timers_.arm(eject_timer_, next);
}

void Controller::set_health(size_t cluster, const std::string& key, bool healthy) {
  auto& map = eligibility_[cluster];
  auto it = map.find(key);
  if (it == map.end() && healthy) return;  // nothing recorded means healthy already
  EndpointEligibility& e = it != map.end() ? it->second : map[key];
  if (e.name.empty()) e.name = lb::endpoint_key_text(key);
  const uint8_t want = healthy ? 0 : lb::kUnhealthy;
  if ((e.bits & lb::kUnhealthy) == want) return;
  e.bits = static_cast<uint8_t>((e.bits & ~lb::kUnhealthy) | want);
  const char* cname = config_->clusters[cluster].name.c_str();
  // The health checker's own line (on_health_change) says why; this one is for debugging.
  LOG_DEBUG("cluster %s: endpoint %s: health %s on every shard", cname, e.name.c_str(),
            healthy ? "restored" : "taken away");
  broadcast(cluster, key, lb::kUnhealthy, e);
}

void Controller::rebroadcast_eligibility(size_t cluster) {
  for (const auto& [key, e] : eligibility_[cluster]) {
    if (e.bits != 0) broadcast(cluster, key, lb::kUnhealthy | lb::kEjected, e);
  }
}

}  // namespace ringlb::core::runtime

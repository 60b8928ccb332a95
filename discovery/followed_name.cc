#include "discovery/followed_name.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>

namespace ringlb::discovery {

// Route 53 answers at most 8 records, picked at random per answer. With M members a member is
// missing from one answer with probability 1 - 8/M, so holding it for h intervals wrongly
// drops about 8 (1 - 8/M)^(h+1) members per refresh. Size h so that stays under 1/100.
int64_t capped_answer_hold(int64_t interval_ns, size_t members) {
  if (members <= 8) return 3 * interval_ns;
  double miss = 1.0 - 8.0 / static_cast<double>(members);
  double h = std::ceil(std::log(0.01 / 8.0) / std::log(miss)) - 1.0;
  h = std::clamp(h, 3.0, 100.0);
  return static_cast<int64_t>(h) * interval_ns;
}

std::string seconds_text(int64_t ns) {
  char b[32];
  snprintf(b, sizeof b, "%.3gs", static_cast<double>(ns) / 1e9);
  return b;
}

FollowedName::FollowedName(std::string name, RecordType type, RefreshPolicy policy, uint64_t seed)
    : name_(std::move(name)),
      type_(type),
      hold_configured_(policy.hold_ns >= 0),
      configured_hold_ns_(policy.hold_ns),
      schedule_(policy, seed) {}

int64_t FollowedName::hold_for(size_t answer_size) const {
  if (hold_configured_) return configured_hold_ns_;
  int64_t hold = schedule_.hold_ns();
  if (answer_size >= 8) {  // the answer may be capped: expect members to come and go
    size_t members = std::max(members_.members().size(), answer_size);
    hold = std::max(hold, capped_answer_hold(schedule_.good_interval_ns(), members));
  }
  return hold;
}

FollowedName::Step FollowedName::record(const LookupResult& r, int64_t now_ns) {
  Step step;
  // First the schedule, so that hold_for sees the interval this answer's TTL set.
  step.next_query_in_ns = schedule_.record(r.outcome, r.ttl, now_ns);
  last_refresh_ns_ = now_ns;
  bool changed = false;
  std::string note;
  switch (r.outcome) {
    case QueryOutcome::kOk:
      last_result_ = "ok: " + std::to_string(r.endpoints.size()) + " records, ttl " +
                     std::to_string(r.ttl) + "s";
      changed = members_.merge(r.endpoints, now_ns, hold_for(r.endpoints.size()));
      break;
    case QueryOutcome::kEmpty:
      last_result_ = r.detail;
      note = "DNS name " + name_ + ": " + r.detail;
      if (schedule_.stale(now_ns)) {
        note += " for " + seconds_text(now_ns - schedule_.empty_since_ns().value_or(now_ns)) +
                " (past stale_after)";
        changed = members_.clear();
      }
      break;
    case QueryOutcome::kFailure:
      last_result_ = r.detail;
      note = "DNS name " + name_ + ": " + r.detail;
      break;
  }
  const size_t n = members_.members().size();
  if (schedule_.state_changed()) {
    const std::string head = "DNS " + name_ + " " + record_type_name(type_) + ": ";
    if (r.outcome == QueryOutcome::kOk) {
      step.log = Log::kInfo;
      step.log_text = head + last_result_ + "; " + std::to_string(n) + " members";
    } else {
      step.log = Log::kWarn;
      step.log_text = head + r.detail + "; keeping " + std::to_string(n) + " members, retry in " +
                      seconds_text(step.next_query_in_ns);
    }
  }
  // Readiness waits for a real answer (records or NXDOMAIN); failures keep the bounded wait.
  if (r.outcome != QueryOutcome::kFailure) answered_ = true;
  // Shards need a new snapshot when members change, or when the set is empty and the reason
  // clients will read has changed.
  if (n == 0 && note.empty()) note = "DNS name " + name_ + ": no members";
  if (changed || !published_ || (n == 0 && note != published_note_)) {
    step.publish = snapshot(n == 0 ? note : std::string());
  }
  return step;
}

lb::EndpointSetPtr FollowedName::snapshot(const std::string& note) {
  auto set = std::make_shared<lb::EndpointSet>(*members_.snapshot(++version_));
  set->note = note;
  published_ = true;
  published_note_ = note;
  return set;
}

}  // namespace ringlb::discovery

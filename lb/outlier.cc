#include "lb/outlier.h"

#include <algorithm>
#include <cassert>

namespace ringlb::lb {

const char* eject_reason_text(EjectReason r) {
  switch (r) {
    case EjectReason::kLocalFailures:
      return "consecutive local-origin failures";
    case EjectReason::kUnavailable:
      return "consecutive UNAVAILABLE";
  }
  return "?";
}

size_t max_ejectable(size_t members, uint32_t percent) {
  return members * std::min<uint32_t>(percent, 100) / 100;
}

int64_t ejection_duration(const OutlierPolicy& p, uint32_t k) {
  assert(k >= 1);
  int64_t d = std::max<int64_t>(p.base_ejection_ns, 1);
  // Doubling stops at max, so the loop runs at most ~63 times even for absurd k.
  for (uint32_t i = 1; i < k && d < p.max_ejection_ns; ++i) d *= 2;
  return std::min(d, std::max(p.max_ejection_ns, p.base_ejection_ns));
}

OutlierDetector::OutlierDetector(OutlierPolicy p) : p_(p) {
  p_.max_ejection_ns = std::max(p_.max_ejection_ns, p_.base_ejection_ns);
  while (ejection_duration(p_, max_streak_) < p_.max_ejection_ns) ++max_streak_;
}

std::optional<Trip> OutlierDetector::count(EndpointOutlier& s, Outcome o) const {
  if (!p_.enabled || s.ejected()) return std::nullopt;
  switch (o) {
    case Outcome::kSuccess:
    case Outcome::kOtherStatus:
      s.local_failures = 0;
      s.unavailable = 0;
      return std::nullopt;
    case Outcome::kLocalFailure:
      ++s.local_failures;
      break;
    case Outcome::kUnavailable:
      ++s.unavailable;
      break;
  }
  std::optional<Trip> trip;
  if (p_.consecutive_failures > 0 && s.local_failures >= p_.consecutive_failures) {
    trip = Trip{EjectReason::kLocalFailures, s.local_failures};
  } else if (p_.consecutive_unavailable > 0 && s.unavailable >= p_.consecutive_unavailable) {
    trip = Trip{EjectReason::kUnavailable, s.unavailable};
  }
  if (trip) {
    s.local_failures = 0;
    s.unavailable = 0;
  }
  return trip;
}

uint32_t OutlierDetector::decayed_streak(const EndpointOutlier& s, int64_t now) const {
  uint32_t k = s.streak;
  int64_t in = now - s.returned_ns;
  while (k > 0 && in >= ejection_duration(p_, k)) {
    in -= ejection_duration(p_, k);
    --k;
  }
  return k;
}

int64_t OutlierDetector::eject(EndpointOutlier& s, int64_t now, size_t members,
                               size_t already) const {
  assert(!s.ejected());
  if (already + 1 > max_ejectable(members, p_.max_ejected_percent)) return 0;
  const uint32_t k = std::min(decayed_streak(s, now) + 1, max_streak_);
  const int64_t d = ejection_duration(p_, k);
  s.streak = k;
  s.ejected_until_ns = now + d;
  s.local_failures = 0;
  s.unavailable = 0;
  return d;
}

bool OutlierDetector::expire(EndpointOutlier& s, int64_t now) const {
  if (!s.ejected() || now < s.ejected_until_ns) return false;
  s.ejected_until_ns = 0;
  s.returned_ns = now;
  return true;
}

}  // namespace ringlb::lb

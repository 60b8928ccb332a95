#include "discovery/refresh.h"

#include <algorithm>

namespace ringlb::discovery {

RefreshSchedule::RefreshSchedule(RefreshPolicy p, uint64_t seed) : policy_(p), rng_(seed) {
  policy_.min_refresh_ns = std::max<int64_t>(policy_.min_refresh_ns, 1);
  policy_.max_refresh_ns = std::max(policy_.max_refresh_ns, policy_.min_refresh_ns);
  policy_.backoff_base_ns = std::max<int64_t>(policy_.backoff_base_ns, 1);
  good_interval_ns_ = policy_.min_refresh_ns;
}

// splitmix64: tiny, seedable with any value (0 included), and plenty for jitter.
uint64_t RefreshSchedule::next_random() {
  uint64_t z = (rng_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int64_t RefreshSchedule::record(QueryOutcome o, uint32_t ttl_s, int64_t now_ns) {
  changed_ = !last_.has_value() || *last_ != o;
  last_ = o;
  switch (o) {
    case QueryOutcome::kOk: {
      // uint32 seconds in ns stays below 2^63, so no overflow before the clamp.
      const int64_t ttl_ns = static_cast<int64_t>(ttl_s) * 1'000'000'000;
      good_interval_ns_ = std::clamp(ttl_ns, policy_.min_refresh_ns, policy_.max_refresh_ns);
      failures_ = 0;
      empty_since_ns_.reset();
      return good_interval_ns_;
    }
    case QueryOutcome::kEmpty:
      failures_ = 0;
      if (!empty_since_ns_) empty_since_ns_ = now_ns;
      return good_interval_ns_;
    case QueryOutcome::kFailure: {
      int64_t d = std::min(policy_.backoff_base_ns, policy_.max_refresh_ns);
      // The loop stops at the cap, so a long outage cannot overflow the doubling.
      for (int i = 0; i < failures_ && d < policy_.max_refresh_ns; ++i) {
        d = d > policy_.max_refresh_ns / 2 ? policy_.max_refresh_ns : d * 2;
      }
      ++failures_;
      // Jitter spreads the retries of many balancers that lost the same resolver at once.
      const int64_t lo = d / 2;
      const uint64_t span = static_cast<uint64_t>(d - lo) + 1;
      return lo + static_cast<int64_t>(next_random() % span);
    }
  }
  return good_interval_ns_;
}

int64_t RefreshSchedule::hold_ns() const {
  // Three intervals: a member of a larger-than-8 service must be missed by several answers in a
  // row before it is believed gone.
  return policy_.hold_ns >= 0 ? policy_.hold_ns : 3 * good_interval_ns_;
}

bool RefreshSchedule::stale(int64_t now_ns) const {
  return empty_since_ns_.has_value() && now_ns - *empty_since_ns_ >= policy_.stale_after_ns;
}

}  // namespace ringlb::discovery

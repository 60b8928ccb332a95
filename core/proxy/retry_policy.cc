#include "core/proxy/retry_policy.h"

#include <algorithm>
#include <charconv>

namespace ringlb::core::proxy {

int64_t RetryBudget::cap(const config::RetryPolicy& p) {
  // One second of floor plus the share of 100 calls: enough for a burst of failures on a busy
  // cluster, never enough to double the load.
  return (static_cast<int64_t>(p.budget_min_per_second) + p.budget_percent) * kToken;
}

void RetryBudget::refill(const config::RetryPolicy& p, int64_t now_ns) {
  if (milli_ < 0) {
    milli_ = static_cast<int64_t>(p.budget_min_per_second) * kToken;
    last_ns_ = now_ns;
    return;
  }
  if (now_ns <= last_ns_) return;
  // milli-tokens per nanosecond = min_per_second * 1000 / 1e9; keep the remainder's time.
  const int64_t per_s = static_cast<int64_t>(p.budget_min_per_second) * kToken;
  if (per_s == 0) {
    last_ns_ = now_ns;
    return;
  }
  // Whole seconds and the fraction apart, so neither overflows nor is lost (1.5 s adds 1.5
  // seconds' floor, not one).
  constexpr int64_t kSecond = 1'000'000'000;
  const int64_t elapsed = now_ns - last_ns_;
  const int64_t part = per_s * (elapsed % kSecond) / kSecond;
  const int64_t add = per_s * (elapsed / kSecond) + part;
  if (add == 0) return;  // less than a milli-token: let the time accumulate
  if (milli_ + add >= cap(p)) {
    milli_ = cap(p);  // full: the time past the cap buys nothing
    last_ns_ = now_ns;
    return;
  }
  milli_ += add;
  last_ns_ += elapsed / kSecond * kSecond + part * kSecond / per_s;
}

void RetryBudget::on_call(const config::RetryPolicy& p, int64_t now_ns) {
  refill(p, now_ns);
  milli_ = std::min(cap(p), milli_ + static_cast<int64_t>(p.budget_percent) * kToken / 100);
}

bool RetryBudget::try_spend(const config::RetryPolicy& p, int64_t now_ns) {
  refill(p, now_ns);
  if (milli_ < kToken) return false;
  milli_ -= kToken;
  return true;
}

int64_t backoff_ns(const config::RetryPolicy& p, unsigned retry, uint64_t random) {
  const int64_t base = p.backoff.count();
  const int64_t max = p.max_backoff.count();
  if (base <= 0 || max <= 0) return 0;
  int64_t ceiling = base;
  for (unsigned i = 1; i < retry && ceiling < max; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, max);
  return static_cast<int64_t>(random % static_cast<uint64_t>(ceiling + 1));
}

int64_t per_try_ns(const config::RetryPolicy& p, int64_t now_ns, int64_t deadline_ns) {
  int64_t t = p.per_try_timeout.count();
  if (p.per_try_share_permille > 0 && deadline_ns > now_ns) {
    const int64_t share = (deadline_ns - now_ns) / 1000 * p.per_try_share_permille;
    if (share > 0 && (t == 0 || share < t)) t = share;
  }
  return t;
}

int64_t parse_pushback_ms(std::string_view value, bool present) {
  if (!present) return kNoPushback;
  int64_t ms = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
  if (ec != std::errc() || p != value.data() + value.size() || value.empty() || ms < 0) {
    return kPushbackStop;
  }
  return std::min<int64_t>(ms, 24LL * 3600 * 1000);
}

}  // namespace ringlb::core::proxy

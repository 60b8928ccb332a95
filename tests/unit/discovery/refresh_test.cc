#include "discovery/refresh.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

using ringlb::discovery::QueryOutcome;
using ringlb::discovery::RefreshPolicy;
using ringlb::discovery::RefreshSchedule;

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

RefreshPolicy policy() {
  RefreshPolicy p;
  p.min_refresh_ns = 5 * kSec;
  p.max_refresh_ns = 30 * kSec;
  p.stale_after_ns = 300 * kSec;
  p.backoff_base_ns = 250 * kMs;
  return p;
}

}  // namespace

TEST_CASE("refresh: a good answer's TTL is clamped to [min_refresh, max_refresh]") {
  RefreshSchedule s(policy(), 1);
  CHECK(s.record(QueryOutcome::kOk, 0, 0) == 5 * kSec);  // TTL 0 -> min
  CHECK(s.record(QueryOutcome::kOk, 2, 0) == 5 * kSec);  // below min
  CHECK(s.record(QueryOutcome::kOk, 5, 0) == 5 * kSec);
  CHECK(s.record(QueryOutcome::kOk, 10, 0) == 10 * kSec);
  CHECK(s.record(QueryOutcome::kOk, 30, 0) == 30 * kSec);
  CHECK(s.record(QueryOutcome::kOk, 3600, 0) == 30 * kSec);        // above max
  CHECK(s.record(QueryOutcome::kOk, UINT32_MAX, 0) == 30 * kSec);  // no overflow
  CHECK(s.good_interval_ns() == 30 * kSec);
}

TEST_CASE("refresh: defaults follow the documented numbers") {
  RefreshSchedule s(RefreshPolicy{}, 1);
  CHECK(s.record(QueryOutcome::kOk, 0, 0) == 1 * kSec);
  CHECK(s.record(QueryOutcome::kOk, 60, 0) == 30 * kSec);
  CHECK(s.hold_ns() == 90 * kSec);
}

TEST_CASE("refresh: empty answers keep the last good cadence") {
  RefreshSchedule fresh(policy(), 1);
  CHECK(fresh.record(QueryOutcome::kEmpty, 99, 0) == 5 * kSec);  // no good answer yet: min
  RefreshSchedule s(policy(), 1);
  s.record(QueryOutcome::kOk, 12, 0);
  CHECK(s.record(QueryOutcome::kEmpty, 0, kSec) == 12 * kSec);
  CHECK(s.record(QueryOutcome::kEmpty, 1000, 2 * kSec) == 12 * kSec);  // TTL of empty ignored
}

TEST_CASE("refresh: failures back off exponentially with jitter in [d/2, d], capped") {
  const RefreshPolicy p = policy();
  std::vector<int64_t> lows(12, INT64_MAX), highs(12, 0);
  for (uint64_t seed = 0; seed < 500; ++seed) {
    RefreshSchedule s(p, seed);
    s.record(QueryOutcome::kOk, 10, 0);
    for (int k = 0; k < 12; ++k) {
      const int64_t nominal = std::min(p.backoff_base_ns << k, p.max_refresh_ns);
      const int64_t d = s.record(QueryOutcome::kFailure, 0, 0);
      INFO("seed " << seed << " failure " << k);
      CHECK(d >= nominal / 2);
      CHECK(d <= nominal);
      CHECK(s.consecutive_failures() == k + 1);
      lows[k] = std::min(lows[k], d);
      highs[k] = std::max(highs[k], d);
    }
  }
  // 250 ms, 500 ms, 1 s, ... 16 s, then the 30 s cap from the 8th failure on.
  for (int k = 0; k < 12; ++k) {
    const int64_t nominal = std::min(p.backoff_base_ns << k, p.max_refresh_ns);
    INFO("failure " << k);
    // The jitter really spreads over the whole range, not one point.
    CHECK(lows[k] < nominal / 2 + nominal / 20);
    CHECK(highs[k] > nominal - nominal / 20);
  }
  CHECK(highs[11] <= 30 * kSec);
  CHECK(highs[7] > 16 * kSec);  // 250 ms << 7 = 32 s, capped to 30 s
}

TEST_CASE("refresh: backoff is reproducible from the seed and differs between seeds") {
  auto run = [](uint64_t seed) {
    RefreshSchedule s(policy(), seed);
    std::vector<int64_t> out;
    for (int i = 0; i < 8; ++i) out.push_back(s.record(QueryOutcome::kFailure, 0, 0));
    return out;
  };
  CHECK(run(42) == run(42));
  CHECK(run(42) != run(43));
}

TEST_CASE("refresh: a success (or any answer) resets the backoff") {
  RefreshSchedule s(policy(), 3);
  for (int i = 0; i < 6; ++i) s.record(QueryOutcome::kFailure, 0, 0);
  CHECK(s.consecutive_failures() == 6);
  CHECK(s.record(QueryOutcome::kOk, 10, 0) == 10 * kSec);
  CHECK(s.consecutive_failures() == 0);
  const int64_t d = s.record(QueryOutcome::kFailure, 0, 0);
  CHECK(d >= 125 * kMs);
  CHECK(d <= 250 * kMs);  // from the base again
  s.record(QueryOutcome::kFailure, 0, 0);
  s.record(QueryOutcome::kEmpty, 0, 0);  // the server answered: not a failing resolver
  CHECK(s.consecutive_failures() == 0);
}

TEST_CASE("refresh: a base above the cap backs off at the cap") {
  RefreshPolicy p = policy();
  p.backoff_base_ns = 60 * kSec;
  RefreshSchedule s(p, 5);
  for (int i = 0; i < 4; ++i) {
    const int64_t d = s.record(QueryOutcome::kFailure, 0, 0);
    CHECK(d >= 15 * kSec);
    CHECK(d <= 30 * kSec);
  }
}

TEST_CASE("refresh: stale after stale_after of continuous empty answers, not before") {
  RefreshSchedule s(policy(), 1);
  CHECK_FALSE(s.stale(0));
  CHECK_FALSE(s.stale(10'000 * kSec));  // never empty: never stale
  s.record(QueryOutcome::kOk, 10, 0);
  const int64_t first_empty = 100 * kSec;
  s.record(QueryOutcome::kEmpty, 0, first_empty);
  CHECK(s.empty_since_ns() == first_empty);
  for (int64_t t = first_empty + 10 * kSec; t < first_empty + 300 * kSec; t += 10 * kSec) {
    s.record(QueryOutcome::kEmpty, 0, t);
    CHECK_FALSE(s.stale(t));
  }
  CHECK(s.empty_since_ns() == first_empty);  // the streak started at the first empty answer
  CHECK_FALSE(s.stale(first_empty + 300 * kSec - 1));
  CHECK(s.stale(first_empty + 300 * kSec));
  CHECK(s.stale(first_empty + 1000 * kSec));
}

TEST_CASE("refresh: a good answer ends the empty streak; failures do not") {
  RefreshSchedule s(policy(), 1);
  s.record(QueryOutcome::kEmpty, 0, 0);
  s.record(QueryOutcome::kFailure, 0, 100 * kSec);
  s.record(QueryOutcome::kEmpty, 0, 200 * kSec);
  CHECK(s.stale(300 * kSec));  // failures in between neither end nor restart the streak
  s.record(QueryOutcome::kOk, 10, 310 * kSec);
  CHECK_FALSE(s.stale(310 * kSec));
  CHECK_FALSE(s.empty_since_ns().has_value());
  s.record(QueryOutcome::kEmpty, 0, 320 * kSec);  // a new streak starts from here
  CHECK_FALSE(s.stale(320 * kSec + 299 * kSec));
  CHECK(s.stale(320 * kSec + 300 * kSec));
  // A failure alone never starts a streak.
  RefreshSchedule f(policy(), 1);
  f.record(QueryOutcome::kFailure, 0, 0);
  CHECK_FALSE(f.stale(1000 * kSec));
}

TEST_CASE("refresh: hold is configured or 3 x the current interval") {
  RefreshSchedule derived(policy(), 1);
  CHECK(derived.hold_ns() == 15 * kSec);  // before any answer: 3 x min_refresh
  derived.record(QueryOutcome::kOk, 10, 0);
  CHECK(derived.hold_ns() == 30 * kSec);
  derived.record(QueryOutcome::kOk, 3600, 0);
  CHECK(derived.hold_ns() == 90 * kSec);
  derived.record(QueryOutcome::kFailure, 0, 0);  // backoff does not shorten the hold
  CHECK(derived.hold_ns() == 90 * kSec);

  RefreshPolicy p = policy();
  p.hold_ns = 7 * kSec;
  RefreshSchedule fixed(p, 1);
  fixed.record(QueryOutcome::kOk, 20, 0);
  CHECK(fixed.hold_ns() == 7 * kSec);
  p.hold_ns = 0;
  RefreshSchedule strict(p, 1);
  strict.record(QueryOutcome::kOk, 20, 0);
  CHECK(strict.hold_ns() == 0);
}

TEST_CASE("refresh: state_changed toggles on a change of outcome kind") {
  RefreshSchedule s(policy(), 1);
  CHECK_FALSE(s.state_changed());
  CHECK_FALSE(s.last_outcome().has_value());
  s.record(QueryOutcome::kOk, 10, 0);
  CHECK(s.state_changed());  // first outcome
  s.record(QueryOutcome::kOk, 20, 1);
  CHECK_FALSE(s.state_changed());  // a different TTL is the same kind
  s.record(QueryOutcome::kFailure, 0, 2);
  CHECK(s.state_changed());
  s.record(QueryOutcome::kFailure, 0, 3);
  CHECK_FALSE(s.state_changed());
  s.record(QueryOutcome::kEmpty, 0, 4);
  CHECK(s.state_changed());
  s.record(QueryOutcome::kEmpty, 0, 5);
  CHECK_FALSE(s.state_changed());
  s.record(QueryOutcome::kOk, 10, 6);
  CHECK(s.state_changed());
  CHECK(s.last_outcome() == QueryOutcome::kOk);
}

TEST_CASE("refresh: a broken policy is repaired, not trusted") {
  RefreshPolicy p;
  p.min_refresh_ns = 0;
  p.max_refresh_ns = -5;
  p.backoff_base_ns = 0;
  RefreshSchedule s(p, 1);
  CHECK(s.record(QueryOutcome::kOk, 0, 0) >= 1);
  CHECK(s.record(QueryOutcome::kFailure, 0, 0) >= 0);
  CHECK(s.record(QueryOutcome::kOk, 100, 0) == 1);  // max repaired up to min
}

// Passive outlier detection: consecutive counts, the ejection cap and its rounding, the doubling
// backoff and its decay, expiry. Time is plain nanoseconds, so every boundary is exact.
#include "lb/outlier.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>

using ringlb::lb::ejection_duration;
using ringlb::lb::EjectReason;
using ringlb::lb::EndpointOutlier;
using ringlb::lb::max_ejectable;
using ringlb::lb::Outcome;
using ringlb::lb::OutlierDetector;
using ringlb::lb::OutlierPolicy;
using ringlb::lb::Trip;

namespace {

constexpr int64_t kS = 1'000'000'000;

// Feeds `n` outcomes `o`; returns the last one's trip (earlier ones must not trip).
std::optional<Trip> feed(const OutlierDetector& d, EndpointOutlier& s, Outcome o, int n) {
  std::optional<Trip> t;
  for (int i = 0; i < n; ++i) {
    if (t) FAIL("tripped before the last outcome");
    t = d.count(s, o);
  }
  return t;
}

}  // namespace

TEST_CASE("outlier: three consecutive local failures trip, and the counts restart") {
  OutlierDetector d;  // defaults: 3 and 3
  EndpointOutlier s;
  auto t = feed(d, s, Outcome::kLocalFailure, 3);
  REQUIRE(t);
  CHECK(t->reason == EjectReason::kLocalFailures);
  CHECK(t->count == 3);
  CHECK(s.local_failures == 0);
  CHECK(s.unavailable == 0);
  CHECK_FALSE(feed(d, s, Outcome::kLocalFailure, 2));  // restarted: two is not enough
  CHECK(d.count(s, Outcome::kLocalFailure));
}

TEST_CASE("outlier: three consecutive UNAVAILABLE trip; a success or another status resets") {
  OutlierDetector d;
  EndpointOutlier s;
  feed(d, s, Outcome::kUnavailable, 2);
  CHECK_FALSE(d.count(s, Outcome::kSuccess));
  CHECK(s.unavailable == 0);
  feed(d, s, Outcome::kUnavailable, 2);
  CHECK_FALSE(d.count(s, Outcome::kOtherStatus));  // NOT_FOUND etc.: the backend works
  CHECK(s.unavailable == 0);
  auto t = feed(d, s, Outcome::kUnavailable, 3);
  REQUIRE(t);
  CHECK(t->reason == EjectReason::kUnavailable);
  CHECK(t->count == 3);
}

TEST_CASE("outlier: local failures and UNAVAILABLE count apart; neither resets the other") {
  OutlierDetector d;
  EndpointOutlier s;
  feed(d, s, Outcome::kUnavailable, 2);
  feed(d, s, Outcome::kLocalFailure, 2);
  CHECK(s.unavailable == 2);
  CHECK(s.local_failures == 2);
  auto t = d.count(s, Outcome::kUnavailable);
  REQUIRE(t);
  CHECK(t->reason == EjectReason::kUnavailable);
  CHECK(s.local_failures == 0);  // both restart on a trip
}

TEST_CASE("outlier: thresholds from the policy; 0 turns one kind off; disabled counts nothing") {
  OutlierPolicy p;
  p.consecutive_failures = 0;
  p.consecutive_unavailable = 5;
  OutlierDetector d(p);
  EndpointOutlier s;
  CHECK_FALSE(feed(d, s, Outcome::kLocalFailure, 50));
  auto t = feed(d, s, Outcome::kUnavailable, 5);
  REQUIRE(t);
  CHECK(t->count == 5);

  p.enabled = false;
  OutlierDetector off(p);
  EndpointOutlier s2;
  CHECK_FALSE(feed(off, s2, Outcome::kUnavailable, 50));
  CHECK(s2.unavailable == 0);
}

TEST_CASE("outlier: outcomes that arrive while ejected are not counted") {
  OutlierDetector d;
  EndpointOutlier s;
  REQUIRE(d.eject(s, 10 * kS, 4, 0) == 5 * kS);
  CHECK_FALSE(feed(d, s, Outcome::kUnavailable, 10));
  CHECK(s.unavailable == 0);
  CHECK(d.expire(s, 15 * kS));
  feed(d, s, Outcome::kUnavailable, 2);
  CHECK(s.unavailable == 2);
}

TEST_CASE("outlier: max_ejectable rounds down, so the share is never exceeded") {
  CHECK(max_ejectable(3, 50) == 1);  // 1.5
  CHECK(max_ejectable(2, 50) == 1);
  CHECK(max_ejectable(1, 50) == 0);  // a lone endpoint stays in
  CHECK(max_ejectable(1, 99) == 0);
  CHECK(max_ejectable(1, 100) == 1);
  CHECK(max_ejectable(4, 50) == 2);
  CHECK(max_ejectable(10, 33) == 3);
  CHECK(max_ejectable(10, 0) == 0);
  CHECK(max_ejectable(10, 100) == 10);
  CHECK(max_ejectable(0, 100) == 0);
  CHECK(max_ejectable(7, 250) == 7);  // over 100 reads as 100
}

TEST_CASE("outlier: the cap refuses an ejection and leaves the endpoint as it was") {
  OutlierDetector d;  // 50%
  EndpointOutlier a, b, c;
  CHECK(d.eject(a, kS, 3, 0) == 5 * kS);
  CHECK(d.eject(b, kS, 3, 1) == 0);  // one of three is already out: 2/3 > 50%
  CHECK_FALSE(b.ejected());
  CHECK(b.streak == 0);
  CHECK(d.eject(c, kS, 4, 1) == 5 * kS);  // 2 of 4 = 50%: allowed
}

TEST_CASE("outlier: ejection doubles from base to max with each ejection in a row") {
  OutlierPolicy p;  // 5 s .. 60 s
  CHECK(ejection_duration(p, 1) == 5 * kS);
  CHECK(ejection_duration(p, 2) == 10 * kS);
  CHECK(ejection_duration(p, 3) == 20 * kS);
  CHECK(ejection_duration(p, 4) == 40 * kS);
  CHECK(ejection_duration(p, 5) == 60 * kS);
  CHECK(ejection_duration(p, 6) == 60 * kS);
  CHECK(ejection_duration(p, 1000) == 60 * kS);

  OutlierDetector d(p);
  EndpointOutlier s;
  int64_t now = 100 * kS;
  const int64_t want[] = {5, 10, 20, 40, 60, 60, 60};
  for (int64_t w : want) {
    CAPTURE(w);
    REQUIRE(d.eject(s, now, 2, 0) == w * kS);
    CHECK(s.ejected_until_ns == now + w * kS);
    CHECK_FALSE(d.expire(s, s.ejected_until_ns - 1));  // not a nanosecond early
    now = s.ejected_until_ns;
    CHECK(d.expire(s, now));
    CHECK(s.returned_ns == now);
    // Fails again at once: the next one is longer.
  }
  CHECK(s.streak == 5);  // stops growing at max: the decay from max is not endless
}

TEST_CASE("outlier: the streak decays one step per stretch in rotation as long as that step") {
  OutlierDetector d;  // 5 s .. 60 s
  EndpointOutlier s;
  int64_t now = 0;
  for (int i = 0; i < 3; ++i) {  // 5, 10, 20: k = 3
    d.eject(s, now, 2, 0);
    now = s.ejected_until_ns;
    d.expire(s, now);
  }
  REQUIRE(s.streak == 3);
  const int64_t back = now;
  CHECK(d.decayed_streak(s, back) == 3);
  CHECK(d.decayed_streak(s, back + 20 * kS - 1) == 3);
  CHECK(d.decayed_streak(s, back + 20 * kS) == 2);
  CHECK(d.decayed_streak(s, back + 30 * kS - 1) == 2);
  CHECK(d.decayed_streak(s, back + 30 * kS) == 1);
  CHECK(d.decayed_streak(s, back + 35 * kS) == 0);
  CHECK(d.decayed_streak(s, back + 3600 * kS) == 0);

  // Failing again after 25 s in: one step off (k = 2), then the next ejection is k = 3: 20 s.
  EndpointOutlier t = s;
  CHECK(d.eject(t, back + 25 * kS, 2, 0) == 20 * kS);
  CHECK(t.streak == 3);
  // At once: k = 4, 40 s.
  t = s;
  CHECK(d.eject(t, back, 2, 0) == 40 * kS);
  // After 35 s in: from scratch, 5 s.
  t = s;
  CHECK(d.eject(t, back + 35 * kS, 2, 0) == 5 * kS);
  CHECK(t.streak == 1);
}

TEST_CASE("outlier: base equal to max ejects for the same time every time") {
  OutlierPolicy p;
  p.base_ejection_ns = p.max_ejection_ns = 2 * kS;
  OutlierDetector d(p);
  EndpointOutlier s;
  for (int i = 0; i < 5; ++i) {
    CHECK(d.eject(s, i * 10 * kS, 2, 0) == 2 * kS);
    CHECK(d.expire(s, s.ejected_until_ns));
  }
  CHECK(s.streak == 1);
}

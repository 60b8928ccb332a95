// Slow start: the weight share as a function of time since an endpoint (re)became eligible, and
// what the pickers make of it. Time is plain nanoseconds, so every boundary is exact.
#include "lb/slow_start.h"

#include <doctest/doctest.h>

#include <vector>

#include "lb/eligibility.h"
#include "lb/picker.h"
#include "lb_test_util.h"

using ringlb::lb::Eligibility;
using ringlb::lb::PickContext;
using ringlb::lb::Policy;
using ringlb::lb::SlowStart;

namespace {
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
}  // namespace

TEST_CASE("slow start: linear from the floor to full weight over the window") {
  SlowStart s(10 * kS);
  CHECK(s.enabled());
  CHECK(s.permille(0) == SlowStart::kFloorPermille);
  CHECK(s.permille(-5 * kS) == SlowStart::kFloorPermille);  // a start in the future: the floor
  CHECK(s.permille(1 * kS) == 190);
  CHECK(s.permille(5 * kS) == 550);
  CHECK(s.permille(9 * kS) == 910);
  CHECK(s.permille(10 * kS - 1) == 999);
  CHECK(s.permille(10 * kS) == 1000);
  CHECK(s.permille(3600 * kS) == 1000);
  // Monotonic, never below the floor, never above full.
  uint16_t last = 0;
  for (int64_t t = 0; t <= 10 * kS; t += 37 * kMs) {
    uint16_t w = s.permille(t);
    CHECK(w >= last);
    CHECK(w >= SlowStart::kFloorPermille);
    CHECK(w <= Eligibility::kFullWeight);
    last = w;
  }
}

TEST_CASE("slow start: off means full weight at once; updates come window / 10 apart") {
  SlowStart off;
  CHECK_FALSE(off.enabled());
  CHECK(off.permille(0) == 1000);
  SlowStart s(10 * kS);
  CHECK(s.step_ns() == 1 * kS);
  CHECK(SlowStart(5 * kMs).step_ns() == 1 * kMs);  // never faster than 1 ms
  CHECK(SlowStart(-1).enabled() == false);
  // A very long window is exact too (no overflow in the product).
  SlowStart hour(3600 * kS);
  CHECK(hour.permille(1800 * kS) == 550);
}

TEST_CASE("slow start: a ramping endpoint takes its share of calls, growing with the window") {
  for (Policy policy : {Policy::kRoundRobin, Policy::kP2c}) {
    CAPTURE(policy == Policy::kRoundRobin ? "round_robin" : "p2c");
    auto set = ringlb::lb::test::make_set({1, 1, 1, 1});
    auto picker = ringlb::lb::make_picker(policy, set, 3);
    Eligibility el(4);
    SlowStart s(10 * kS);
    std::vector<uint32_t> outstanding(4, 0);
    PickContext ctx{.outstanding = outstanding, .eligibility = &el};
    double last_share = 0;
    for (int64_t t : {0 * kS, 2 * kS, 5 * kS, 8 * kS, 10 * kS}) {
      CAPTURE(t / kS);
      el.set_weight_permille(3, s.permille(t));
      const int picks = 40'000;
      int to_new = 0;
      for (int i = 0; i < picks; ++i) to_new += picker->pick(ctx) == 3;
      CHECK_FALSE(ctx.panic);
      // Its expected share: w / (3000 + w), w in per mille against three at full weight.
      const double w = s.permille(t);
      const double want = w / (3000 + w);
      const double got = static_cast<double>(to_new) / picks;
      CHECK(got == doctest::Approx(want).epsilon(0.08));
      CHECK(got > last_share);
      last_share = got;
    }
    CHECK(el.all_clear());  // at full weight again: the fast path is back
  }
}

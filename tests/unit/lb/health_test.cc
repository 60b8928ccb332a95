// The active health check's state machine: thresholds, NOT_SERVING at once, UNIMPLEMENTED as
// liveness, the cadence and deadlines, and Watch's place beside the checks. Time is int64 ns
// passed by hand: every instant below is exact.
#include "lb/health.h"

#include <doctest/doctest.h>

using ringlb::lb::CheckOutcome;
using ringlb::lb::HealthChange;
using ringlb::lb::HealthCheckState;
using ringlb::lb::HealthPolicy;

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kT0 = 1'000 * kMs;

HealthPolicy policy(uint32_t unhealthy = 2, uint32_t healthy = 2) {
  HealthPolicy p;
  p.interval_ns = 2'000 * kMs;
  p.timeout_ns = 500 * kMs;
  p.unhealthy = unhealthy;
  p.healthy = healthy;
  return p;
}

// One whole check at `now`: start, then `o`.
HealthChange check(HealthCheckState& s, int64_t now, CheckOutcome o) {
  REQUIRE(s.due(now));
  s.start_check(now);
  return s.finish_check(o);
}

}  // namespace

TEST_SUITE("lb.health") {
  TEST_CASE("starts healthy with the first check due at once") {
    HealthCheckState s(policy(), kT0);
    CHECK(s.healthy());
    CHECK_FALSE(s.in_flight());
    CHECK(s.due(kT0));
    CHECK_FALSE(s.due(kT0 - 1));
    CHECK(s.wake_at_ns() == kT0);
  }

  TEST_CASE("unhealthy after `unhealthy` failures in a row, not before") {
    HealthCheckState s(policy(3, 2), kT0);
    CHECK(check(s, kT0, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(s.healthy());
    CHECK(s.failures() == 2);
    CHECK(check(s, kT0 + 4'000 * kMs, CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
    CHECK_FALSE(s.healthy());
    // Further failures change nothing more.
    CHECK(check(s, kT0 + 6'000 * kMs, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(s.failures() == 4);
  }

  TEST_CASE("a success breaks a run of failures") {
    HealthCheckState s(policy(2, 2), kT0);
    CHECK(check(s, kT0, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(s.failures() == 0);
    CHECK(check(s, kT0 + 4'000 * kMs, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(s.healthy());
  }

  TEST_CASE("healthy again after `healthy` successes in a row; a failure restarts the count") {
    HealthCheckState s(policy(1, 3), kT0);
    int64_t t = kT0;
    CHECK(check(s, t, CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK(s.successes() == 0);
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK_FALSE(s.healthy());
    CHECK(check(s, t += 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kBecameHealthy);
    CHECK(s.healthy());
  }

  TEST_CASE("NOT_SERVING takes the endpoint out at once, whatever the threshold") {
    HealthCheckState s(policy(5, 2), kT0);
    CHECK(check(s, kT0, CheckOutcome::kNotServing) == HealthChange::kBecameUnhealthy);
    CHECK_FALSE(s.healthy());
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kNotServing) == HealthChange::kNone);
    // Back after `healthy` SERVING checks, counted from the last NOT_SERVING.
    CHECK(check(s, kT0 + 4'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(check(s, kT0 + 6'000 * kMs, CheckOutcome::kServing) == HealthChange::kBecameHealthy);
  }

  TEST_CASE("UNIMPLEMENTED counts as a success (liveness) and is remembered") {
    HealthCheckState s(policy(1, 2), kT0);
    CHECK_FALSE(s.unsupported());
    CHECK(check(s, kT0, CheckOutcome::kUnsupported) == HealthChange::kNone);
    CHECK(s.healthy());
    CHECK(s.unsupported());
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
    CHECK(check(s, kT0 + 4'000 * kMs, CheckOutcome::kUnsupported) == HealthChange::kNone);
    CHECK(check(s, kT0 + 6'000 * kMs, CheckOutcome::kUnsupported) == HealthChange::kBecameHealthy);
  }

  TEST_CASE("cadence: every interval from the last start; deadline = start + timeout") {
    HealthCheckState s(policy(), kT0);
    s.start_check(kT0);
    CHECK(s.in_flight());
    CHECK(s.deadline_ns() == kT0 + 500 * kMs);
    CHECK(s.wake_at_ns() == kT0 + 500 * kMs);
    CHECK_FALSE(s.timed_out(kT0 + 500 * kMs - 1));
    CHECK(s.timed_out(kT0 + 500 * kMs));
    CHECK_FALSE(s.due(kT0 + 2'000 * kMs));  // one at a time
    s.finish_check(CheckOutcome::kServing);
    CHECK_FALSE(s.timed_out(kT0 + 600 * kMs));
    // Answered after 10 ms: the next check is still due at start + interval, not answer + it.
    CHECK(s.wake_at_ns() == kT0 + 2'000 * kMs);
    CHECK_FALSE(s.due(kT0 + 2'000 * kMs - 1));
    CHECK(s.due(kT0 + 2'000 * kMs));
  }

  TEST_CASE("a check that outlives the interval delays the next one instead of overlapping") {
    HealthPolicy p = policy();
    p.timeout_ns = 3'000 * kMs;  // longer than the interval
    HealthCheckState s(p, kT0);
    s.start_check(kT0);
    CHECK_FALSE(s.due(kT0 + 2'500 * kMs));
    s.finish_check(CheckOutcome::kServing);
    CHECK(s.due(kT0 + 2'500 * kMs));  // overdue: starts as soon as the last one ended
  }

  TEST_CASE("a hung server: unhealthy at (unhealthy - 1) intervals + one timeout") {
    // What the I/O does: wake at wake_at_ns(); a check past its deadline fails; start when due.
    HealthCheckState s(policy(3, 2), kT0);
    int64_t now = kT0;
    int64_t became = -1;
    for (int wakeups = 0; wakeups < 20 && became < 0; ++wakeups) {
      now = s.wake_at_ns();
      if (s.timed_out(now) &&
          s.finish_check(CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy) {
        became = now;
      }
      if (s.due(now)) s.start_check(now);
    }
    CHECK(became == kT0 + 2 * 2'000 * kMs + 500 * kMs);
  }

  TEST_CASE("a connect failure fails the check at once; the next waits for the cadence") {
    HealthCheckState s(policy(2, 2), kT0);
    s.start_check(kT0);
    CHECK(s.finish_check(CheckOutcome::kFailed) == HealthChange::kNone);
    CHECK_FALSE(s.due(kT0 + 1));  // no reconnect storm against a refusing port
    CHECK(s.wake_at_ns() == kT0 + 2'000 * kMs);
    s.start_check(s.wake_at_ns());
    CHECK(s.finish_check(CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
  }

  TEST_CASE("a late answer after the check was failed for its timeout says nothing") {
    HealthCheckState s(policy(1, 1), kT0);
    s.start_check(kT0);
    CHECK(s.finish_check(CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
    CHECK(s.finish_check(CheckOutcome::kServing) == HealthChange::kNone);
    CHECK_FALSE(s.healthy());
  }

  TEST_CASE("Watch: NOT_SERVING at once, SERVING counts for nothing") {
    HealthCheckState s(policy(2, 2), kT0);
    CHECK(s.on_watch(CheckOutcome::kServing, kT0) == HealthChange::kNone);
    CHECK(s.on_watch(CheckOutcome::kNotServing, kT0 + 10 * kMs) == HealthChange::kBecameUnhealthy);
    // Watch's SERVING (a new stream starts with one) does not bring it back...
    CHECK(s.on_watch(CheckOutcome::kServing, kT0 + 20 * kMs) == HealthChange::kNone);
    CHECK(s.on_watch(CheckOutcome::kServing, kT0 + 30 * kMs) == HealthChange::kNone);
    CHECK_FALSE(s.healthy());
    // ... `healthy` SERVING checks do.
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kNone);
    CHECK(check(s, kT0 + 4'000 * kMs, CheckOutcome::kServing) == HealthChange::kBecameHealthy);
  }

  TEST_CASE("Watch: a check sent before NOT_SERVING arrived cannot count as a success") {
    HealthCheckState s(policy(2, 1), kT0);
    s.start_check(kT0);
    CHECK(s.on_watch(CheckOutcome::kNotServing, kT0 + 5 * kMs) == HealthChange::kBecameUnhealthy);
    CHECK(s.finish_check(CheckOutcome::kServing) == HealthChange::kNone);  // maybe stale
    CHECK_FALSE(s.healthy());
    CHECK(s.successes() == 0);
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kBecameHealthy);
  }

  TEST_CASE("thresholds of 0 are read as 1") {
    HealthCheckState s(policy(0, 0), kT0);
    CHECK(check(s, kT0, CheckOutcome::kFailed) == HealthChange::kBecameUnhealthy);
    CHECK(check(s, kT0 + 2'000 * kMs, CheckOutcome::kServing) == HealthChange::kBecameHealthy);
  }
}

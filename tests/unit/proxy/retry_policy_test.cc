// Retry arithmetic on its own (no reactor, no clock but the numbers passed in): the retry
// budget's tokens, exact on time; the full-jitter backoff's bounds, doubling and ceiling; the
// per-try timeout (fixed, a share of the time left, both); grpc-retry-pushback-ms.
#include "core/proxy/retry_policy.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>

using ringlb::core::config::RetryPolicy;
using namespace ringlb::core::proxy;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kT = RetryBudget::kToken;  // one token, in milli-tokens

RetryPolicy budget(uint32_t percent, uint32_t min_per_second) {
  RetryPolicy p;
  p.budget_percent = percent;
  p.budget_min_per_second = min_per_second;
  return p;
}

// Spends every whole token there is at `now`; returns how many.
int spend_all(RetryBudget& b, const RetryPolicy& p, int64_t now) {
  int n = 0;
  while (b.try_spend(p, now) && n < 1'000'000) ++n;
  return n;
}

}  // namespace

TEST_CASE("retry budget: starts with one second's floor, and spending takes whole tokens") {
  const RetryPolicy p = budget(0, 3);
  RetryBudget b;
  const int64_t t0 = 5 * kS;
  CHECK(b.try_spend(p, t0));  // the first look fills to the floor: 3 tokens
  CHECK(b.tokens() == 2 * kT);
  CHECK(b.try_spend(p, t0));
  CHECK(b.try_spend(p, t0));
  CHECK(b.tokens() == 0);
  CHECK_FALSE(b.try_spend(p, t0));  // nothing left; a refusal spends nothing
  CHECK(b.tokens() == 0);
}

TEST_CASE("retry budget: time adds the floor per second, exactly, to the millisecond") {
  const RetryPolicy p = budget(0, 1);  // 1 token a second: 1 milli-token a millisecond
  RetryBudget b;
  int64_t now = 0;
  REQUIRE(b.try_spend(p, now));
  CHECK(b.tokens() == 0);
  now += 999 * kMs;
  CHECK_FALSE(b.try_spend(p, now));
  CHECK(b.tokens() == 999);
  now += 1 * kMs;
  CHECK(b.try_spend(p, now));  // one second after the last token went: the next one is there
  CHECK(b.tokens() == 0);
  // Less than a milli-token's worth of time is not lost: it adds up across looks.
  for (int i = 0; i < 4; ++i) {
    now += 250'000;  // a quarter of a millisecond
    CHECK_FALSE(b.try_spend(p, now));
  }
  CHECK(b.tokens() == 1);
}

TEST_CASE("retry budget: 10 a second is one milli-token every 100 us") {
  const RetryPolicy p = budget(0, 10);
  RetryBudget b;
  const int64_t t0 = 0;
  CHECK(spend_all(b, p, t0) == 10);
  CHECK_FALSE(b.try_spend(p, t0 + 150'000));  // 150 us: 1 milli-token, 50 us kept
  CHECK(b.tokens() == 1);
  CHECK_FALSE(b.try_spend(p, t0 + 200'000));  // the kept 50 us and 50 more
  CHECK(b.tokens() == 2);
  CHECK(spend_all(b, p, t0 + 100 * kMs) == 1);  // 100 ms: one token
  CHECK(b.tokens() == 0);
}

TEST_CASE(
    "retry budget: every call adds its share; the bucket holds a second's floor plus 100 "
    "calls' share") {
  const RetryPolicy p = budget(20, 10);  // cap: (10 + 20) tokens
  RetryBudget b;
  const int64_t t0 = 0;
  b.on_call(p, t0);
  CHECK(b.tokens() == 10 * kT + 200);  // the floor, plus a fifth of a token
  CHECK(spend_all(b, p, t0) == 10);
  CHECK(b.tokens() == 200);
  for (int i = 0; i < 4; ++i) b.on_call(p, t0);
  CHECK(b.tokens() == kT);  // five calls: one retry
  CHECK(b.try_spend(p, t0));
  CHECK_FALSE(b.try_spend(p, t0));

  for (int i = 0; i < 1000; ++i) b.on_call(p, t0);
  CHECK(b.tokens() == 30 * kT);  // capped
  CHECK(spend_all(b, p, t0) == 30);
}

TEST_CASE("retry budget: a long quiet spell banks no more than the cap") {
  const RetryPolicy p = budget(0, 5);
  RetryBudget b;
  CHECK(spend_all(b, p, 0) == 5);
  CHECK(spend_all(b, p, 3600 * kS) == 5);  // an hour later: still one second's floor
}

TEST_CASE("retry budget: time past a whole second keeps its fraction") {
  // 10 a second with room for 30: 1.5 s after the bucket emptied it holds 15 tokens, not 10.
  const RetryPolicy p = budget(20, 10);
  RetryBudget b;
  const int64_t t0 = 0;
  CHECK(spend_all(b, p, t0) == 10);
  CHECK(b.tokens() == 0);
  CHECK_FALSE(b.try_spend(p, t0 + 100'000 - 1));  // under a milli-token's worth: nothing yet
  CHECK(b.tokens() == 0);
  CHECK(b.try_spend(p, t0 + 1500 * kMs));
  CHECK(b.tokens() == 14 * kT);
  // And the next half second adds exactly 5 more.
  CHECK(spend_all(b, p, t0 + 2000 * kMs) == 19);
  CHECK(b.tokens() == 0);
}

TEST_CASE("retry budget: no floor and no share is no retries at all") {
  const RetryPolicy p = budget(0, 0);
  RetryBudget b;
  b.on_call(p, 0);
  CHECK_FALSE(b.try_spend(p, 0));
  CHECK_FALSE(b.try_spend(p, 100 * kS));
  for (int i = 0; i < 100; ++i) b.on_call(p, 100 * kS);
  CHECK_FALSE(b.try_spend(p, 100 * kS));
  CHECK(b.tokens() == 0);
}

TEST_CASE("retry budget: share only (no floor): 100% gives one retry per call, no more") {
  const RetryPolicy p = budget(100, 0);
  RetryBudget b;
  CHECK_FALSE(b.try_spend(p, 0));  // nothing before the first call
  b.on_call(p, 0);
  CHECK(b.try_spend(p, 0));
  CHECK_FALSE(b.try_spend(p, 0));
  for (int i = 0; i < 500; ++i) b.on_call(p, kS);
  CHECK(spend_all(b, p, 10 * kS) == 100);  // capped at 100 calls' share; time adds nothing
}

TEST_CASE("backoff: full jitter in [0, ceiling], the ceiling doubling up to max_backoff") {
  RetryPolicy p;
  p.backoff = 25ms;
  p.max_backoff = 250ms;
  const int64_t base = 25 * kMs;
  // random % (ceiling + 1): both ends of the range are reachable.
  CHECK(backoff_ns(p, 1, 0) == 0);
  CHECK(backoff_ns(p, 1, static_cast<uint64_t>(base)) == base);
  CHECK(backoff_ns(p, 1, static_cast<uint64_t>(base) + 1) == 0);
  CHECK(backoff_ns(p, 1, 12345) == 12345);
  // The ceiling for retry n is base * 2^(n-1), up to max_backoff.
  const int64_t ceilings[] = {25, 50, 100, 200, 250, 250};
  for (unsigned n = 1; n <= 6; ++n) {
    const int64_t c = ceilings[n - 1] * kMs;
    CAPTURE(n);
    CHECK(backoff_ns(p, n, static_cast<uint64_t>(c)) == c);
    CHECK(backoff_ns(p, n, static_cast<uint64_t>(c) + 1) == 0);
    CHECK(backoff_ns(p, n, UINT64_MAX) <= c);
  }
  CHECK(backoff_ns(p, 200, static_cast<uint64_t>(250 * kMs)) == 250 * kMs);  // no overflow
  CHECK(backoff_ns(p, 0, static_cast<uint64_t>(base)) == base);  // 0 is read as the first

  // Any random number stays in bounds.
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 10000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const int64_t d = backoff_ns(p, 3, x);
    REQUIRE(d >= 0);
    REQUIRE(d <= 100 * kMs);
  }
}

TEST_CASE("backoff: zero backoff (or zero ceiling) is no wait; backoff == max is flat") {
  RetryPolicy p;
  p.backoff = 0ms;
  p.max_backoff = 250ms;
  CHECK(backoff_ns(p, 1, UINT64_MAX) == 0);
  CHECK(backoff_ns(p, 5, 777) == 0);
  p.max_backoff = 0ms;
  CHECK(backoff_ns(p, 1, 777) == 0);
  p.backoff = 10ms;
  p.max_backoff = 10ms;
  for (unsigned n = 1; n < 5; ++n) {
    CHECK(backoff_ns(p, n, static_cast<uint64_t>(10 * kMs)) == 10 * kMs);
    CHECK(backoff_ns(p, n, static_cast<uint64_t>(10 * kMs) + 1) == 0);
  }
}

TEST_CASE("per-try timeout: fixed, a share of the time left, the smaller of both, none") {
  RetryPolicy p;
  const int64_t now = 7 * kS;
  SUBCASE("none") {
    CHECK(per_try_ns(p, now, 0) == 0);
    CHECK(per_try_ns(p, now, now + kS) == 0);
  }
  SUBCASE("fixed: the same with or without a deadline") {
    p.per_try_timeout = 300ms;
    CHECK(per_try_ns(p, now, 0) == 300 * kMs);
    CHECK(per_try_ns(p, now, now + 100 * kMs) == 300 * kMs);  // the deadline bounds it anyway
    CHECK(per_try_ns(p, now, now - kS) == 300 * kMs);
  }
  SUBCASE("share of the deadline left, at each try") {
    p.per_try_share_permille = 500;
    CHECK(per_try_ns(p, now, now + kS) == 500 * kMs);
    CHECK(per_try_ns(p, now + 500 * kMs, now + kS) == 250 * kMs);  // the next try: half of what
                                                                   // is left then
    p.per_try_share_permille = 400;
    CHECK(per_try_ns(p, now, now + 2 * kS) == 800 * kMs);
    p.per_try_share_permille = 1000;
    CHECK(per_try_ns(p, now, now + 3 * kS) == 3 * kS);
  }
  SUBCASE("share with no deadline, or the deadline already past: none") {
    p.per_try_share_permille = 500;
    CHECK(per_try_ns(p, now, 0) == 0);
    CHECK(per_try_ns(p, now, now) == 0);
    CHECK(per_try_ns(p, now, now - kS) == 0);
  }
  SUBCASE("both: the smaller") {
    p.per_try_timeout = 300ms;
    p.per_try_share_permille = 500;
    CHECK(per_try_ns(p, now, now + kS) == 300 * kMs);         // 500 ms share > 300 ms
    CHECK(per_try_ns(p, now, now + 400 * kMs) == 200 * kMs);  // 200 ms share < 300 ms
    CHECK(per_try_ns(p, now, 0) == 300 * kMs);                // no deadline: the fixed one
  }
}

TEST_CASE("grpc-retry-pushback-ms: a delay, stop, or no opinion") {
  CHECK(parse_pushback_ms("", false) == kNoPushback);
  CHECK(parse_pushback_ms("50", false) == kNoPushback);  // absent wins over any text
  CHECK(parse_pushback_ms("0", true) == 0);
  CHECK(parse_pushback_ms("50", true) == 50);
  CHECK(parse_pushback_ms("1500", true) == 1500);
  // Negative or malformed: the server says "do not retry" (gRPC A6).
  CHECK(parse_pushback_ms("-1", true) == kPushbackStop);
  CHECK(parse_pushback_ms("-50", true) == kPushbackStop);
  CHECK(parse_pushback_ms("", true) == kPushbackStop);
  CHECK(parse_pushback_ms("abc", true) == kPushbackStop);
  CHECK(parse_pushback_ms("50ms", true) == kPushbackStop);
  CHECK(parse_pushback_ms(" 50", true) == kPushbackStop);
  CHECK(parse_pushback_ms("5.5", true) == kPushbackStop);
  CHECK(parse_pushback_ms("+5", true) == kPushbackStop);
  CHECK(parse_pushback_ms("99999999999999999999999", true) == kPushbackStop);  // overflows
  // Large values are capped at a day (a retry that far out is past any deadline anyway).
  CHECK(parse_pushback_ms("99999999999", true) == 24LL * 3600 * 1000);
}

#pragma once
// Retry arithmetic, apart from the call so it can be tested on its own: the retry budget, the
// jittered backoff, the per-try timeout. Owner: one shard (a budget per cluster per shard; no
// atomics).
#include <cstdint>
#include <string_view>

#include "core/config/config.h"

namespace ringlb::core::proxy {

/// A token bucket that keeps retries from multiplying an outage: every call adds
/// budget_percent/100 of a token, time adds budget_min_per_second tokens per second (the floor a
/// quiet cluster needs), and each retry or hedge spends one. The bucket holds at most one
/// second's floor plus a share of the last calls, so a long quiet spell does not bank a burst.
class RetryBudget {
 public:
  /// Milli-tokens: integer arithmetic, exact in tests.
  static constexpr int64_t kToken = 1000;

  /// A call started (its first attempt), at `now_ns`.
  void on_call(const config::RetryPolicy& p, int64_t now_ns);
  /// Takes a token for one retry or hedge if there is one.
  bool try_spend(const config::RetryPolicy& p, int64_t now_ns);
  int64_t tokens() const { return milli_; }

 private:
  void refill(const config::RetryPolicy& p, int64_t now_ns);
  static int64_t cap(const config::RetryPolicy& p);

  int64_t milli_ = -1;  // -1: not started (the first refill fills to one second's floor)
  int64_t last_ns_ = 0;
};

/// The wait before retry number `retry` (1 = the first retry): uniformly random in
/// [0, min(max_backoff, backoff * 2^(retry-1))] ("full jitter"), from `random` (any 64 bits).
int64_t backoff_ns(const config::RetryPolicy& p, unsigned retry, uint64_t random);

/// The per-try timeout for an attempt starting at `now_ns` on a call with deadline
/// `deadline_ns` (0 = none): the fixed value, or the share of the time left; the smaller if both
/// are set. 0 = none.
int64_t per_try_ns(const config::RetryPolicy& p, int64_t now_ns, int64_t deadline_ns);

/// `grpc-retry-pushback-ms`: >= 0 is a delay the server asks for; negative or malformed means
/// "do not retry" (gRPC's A6); absent is -2 (no opinion).
int64_t parse_pushback_ms(std::string_view value, bool present);
inline constexpr int64_t kNoPushback = -2;
inline constexpr int64_t kPushbackStop = -1;

}  // namespace ringlb::core::proxy

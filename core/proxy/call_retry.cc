// Call's retries and hedges: when another attempt may start (policy, budget, deadline), its
// backoff, and the per-try timeout. The rest of the call's life is in call.cc.
#include <cstdint>
#include <string>

#include "core/proxy/call.h"
#include "core/proxy/cluster.h"
#include "core/proxy/context.h"
#include "core/proxy/retry_policy.h"

namespace ringlb::core::proxy {

using proto::StatusCode;

namespace {

// The hedge delay when the route says `after = "auto"` and sets no per-try timeout.
constexpr int64_t kDefaultHedgeNs = 100'000'000;

// Jitter for backoffs: a shard-local generator (splitmix64), seeded once per thread.
uint64_t next_random() {
  thread_local uint64_t state = 0x9e3779b97f4a7c15ULL ^ reinterpret_cast<uintptr_t>(&state);
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

void Call::arm_hedge() {
  int64_t after = hedge_->after.count();
  if (after == 0) after = per_try_ns(*retry_, ctx_.now(), deadline_ns_);
  if (after == 0) after = kDefaultHedgeNs;
  ctx_.timers().arm(hedge_timer_, ctx_.now() + after);
}

// A second attempt, in parallel with the first, to another endpoint: only while nothing has
// answered, there is a free slot, and the policy's attempts and the budget allow it.
void Call::hedge() {
  if (ds == nullptr || phase_ != Phase::kWaiting || retry_pending_) return;
  int active = 0;
  for (const Attempt& a : attempts_) {
    if (!a.active()) continue;
    if (a.state == Attempt::State::kCommitted) return;  // answered (held headers are not yet)
    ++active;
  }
  if (active == 0 || active >= static_cast<int>(kMaxAttempts)) return;
  if (req_body_.truncated() || 1u + policy_attempts_ >= retry_->attempts) return;
  if (!cluster_->retry_budget.try_spend(*retry_, ctx_.now())) {
    record_.flags |= kFlagBudgetRefused;
    ++record_.budget_refusals;
    return;
  }
  ++policy_attempts_;
  ++record_.hedges;
  dispatch();
}

bool Call::may_retry(int64_t pushback_ms, int64_t* delay_ns) {
  if (ds == nullptr || phase_ != Phase::kWaiting || retry_pending_) return false;
  if (pushback_ms == kPushbackStop || req_body_.truncated()) return false;
  if (1u + policy_attempts_ >= retry_->attempts) return false;
  *delay_ns = pushback_ms >= 0 ? pushback_ms * 1'000'000
                               : backoff_ns(*retry_, policy_attempts_ + 1u, next_random());
  if (deadline_ns_ > 0 && ctx_.now() + *delay_ns >= deadline_ns_) return false;
  if (cluster_->retry_budget.try_spend(*retry_, ctx_.now())) return true;
  record_.flags |= kFlagBudgetRefused;
  ++record_.budget_refusals;
  return false;
}

void Call::schedule_retry(int64_t delay_ns, RetryReason why) {
  ++policy_attempts_;
  ++record_.retries;
  ++record_.retries_by[static_cast<size_t>(why)];
  if (delay_ns <= 0) {
    dispatch();
    return;
  }
  retry_pending_ = true;
  ctx_.timers().arm(retry_timer_, ctx_.now() + delay_ns);
}

void Call::retry_or_fail(bool retryable, RetryReason why, StatusCode status,
                         std::string_view message) {
  if (has_attempts()) return;  // a hedged attempt is still running: it may yet answer
  int64_t delay = 0;
  if (retryable && may_retry(kNoPushback, &delay)) {
    schedule_retry(delay, why);
    return;
  }
  if (retryable && retry_->attempts > 1) record_.flags |= kFlagRetryLimit;
  fail(status, message);
}

void Call::on_per_try_timeout(Attempt& a) {
  if (!a.active() || a.state == Attempt::State::kCommitted) return;
  if (ds == nullptr || phase_ != Phase::kWaiting) return;
  record_.flags |= kFlagPerTryTimeout;
  if (hedging_) {  // the first keeps running; whichever answers first wins
    hedge();
    return;
  }
  const std::string msg =
      "ringlb: upstream " + a.endpoint->endpoint.name +
      " did not answer within the per-try timeout (" +
      // what this try had: a share is of the time left when it started
      std::to_string(per_try_ns(*retry_, a.started_ns, deadline_ns_) / 1000000) + " ms)";
  note_outcome(a, lb::Outcome::kLocalFailure);
  a.status = static_cast<int>(StatusCode::kDeadlineExceeded);
  reset_attempt(a);
  // The backend may be hung: always worth another endpoint while attempts and time remain.
  retry_or_fail(true, RetryReason::kPerTryTimeout, StatusCode::kDeadlineExceeded, msg);
}

}  // namespace ringlb::core::proxy

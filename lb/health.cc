#include "lb/health.h"

#include <cassert>

namespace ringlb::lb {

HealthCheckState::HealthCheckState(const HealthPolicy& policy, int64_t now_ns)
    : policy_(policy), next_check_ns_(now_ns) {
  if (policy_.unhealthy == 0) policy_.unhealthy = 1;
  if (policy_.healthy == 0) policy_.healthy = 1;
}

void HealthCheckState::start_check(int64_t now_ns) {
  assert(!in_flight_);
  in_flight_ = true;
  started_ns_ = now_ns;
  deadline_ns_ = now_ns + policy_.timeout_ns;
  next_check_ns_ = now_ns + policy_.interval_ns;
}

HealthChange HealthCheckState::finish_check(CheckOutcome o) {
  if (!in_flight_) return HealthChange::kNone;
  in_flight_ = false;
  switch (o) {
    case CheckOutcome::kUnsupported:
      unsupported_ = true;
      [[fallthrough]];
    case CheckOutcome::kServing:
      // Sent before a Watch said NOT_SERVING: the server may have answered before it changed.
      if (started_ns_ <= not_serving_ns_) return HealthChange::kNone;
      return success();
    case CheckOutcome::kNotServing:
      return not_serving();
    case CheckOutcome::kFailed:
      break;
  }
  return failure();
}

HealthChange HealthCheckState::on_watch(CheckOutcome o, int64_t now_ns) {
  if (o != CheckOutcome::kNotServing) return HealthChange::kNone;
  not_serving_ns_ = now_ns;
  return not_serving();
}

HealthChange HealthCheckState::success() {
  failures_ = 0;
  if (successes_ < UINT32_MAX) ++successes_;
  if (healthy_ || successes_ < policy_.healthy) return HealthChange::kNone;
  healthy_ = true;
  return HealthChange::kBecameHealthy;
}

HealthChange HealthCheckState::failure() {
  successes_ = 0;
  if (failures_ < UINT32_MAX) ++failures_;
  if (!healthy_ || failures_ < policy_.unhealthy) return HealthChange::kNone;
  healthy_ = false;
  return HealthChange::kBecameUnhealthy;
}

HealthChange HealthCheckState::not_serving() {
  successes_ = 0;
  failures_ = 0;  // not a failure to count: a verdict
  if (!healthy_) return HealthChange::kNone;
  healthy_ = false;
  return HealthChange::kBecameUnhealthy;
}

}  // namespace ringlb::lb

#pragma once
// HealthCheckState: one endpoint's active health check as pure logic: when the next check is
// due, when the one in flight has timed out, and what each result does to the endpoint's health
// under the thresholds. The control thread's HealthChecker (core/runtime/health_checker.h) does
// the I/O and asks this what to do; unit tests drive it with int64 nanosecond times.
// Owner: the control thread (one per checked endpoint). Never includes core/.
//
// The rules:
// - An endpoint starts healthy (start-up does not wait for checks) and its first check is due at
//   once, so a dead endpoint is found after `unhealthy` failed checks, not later.
// - `unhealthy` failed checks in a row make it unhealthy; `healthy` SERVING checks in a row make
//   it healthy again. NOT_SERVING makes it unhealthy at once, whatever the count.
// - A failure is anything that is not an answer: a timeout, a connect failure, a reset stream or
//   connection, a grpc-status other than OK (NOT_FOUND for an unknown service included), an
//   UNKNOWN or SERVICE_UNKNOWN status, a body that does not parse.
// - UNIMPLEMENTED (the server has no grpc.health.v1 service at all) counts as a success: the
//   server took an HTTP/2 connection and answered a gRPC call within the timeout, which is the
//   liveness a check can prove without the service's help. Envoy counts it as a failure, which
//   takes every endpoint of a cluster whose servers lack the service out of rotation (the
//   picker's panic mode then routes to all of them anyway): a rolling deploy that adds the
//   service, or a cluster that enables checks before its servers have them, would then lose the
//   new or old half. The checker logs a warning once per endpoint so the operator knows these
//   endpoints are checked for liveness only.
// - Checks start on a fixed cadence (every `interval` from the last start), one at a time: a
//   check that outlives the interval delays the next one instead of overlapping it.
// - Watch (server streaming) adds immediacy, not counting: a NOT_SERVING it delivers takes the
//   endpoint out at once; its SERVING messages count for nothing, because the initial SERVING of
//   every new stream would otherwise halve the `healthy` threshold. Check polls keep running
//   beside a Watch: a hung server keeps its Watch stream open and silent, and only a check with a
//   deadline notices. A check in flight when NOT_SERVING arrived cannot bring the endpoint back
//   with a SERVING it may have read before the change.
#include <cstdint>

namespace ringlb::lb {

struct HealthPolicy {
  int64_t interval_ns = 2'000'000'000;
  int64_t timeout_ns = 500'000'000;
  uint32_t unhealthy = 2;  // >= 1
  uint32_t healthy = 2;    // >= 1
};

/// What one check, or one Watch message, said.
enum class CheckOutcome : uint8_t {
  kServing,      // SERVING
  kNotServing,   // NOT_SERVING: unhealthy at once
  kFailed,       // counts toward `unhealthy`
  kUnsupported,  // UNIMPLEMENTED: counts as a success (see above)
};

enum class HealthChange : uint8_t { kNone, kBecameUnhealthy, kBecameHealthy };

class HealthCheckState {
 public:
  /// Healthy, first check due at `now_ns`. Thresholds of 0 are read as 1.
  HealthCheckState(const HealthPolicy& policy, int64_t now_ns);

  bool healthy() const { return healthy_; }
  bool in_flight() const { return in_flight_; }
  /// True once a check came back UNIMPLEMENTED (the checker warns once).
  bool unsupported() const { return unsupported_; }
  uint32_t failures() const { return failures_; }    // in a row
  uint32_t successes() const { return successes_; }  // in a row
  /// When the check in flight times out (meaningful while in_flight()).
  int64_t deadline_ns() const { return deadline_ns_; }
  /// When the next check may start.
  int64_t next_check_ns() const { return next_check_ns_; }
  /// When the I/O should wake for this endpoint: the deadline of the check in flight, else when
  /// the next one is due.
  int64_t wake_at_ns() const { return in_flight_ ? deadline_ns_ : next_check_ns_; }

  /// No check in flight and the next one is due.
  bool due(int64_t now_ns) const { return !in_flight_ && now_ns >= next_check_ns_; }
  /// The check in flight has passed its deadline: the caller cancels it and reports kFailed.
  bool timed_out(int64_t now_ns) const { return in_flight_ && now_ns >= deadline_ns_; }

  /// A check starts now. Precondition: !in_flight().
  void start_check(int64_t now_ns);
  /// The check in flight ended with `o`. Ignored (kNone) if none is in flight: a late answer
  /// to a check that already timed out says nothing.
  HealthChange finish_check(CheckOutcome o);
  /// A Watch message. Only kNotServing changes anything (see the rules above).
  HealthChange on_watch(CheckOutcome o, int64_t now_ns);

 private:
  HealthChange success();
  HealthChange failure();
  HealthChange not_serving();

  HealthPolicy policy_;
  bool healthy_ = true;
  bool in_flight_ = false;
  bool unsupported_ = false;
  uint32_t failures_ = 0;
  uint32_t successes_ = 0;
  int64_t started_ns_ = 0;  // of the check in flight, or the last one
  int64_t deadline_ns_ = 0;
  int64_t next_check_ns_ = 0;
  int64_t not_serving_ns_ = INT64_MIN;  // when a Watch last said NOT_SERVING
};

}  // namespace ringlb::lb

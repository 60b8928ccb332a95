#pragma once
// Slow start: an endpoint that joins a cluster already in service, or comes back after an
// ejection or a failed health check, gets a share of its weight that grows linearly over a
// window, so a cold backend (empty caches, JIT not warm, connection pools not filled) is not
// handed its full share of a busy cluster's calls at once. Endpoints present at start-up do not
// slow-start: nobody is warm then, and ramping them all together changes nothing.
// Pure logic, time passed in. Owner: immutable policy; the ramp start time lives with each
// endpoint's state on a shard (core/proxy EndpointState).
#include <cstdint>

namespace ringlb::lb {

class SlowStart {
 public:
  /// Where a ramp starts, per mille of the endpoint's weight: enough that the endpoint takes a
  /// few calls at once (it is eligible, and it should warm up), little enough to be gentle.
  static constexpr uint16_t kFloorPermille = 100;
  /// How many weight updates a ramp takes (each costs every shard's picker one rebuild).
  static constexpr int64_t kSteps = 10;

  /// `window_ns` 0 (or less): off.
  explicit SlowStart(int64_t window_ns = 0) : window_ns_(window_ns > 0 ? window_ns : 0) {}
  bool enabled() const { return window_ns_ > 0; }
  int64_t window_ns() const { return window_ns_; }

  /// The share, per mille, `elapsed_ns` after the ramp started: kFloorPermille at 0, rising
  /// linearly to 1000 at the end of the window and 1000 from then on (and when off).
  uint16_t permille(int64_t elapsed_ns) const;
  /// Time between weight updates while ramping: window / kSteps, at least 1 ms.
  int64_t step_ns() const;

 private:
  int64_t window_ns_;
};

}  // namespace ringlb::lb

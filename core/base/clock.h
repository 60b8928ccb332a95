#pragma once
// The one clock shards, the proxy and the control thread read. Production reads CLOCK_MONOTONIC;
// tests install a FakeClock and move time by hand, so deadlines, timeouts and refresh schedules
// are decided by events, not by sleeping. Owner: whoever holds it; a Clock is read by one thread.
#include <cstdint>

namespace ringlb::core::base {

/// Monotonic nanoseconds from the OS. Any thread.
int64_t mono_now_ns();

/// A source of monotonic nanoseconds.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ns() const = 0;
  /// The process-wide OS clock.
  static Clock& system();
};

/// A clock that moves only when told. For tests and benchmarks on one thread.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ns = 1'000'000'000) : now_(start_ns) {}
  int64_t now_ns() const override { return now_; }
  void advance(int64_t ns) { now_ += ns; }
  void set(int64_t ns) { now_ = ns; }

 private:
  int64_t now_;
};

}  // namespace ringlb::core::base

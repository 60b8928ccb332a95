#include "core/base/clock.h"

#include <time.h>

namespace ringlb::core::base {

int64_t mono_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

namespace {
class SystemClock final : public Clock {
 public:
  int64_t now_ns() const override { return mono_now_ns(); }
};
}  // namespace

Clock& Clock::system() {
  static SystemClock clock;
  return clock;
}

}  // namespace ringlb::core::base

#include "lb/slow_start.h"

#include <algorithm>

#include "lb/eligibility.h"

namespace ringlb::lb {

namespace {
__extension__ typedef __int128 i128;  // exact products of a 64-bit time and a share
}  // namespace

uint16_t SlowStart::permille(int64_t elapsed_ns) const {
  constexpr int64_t kFull = Eligibility::kFullWeight;
  if (!enabled() || elapsed_ns >= window_ns_) return kFull;
  if (elapsed_ns <= 0) return kFloorPermille;
  const i128 gained = static_cast<i128>(kFull - kFloorPermille) * elapsed_ns / window_ns_;
  return static_cast<uint16_t>(kFloorPermille + static_cast<int64_t>(gained));
}

int64_t SlowStart::step_ns() const {
  return std::max<int64_t>(window_ns_ / kSteps, 1'000'000);
}

}  // namespace ringlb::lb

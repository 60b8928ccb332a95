#include "lb/picker.h"

#include "lb/p2c.h"
#include "lb/round_robin.h"

namespace ringlb::lb {

uint64_t mix_seed(uint64_t seed) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::unique_ptr<Picker> make_picker(Policy policy, const EndpointSet& set, uint64_t seed) {
  switch (policy) {
    case Policy::kRoundRobin:
      return std::make_unique<RoundRobinPicker>(set, seed);
    case Policy::kP2c:
      return std::make_unique<P2cPicker>(set, seed);
  }
  // An enum value outside the list is a broken invariant (memory corruption or a bad cast).
  __builtin_trap();
}

}  // namespace ringlb::lb

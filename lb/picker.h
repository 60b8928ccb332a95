#pragma once
// Picker: chooses an endpoint for one call. One picker per shard per cluster snapshot, so it
// may keep mutable state (counters, RNG) without locks. Owner: shard. Pure logic, no I/O.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "lb/endpoint.h"

namespace ringlb::lb {

enum class Policy { kRoundRobin, kP2c };

class Picker {
 public:
  virtual ~Picker() = default;
  /// Returns an index into the set, or -1 when the set is empty.
  /// `outstanding[i]` is this shard's count of calls in flight on endpoint i (same size as the
  /// set); round_robin ignores it, p2c compares outstanding/weight of two weighted-random picks.
  virtual int pick(std::span<const uint32_t> outstanding) = 0;
};

/// Builds a picker over `set` (which must outlive the picker). `seed` seeds any RNG so each shard
/// makes different choices (and tests are repeatable).
std::unique_ptr<Picker> make_picker(Policy policy, const EndpointSet& set, uint64_t seed);

/// splitmix64 finaliser: turns a shard index or small counter into a well-spread 64-bit seed,
/// so seeds 0, 1, 2 ... give unrelated start offsets and RNG streams. Not for the hot path.
uint64_t mix_seed(uint64_t seed);

}  // namespace ringlb::lb

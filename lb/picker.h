#pragma once
// Picker: chooses an endpoint for one call. One picker per shard per cluster snapshot, so it
// may keep mutable state (counters, RNG, eligible-only tables) without locks. Owner: shard. Pure
// logic, no I/O.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "lb/eligibility.h"
#include "lb/endpoint.h"

namespace ringlb::lb {

enum class Policy { kRoundRobin, kP2c };

class Picker {
 public:
  virtual ~Picker() = default;
  /// Returns an index into the set; -1 only when the set is empty.
  ///
  /// Chooses among the endpoints that are eligible and not in `ctx.avoid`; if there is none,
  /// among the eligible ones (avoid relaxed: better to retry the same endpoint than fail); if none
  /// is eligible, or fewer than `ctx.panic_percent` percent (lb::panics), among all members at
  /// their snapshot weights, still preferring endpoints not in `avoid`, and sets `ctx.panic` (a
  /// call with some chance beats a certain failure: Envoy's healthy panic threshold). Sets
  /// `ctx.panic` to false otherwise.
  ///
  /// `ctx.outstanding[i]` is this shard's count of calls in flight on endpoint i (same size as
  /// the set); round_robin ignores it, p2c compares outstanding / effective weight of two
  /// weighted-random draws. `ctx.eligibility`, when set, must be index-aligned with the set.
  /// With no eligibility (or all clear) and no avoid list, a pick costs what it did before
  /// eligibility existed; after an eligibility change the first pick rebuilds the picker's
  /// eligible-only tables (O(n), plus the round-robin schedule if it has one).
  virtual int pick(PickContext& ctx) = 0;
};

/// Builds a picker over `set` (which must outlive the picker). `seed` seeds any RNG so each shard
/// makes different choices (and tests are repeatable).
std::unique_ptr<Picker> make_picker(Policy policy, const EndpointSet& set, uint64_t seed);

/// splitmix64 finaliser: turns a shard index or small counter into a well-spread 64-bit seed,
/// so seeds 0, 1, 2 ... give unrelated start offsets and RNG streams. Not for the hot path.
uint64_t mix_seed(uint64_t seed);

/// A snapshot weight as pickers use it. Weight 0 is not a valid Endpoint (endpoint.h says >= 1),
/// but DNS SRV allows it; reading it as 1 keeps such an endpoint in rotation at the smallest share
/// instead of crashing the shard.
inline uint32_t endpoint_weight(const Endpoint& e) {
  return e.weight == 0 ? 1 : e.weight;
}

/// How many draws a picker spends on landing outside `avoid` before it falls back to one exact
/// pass over the candidates. Reached only when the avoided endpoints hold most of the weight.
inline constexpr int kAvoidDraws = 8;

}  // namespace ringlb::lb

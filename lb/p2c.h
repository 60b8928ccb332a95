#pragma once
// Power of two choices, least request. Owner: shard (one instance per shard per cluster
// snapshot; its RNG state is unsynchronised on purpose).
//
// Draws two distinct endpoints at random (uniformly when all weights are equal, otherwise with
// probability proportional to weight) and returns the one with the lower outstanding / weight,
// compared by cross-multiplication. A tie goes to the first draw, which is itself random, so
// an idle cluster is spread by weight.
//
// Weighted draws use Vose's alias table (O(1)). The second draw must differ from the first; when
// the alias draw repeats the first, one exact draw from the remaining weight (binary search over
// prefix sums, O(log n)) replaces it. Together the two give exactly P(b = j | a) =
// w_j / (W - w_a), with no retry loop, whatever the skew.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lb/picker.h"

namespace ringlb::lb {

class P2cPicker final : public Picker {
 public:
  P2cPicker(const EndpointSet& set, uint64_t seed);

  int pick(std::span<const uint32_t> outstanding) override;

  bool weighted() const { return weighted_; }

 private:
  uint64_t next_random();
  uint32_t draw_weighted(uint64_t r) const;
  uint32_t draw_weighted_except(uint64_t r, uint32_t except) const;

  uint32_t n_ = 0;
  bool weighted_ = false;
  uint64_t rng_ = 0;  // wyrand state
  uint64_t total_weight_ = 0;
  std::vector<uint32_t> weights_;  // only when weighted_
  // Alias table column: keeps itself when the low 32 random bits are below `threshold`,
  // otherwise yields `alias`. A full column has alias == itself. Both halves in one 8-byte slot
  // so a draw touches one cache line.
  struct AliasSlot {
    uint32_t threshold;
    uint32_t alias;
  };
  std::vector<AliasSlot> alias_;
  std::vector<uint64_t> prefix_;  // prefix_[i] = sum of weights before i; prefix_[n] = total
};

}  // namespace ringlb::lb

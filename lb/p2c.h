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
//
// Eligibility: the picker keeps two sets of tables, one over every member at its snapshot weight
// (the fast path, and panic mode) and one over the eligible endpoints at their effective weights
// (snapshot weight x slow-start share), rebuilt on the first pick after the eligibility version
// moves. Both the draws and the outstanding / weight comparison use the effective weight, so an
// endpoint in slow start is drawn less and looks busier. Avoided endpoints (a call's earlier
// tries) are rejected draw by draw, which keeps each draw exactly weight-proportional among the
// rest; after kAvoidDraws rejections one exact linear pass draws instead.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lb/picker.h"

namespace ringlb::lb {

class P2cPicker final : public Picker {
 public:
  P2cPicker(const EndpointSet& set, uint64_t seed);

  int pick(PickContext& ctx) override;

  /// Whether the member tables draw by weight (false: all snapshot weights are equal).
  bool weighted() const { return all_.weighted; }
  /// Same for the eligible tables, as of the last pick that needed them.
  bool eligible_weighted() const { return eligible_.weighted; }

 private:
  // Draw tables over positions 0..n-1 (identity for members, eligible_ids_ for the eligible).
  struct Tables {
    uint32_t n = 0;
    bool weighted = false;
    uint64_t total_weight = 0;
    std::vector<uint32_t> weights;  // only when weighted
    // Alias table column: keeps itself when the low 32 random bits are below `threshold`,
    // otherwise yields `alias`. A full column has alias == itself. Both halves in one 8-byte
    // slot so a draw touches one cache line.
    struct AliasSlot {
      uint32_t threshold;
      uint32_t alias;
    };
    std::vector<AliasSlot> alias;
    std::vector<uint64_t> prefix;  // prefix[i] = sum of weights before i; prefix[n] = total

    void build(std::span<const uint32_t> w);
    uint32_t weight(uint32_t pos) const { return weighted ? weights[pos] : 1; }
    uint32_t draw(uint64_t r) const;
    uint32_t draw_except(uint64_t r, uint32_t except) const;
  };

  uint64_t next_random();
  template <typename Id>
  int pick_two(const Tables& t, Id id, std::span<const uint32_t> outstanding);
  int pick_slow(PickContext& ctx);
  template <typename Id>
  int pick_avoiding(const Tables& t, Id id, const PickContext& ctx);
  template <typename Id>
  int draw_avoiding(const Tables& t, Id id, std::span<const int> avoid, int except);
  void rebuild_eligible(const Eligibility& el);

  const EndpointSet* set_;
  uint64_t rng_ = 0;  // wyrand state
  Tables all_;
  Tables eligible_;  // positions index eligible_ids_
  std::vector<uint32_t> eligible_ids_;
  std::vector<uint32_t> eligible_weights_;
  uint64_t eligible_version_ = 0;  // Eligibility::version() it was built for; 0 = never
};

}  // namespace ringlb::lb

#pragma once
// Weighted round robin. Owner: shard (one instance per shard per cluster snapshot; not shared).
//
// Three modes, chosen when a sequence is built from its weights (reduced by their gcd):
//  - kRotate:   all weights equal. A rotating index; the cheapest possible pick.
//  - kSchedule: unequal weights with a small period. One period of the EDF sequence below is
//               precomputed, so a pick is an array read.
//  - kEdf:      unequal weights whose period would make the schedule too big. Earliest deadline
//               first over a binary min-heap: O(log n) per pick, no allocation.
// (bench/micro/picker_bench.cc: kRotate and kSchedule ~3 ns a pick at 3..1,000 endpoints, kEdf
// ~15 / 50 / 70 ns at 3 / 100 / 1,000; building a 1,000-endpoint schedule takes ~0.4 ms.)
//
// The EDF sequence: endpoint i's k-th pick (k = 0, 1, ...) in each period has the virtual
// deadline (k + phase_i) / w_i, phase_i = (2i + 1) / 2n in (0, 1). All deadlines of one period
// lie in [0, 1), so any sum(w) consecutive picks give endpoint i exactly w_i picks, and the
// per-endpoint spacing 1/w_i keeps the order smooth: {5,1,1} interleaves the light endpoints
// instead of sending five in a row. Phases are staggered by index so endpoints of equal weight
// do not tie and clump. Deadlines are exact rationals compared by cross-multiplication.
//
// Each shard starts at a seed-derived point of the period so shards do not march in lockstep.
//
// Eligibility: the picker keeps two sequences, one over every member at its snapshot weight (the
// fast path, and panic mode) and one over the eligible endpoints at their effective weights
// (snapshot weight x slow-start share), rebuilt on the first pick after the eligibility version
// moves. So an ineligible endpoint's turns go to the others exactly in proportion to their
// weights, and the per-period counts above hold among the eligible set. Each rebuild starts at a
// fresh seed-derived point of the new period. When only flags changed (no slow start) and the
// member sequence is a precomputed schedule, the eligible one is that schedule with the
// ineligible entries dropped: O(period), a copy instead of an EDF run (~0.4 ms at 1,000 mixed
// weights). Avoided endpoints (a call's earlier tries) are skipped by drawing on: their turns are
// spent, as if they had served the retry.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lb/picker.h"

namespace ringlb::lb {

/// One weighted round-robin sequence over positions 0..n-1 (the three modes above).
class WrrSequence {
 public:
  enum class Mode { kEmpty, kRotate, kSchedule, kEdf };

  /// `weights` >= 1 each (not yet reduced); `mixed` (a mix_seed output) picks the start point;
  /// `max_schedule` as in RoundRobinPicker. Reuses the vectors' capacity.
  void build(std::span<const uint32_t> weights, uint64_t mixed, size_t max_schedule);
  /// The subsequence of `base` (a kSchedule sequence) over the endpoints `ids` (ascending, a
  /// subset of base's positions), renumbered 0..ids.size()-1: base's counts per period hold for
  /// those endpoints, at O(base period) instead of a fresh EDF run. `pos_of` is scratch.
  void build_filtered(const WrrSequence& base, std::span<const uint32_t> ids, uint64_t mixed,
                      std::vector<uint32_t>& pos_of);
  /// The next position, or -1 when built empty.
  int next();

  Mode mode() const { return mode_; }
  uint32_t size() const { return n_; }
  /// sum(weights) / gcd(weights): picks after which the sequence repeats.
  uint64_t period() const { return period_; }

 private:
  // One endpoint's place in the EDF order: next deadline = epoch + num / (2n * weight), with
  // num < 2n * weight, so (epoch, fraction, index) orders exactly. Only the heap top advances,
  // so every epoch is the top's or one more; once the top reaches 1 all have and edf_next()
  // rebases them to 0. The epoch therefore fits in one bit beside the index, and an entry in
  // 16 bytes keeps a 1,000-endpoint heap inside L1.
  struct EdfEntry {
    uint64_t num;
    uint32_t weight;  // reduced by the gcd
    uint32_t tag;     // epoch << 31 | index
  };
  static constexpr uint32_t kEpochBit = uint32_t{1} << 31;

  static bool earlier(const EdfEntry& a, const EdfEntry& b);
  void edf_init(std::span<const uint64_t> weights, uint32_t start);
  uint32_t edf_next();

  Mode mode_ = Mode::kEmpty;
  uint32_t n_ = 0;
  uint32_t next_ = 0;  // kRotate: next index; kSchedule: next position in schedule_
  uint64_t period_ = 0;
  uint64_t step_ = 0;  // 2n: what num grows by per pick of one endpoint
  std::vector<uint32_t> schedule_;
  std::vector<EdfEntry> heap_;  // min-heap by earlier()
};

class RoundRobinPicker final : public Picker {
 public:
  using Mode = WrrSequence::Mode;

  /// Default schedule budget: max(kScheduleMinEntries, kScheduleEntriesPerEndpoint * n) entries
  /// of 4 bytes, so a 1,000-endpoint cluster with weights 1..32 still gets the O(1) path.
  static constexpr size_t kScheduleMinEntries = 4096;
  static constexpr size_t kScheduleEntriesPerEndpoint = 32;

  RoundRobinPicker(const EndpointSet& set, uint64_t seed);
  /// `max_schedule`: precompute a schedule only if its period is at most this many picks
  /// (0 forces kEdf for unequal weights; tests and benchmarks use it to reach both paths).
  RoundRobinPicker(const EndpointSet& set, uint64_t seed, size_t max_schedule);

  int pick(PickContext& ctx) override;

  /// The sequence over all members.
  Mode mode() const { return all_.mode(); }
  uint64_t period() const { return all_.period(); }
  /// The sequence over the eligible endpoints, as of the last pick that needed it. Its period may
  /// be a multiple of the gcd-reduced one when it was filtered from the member schedule.
  Mode eligible_mode() const { return eligible_.mode(); }
  uint64_t eligible_period() const { return eligible_.period(); }

 private:
  int pick_slow(PickContext& ctx);
  int choose(WrrSequence& seq, const uint32_t* ids, std::span<const int> avoid);
  void rebuild_eligible(const Eligibility& el);

  const EndpointSet* set_;
  uint64_t seed_;
  size_t max_schedule_;
  WrrSequence all_;
  WrrSequence eligible_;  // positions index eligible_ids_
  std::vector<uint32_t> eligible_ids_;
  std::vector<uint32_t> eligible_weights_;
  std::vector<uint32_t> pos_of_;   // scratch for build_filtered
  uint64_t eligible_version_ = 0;  // Eligibility::version() it was built for; 0 = never
  uint32_t scan_ = 0;              // where the avoid fallback scan starts next
};

}  // namespace ringlb::lb

#pragma once
// Eligibility and PickContext: what a picker needs besides the immutable EndpointSet. Membership
// is not eligibility (DESIGN.md): the snapshot says who exists, this says who may take new calls
// now. Owner: shard (one Eligibility per cluster per shard, changed in place by that shard; no
// locks, no atomics on the hot path). Pure logic.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lb/endpoint.h"

namespace ringlb::lb {

/// Why an endpoint may not take new calls now (bits; 0 = eligible). Independent causes keep
/// their own bit so clearing one (health back) does not undo another (still ejected).
enum IneligibleBits : uint8_t { kUnhealthy = 1, kEjected = 2, kDraining = 4 };

/// Per-endpoint state beside a cluster's EndpointSet snapshot, index-aligned with it: who may take
/// new calls now, and at what share of its weight (slow start). Owned by one shard and changed in
/// place by health reports, ejections and slow start; no new snapshot needed.
///
/// Pickers read it on every pick through PickContext and rebuild their eligible-only tables
/// lazily when version() moves, so a setter that changes nothing does not bump the version
/// (repeated health reports cost no rebuild). Every constructor and resize() starts a version
/// range no other Eligibility of the process uses, so a picker keyed on the version alone cannot
/// mistake one object (or one snapshot's state) for another.
class Eligibility {
 public:
  static constexpr uint16_t kFullWeight = 1000;  // per mille

  explicit Eligibility(size_t n = 0);

  /// A new snapshot: n endpoints, all eligible at full weight. Carrying state over from the old
  /// snapshot (an endpoint still ejected) is the caller's job, by endpoint_key.
  void resize(size_t n);
  size_t size() const { return flags_.size(); }

  /// Replaces all of endpoint i's bits (IneligibleBits; 0 = eligible).
  void set_flags(size_t i, uint8_t bits);
  uint8_t flags(size_t i) const { return flags_[i]; }
  bool eligible(size_t i) const { return flags_[i] == 0; }
  /// O(1).
  size_t eligible_count() const { return eligible_; }

  /// Slow start: share of the endpoint's weight, 1..1000 per mille (1000 = full). Values outside
  /// are clamped: 0 would take an eligible endpoint out of rotation, which is what flags are for.
  void set_weight_permille(size_t i, uint16_t w);
  uint16_t weight_permille(size_t i) const { return permille_[i]; }

  /// Bumps on every change (pickers rebuild lazily). Never 0: pickers use 0 for "never built".
  uint64_t version() const { return version_; }

  /// Every endpoint eligible at full weight: pickers then take their snapshot-only fast path.
  bool all_clear() const { return not_clear_ == 0; }

 private:
  bool clear_at(size_t i) const { return flags_[i] == 0 && permille_[i] == kFullWeight; }
  void account(size_t i, bool was_clear, bool was_eligible);

  std::vector<uint8_t> flags_;
  std::vector<uint16_t> permille_;
  size_t eligible_ = 0;
  size_t not_clear_ = 0;  // endpoints that are ineligible or below full weight
  uint64_t version_ = 0;
};

/// One pick's inputs. Built by the caller per pick; the picker reads it and sets `panic`.
struct PickContext {
  std::span<const uint32_t> outstanding;     // calls in flight per endpoint on this shard
  const Eligibility* eligibility = nullptr;  // nullptr: every member eligible at full weight
  std::span<const int> avoid;                // endpoints this call already tried (small)
  uint32_t attempt = 0;                      // 0 = first try
  // Panic threshold: with fewer than this share of the members eligible (percent), pick among
  // all of them. 0 = only when none is eligible. The cluster's outlier.panic_threshold.
  uint32_t panic_percent = 0;
  bool panic = false;  // out: too few eligible (see panics()), picked among all members
};

/// Whether a pick over `el` is in panic: no endpoint eligible, or fewer than `percent` of them
/// (eligible x 100 < percent x members, exact). In panic the pickers ignore eligibility and pick
/// among all members at their snapshot weights, as Envoy's healthy panic threshold does: when
/// most of a cluster looks bad, the detection is more likely wrong (or the cluster is overloaded
/// and ejection would pile the load onto the few left) than the members are, and a call with
/// some chance beats a certain failure. 4 members at 25%: 1 eligible is not panic (25%), 0 is.
inline bool panics(const Eligibility& el, uint32_t percent) {
  const size_t eligible = el.eligible_count();
  return eligible == 0 || eligible * 100 < size_t{percent} * el.size();
}

/// The endpoints `el` lets take calls (ascending index) and their effective weights: snapshot
/// weight (0 read as 1) times the per-mille share, scaled down together only if the largest would
/// not fit 32 bits, and never below 1. For pickers' lazy rebuilds; reuses the vectors' capacity.
void eligible_weights(const EndpointSet& set, const Eligibility& el, std::vector<uint32_t>& ids,
                      std::vector<uint32_t>& weights);

/// Whether `avoid` names endpoint i. The list is a call's tried endpoints: a few entries, so a
/// linear scan beats any set.
inline bool avoids(std::span<const int> avoid, uint32_t i) {
  for (int a : avoid) {
    if (a == static_cast<int>(i)) return true;
  }
  return false;
}

}  // namespace ringlb::lb

#include "lb/eligibility.h"

#include <algorithm>
#include <atomic>
#include <cassert>

#include "lb/picker.h"

namespace ringlb::lb {

namespace {

// Each Eligibility (and each resize) starts its versions in a fresh 2^32-wide range, so no two
// objects ever show a picker the same version. Construction and resize are control-rate events;
// the atomic never touches the pick path.
uint64_t fresh_version_range() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed) << 32;
}

}  // namespace

Eligibility::Eligibility(size_t n) {
  resize(n);
}

void Eligibility::resize(size_t n) {
  flags_.assign(n, 0);
  permille_.assign(n, kFullWeight);
  eligible_ = n;
  not_clear_ = 0;
  version_ = fresh_version_range();
}

// Keeps the two counters right after endpoint i changed, given what it was before.
void Eligibility::account(size_t i, bool was_clear, bool was_eligible) {
  const bool now_clear = clear_at(i);
  const bool now_eligible = eligible(i);
  not_clear_ = not_clear_ + (was_clear && !now_clear) - (!was_clear && now_clear);
  eligible_ = eligible_ + (!was_eligible && now_eligible) - (was_eligible && !now_eligible);
  ++version_;
}

void Eligibility::set_flags(size_t i, uint8_t bits) {
  assert(i < flags_.size());
  if (flags_[i] == bits) return;
  const bool was_clear = clear_at(i);
  const bool was_eligible = eligible(i);
  flags_[i] = bits;
  account(i, was_clear, was_eligible);
}

void Eligibility::set_weight_permille(size_t i, uint16_t w) {
  assert(i < permille_.size());
  w = std::clamp<uint16_t>(w, 1, kFullWeight);
  if (permille_[i] == w) return;
  const bool was_clear = clear_at(i);
  const bool was_eligible = eligible(i);
  permille_[i] = w;
  account(i, was_clear, was_eligible);
}

void eligible_weights(const EndpointSet& set, const Eligibility& el, std::vector<uint32_t>& ids,
                      std::vector<uint32_t>& weights) {
  assert(el.size() == set.size());
  ids.clear();
  weights.clear();
  auto effective = [&](size_t i) {
    return uint64_t{endpoint_weight(set.endpoints[i])} * el.weight_permille(i);
  };
  // Up to 2^32 x 1000 needs 42 bits; the pickers' exact integer arithmetic wants 32. Only weights
  // above ~4 million lose precision, and only their low bits.
  uint64_t largest = 0;
  for (size_t i = 0; i < set.size(); ++i) {
    if (el.eligible(i)) largest = std::max(largest, effective(i));
  }
  unsigned shift = 0;
  while ((largest >> shift) > UINT32_MAX) ++shift;
  for (size_t i = 0; i < set.size(); ++i) {
    if (!el.eligible(i)) continue;
    ids.push_back(static_cast<uint32_t>(i));
    weights.push_back(static_cast<uint32_t>(std::max<uint64_t>(1, effective(i) >> shift)));
  }
}

}  // namespace ringlb::lb

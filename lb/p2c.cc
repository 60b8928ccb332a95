#include "lb/p2c.h"

#include <algorithm>
#include <cassert>

namespace ringlb::lb {

namespace {

__extension__ typedef unsigned __int128 u128;  // exact products of 64- and 32-bit values

// See round_robin.cc: SRV allows weight 0, the picker gives it the smallest share.
uint32_t effective_weight(const Endpoint& e) {
  return e.weight == 0 ? 1 : e.weight;
}

// Maps 32 random bits onto [0, n) by multiply-shift (Lemire): no division on the hot path. The
// bias is below n / 2^32, far under the noise of any load signal.
inline uint32_t reduce32(uint32_t r, uint32_t n) {
  return static_cast<uint32_t>((uint64_t{r} * n) >> 32);
}

}  // namespace

P2cPicker::P2cPicker(const EndpointSet& set, uint64_t seed) : rng_(mix_seed(seed)) {
  assert(set.size() < (size_t{1} << 31));
  n_ = static_cast<uint32_t>(set.size());
  if (n_ < 2) return;

  const uint32_t first = effective_weight(set.endpoints[0]);
  for (const auto& e : set.endpoints) {
    if (effective_weight(e) != first) weighted_ = true;
  }
  if (!weighted_) return;  // uniform draws need no tables

  weights_.resize(n_);
  prefix_.resize(n_ + 1);
  prefix_[0] = 0;
  for (uint32_t i = 0; i < n_; ++i) {
    weights_[i] = effective_weight(set.endpoints[i]);
    prefix_[i + 1] = prefix_[i] + weights_[i];
  }
  total_weight_ = prefix_[n_];

  // Vose's alias method in exact integers: column capacity is W, endpoint i brings w_i * n.
  alias_.resize(n_);
  std::vector<u128> scaled(n_);
  std::vector<uint32_t> small, large;
  small.reserve(n_);
  large.reserve(n_);
  const u128 cap = total_weight_;
  for (uint32_t i = 0; i < n_; ++i) {
    scaled[i] = static_cast<u128>(weights_[i]) * n_;
    (scaled[i] < cap ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back();
    small.pop_back();
    const uint32_t g = large.back();
    alias_[s] = {static_cast<uint32_t>((scaled[s] << 32) / cap), g};
    scaled[g] -= cap - scaled[s];
    if (scaled[g] < cap) {
      large.pop_back();
      small.push_back(g);
    }
  }
  // Integer arithmetic is exact, so whatever is left holds exactly one full column each.
  for (uint32_t i : small) alias_[i] = {0, i};
  for (uint32_t i : large) alias_[i] = {0, i};
}

// wyrand: one multiply per 64 bits, passes BigCrush, and needs only 8 bytes of state.
inline uint64_t P2cPicker::next_random() {
  rng_ += 0xa0761d6478bd642fULL;
  const u128 t = static_cast<u128>(rng_) * (rng_ ^ 0xe7037ed1a0b428dbULL);
  return static_cast<uint64_t>(t >> 64) ^ static_cast<uint64_t>(t);
}

inline uint32_t P2cPicker::draw_weighted(uint64_t r) const {
  const uint32_t col = reduce32(static_cast<uint32_t>(r >> 32), n_);
  const AliasSlot slot = alias_[col];
  return static_cast<uint32_t>(r) < slot.threshold ? col : slot.alias;
}

// An exact draw from every endpoint but `except`: a point in [0, W - w_except) that skips over
// except's stretch of the prefix sums.
uint32_t P2cPicker::draw_weighted_except(uint64_t r, uint32_t except) const {
  const uint64_t range = total_weight_ - weights_[except];
  uint64_t point = static_cast<uint64_t>((static_cast<u128>(r) * range) >> 64);
  if (point >= prefix_[except]) point += weights_[except];
  const auto it = std::upper_bound(prefix_.begin(), prefix_.end(), point);
  return static_cast<uint32_t>(it - prefix_.begin() - 1);
}

int P2cPicker::pick(std::span<const uint32_t> outstanding) {
  if (n_ < 2) return n_ == 0 ? -1 : 0;
  assert(outstanding.size() == n_);

  if (!weighted_) {
    const uint64_t r = next_random();
    const uint32_t a = reduce32(static_cast<uint32_t>(r), n_);
    uint32_t b = reduce32(static_cast<uint32_t>(r >> 32), n_ - 1);
    b += (b >= a);  // skip over a: uniform over the other n - 1
    return static_cast<int>(outstanding[b] < outstanding[a] ? b : a);
  }

  const uint32_t a = draw_weighted(next_random());
  uint32_t b = draw_weighted(next_random());
  if (b == a) b = draw_weighted_except(next_random(), a);
  // outstanding[b] / w_b < outstanding[a] / w_a, in integers: both products are below 2^64.
  const uint64_t load_a = uint64_t{outstanding[a]} * weights_[b];
  const uint64_t load_b = uint64_t{outstanding[b]} * weights_[a];
  return static_cast<int>(load_b < load_a ? b : a);
}

}  // namespace ringlb::lb

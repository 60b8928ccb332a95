#include "lb/round_robin.h"

#include <algorithm>
#include <cassert>
#include <numeric>

namespace ringlb::lb {

namespace {

__extension__ typedef unsigned __int128 u128;  // exact products of 64- and 32-bit values

// Weight 0 is not a valid Endpoint (the header says >= 1), but DNS SRV allows it; treating it as
// 1 keeps such an endpoint in rotation at the smallest share instead of crashing the shard.
uint64_t effective_weight(const Endpoint& e) {
  return e.weight == 0 ? 1 : e.weight;
}

}  // namespace

RoundRobinPicker::RoundRobinPicker(const EndpointSet& set, uint64_t seed)
    : RoundRobinPicker(set, seed,
                       std::max(kScheduleMinEntries, kScheduleEntriesPerEndpoint * set.size())) {}

RoundRobinPicker::RoundRobinPicker(const EndpointSet& set, uint64_t seed, size_t max_schedule) {
  // Indices are returned as int; a cluster anywhere near 2^31 endpoints is a broken snapshot.
  assert(set.size() < (size_t{1} << 31));
  n_ = static_cast<uint32_t>(set.size());
  if (n_ == 0) return;
  const uint64_t mixed = mix_seed(seed);

  // Reducing by the gcd makes {100, 100, 200} the same cheap sequence as {1, 1, 2}.
  std::vector<uint64_t> weights(n_);
  uint64_t g = 0;
  for (uint32_t i = 0; i < n_; ++i) {
    weights[i] = effective_weight(set.endpoints[i]);
    g = std::gcd(g, weights[i]);
  }
  for (auto& w : weights) {
    w /= g;
    period_ += w;  // n < 2^31 and w < 2^32: cannot overflow
  }

  if (period_ == n_) {  // every reduced weight is 1
    mode_ = Mode::kRotate;
    next_ = static_cast<uint32_t>(mixed % n_);
    return;
  }

  step_ = 2 * uint64_t{n_};
  if (period_ <= max_schedule && period_ <= UINT32_MAX) {
    mode_ = Mode::kSchedule;
    edf_init(weights, 0);
    schedule_.resize(period_);
    for (auto& slot : schedule_) slot = edf_next();
    heap_.clear();
    heap_.shrink_to_fit();
    next_ = static_cast<uint32_t>(mixed % period_);
    return;
  }

  mode_ = Mode::kEdf;
  edf_init(weights, static_cast<uint32_t>(mixed >> 32));
}

bool RoundRobinPicker::earlier(const EdfEntry& a, const EdfEntry& b) {
  // num_a / (2n w_a) < num_b / (2n w_b)  <=>  num_a * w_b < num_b * w_a; num < 2^64 and
  // w < 2^32, so the products are exact in 128 bits. Written as selects rather than early
  // returns: the outcome is data-dependent and a mispredicted branch costs more than the math.
  const u128 lhs = static_cast<u128>(a.num) * b.weight;
  const u128 rhs = static_cast<u128>(b.num) * a.weight;
  const bool same_epoch = ((a.tag ^ b.tag) & kEpochBit) == 0;
  // Different epochs: the tags order by the epoch bit. Same epoch and equal deadlines: they
  // order by index, a fixed tie order that keeps every period identical.
  const bool by_tag = a.tag < b.tag;
  return same_epoch && lhs != rhs ? lhs < rhs : by_tag;
}

// Positions every endpoint at virtual time t0 = start / 2^32 within the first period: picks whose
// deadline is before t0 count as already made. The result is an exact suffix of the sequence that
// starts at 0, so the per-period counts still hold from the first pick on.
void RoundRobinPicker::edf_init(std::span<const uint64_t> weights, uint32_t start) {
  heap_.clear();
  heap_.reserve(n_);
  for (uint32_t i = 0; i < n_; ++i) {
    const uint64_t w = weights[i];
    const uint64_t phase = 2 * uint64_t{i} + 1;  // phase_i * 2n
    // Count k >= 0 with (2n k + phase) / (2n w) < start / 2^32, i.e.
    // 2n k 2^32 < start 2n w - phase 2^32.
    uint64_t done = 0;
    const u128 a = static_cast<u128>(start) * step_ * w;
    const u128 b = static_cast<u128>(phase) << 32;
    if (a > b) {
      const u128 unit = static_cast<u128>(step_) << 32;
      done = static_cast<uint64_t>((a - b + unit - 1) / unit);
    }
    EdfEntry e{step_ * done + phase, static_cast<uint32_t>(w), i};
    if (done >= w) {  // every pick of this period is behind t0
      e.num -= step_ * w;
      e.tag |= kEpochBit;
    }
    heap_.push_back(e);
  }
  std::make_heap(heap_.begin(), heap_.end(),
                 [](const EdfEntry& x, const EdfEntry& y) { return earlier(y, x); });
}

// Takes the endpoint with the earliest deadline, moves its deadline on by 1 / w and restores the
// heap bottom-up (Floyd): walk the hole down to a leaf along the earlier child, then sift the
// entry back up. A moved deadline usually belongs near the bottom, so this costs about one
// comparison per level instead of the two of a classic sift-down.
uint32_t RoundRobinPicker::edf_next() {
  if (heap_[0].tag & kEpochBit) {
    // The minimum is in epoch 1, so everyone is: once per period (>= n picks), O(1) amortised.
    for (auto& e : heap_) e.tag &= ~kEpochBit;
  }
  EdfEntry top = heap_[0];
  const uint32_t chosen = top.tag;  // epoch bit is clear here
  top.num += step_;
  const uint64_t wrap = step_ * top.weight;
  if (top.num >= wrap) {
    top.num -= wrap;
    top.tag |= kEpochBit;
  }
  const size_t size = heap_.size();
  size_t hole = 0;
  for (;;) {
    size_t child = 2 * hole + 1;
    if (child + 1 < size) {
      child += earlier(heap_[child + 1], heap_[child]);  // no branch on the coin-flip compare
    } else if (child >= size) {
      break;
    }
    heap_[hole] = heap_[child];
    hole = child;
  }
  while (hole > 0) {
    const size_t parent = (hole - 1) / 2;
    if (!earlier(top, heap_[parent])) break;
    heap_[hole] = heap_[parent];
    hole = parent;
  }
  heap_[hole] = top;
  return chosen;
}

int RoundRobinPicker::pick(std::span<const uint32_t> /*outstanding*/) {
  switch (mode_) {
    case Mode::kRotate: {
      const uint32_t i = next_;
      next_ = (i + 1 == n_) ? 0 : i + 1;  // compare, not modulo: no division on the hot path
      return static_cast<int>(i);
    }
    case Mode::kSchedule: {
      const uint32_t i = schedule_[next_];
      next_ = (next_ + 1 == period_) ? 0 : next_ + 1;
      return static_cast<int>(i);
    }
    case Mode::kEdf:
      return static_cast<int>(edf_next());
    case Mode::kEmpty:
      break;
  }
  return -1;
}

}  // namespace ringlb::lb

#include "lb/round_robin.h"

#include <algorithm>
#include <cassert>
#include <numeric>

namespace ringlb::lb {

namespace {

__extension__ typedef unsigned __int128 u128;  // exact products of 64- and 32-bit values

}  // namespace

void WrrSequence::build(std::span<const uint32_t> weights, uint64_t mixed, size_t max_schedule) {
  // Indices are returned as int; a cluster anywhere near 2^31 endpoints is a broken snapshot.
  assert(weights.size() < (size_t{1} << 31));
  mode_ = Mode::kEmpty;
  n_ = static_cast<uint32_t>(weights.size());
  next_ = 0;
  period_ = 0;
  step_ = 0;
  schedule_.clear();
  heap_.clear();
  if (n_ == 0) return;

  // Reducing by the gcd makes {100, 100, 200} the same cheap sequence as {1, 1, 2}.
  std::vector<uint64_t> reduced(weights.begin(), weights.end());
  uint64_t g = 0;
  for (uint64_t w : reduced) {
    assert(w >= 1);
    g = std::gcd(g, w);
  }
  for (auto& w : reduced) {
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
    edf_init(reduced, 0);
    schedule_.resize(period_);
    for (auto& slot : schedule_) slot = edf_next();
    heap_.clear();
    heap_.shrink_to_fit();
    next_ = static_cast<uint32_t>(mixed % period_);
    return;
  }

  mode_ = Mode::kEdf;
  edf_init(reduced, static_cast<uint32_t>(mixed >> 32));
}

bool WrrSequence::earlier(const EdfEntry& a, const EdfEntry& b) {
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
void WrrSequence::edf_init(std::span<const uint64_t> weights, uint32_t start) {
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
uint32_t WrrSequence::edf_next() {
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

inline int WrrSequence::next() {
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

RoundRobinPicker::RoundRobinPicker(const EndpointSet& set, uint64_t seed)
    : RoundRobinPicker(set, seed,
                       std::max(kScheduleMinEntries, kScheduleEntriesPerEndpoint * set.size())) {}

RoundRobinPicker::RoundRobinPicker(const EndpointSet& set, uint64_t seed, size_t max_schedule)
    : set_(&set), seed_(seed), max_schedule_(max_schedule) {
  std::vector<uint32_t> weights(set.size());
  for (size_t i = 0; i < set.size(); ++i) weights[i] = endpoint_weight(set.endpoints[i]);
  all_.build(weights, mix_seed(seed), max_schedule);
}

int RoundRobinPicker::pick(PickContext& ctx) {
  ctx.panic = false;
  const Eligibility* el = ctx.eligibility;
  if ((el == nullptr || el->all_clear()) && ctx.avoid.empty()) [[likely]] {
    return all_.next();
  }
  return pick_slow(ctx);
}

int RoundRobinPicker::pick_slow(PickContext& ctx) {
  const Eligibility* el = ctx.eligibility;
  if (all_.size() == 0) return -1;
  if (el == nullptr || el->all_clear()) return choose(all_, nullptr, ctx.avoid);
  assert(el->size() == all_.size());
  if (panics(*el, ctx.panic_percent)) {
    ctx.panic = true;
    return choose(all_, nullptr, ctx.avoid);
  }
  if (el->version() != eligible_version_) rebuild_eligible(*el);
  if (ctx.avoid.empty()) return static_cast<int>(eligible_ids_[eligible_.next()]);
  return choose(eligible_, eligible_ids_.data(), ctx.avoid);
}

// The next endpoint of `seq` not in `avoid`. Drawing on keeps the weighted order; if the avoided
// endpoints fill the next kAvoidDraws turns (they hold most of the weight), one pass over the
// positions finds another: among any avoid.size() + 1 consecutive positions one is not avoided,
// so the pass is short. When every candidate is avoided, the plain next turn (relaxed).
int RoundRobinPicker::choose(WrrSequence& seq, const uint32_t* ids, std::span<const int> avoid) {
  auto id = [ids](uint32_t pos) { return ids == nullptr ? pos : ids[pos]; };
  const uint32_t m = seq.size();
  if (m <= avoid.size()) {  // possibly all avoided: find out first, so relaxed picks still rotate
    bool any = false;
    for (uint32_t pos = 0; pos < m && !any; ++pos) any = !avoids(avoid, id(pos));
    if (!any) return static_cast<int>(id(static_cast<uint32_t>(seq.next())));
  }
  uint32_t i = id(static_cast<uint32_t>(seq.next()));
  for (int k = 1; k < kAvoidDraws && avoids(avoid, i); ++k) {
    i = id(static_cast<uint32_t>(seq.next()));
  }
  if (!avoids(avoid, i)) return static_cast<int>(i);
  for (uint32_t j = 0; j < m; ++j) {
    const uint32_t pos = (scan_ + j) % m;
    if (!avoids(avoid, id(pos))) {
      scan_ = pos + 1;  // the next fallback starts past this one, so they rotate too
      return static_cast<int>(id(pos));
    }
  }
  __builtin_trap();  // broken invariant: checked above that some position is not avoided
}

void WrrSequence::build_filtered(const WrrSequence& base, std::span<const uint32_t> ids,
                                 uint64_t mixed, std::vector<uint32_t>& pos_of) {
  assert(base.mode_ == Mode::kSchedule && !ids.empty());
  constexpr uint32_t kOut = UINT32_MAX;
  pos_of.assign(base.n_, kOut);
  for (uint32_t k = 0; k < ids.size(); ++k) pos_of[ids[k]] = k;
  schedule_.clear();
  for (uint32_t e : base.schedule_) {
    if (pos_of[e] != kOut) schedule_.push_back(pos_of[e]);
  }
  heap_.clear();
  mode_ = Mode::kSchedule;
  n_ = static_cast<uint32_t>(ids.size());
  period_ = schedule_.size();
  step_ = 0;
  next_ = static_cast<uint32_t>(mixed % period_);
}

void RoundRobinPicker::rebuild_eligible(const Eligibility& el) {
  eligible_weights(*set_, el, eligible_ids_, eligible_weights_);
  // A fresh start point per version: shards (different seeds) and successive rebuilds do not
  // all restart the new period at its first entry.
  const uint64_t mixed = mix_seed(seed_ ^ el.version());
  bool full_weights = true;
  for (uint32_t i : eligible_ids_)
    full_weights &= el.weight_permille(i) == Eligibility::kFullWeight;
  if (full_weights && all_.mode() == Mode::kSchedule) {
    eligible_.build_filtered(all_, eligible_ids_, mixed, pos_of_);
  } else {
    eligible_.build(eligible_weights_, mixed, max_schedule_);
  }
  eligible_version_ = el.version();
}

}  // namespace ringlb::lb

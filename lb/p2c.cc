#include "lb/p2c.h"

#include <algorithm>
#include <cassert>

namespace ringlb::lb {

namespace {

__extension__ typedef unsigned __int128 u128;  // exact products of 64- and 32-bit values

// Maps 32 random bits onto [0, n) by multiply-shift (Lemire): no division on the hot path. The
// bias is below n / 2^32, far under the noise of any load signal.
inline uint32_t reduce32(uint32_t r, uint32_t n) {
  return static_cast<uint32_t>((uint64_t{r} * n) >> 32);
}

}  // namespace

P2cPicker::P2cPicker(const EndpointSet& set, uint64_t seed) : set_(&set), rng_(mix_seed(seed)) {
  assert(set.size() < (size_t{1} << 31));
  std::vector<uint32_t> weights(set.size());
  for (size_t i = 0; i < set.size(); ++i) weights[i] = endpoint_weight(set.endpoints[i]);
  all_.build(weights);
}

// Reuses the vectors' capacity: the eligible tables are rebuilt on eligibility changes.
void P2cPicker::Tables::build(std::span<const uint32_t> w) {
  assert(w.size() < (size_t{1} << 31));
  n = static_cast<uint32_t>(w.size());
  weighted = false;
  total_weight = 0;
  weights.clear();
  alias.clear();
  prefix.clear();
  if (n < 2) return;
  for (uint32_t x : w) {
    if (x != w[0]) weighted = true;
  }
  if (!weighted) return;  // uniform draws need no tables

  weights.assign(w.begin(), w.end());
  prefix.resize(n + 1);
  prefix[0] = 0;
  for (uint32_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + weights[i];
  total_weight = prefix[n];

  // Vose's alias method in exact integers: column capacity is W, endpoint i brings w_i * n.
  alias.resize(n);
  std::vector<u128> scaled(n);
  std::vector<uint32_t> small, large;
  small.reserve(n);
  large.reserve(n);
  const u128 cap = total_weight;
  for (uint32_t i = 0; i < n; ++i) {
    scaled[i] = static_cast<u128>(weights[i]) * n;
    (scaled[i] < cap ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back();
    small.pop_back();
    const uint32_t g = large.back();
    alias[s] = {static_cast<uint32_t>((scaled[s] << 32) / cap), g};
    scaled[g] -= cap - scaled[s];
    if (scaled[g] < cap) {
      large.pop_back();
      small.push_back(g);
    }
  }
  // Integer arithmetic is exact, so whatever is left holds exactly one full column each.
  for (uint32_t i : small) alias[i] = {0, i};
  for (uint32_t i : large) alias[i] = {0, i};
}

// wyrand: one multiply per 64 bits, passes BigCrush, and needs only 8 bytes of state.
inline uint64_t P2cPicker::next_random() {
  rng_ += 0xa0761d6478bd642fULL;
  const u128 t = static_cast<u128>(rng_) * (rng_ ^ 0xe7037ed1a0b428dbULL);
  return static_cast<uint64_t>(t >> 64) ^ static_cast<uint64_t>(t);
}

inline uint32_t P2cPicker::Tables::draw(uint64_t r) const {
  const uint32_t col = reduce32(static_cast<uint32_t>(r >> 32), n);
  const AliasSlot slot = alias[col];
  return static_cast<uint32_t>(r) < slot.threshold ? col : slot.alias;
}

// An exact draw from every position but `except`: a point in [0, W - w_except) that skips over
// except's stretch of the prefix sums.
uint32_t P2cPicker::Tables::draw_except(uint64_t r, uint32_t except) const {
  const uint64_t range = total_weight - weights[except];
  uint64_t point = static_cast<uint64_t>((static_cast<u128>(r) * range) >> 64);
  if (point >= prefix[except]) point += weights[except];
  const auto it = std::upper_bound(prefix.begin(), prefix.end(), point);
  return static_cast<uint32_t>(it - prefix.begin() - 1);
}

// `id` maps a table position to an endpoint index: identity for the member tables.
template <typename Id>
inline int P2cPicker::pick_two(const Tables& t, Id id, std::span<const uint32_t> outstanding) {
  if (t.n < 2) return t.n == 0 ? -1 : static_cast<int>(id(0));
  assert(outstanding.size() == all_.n);

  if (!t.weighted) {
    const uint64_t r = next_random();
    const uint32_t a = reduce32(static_cast<uint32_t>(r), t.n);
    uint32_t b = reduce32(static_cast<uint32_t>(r >> 32), t.n - 1);
    b += (b >= a);  // skip over a: uniform over the other n - 1
    const uint32_t ia = id(a), ib = id(b);
    return static_cast<int>(outstanding[ib] < outstanding[ia] ? ib : ia);
  }

  const uint32_t a = t.draw(next_random());
  uint32_t b = t.draw(next_random());
  if (b == a) b = t.draw_except(next_random(), a);
  // outstanding[b] / w_b < outstanding[a] / w_a, in integers: both products are below 2^64.
  const uint32_t ia = id(a), ib = id(b);
  const uint64_t load_a = uint64_t{outstanding[ia]} * t.weights[b];
  const uint64_t load_b = uint64_t{outstanding[ib]} * t.weights[a];
  return static_cast<int>(load_b < load_a ? ib : ia);
}

namespace {

// A functor rather than a function pointer, so the member path inlines to plain indexing.
struct Identity {
  uint32_t operator()(uint32_t pos) const { return pos; }
};
constexpr Identity identity;

}  // namespace

int P2cPicker::pick(PickContext& ctx) {
  ctx.panic = false;
  const Eligibility* el = ctx.eligibility;
  if ((el == nullptr || el->all_clear()) && ctx.avoid.empty()) [[likely]] {
    return pick_two(all_, identity, ctx.outstanding);
  }
  return pick_slow(ctx);
}

int P2cPicker::pick_slow(PickContext& ctx) {
  if (all_.n == 0) return -1;
  const Eligibility* el = ctx.eligibility;
  if (el == nullptr || el->all_clear()) return pick_avoiding(all_, identity, ctx);
  assert(el->size() == all_.n);
  if (panics(*el, ctx.panic_percent)) {
    ctx.panic = true;
    return pick_avoiding(all_, identity, ctx);
  }
  if (el->version() != eligible_version_) rebuild_eligible(*el);
  const auto mapped = [this](uint32_t pos) { return eligible_ids_[pos]; };
  return pick_avoiding(eligible_, mapped, ctx);
}

// Two distinct draws outside ctx.avoid; if at most one endpoint is outside it, that one, and if
// none is, two draws as if there were no avoid list (relaxed).
template <typename Id>
int P2cPicker::pick_avoiding(const Tables& t, Id id, const PickContext& ctx) {
  if (ctx.avoid.empty()) return pick_two(t, id, ctx.outstanding);
  assert(ctx.outstanding.size() == all_.n);
  const int a = draw_avoiding(t, id, ctx.avoid, -1);
  if (a < 0) return pick_two(t, id, ctx.outstanding);
  const int b = draw_avoiding(t, id, ctx.avoid, a);
  const uint32_t ia = id(static_cast<uint32_t>(a));
  if (b < 0) return static_cast<int>(ia);
  const uint32_t ib = id(static_cast<uint32_t>(b));
  const uint64_t load_a = uint64_t{ctx.outstanding[ia]} * t.weight(static_cast<uint32_t>(b));
  const uint64_t load_b = uint64_t{ctx.outstanding[ib]} * t.weight(static_cast<uint32_t>(a));
  return static_cast<int>(load_b < load_a ? ib : ia);
}

// One weight-proportional draw of a position whose endpoint is not in `avoid` and that is not
// `except` (-1: none), or -1 if there is no such position. Rejecting avoided draws keeps the
// draw exact: P(j) = w_j / (weight of all allowed positions). The fallback pass is the same
// distribution computed directly, for when the avoided endpoints hold most of the weight.
template <typename Id>
int P2cPicker::draw_avoiding(const Tables& t, Id id, std::span<const int> avoid, int except) {
  if (except >= 0 && t.n < 2) return -1;
  // With n <= |avoid| + 1 there may be no allowed position at all: rejection would spend all its
  // draws to learn that, while the exact pass over so few positions is cheap.
  const int draws = t.n <= avoid.size() + 1 ? 0 : kAvoidDraws;
  for (int k = 0; k < draws; ++k) {
    uint32_t p;
    if (except < 0) {
      p = t.weighted ? t.draw(next_random()) : reduce32(static_cast<uint32_t>(next_random()), t.n);
    } else if (t.weighted) {
      p = t.draw(next_random());
      if (p == static_cast<uint32_t>(except)) p = t.draw_except(next_random(), p);
    } else {
      p = reduce32(static_cast<uint32_t>(next_random()), t.n - 1);
      p += (p >= static_cast<uint32_t>(except));
    }
    if (!avoids(avoid, id(p))) return static_cast<int>(p);
  }
  auto allowed = [&](uint32_t p) { return static_cast<int>(p) != except && !avoids(avoid, id(p)); };
  uint64_t total = 0;
  for (uint32_t p = 0; p < t.n; ++p) {
    if (allowed(p)) total += t.weight(p);
  }
  if (total == 0) return -1;
  uint64_t point = static_cast<uint64_t>((static_cast<u128>(next_random()) * total) >> 64);
  for (uint32_t p = 0; p < t.n; ++p) {
    if (!allowed(p)) continue;
    if (point < t.weight(p)) return static_cast<int>(p);
    point -= t.weight(p);
  }
  __builtin_trap();  // broken invariant: point < total
}

void P2cPicker::rebuild_eligible(const Eligibility& el) {
  eligible_weights(*set_, el, eligible_ids_, eligible_weights_);
  eligible_.build(eligible_weights_);
  eligible_version_ = el.version();
}

}  // namespace ringlb::lb

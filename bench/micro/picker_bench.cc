// ns per pick for each picker, at 3, 100 and 1,000 endpoints with equal and mixed weights, then
// with an Eligibility beside the set (10% / 50% ineligible) and a call's avoid list. Picks go
// through the Picker interface with a PickContext, as the shard's router calls them.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lb/eligibility.h"
#include "lb/endpoint.h"
#include "lb/p2c.h"
#include "lb/picker.h"
#include "lb/round_robin.h"

namespace {

using ringlb::lb::Eligibility;
using ringlb::lb::EndpointSet;
using ringlb::lb::PickContext;
using ringlb::lb::Picker;
using ringlb::lb::Policy;

enum Weights : int64_t { kEqual = 0, kMixed = 1 };

EndpointSet make_set(size_t n, bool mixed) {
  EndpointSet set;
  set.endpoints.resize(n);
  for (size_t i = 0; i < n; ++i) {
    set.endpoints[i].weight = mixed ? static_cast<uint32_t>(1 + (i * 7) % 10) : 1;
  }
  return set;
}

// A plausible spread of in-flight calls, so p2c's comparison is not always a tie.
std::vector<uint32_t> make_outstanding(size_t n) {
  std::vector<uint32_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>((i * 2654435761u) >> 28);
  return out;
}

template <typename Make>
void run_picks(benchmark::State& state, Make make) {
  const auto n = static_cast<size_t>(state.range(0));
  const bool mixed = state.range(1) == kMixed;
  const EndpointSet set = make_set(n, mixed);
  const std::vector<uint32_t> outstanding = make_outstanding(n);
  std::unique_ptr<Picker> picker = make(set);
  PickContext ctx{.outstanding = outstanding};
  for (auto _ : state) {
    benchmark::DoNotOptimize(picker->pick(ctx));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(mixed ? "mixed weights" : "equal weights");
}

void BM_RoundRobinPick(benchmark::State& state) {
  run_picks(state, [](const EndpointSet& set) {
    return ringlb::lb::make_picker(ringlb::lb::Policy::kRoundRobin, set, 1);
  });
}

// Unequal weights with the schedule budget at 0: the O(log n) EDF heap that large weights use.
void BM_RoundRobinEdfPick(benchmark::State& state) {
  run_picks(state, [](const EndpointSet& set) -> std::unique_ptr<Picker> {
    return std::make_unique<ringlb::lb::RoundRobinPicker>(set, 1, 0);
  });
}

void BM_P2cPick(benchmark::State& state) {
  run_picks(state, [](const EndpointSet& set) {
    return ringlb::lb::make_picker(ringlb::lb::Policy::kP2c, set, 1);
  });
}

// Construction happens once per shard per snapshot: worth knowing, but off the per-call path.
void BM_RoundRobinBuild(benchmark::State& state) {
  const EndpointSet set = make_set(static_cast<size_t>(state.range(0)), state.range(1) == kMixed);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ringlb::lb::make_picker(ringlb::lb::Policy::kRoundRobin, set, 1));
  }
}

void BM_P2cBuild(benchmark::State& state) {
  const EndpointSet set = make_set(static_cast<size_t>(state.range(0)), state.range(1) == kMixed);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ringlb::lb::make_picker(ringlb::lb::Policy::kP2c, set, 1));
  }
}

// With eligibility: args are endpoints, percent ineligible, avoid entries. The ineligible ones are
// spread evenly (at least one when the percentage is not 0); the avoid list names eligible
// endpoints (a retry's earlier tries), leaving at least one candidate. 0% still passes an
// Eligibility, all clear: the cost of carrying one on the fast path.
void run_eligibility_picks(benchmark::State& state, Policy policy) {
  const auto n = static_cast<size_t>(state.range(0));
  const auto pct = static_cast<size_t>(state.range(1));
  const auto want_avoid = static_cast<size_t>(state.range(2));
  const EndpointSet set = make_set(n, false);
  const std::vector<uint32_t> outstanding = make_outstanding(n);
  Eligibility el(n);
  const size_t k = pct == 0 ? 0 : std::max<size_t>(1, n * pct / 100);
  for (size_t j = 0; j < k; ++j) el.set_flags(j * n / k + n / k / 2, ringlb::lb::kUnhealthy);
  std::vector<int> avoid;
  for (size_t i = 0; i < n && avoid.size() < want_avoid && avoid.size() + 1 < el.eligible_count();
       ++i) {
    if (el.eligible(i)) avoid.push_back(static_cast<int>(i));
  }
  std::unique_ptr<Picker> picker = ringlb::lb::make_picker(policy, set, 1);
  PickContext ctx{.outstanding = outstanding, .eligibility = &el, .avoid = avoid};
  for (auto _ : state) {
    benchmark::DoNotOptimize(picker->pick(ctx));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(std::to_string(n - el.eligible_count()) + " ineligible, avoid " +
                 std::to_string(avoid.size()));
}

void BM_RoundRobinEligible(benchmark::State& state) {
  run_eligibility_picks(state, Policy::kRoundRobin);
}

void BM_P2cEligible(benchmark::State& state) {
  run_eligibility_picks(state, Policy::kP2c);
}

// One eligibility change before every pick: the lazy rebuild of the eligible tables, the price
// of a health flap or a slow-start step (per shard, per change).
void run_change_picks(benchmark::State& state, Policy policy) {
  const auto n = static_cast<size_t>(state.range(0));
  const EndpointSet set = make_set(n, state.range(1) == kMixed);
  const std::vector<uint32_t> outstanding = make_outstanding(n);
  Eligibility el(n);
  el.set_flags(0, ringlb::lb::kEjected);
  std::unique_ptr<Picker> picker = ringlb::lb::make_picker(policy, set, 1);
  PickContext ctx{.outstanding = outstanding, .eligibility = &el};
  uint8_t bits = 0;
  for (auto _ : state) {
    bits ^= ringlb::lb::kUnhealthy;
    el.set_flags(n / 2, bits);
    benchmark::DoNotOptimize(picker->pick(ctx));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(state.range(1) == kMixed ? "mixed weights" : "equal weights");
}

void BM_RoundRobinEligibilityChange(benchmark::State& state) {
  run_change_picks(state, Policy::kRoundRobin);
}

void BM_P2cEligibilityChange(benchmark::State& state) {
  run_change_picks(state, Policy::kP2c);
}

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"endpoints", "mixed"});
  for (int64_t w : {kEqual, kMixed}) {
    for (int64_t n : {3, 100, 1000}) b->Args({n, w});
  }
}

void mixed_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"endpoints", "mixed"});
  for (int64_t n : {3, 100, 1000}) b->Args({n, kMixed});
}

void eligibility_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"endpoints", "ineligible_pct", "avoid"});
  for (int64_t avoid : {0, 2}) {
    for (int64_t pct : {0, 10, 50}) {
      for (int64_t n : {3, 100, 1000}) b->Args({n, pct, avoid});
    }
  }
}

void change_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"endpoints", "mixed"});
  for (int64_t w : {kEqual, kMixed}) {
    for (int64_t n : {100, 1000}) b->Args({n, w});
  }
}

}  // namespace

BENCHMARK(BM_RoundRobinPick)->Apply(sizes);
BENCHMARK(BM_RoundRobinEdfPick)->Apply(mixed_sizes);
BENCHMARK(BM_P2cPick)->Apply(sizes);
BENCHMARK(BM_RoundRobinEligible)->Apply(eligibility_sizes);
BENCHMARK(BM_P2cEligible)->Apply(eligibility_sizes);
BENCHMARK(BM_RoundRobinEligibilityChange)->Apply(change_sizes);
BENCHMARK(BM_P2cEligibilityChange)->Apply(change_sizes);
BENCHMARK(BM_RoundRobinBuild)->Apply(sizes);
BENCHMARK(BM_P2cBuild)->Apply(sizes);

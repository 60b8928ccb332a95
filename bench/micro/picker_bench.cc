// ns per pick for each picker, at 3, 100 and 1,000 endpoints with equal and mixed weights.
// Picks go through the Picker interface, as the shard's router calls them.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "lb/endpoint.h"
#include "lb/p2c.h"
#include "lb/picker.h"
#include "lb/round_robin.h"

namespace {

using ringlb::lb::EndpointSet;
using ringlb::lb::Picker;

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
  for (auto _ : state) {
    benchmark::DoNotOptimize(picker->pick(outstanding));
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

}  // namespace

BENCHMARK(BM_RoundRobinPick)->Apply(sizes);
BENCHMARK(BM_RoundRobinEdfPick)->Apply(mixed_sizes);
BENCHMARK(BM_P2cPick)->Apply(sizes);
BENCHMARK(BM_RoundRobinBuild)->Apply(sizes);
BENCHMARK(BM_P2cBuild)->Apply(sizes);

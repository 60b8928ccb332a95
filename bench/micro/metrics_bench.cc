// Metrics: what one /metrics scrape costs the control thread (render_metrics over the shards'
// snapshots: sums, the method cap, text) and how large the text is, with 100 endpoints and 200
// methods; and the per-call counting a shard does at the end of each call (one method-table
// lookup). Nothing runs: snapshots and records are made up.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/proxy/stats.h"
#include "core/runtime/control.h"
#include "core/runtime/metrics.h"
#include "core/runtime/shard_snapshot.h"

namespace {

using namespace ringlb;

std::string endpoint_name(int i) {
  return "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":50051";
}

core::config::Config make_config(int endpoints, int methods) {
  std::string toml = "[metrics]\nmax_methods = " + std::to_string(methods) +
                     "\n[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
                     "[[cluster]]\nname = \"c\"\nendpoints = [";
  for (int i = 0; i < endpoints; ++i) toml += (i ? ", \"" : "\"") + endpoint_name(i) + "\"";
  return core::config::parse_config(toml + "]\n", "<bench>");
}

std::unique_ptr<core::runtime::ShardSnapshot> make_snapshot(unsigned shard, int endpoints,
                                                            int methods) {
  auto s = std::make_unique<core::runtime::ShardSnapshot>();
  s->shard = shard;
  s->listeners.resize(1);
  s->listeners[0].accepted = 1000;
  core::runtime::ClusterView& c = s->clusters.emplace_back();
  c.name = "c";
  c.counters.calls = 1'000'000;
  c.counters.calls_ended[0] = 990'000;
  c.counters.calls_ended[14] = 10'000;
  for (int i = 0; i < endpoints; ++i) {
    core::runtime::EndpointView& e = c.endpoints.emplace_back();
    e.name = endpoint_name(i);
    e.counters.attempts = 10'000;
    e.counters.attempts_ended[0] = 9'900;
    e.counters.attempts_ended[14] = 100;
    e.counters.connects = 2;
  }
  for (int m = 0; m < methods; ++m) {
    core::proxy::MethodRow r{
        "default", "/pkg.Service" + std::to_string(m % 20) + "/Method" + std::to_string(m), {}};
    r.counters.calls[0] = 5000;
    r.counters.calls[4] = 7;
    for (size_t b = 0; b < core::proxy::kLatencyBuckets; ++b) r.counters.latency[b] = 300 + b;
    r.counters.latency_sum_ns = 123'456'789'000;
    s->methods.push_back(std::move(r));
  }
  return s;
}

// Args: endpoints, methods, shards.
void BM_RenderMetrics(benchmark::State& state) {
  const int endpoints = static_cast<int>(state.range(0));
  const int methods = static_cast<int>(state.range(1));
  const unsigned shards = static_cast<unsigned>(state.range(2));
  auto config = std::make_shared<const core::config::Config>(make_config(endpoints, methods));
  core::runtime::Controller controller(config, std::vector<core::runtime::Shard*>(shards));
  std::vector<std::unique_ptr<core::runtime::ShardSnapshot>> snaps;
  for (unsigned s = 0; s < shards; ++s) snaps.push_back(make_snapshot(s, endpoints, methods));
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = core::runtime::render_metrics(controller, snaps);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderMetrics)
    ->Args({100, 200, 2})
    ->Args({100, 200, 8})
    ->Unit(benchmark::kMillisecond);

// One method-table lookup for a known method (what count_call does per call).
void BM_MethodTableHit(benchmark::State& state) {
  core::proxy::MethodTable table(200);
  std::vector<std::string> paths;
  for (int m = 0; m < 200; ++m) paths.push_back("/pkg.Service/Method" + std::to_string(m));
  for (const std::string& p : paths) table.at("default", p);
  size_t i = 0;
  for (auto _ : state) {
    core::proxy::MethodCounters& c = table.at("default", paths[i++ % paths.size()]);
    ++c.calls[0];
    benchmark::DoNotOptimize(&c);
  }
}
BENCHMARK(BM_MethodTableHit);

}  // namespace

// Snapshots: the cost of publishing a new endpoint set to every shard (control thread side plus
// each shard's apply), and the hot-path read of a shard's current set, next to a plain pointer
// read. Shards are built but not run: no reactor, no sockets.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <vector>

#include "core/config/config.h"
#include "core/runtime/shard.h"
#include "discovery/snapshot.h"

namespace {

using namespace ringlb;

lb::EndpointSetPtr make_set(int n, int offset, uint64_t version) {
  std::vector<lb::Endpoint> eps;
  for (int i = 0; i < n; ++i) {
    lb::Endpoint e;
    auto* sin = reinterpret_cast<sockaddr_in*>(&e.addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(50051);
    sin->sin_addr.s_addr = htonl(0x0a000000u + static_cast<uint32_t>(i + offset));
    e.addr_len = sizeof(sockaddr_in);
    e.name = "10.0.x.x:50051";
    eps.push_back(std::move(e));
  }
  return discovery::make_endpoint_set(std::move(eps), version);
}

core::config::Config make_config() {
  return core::config::parse_config(
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
      "[[cluster]]\nname = \"c\"\nlb = \"p2c\"\nendpoints = [\"10.0.0.1:1\"]\n",
      "<bench>");
}

// Publish one snapshot (n endpoints, a quarter of them replaced each time) to `shards` shards
// and let each apply it: what one DNS change costs the whole process.
void BM_PublishToShards(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int shard_count = static_cast<int>(state.range(1));
  auto config = std::make_shared<const core::config::Config>(make_config());
  std::vector<std::unique_ptr<core::runtime::Shard>> shards;
  for (int i = 0; i < shard_count; ++i) {
    core::runtime::ShardSetup setup;
    setup.index = static_cast<unsigned>(i);
    setup.endpoint_sets = {make_set(n, 0, 1)};
    shards.push_back(std::make_unique<core::runtime::Shard>(config, std::move(setup)));
  }
  std::vector<lb::EndpointSetPtr> sets = {make_set(n, 0, 2), make_set(n, n / 4, 3)};
  size_t k = 0;
  for (auto _ : state) {
    const lb::EndpointSetPtr& s = sets[k++ & 1];
    for (auto& sh : shards) sh->post_endpoints(0, s);
    for (auto& sh : shards) sh->drain_inbox();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PublishToShards)->Args({3, 2})->Args({100, 2})->Args({1000, 2})->Args({100, 8});

// The hot path: a shard's cluster state holds its snapshot as a plain pointer it owns; a call
// reads it and the endpoint count. Compared with reading a plain pointer to a vector.
void BM_SnapshotReadHotPath(benchmark::State& state) {
  auto config = std::make_shared<const core::config::Config>(make_config());
  core::runtime::ShardSetup setup;
  setup.endpoint_sets = {make_set(100, 0, 1)};
  core::runtime::Shard shard(config, std::move(setup));
  core::proxy::ClusterState& c = shard.cluster(0);
  for (auto _ : state) {
    const lb::EndpointSet* s = c.set.get();
    benchmark::DoNotOptimize(s->size());
  }
}
BENCHMARK(BM_SnapshotReadHotPath);

void BM_PlainPointerRead(benchmark::State& state) {
  auto v = std::make_unique<std::vector<int>>(100);
  std::vector<int>* p = v.get();
  benchmark::DoNotOptimize(p);
  for (auto _ : state) benchmark::DoNotOptimize(p->size());
}
BENCHMARK(BM_PlainPointerRead);

}  // namespace

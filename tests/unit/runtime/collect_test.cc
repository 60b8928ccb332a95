// Controller::collect: every shard's snapshot comes back to the collection that asked (by
// collect_id), overlapping collections each get their own answers, snapshots are not counted as
// endpoint reports, and late answers for a finished collection are dropped. Real Shard and
// Controller objects on this thread; inboxes are drained by hand.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/runtime/control.h"
#include "core/runtime/reports.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"

using ringlb::core::runtime::Controller;
using ringlb::core::runtime::ReportQueue;
using ringlb::core::runtime::Shard;
using ringlb::core::runtime::ShardSetup;
using ringlb::core::runtime::ShardSnapshot;

namespace {

struct Rig {
  std::shared_ptr<const ringlb::core::config::Config> cfg;
  ReportQueue reports;
  std::vector<std::unique_ptr<Shard>> shards;
  std::unique_ptr<Controller> control;

  Rig() {
    cfg = std::make_shared<ringlb::core::config::Config>(ringlb::core::config::parse_config(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
        "[[cluster]]\nname = \"c\"\nendpoints = [\"10.0.0.1:1\", \"10.0.0.2:1\"]\n",
        "t.toml"));
    std::vector<Shard*> raw;
    for (unsigned i = 0; i < 3; ++i) {
      ShardSetup s;
      s.index = i;
      s.workers = 3;
      s.reports = &reports;
      s.endpoint_sets = ringlb::core::runtime::initial_endpoint_sets(*cfg);
      shards.push_back(std::make_unique<Shard>(cfg, std::move(s)));
      raw.push_back(shards.back().get());
    }
    control = std::make_unique<Controller>(cfg, raw, &reports);
  }
};

struct Result {
  int calls = 0;
  std::vector<unsigned> shards, missing;
  size_t endpoints = 0;
};

Controller::CollectDone record(Result& out) {
  return [&out](std::vector<std::unique_ptr<ShardSnapshot>>& got,
                const std::vector<unsigned>& missing) {
    ++out.calls;
    for (auto& s : got) {
      out.shards.push_back(s->shard);
      out.endpoints = s->clusters.at(0).endpoints.size();
    }
    out.missing = missing;
  };
}

}  // namespace

TEST_CASE("collect: every shard answers; overlapping collections get their own answers") {
  Rig r;
  Result a, b;
  r.control->collect(1'000'000'000, record(a));
  r.shards[0]->drain_inbox();
  r.shards[1]->drain_inbox();
  r.control->collect(1'000'000'000, record(b));
  r.control->on_reports();
  CHECK(a.calls == 0);         // shard 2 has not answered yet
  r.shards[2]->drain_inbox();  // answers a, then b
  r.control->on_reports();
  CHECK(a.calls == 1);
  CHECK(a.shards == std::vector<unsigned>{0, 1, 2});
  CHECK(a.missing.empty());
  CHECK(a.endpoints == 2);
  CHECK(b.calls == 0);
  r.shards[0]->drain_inbox();
  r.shards[1]->drain_inbox();
  r.control->on_reports();
  CHECK(b.calls == 1);
  CHECK(b.shards == std::vector<unsigned>{0, 1, 2});
  // Snapshots carry no endpoint: nothing was counted as an endpoint report.
  CHECK(r.control->endpoint_reports().empty());
}

TEST_CASE("collect: an answer to a finished collection is dropped") {
  Rig r;
  Result a;
  r.control->collect(1'000'000'000, record(a));
  for (auto& s : r.shards) s->drain_inbox();
  // Each shard answers the same collection twice (a duplicate kCollect): counted once.
  for (auto& s : r.shards) s->post_collect(1);
  r.control->on_reports();
  CHECK(a.calls == 1);
  for (auto& s : r.shards) s->drain_inbox();
  r.control->on_reports();  // late: the collection is gone
  CHECK(a.calls == 1);
  CHECK(r.control->endpoint_reports().empty());
}

// Eligibility between the shards and the control thread: a shard's ejection reaches every shard
// (with the control thread's length), the cluster-wide cap takes back the one too many, and a
// health check's verdict reaches every shard. Real Shard and Controller objects on this thread:
// messages are handled by draining each shard's inbox by hand (no threads, no reactors).
#include "lb/eligibility.h"

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/config/config.h"
#include "core/runtime/control.h"
#include "core/runtime/reports.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"

using ringlb::core::proxy::ClusterState;
using ringlb::core::proxy::Outcome;
using ringlb::core::runtime::Controller;
using ringlb::core::runtime::ReportQueue;
using ringlb::core::runtime::Shard;
using ringlb::core::runtime::ShardSetup;
using ringlb::lb::kEjected;
using ringlb::lb::kUnhealthy;

namespace {

struct Rig {
  std::shared_ptr<const ringlb::core::config::Config> cfg;
  ReportQueue reports;
  std::vector<std::unique_ptr<Shard>> shards;
  std::unique_ptr<Controller> control;

  explicit Rig(const std::string& cluster_extra = "") {
    cfg = std::make_shared<ringlb::core::config::Config>(ringlb::core::config::parse_config(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
        "[[cluster]]\nname = \"c\"\n"
        "endpoints = [\"10.0.0.1:1\", \"10.0.0.2:1\", \"10.0.0.3:1\"]\n" +
            cluster_extra + "\n",
        "t.toml"));
    std::vector<Shard*> raw;
    for (unsigned i = 0; i < 2; ++i) {
      ShardSetup s;
      s.index = i;
      s.workers = 2;
      s.reports = &reports;
      s.endpoint_sets = ringlb::core::runtime::initial_endpoint_sets(*cfg);
      shards.push_back(std::make_unique<Shard>(cfg, std::move(s)));
      raw.push_back(shards.back().get());
    }
    control = std::make_unique<Controller>(cfg, raw, &reports);
  }
  ClusterState& cluster(size_t shard) { return shards[shard]->cluster(0); }
  uint8_t bits(size_t shard, size_t ep) { return cluster(shard).endpoints[ep]->ineligible; }
  void deliver() {
    for (auto& s : shards) s->drain_inbox();
  }
  void trip(size_t shard, size_t ep) {
    ClusterState& c = cluster(shard);
    for (int i = 0; i < 3; ++i) {
      c.record_outcome(*c.endpoints[ep], Outcome::kUnavailable, ringlb::core::base::mono_now_ns());
    }
  }
};

}  // namespace

TEST_CASE("eligibility: one shard's ejection reaches every shard, with control's length") {
  Rig r;
  r.trip(0, 1);
  CHECK(r.bits(0, 1) == kEjected);  // at once, on the shard that saw it
  CHECK(r.bits(1, 1) == 0);
  r.control->on_reports();
  r.trip(1, 1);  // the other shard trips too before it heard: its own ejection, its own length
  CHECK(r.bits(1, 1) == kEjected);
  r.control->on_reports();  // already out: the second shard gets the first one's length
  r.deliver();
  CHECK(r.bits(0, 1) == kEjected);
  CHECK(r.bits(1, 1) == kEjected);
  const auto& decided = r.control->eligibility(0);
  REQUIRE(decided.size() == 1);
  const auto& e = decided.begin()->second;
  CHECK(e.name == "10.0.0.2:1");
  CHECK(e.bits == kEjected);
  CHECK(e.outlier.streak == 1);
  for (size_t s = 0; s < 2; ++s) {
    CHECK(r.cluster(s).endpoints[1]->outlier.ejected_until_ns == e.outlier.ejected_until_ns);
    CHECK(r.cluster(s).endpoints[1]->outlier.streak == 1);
  }
  CHECK(e.ejections == 1);
  // Membership untouched on every shard.
  CHECK(r.cluster(1).set->size() == 3);
}

TEST_CASE("eligibility: the cap holds across shards; the one ejection too many is taken back") {
  Rig r;  // 3 endpoints at 50%: one may be out
  r.trip(0, 0);
  r.trip(1, 2);  // each shard alone sees room for one
  CHECK(r.bits(0, 0) == kEjected);
  CHECK(r.bits(1, 2) == kEjected);
  r.control->on_reports();
  r.deliver();
  for (size_t s = 0; s < 2; ++s) {
    CAPTURE(s);
    CHECK(r.bits(s, 0) == kEjected);
    CHECK(r.bits(s, 2) == 0);
    CHECK_FALSE(r.cluster(s).endpoints[2]->outlier.ejected());
  }
}

TEST_CASE("eligibility: a health check's verdict reaches every shard; ejection stays apart") {
  Rig r;
  const ringlb::lb::Endpoint& third = r.cluster(0).set->endpoints[2];
  r.control->set_health(0, third, true);  // healthy and nothing recorded: nothing to say
  CHECK(r.control->eligibility(0).empty());
  r.control->set_health(0, third, false);
  r.deliver();
  CHECK(r.bits(0, 2) == kUnhealthy);
  CHECK(r.bits(1, 2) == kUnhealthy);
  // Ejected on top, then healthy again: still ejected.
  r.trip(1, 2);
  r.control->on_reports();
  r.deliver();
  CHECK(r.bits(0, 2) == (kUnhealthy | kEjected));
  r.control->set_health(0, ringlb::lb::endpoint_key(third), true);  // by key: the same
  r.deliver();
  CHECK(r.bits(0, 2) == kEjected);
  CHECK(r.bits(1, 2) == kEjected);
}

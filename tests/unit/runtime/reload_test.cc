// Controller::reload with real Shard objects on this thread (no threads, no reactors: each
// shard's inbox is drained by hand): clusters diffed by name keep their per-endpoint state, new
// ones start, removed ones retire; a bad file changes nothing; reports from before the swap are
// dropped, not applied to whatever cluster now has their index.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/runtime/control.h"
#include "core/runtime/reports.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"

using ringlb::core::proxy::ClusterState;
using ringlb::core::proxy::EndpointState;
using ringlb::core::runtime::Controller;
using ringlb::core::runtime::ReportQueue;
using ringlb::core::runtime::Shard;
using ringlb::core::runtime::ShardReport;
using ringlb::core::runtime::ShardSetup;

namespace {

constexpr const char* kBase = R"([[listener]]
address = "127.0.0.1:0"
cluster = "a"
routes = [ { prefix = "/b.", cluster = "b" } ]

[[cluster]]
name = "a"
endpoints = ["10.0.0.1:1", "10.0.0.2:1"]

[[cluster]]
name = "b"
endpoints = ["10.0.0.3:1"]
)";

struct Rig {
  std::string path;
  std::shared_ptr<const ringlb::core::config::Config> cfg;
  ReportQueue reports;
  std::vector<std::unique_ptr<Shard>> shards;
  std::unique_ptr<Controller> control;

  Rig() {
    char tmpl[] = "/tmp/ringlb-reload-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = tmpl;
    write(kBase);
    cfg = std::make_shared<ringlb::core::config::Config>(ringlb::core::config::load_config(path));
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
    control->set_serving();
  }
  ~Rig() { ::unlink(path.c_str()); }
  void write(const std::string& text) { std::ofstream(path, std::ios::trunc) << text; }
  void deliver() {
    for (auto& s : shards) s->drain_inbox();
  }
  Controller::ReloadResult reload(const std::string& text) {
    write(text);
    Controller::ReloadResult r = control->reload();
    deliver();
    return r;
  }
};

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("reload: an endpoint list change keeps the state of the endpoints that stay") {
  Rig r;
  ClusterState* a0 = &r.shards[0]->cluster(0);
  EndpointState* kept = a0->endpoints[0];  // 10.0.0.1:1
  kept->outstanding = 1;                   // a call in flight: it must not be disturbed
  const uint64_t kept_id = kept->id;
  auto res = r.reload(replace(kBase, R"("10.0.0.2:1"])", R"("10.0.0.4:1"])"));
  CHECK(res.applied);
  CHECK(res.message ==
        "applied: 0 listeners added, 0 removed; 0 clusters added, 1 changed (endpoints +1 -1), "
        "0 removed");
  for (auto& s : r.shards) CHECK(s->generation() == 1);
  ClusterState& a = r.shards[0]->cluster(0);
  CHECK(&a == a0);  // the same state, not a new one
  REQUIRE(a.endpoints.size() == 2);
  CHECK(a.endpoints[0] == kept);
  CHECK(a.endpoints[0]->id == kept_id);
  CHECK(a.endpoints[0]->outstanding == 1);
  CHECK(a.endpoints[1]->endpoint.name == "10.0.0.4:1");
  CHECK(a.config == &r.shards[0]->config().clusters[0]);  // the new snapshot's
  CHECK(r.control->config().clusters[0].endpoints.size() == 2);
  kept->outstanding = 0;
}

TEST_CASE("reload: clusters are matched by name; new ones start, removed ones retire") {
  Rig r;
  ClusterState* b = &r.shards[1]->cluster(1);
  std::string text = replace(kBase, "name = \"a\"", "name = \"x\"");
  text = replace(text, "cluster = \"a\"", "cluster = \"x\"");
  text += "\n[[cluster]]\nname = \"c\"\nlb = \"p2c\"\nendpoints = [\"10.0.0.9:1\"]\n";
  auto res = r.reload(text);
  CHECK(res.applied);
  CHECK(res.message.find("2 clusters added") != std::string::npos);
  CHECK(res.message.find(", 1 removed") != std::string::npos);
  Shard& s = *r.shards[1];
  REQUIRE(s.cluster_count() == 3);
  CHECK(&s.cluster(1) == b);  // "b" stays at the same index, the same state
  CHECK(s.cluster(0).config->name == "x");
  CHECK(s.cluster(0).endpoints.size() == 2);
  CHECK(s.cluster(2).config->name == "c");
  CHECK(s.cluster(2).index == 2);
  REQUIRE(s.cluster(2).endpoints.size() == 1);
  CHECK(s.cluster(2).pick({}) == s.cluster(2).endpoints[0]);
  // Routes: the default cluster of the listener is "x" (index 0), "/b." still "b".
  CHECK(s.router(0).match("/b.Svc/M").cluster == 1);
  CHECK(s.router(0).match("/a.Svc/M").cluster == 0);
}

TEST_CASE("reload: a route moved to another cluster and an lb change apply to new calls") {
  Rig r;
  ClusterState* a = &r.shards[0]->cluster(0);
  EndpointState* e0 = a->endpoints[0];
  std::string text =
      replace(kBase, R"(prefix = "/b.", cluster = "b")", R"(prefix = "/b.", cluster = "a")");
  text = replace(text, "name = \"a\"", "name = \"a\"\nlb = \"p2c\"");
  auto res = r.reload(text);
  CHECK(res.applied);
  CHECK(res.message.find("routes changed") != std::string::npos);
  CHECK(res.message.find("(lb)") != std::string::npos);
  CHECK(r.shards[0]->router(0).match("/b.Svc/M").cluster == 0);
  CHECK(&r.shards[0]->cluster(0) == a);
  CHECK(a->endpoints[0] == e0);
  CHECK(a->config->lb == ringlb::core::config::LbPolicy::kP2c);
  EndpointState* picked = a->pick({});
  CHECK((picked == a->endpoints[0] || picked == a->endpoints[1]));
}

TEST_CASE("reload: refused before the shards serve") {
  Rig r;
  Controller c(r.cfg, {}, nullptr);
  auto res = c.reload();
  CHECK_FALSE(res.applied);
  CHECK(res.message == "starting: no reload before ready");
}

TEST_CASE("reload: a bad file changes nothing and says where") {
  Rig r;
  auto res = r.reload(std::string("[proxy]\nworkerz = 2\n") + kBase);
  CHECK_FALSE(res.applied);
  CHECK(res.message.find(r.path + ":2:") == 0);
  CHECK(res.message.find("workerz") != std::string::npos);
  CHECK(r.control->generation() == 0);
  for (auto& s : r.shards) CHECK(s->generation() == 0);
  CHECK(r.control->config_ptr() == r.cfg);
}

TEST_CASE("reload: settings that need a restart keep their running value") {
  Rig r;
  auto res = r.reload(std::string("[proxy]\nworkers = 7\ndrain_timeout = \"3s\"\n") + kBase);
  CHECK(res.applied);
  CHECK(res.message.ends_with("; needs a restart to take effect: proxy.workers"));
  CHECK(r.control->config().proxy.workers == r.cfg->proxy.workers);
  CHECK(r.shards[0]->config().proxy.drain_timeout == std::chrono::seconds(3));
}

TEST_CASE("reload: a report sent under the old generation is dropped, not misapplied") {
  Rig r;
  // "a" goes away: index 0 is now "b". A report about old cluster 0 must not land on "b".
  std::string text = replace(
      kBase, "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\", \"10.0.0.2:1\"]\n", "");
  text = replace(text, "cluster = \"a\"\n", "cluster = \"b\"\n");
  auto* stale = new ShardReport;
  stale->kind = ShardReport::Kind::kConnectFailed;
  stale->shard = 0;
  stale->cluster = 1;  // "b" under generation 0; out of range or another cluster after
  stale->generation = 0;
  stale->endpoint = "10.0.0.3:1";
  auto res = r.reload(text);
  REQUIRE(res.applied);
  r.reports.post(stale);
  auto* fresh = new ShardReport;
  fresh->kind = ShardReport::Kind::kConnectFailed;
  fresh->shard = 0;
  fresh->cluster = 0;
  fresh->generation = 1;
  fresh->endpoint = "10.0.0.3:1";
  r.reports.post(fresh);
  r.control->on_reports();
  const auto& reports = r.control->endpoint_reports();
  REQUIRE(reports.size() == 1);
  CHECK(reports.begin()->first == "b/10.0.0.3:1");
  CHECK(reports.begin()->second.counts[0] == 1);
}

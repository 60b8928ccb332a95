// plan_reload: what a reload changes, from the running config and the new one (pure).
#include "core/runtime/reload_plan.h"

#include <doctest/doctest.h>

#include <string>

using ringlb::core::config::Config;
using ringlb::core::config::parse_config;
using ringlb::core::runtime::plan_reload;
using ringlb::core::runtime::ReloadPlan;

namespace {

constexpr const char* kBase = R"([proxy]
workers = 2

[[listener]]
address = "127.0.0.1:7000"
cluster = "a"
routes = [ { prefix = "/b.", cluster = "b" } ]

[[cluster]]
name = "a"
endpoints = ["10.0.0.1:1", "10.0.0.2:1"]

[[cluster]]
name = "b"
endpoints = ["10.0.0.3:1"]
)";

Config parse(const std::string& text) {
  return parse_config(text, "t.toml");
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("reload plan: the same config changes nothing") {
  Config a = parse(kBase), b = parse(kBase);
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.listener_from == std::vector<int>{0});
  CHECK(p.listeners_removed.empty());
  CHECK(p.cluster_from == std::vector<int>{0, 1});
  CHECK(p.clusters_removed.empty());
  CHECK_FALSE(p.clusters[0].changed());
  CHECK_FALSE(p.clusters[1].changed());
  CHECK_FALSE(p.routes_changed);
  CHECK(p.needs_restart.empty());
  CHECK(p.summary() == "0 listeners added, 0 removed; 0 clusters added, 0 changed, 0 removed");
}

TEST_CASE("reload plan: endpoints added and removed are counted by address") {
  Config a = parse(kBase);
  Config b = parse(replace(kBase, R"(["10.0.0.1:1", "10.0.0.2:1"])",
                           R"(["10.0.0.1:1", "10.0.0.4:1", "10.0.0.5:1"])"));
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.clusters[0].endpoints);
  CHECK(p.clusters[0].endpoints_added == 2);
  CHECK(p.clusters[0].endpoints_removed == 1);
  CHECK_FALSE(p.clusters[0].lb);
  CHECK_FALSE(p.clusters[1].changed());
  CHECK(p.summary() ==
        "0 listeners added, 0 removed; 0 clusters added, 1 changed (endpoints +2 -1), 0 removed");
}

TEST_CASE("reload plan: a weight change is an endpoint change with nothing added or removed") {
  Config a = parse(kBase);
  Config b =
      parse(replace(kBase, R"("10.0.0.2:1"])", R"({ address = "10.0.0.2:1", weight = 5 }])"));
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.clusters[0].endpoints);
  CHECK(p.clusters[0].endpoints_added == 0);
  CHECK(p.clusters[0].endpoints_removed == 0);
}

TEST_CASE("reload plan: clusters are matched by name, whatever their order") {
  Config a = parse(kBase);
  std::string text =
      std::string(kBase) + "\n[[cluster]]\nname = \"c\"\nendpoints = [\"10.0.0.9:1\"]\n";
  text = replace(text, "name = \"a\"", "name = \"x\"");
  text = replace(text, R"(cluster = "a")", R"(cluster = "x")");
  Config b = parse(text);
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.cluster_from == std::vector<int>{-1, 1, -1});
  CHECK(p.clusters[0].added);
  CHECK(p.clusters[2].added);
  CHECK(p.clusters_removed == std::vector<size_t>{0});
  CHECK(p.cluster_to(2) == std::vector<int>{-1, 1});
  CHECK(p.routes_changed);  // the default cluster is now "x"
}

TEST_CASE("reload plan: a route to another cluster, lb and policies") {
  Config a = parse(kBase);
  std::string text =
      replace(kBase, R"(prefix = "/b.", cluster = "b")", R"(prefix = "/b.", cluster = "a")");
  text = replace(text, "name = \"b\"", "name = \"b\"\nlb = \"p2c\"\nconnect_timeout = \"1s\"");
  Config b = parse(text);
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.routes_changed);
  CHECK(p.clusters[1].lb);
  CHECK(p.clusters[1].policies);
  CHECK_FALSE(p.clusters[1].endpoints);
  CHECK_FALSE(p.clusters[0].changed());
}

TEST_CASE("reload plan: listeners are matched by address") {
  Config a = parse(kBase);
  std::string text = replace(kBase, "[[listener]]\naddress = \"127.0.0.1:7000\"",
                             "[[listener]]\naddress = \"127.0.0.1:7001\"\ncluster = \"b\"\n\n"
                             "[[listener]]\naddress = \"127.0.0.1:7000\"");
  Config b = parse(text);
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.listener_from == std::vector<int>{-1, 0});
  CHECK(p.listeners_removed.empty());
  CHECK(p.summary().starts_with("1 listener added, 0 removed;"));

  Config c = parse(replace(kBase, "127.0.0.1:7000", "127.0.0.1:7002"));
  ReloadPlan q = plan_reload(a, c);
  CHECK(q.listener_from == std::vector<int>{-1});
  CHECK(q.listeners_removed == std::vector<size_t>{0});
}

TEST_CASE("reload plan: settings read at start keep their running value and are named") {
  Config a = parse(kBase);
  Config b = parse(replace(kBase, "workers = 2",
                           "workers = 3\nmemory_limit = \"64MiB\"\ndrain_timeout = \"3s\""));
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.needs_restart == std::vector<std::string>{"proxy.workers", "proxy.memory_limit"});
  CHECK(b.proxy.workers == 2);
  CHECK(b.proxy.memory_limit == a.proxy.memory_limit);
  CHECK(b.proxy.drain_timeout == std::chrono::seconds(3));  // applies
}

TEST_CASE("reload plan: static to DNS is a new membership source; a DNS change a new follow") {
  Config a = parse(kBase);
  Config b = parse(replace(kBase, R"(endpoints = ["10.0.0.3:1"])",
                           R"(dns = "b.internal"
port = 50051)"));
  ReloadPlan p = plan_reload(a, b);
  CHECK(p.clusters[1].source);
  CHECK(p.clusters[1].dns);
  Config c = parse(replace(kBase, R"(endpoints = ["10.0.0.3:1"])",
                           R"(dns = "b2.internal"
port = 50051)"));
  ReloadPlan q = plan_reload(b, c);
  CHECK_FALSE(q.clusters[1].source);
  CHECK(q.clusters[1].dns);
  Config d = parse(replace(kBase, R"(endpoints = ["10.0.0.3:1"])",
                           R"(dns = "b2.internal"
port = 50051)"));
  CHECK_FALSE(plan_reload(c, d).clusters[1].changed());
}

TEST_CASE("reload plan: the log level changes only when the file sets it") {
  Config a = parse(kBase);
  Config b = parse(std::string("[log]\nlevel = \"debug\"\n") + kBase);
  CHECK(plan_reload(a, b).log_level_changed);
  Config c = parse(kBase);
  CHECK_FALSE(plan_reload(b, c).log_level_changed);
}

// Context::reconfigure (a reload on one shard), driven in memory: calls in flight finish under
// the snapshot they started with (their retry policy too, even when the new config changed it
// or removed their cluster), new calls take the new routes and clusters, and a cluster that
// stays keeps its upstream connections.
#include <doctest/doctest.h>

#include <cstdlib>
#include <memory>

#include "core/config/config.h"
#include "core/runtime/reload_plan.h"
#include "core/runtime/server.h"
#include "tests/unit/proxy/policy_test.h"
#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb::test;
using namespace ringlb::test::proxy_test;
using ringlb::core::config::Config;
using ringlb::core::proxy::Context;

namespace {

// Applies `toml` to the rig's context as the control thread would have it applied.
void reload(ProxyRig& rig, const std::string& toml, uint64_t generation) {
  Config next = ringlb::core::config::parse_config(toml, "t.toml");
  ringlb::core::runtime::ReloadPlan plan =
      ringlb::core::runtime::plan_reload(rig.ctx().config(), next);
  auto snap = std::make_shared<const Config>(std::move(next));
  Context::Reconfig r;
  r.config = snap;
  r.generation = generation;
  r.listener_from = plan.listener_from;
  r.cluster_from = plan.cluster_from;
  auto initial = ringlb::core::runtime::initial_endpoint_sets(*snap);
  r.sets.resize(snap->clusters.size());
  for (size_t j = 0; j < r.sets.size(); ++j) {
    if (plan.clusters[j].added || plan.clusters[j].endpoints) r.sets[j] = initial[j];
  }
  rig.ctx().reconfigure(r);
}

std::string other_cluster_config() {
  return "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"d\"\n"
         "[[cluster]]\nname = \"d\"\nendpoints = [\"127.0.0.1:2\"]\n";
}

}  // namespace

TEST_CASE("proxy reload: a call in flight to a removed cluster finishes; new calls go to the new") {
  ProxyRig rig(config());
  rig.mode(kA).action = Action::kHold;
  H2Client& c = rig.client();
  int32_t held = c.submit(grpc_request("/svc.Echo/Call", "x"));
  REQUIRE(rig.pump());
  REQUIRE(rig.backend(kA) != nullptr);
  reload(rig, other_cluster_config(), 1);
  CHECK(rig.ctx().generation() == 1);
  CHECK(rig.ctx().cluster_count() == 1);
  CHECK(rig.ctx().cluster(0).config->name == "d");
  int32_t fresh = c.submit(grpc_request("/svc.Echo/Call", "y"));
  REQUIRE(rig.pump());
  CHECK(c.stream(fresh)->grpc_status == 0);
  CHECK(exchanges(rig, kB).size() == 1);
  // The held call on the removed cluster's endpoint answers now.
  H2Backend* a = rig.backend(kA);
  a->respond(a->exchanges()[0]->id);
  a->send_trailers(a->exchanges()[0]->id, 0);
  REQUIRE(rig.pump());
  CHECK(c.stream(held)->grpc_status == 0);
  CHECK(rig.ended().size() == 2);
  // Its last call over, the removed cluster lets its connection go.
  REQUIRE(rig.advance_ms(1000));
  CHECK_FALSE(rig.backend_open(a));
}

TEST_CASE("proxy reload: a call in flight retries under the policy it started with") {
  using namespace ringlb::test::policy_test;
  ProxyRig rig(cfg());
  every_endpoint(rig, hold_first());
  H2Client& c = rig.client();
  int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  const std::string first = first_tried(rig);
  Exchange* a = only(rig, first);
  REQUIRE(a != nullptr);
  // The new config: no retries at all (attempts = 1), and cluster "c" renumbered.
  reload(rig,
         "[[cluster]]\nname = \"z\"\nendpoints = [\"127.0.0.1:9\"]\n" +
             cfg("retry = { backoff = \"0s\", attempts = 1 }"),
         1);
  CHECK(rig.ctx().cluster(1).config->name == "c");
  // The held attempt fails UNAVAILABLE: the call retries (attempts = 3, its old policy).
  backend_of(rig, first, a)->respond_trailers_only(a->id, 14);
  REQUIRE(rig.pump());
  CHECK(c.stream(id)->grpc_status == 0);
  CHECK(all_exchanges(rig).size() == 2);
  REQUIRE(rig.ended().size() == 1);
  CHECK(rig.ended()[0].rec.attempts == 2);
  // A new call under the new policy: UNAVAILABLE is final.
  every_endpoint(rig, fail_first(14));
  int32_t next = c.submit(grpc_request("/svc.Echo/Call", pattern(10)));
  REQUIRE(rig.pump());
  CHECK(c.stream(next)->grpc_status == 14);
  REQUIRE(rig.ended().size() == 2);
  CHECK(rig.ended()[1].rec.attempts == 1);
}

TEST_CASE("proxy reload: a cluster that stays keeps its upstream connection") {
  ProxyRig rig(config());
  H2Client& c = rig.client();
  int32_t first = c.submit(grpc_request("/timed.Echo/Call", "x"));
  REQUIRE(rig.pump());
  CHECK(c.stream(first)->grpc_status == 0);
  REQUIRE(rig.backends(kA).size() == 1);
  reload(rig, config("\"127.0.0.1:1\"", "drain_timeout = \"3s\"", "lb = \"p2c\""), 1);
  int32_t second = c.submit(grpc_request("/timed.Echo/Call", "y"));
  REQUIRE(rig.pump());
  CHECK(c.stream(second)->grpc_status == 0);
  CHECK(rig.backends(kA).size() == 1);  // the same connection
  CHECK(rig.backend_open(rig.backends(kA)[0]));
  CHECK(rig.ctx().config().proxy.drain_timeout == std::chrono::seconds(3));
}

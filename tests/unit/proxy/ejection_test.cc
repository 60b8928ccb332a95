// A shard's side of eligibility: passive outlier ejection from its own attempts (at once, on
// this shard), what the control thread says (ejections confirmed or taken back, health), the
// cap, the panic threshold, slow-start ramps, and what carries over when an endpoint leaves the
// set and comes back. Membership never changes for any of it. ClusterState driven alone with
// explicit times, then the proxy core in memory on a fake clock.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/proxy/cluster.h"
#include "discovery/snapshot.h"
#include "tests/unit/proxy/proxy_test.h"

using ringlb::core::proxy::ClusterState;
using ringlb::core::proxy::EndpointState;
using ringlb::core::proxy::Outcome;
using ringlb::lb::Eligibility;
using ringlb::lb::kEjected;
using ringlb::lb::kUnhealthy;

namespace {

constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kT0 = 100 * kS;  // an arbitrary start on the monotonic clock

ringlb::lb::EndpointSetPtr make_set(std::vector<std::string> names, uint64_t version) {
  std::vector<ringlb::lb::Endpoint> members;
  for (const std::string& n : names) {
    auto a = ringlb::core::io::parse_socket_address(n);
    REQUIRE(a.has_value());
    ringlb::lb::Endpoint e;
    std::memcpy(&e.addr, &a->storage, a->len);
    e.addr_len = a->len;
    e.name = n;
    members.push_back(std::move(e));
  }
  return ringlb::discovery::make_endpoint_set(std::move(members), version);
}

std::vector<std::string> names(int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back("10.0.0." + std::to_string(i) + ":1");
  return out;
}

// A cluster driven alone: no Context, so no timers and no reports; tick() by hand.
struct Fixture {
  ringlb::core::config::Config cfg;
  uint64_t ids = 0;
  ClusterState c;
  explicit Fixture(int n = 3, std::string extra = "")
      : cfg(ringlb::core::config::parse_config(
            "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
            "[[cluster]]\nname = \"c\"\nendpoints = [\"10.0.0.1:1\"]\n" +
                extra + "\n",
            "t.toml")) {
    c.config = &cfg.clusters[0];
    c.next_id = &ids;
    c.setup(nullptr);
    c.apply(make_set(names(n), 1), kT0);
  }
  std::map<std::string, int> spread(int n) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) {
      EndpointState* e = c.pick({});
      REQUIRE(e != nullptr);
      ++out[e->endpoint.name];
    }
    return out;
  }
  EndpointState& ep(size_t i) { return *c.endpoints[i]; }
  void fail(size_t i, Outcome o, int n, int64_t now) {
    for (int k = 0; k < n; ++k) c.record_outcome(ep(i), o, now);
  }
};

}  // namespace

TEST_CASE("cluster ejection: three UNAVAILABLE eject at once; the ejection ends at its time") {
  Fixture f;
  f.fail(1, Outcome::kUnavailable, 2, kT0);
  CHECK(f.ep(1).ineligible == 0);
  f.fail(1, Outcome::kUnavailable, 1, kT0);
  CHECK(f.ep(1).ineligible == kEjected);
  CHECK(f.ep(1).outlier.ejected_until_ns == kT0 + 5 * kS);
  CHECK(f.c.ejected_count() == 1);
  auto s = f.spread(300);
  CHECK(s.count("10.0.0.2:1") == 0);
  CHECK(s["10.0.0.1:1"] == 150);
  CHECK(s["10.0.0.3:1"] == 150);
  CHECK(f.c.set->size() == 3);  // membership untouched

  f.c.tick(kT0 + 5 * kS - 1);
  CHECK(f.ep(1).ineligible == kEjected);
  f.c.tick(kT0 + 5 * kS);
  CHECK(f.ep(1).ineligible == 0);
  CHECK(f.spread(300)["10.0.0.2:1"] == 100);

  // Failing again at once: twice as long.
  f.fail(1, Outcome::kLocalFailure, 3, kT0 + 6 * kS);
  CHECK(f.ep(1).outlier.ejected_until_ns == kT0 + 16 * kS);
}

TEST_CASE("cluster ejection: a success or another status between failures resets the count") {
  Fixture f;
  f.fail(0, Outcome::kUnavailable, 2, kT0);
  f.fail(0, Outcome::kSuccess, 1, kT0);
  f.fail(0, Outcome::kUnavailable, 2, kT0);
  f.fail(0, Outcome::kOtherStatus, 1, kT0);
  f.fail(0, Outcome::kLocalFailure, 2, kT0);
  f.fail(0, Outcome::kSuccess, 1, kT0);
  f.fail(0, Outcome::kLocalFailure, 2, kT0);
  CHECK(f.ep(0).ineligible == 0);
  CHECK(f.c.ejected_count() == 0);
}

TEST_CASE("cluster ejection: max_ejected_percent caps it (3 endpoints at 50%: one)") {
  Fixture f;
  f.fail(0, Outcome::kUnavailable, 3, kT0);
  f.fail(2, Outcome::kUnavailable, 3, kT0);
  CHECK(f.ep(0).ineligible == kEjected);
  CHECK(f.ep(2).ineligible == 0);  // would be 2 of 3
  CHECK(f.c.ejected_count() == 1);
  CHECK(f.spread(100)["10.0.0.3:1"] == 50);
  // Once the first is back, the second may go (after failing again: its count restarted).
  f.c.tick(kT0 + 5 * kS);
  f.fail(2, Outcome::kUnavailable, 2, kT0 + 5 * kS);
  CHECK(f.ep(2).ineligible == 0);
  f.fail(2, Outcome::kUnavailable, 1, kT0 + 5 * kS);
  CHECK(f.ep(2).ineligible == kEjected);
}

TEST_CASE("cluster ejection: off when outlier = false; a lone endpoint is never ejected") {
  Fixture off(3, "outlier = false");
  off.fail(0, Outcome::kUnavailable, 10, kT0);
  off.fail(0, Outcome::kLocalFailure, 10, kT0);
  CHECK(off.ep(0).ineligible == 0);
  Fixture lone(1);
  lone.fail(0, Outcome::kUnavailable, 10, kT0);
  CHECK(lone.ep(0).ineligible == 0);
}

TEST_CASE("cluster panic: below panic_threshold eligible, picks go to every member") {
  Fixture f(4, "outlier = { panic_threshold = 50, max_ejected_percent = 100 }");
  f.fail(0, Outcome::kUnavailable, 3, kT0);
  f.fail(1, Outcome::kUnavailable, 3, kT0);
  CHECK(f.c.ejected_count() == 2);
  auto s = f.spread(400);  // 2 of 4 = 50%: not below
  CHECK(s.size() == 2);
  CHECK(f.c.panics == 0);
  f.fail(2, Outcome::kLocalFailure, 3, kT0);  // 1 of 4 = 25%: panic
  CHECK(f.c.ejected_count() == 3);
  s = f.spread(400);
  CHECK(s.size() == 4);
  for (auto& [name, n] : s) CHECK(n == 100);  // snapshot weights, eligibility ignored
  CHECK(f.c.panics == 400);
}

TEST_CASE("cluster panic: default threshold 25%; threshold 0 panics only with none eligible") {
  Fixture f(4);
  for (size_t i : {0, 1, 2}) f.c.set_eligibility(f.ep(i), kUnhealthy, Eligibility::kFullWeight);
  CHECK(f.spread(100)["10.0.0.4:1"] == 100);  // 1 of 4 = 25%: no panic
  Fixture g(5);
  for (size_t i : {0, 1, 2, 3}) g.c.set_eligibility(g.ep(i), kUnhealthy, Eligibility::kFullWeight);
  CHECK(g.spread(100).size() == 5);  // 1 of 5 = 20%: panic
  Fixture z(5, "outlier = { panic_threshold = 0 }");
  for (size_t i : {0, 1, 2, 3}) z.c.set_eligibility(z.ep(i), kUnhealthy, Eligibility::kFullWeight);
  CHECK(z.spread(100)["10.0.0.5:1"] == 100);
  CHECK(z.c.panics == 0);
}

TEST_CASE("cluster eligibility: the control thread's word: health, ejection set and taken back") {
  Fixture f;
  const std::string key = f.ep(0).key;
  f.c.apply_eligibility(key, kUnhealthy, kUnhealthy, 0, 0, kT0);
  CHECK(f.ep(0).ineligible == kUnhealthy);
  CHECK(f.spread(100).count("10.0.0.1:1") == 0);
  // Ejected on top (another shard's detector, confirmed by control): both bits, apart.
  f.c.apply_eligibility(key, kEjected, kEjected, kT0 + 20 * kS, 3, kT0);
  CHECK(f.ep(0).ineligible == (kUnhealthy | kEjected));
  CHECK(f.ep(0).outlier.streak == 3);
  f.c.apply_eligibility(key, kUnhealthy, 0, 0, 0, kT0 + kS);  // health back, still ejected
  CHECK(f.ep(0).ineligible == kEjected);
  CHECK(f.spread(100).count("10.0.0.1:1") == 0);
  f.c.tick(kT0 + 20 * kS);  // the ejection ends on this shard's own timer
  CHECK(f.ep(0).ineligible == 0);
  CHECK(f.ep(0).outlier.returned_ns == kT0 + 20 * kS);

  // This shard ejected on its own; control takes it back (the cluster-wide cap said no).
  f.fail(1, Outcome::kUnavailable, 3, kT0 + 30 * kS);
  REQUIRE(f.ep(1).ineligible == kEjected);
  f.c.apply_eligibility(f.ep(1).key, kEjected, 0, 0, 0, kT0 + 30 * kS);
  CHECK(f.ep(1).ineligible == 0);
  CHECK_FALSE(f.ep(1).outlier.ejected());
  CHECK(f.ep(1).outlier.streak == 0);  // as control counts it

  // Keys this shard does not know change nothing.
  const uint64_t before = f.c.eligibility.version();
  f.c.apply_eligibility("no such key", kEjected, kEjected, kT0 + 99 * kS, 1, kT0);
  CHECK(f.c.eligibility.version() == before);
}

TEST_CASE(
    "cluster eligibility: a removed endpoint cannot be ejected; one that comes back "
    "while still draining keeps its ejection, one that was forgotten starts fresh") {
  Fixture f;
  EndpointState* first = &f.ep(0);
  f.fail(0, Outcome::kUnavailable, 3, kT0);
  REQUIRE(first->ineligible == kEjected);
  f.c.call_started(*first);  // a call in flight keeps its state alive when it leaves the set
  f.c.apply(make_set({"10.0.0.2:1", "10.0.0.3:1"}, 2), kT0 + kS);
  REQUIRE(first->index < 0);
  f.c.apply(make_set(names(3), 3), kT0 + 2 * kS);
  CHECK(&f.ep(0) == first);  // the same state, still ejected
  CHECK(f.ep(0).ineligible == kEjected);
  CHECK(f.spread(100).count("10.0.0.1:1") == 0);
  f.c.call_finished(*first);

  // A removed endpoint's failures (its calls in flight) do not eject it.
  EndpointState* third = &f.ep(2);
  f.c.call_started(*third);
  f.c.apply(make_set({"10.0.0.1:1", "10.0.0.2:1"}, 4), kT0 + 3 * kS);
  for (int i = 0; i < 5; ++i) f.c.record_outcome(*third, Outcome::kUnavailable, kT0 + 3 * kS);
  CHECK_FALSE(third->outlier.ejected());
  f.c.call_finished(*third);  // now unused: forgotten

  // Back after it was forgotten: a fresh state, eligible.
  f.c.tick(kT0 + 10 * kS);
  f.c.apply(make_set(names(3), 5), kT0 + 10 * kS);
  CHECK(f.ep(2).ineligible == 0);
  CHECK(f.ep(2).outlier.streak == 0);
}

TEST_CASE("cluster slow start: start-up members at full weight; a newcomer ramps linearly") {
  Fixture f(3, "slow_start = \"10s\"");
  for (size_t i = 0; i < 3; ++i) CHECK(f.ep(i).weight_permille == 1000);
  CHECK(f.c.eligibility.all_clear());
  f.c.apply(make_set(names(4), 2), kT0);
  EndpointState& fresh = f.ep(3);
  CHECK(fresh.ramp_start_ns == kT0);
  CHECK(fresh.weight_permille == 100);
  CHECK(f.c.eligibility.weight_permille(3) == 100);
  // Its share of picks: 100 / 3100 of them with three at full weight.
  auto s = f.spread(3100);
  CHECK(s["10.0.0.4:1"] == 100);
  f.c.tick(kT0 + 5 * kS);
  CHECK(fresh.weight_permille == 550);
  f.c.tick(kT0 + 10 * kS - 1);
  CHECK(fresh.weight_permille == 999);
  f.c.tick(kT0 + 10 * kS);
  CHECK(fresh.weight_permille == 1000);
  CHECK(fresh.ramp_start_ns == -1);
  CHECK(f.c.eligibility.all_clear());
}

TEST_CASE("cluster slow start: the first answer after an empty set does not ramp") {
  Fixture f(3, "slow_start = \"10s\"");
  f.c.apply(make_set({}, 2), kT0);
  f.c.apply(make_set(names(3), 3), kT0 + kS);
  for (size_t i = 0; i < 3; ++i) CHECK(f.ep(i).ramp_start_ns == -1);
  CHECK(f.c.eligibility.all_clear());
}

TEST_CASE("cluster slow start: back from ejection or from unhealthy, an endpoint ramps again") {
  Fixture f(3, "slow_start = \"10s\"");
  f.fail(0, Outcome::kUnavailable, 3, kT0);
  f.c.tick(kT0 + 5 * kS);
  CHECK(f.ep(0).ineligible == 0);
  CHECK(f.ep(0).ramp_start_ns == kT0 + 5 * kS);
  CHECK(f.ep(0).weight_permille == 100);
  f.c.tick(kT0 + 6 * kS);
  CHECK(f.ep(0).weight_permille == 190);
  // Unhealthy mid-ramp: out, ramp stopped; healthy again: from the floor.
  f.c.apply_eligibility(f.ep(0).key, kUnhealthy, kUnhealthy, 0, 0, kT0 + 7 * kS);
  CHECK(f.ep(0).ramp_start_ns == -1);
  f.c.apply_eligibility(f.ep(0).key, kUnhealthy, 0, 0, 0, kT0 + 8 * kS);
  CHECK(f.ep(0).ramp_start_ns == kT0 + 8 * kS);
  CHECK(f.ep(0).weight_permille == 100);
  f.c.tick(kT0 + 18 * kS);
  CHECK(f.ep(0).weight_permille == 1000);
  CHECK(f.c.eligibility.all_clear());
}

// The proxy core: connection-level failures count through Context::on_upstream_event, the
// ejection ends on the shard's own timer, and no connect is tried while it lasts.
TEST_CASE("proxy ejection: refused connects eject an endpoint; no connects while ejected") {
  using namespace ringlb::test;
  using namespace ringlb::test::proxy_test;
  const char* kC = "127.0.0.1:3";
  ProxyRig rig(config("\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\""));
  rig.reactor().set_connect_result(kA, -ECONNREFUSED);
  auto connects_to = [&](const std::string& a) {
    int n = 0;
    for (const auto& e : rig.reactor().connect_log()) n += e.address == a;
    return n;
  };
  H2Client& c = rig.client();
  auto one_call = [&](int i) {
    int32_t id = c.submit(grpc_request("/svc.Echo/Call", pattern(10, i)));
    REQUIRE(rig.pump());
    REQUIRE(c.stream(id)->closed);
    return c.stream(id)->grpc_status;
  };
  for (int i = 0; i < 30 && connects_to(kA) < 3; ++i) CHECK(one_call(i) == 0);
  REQUIRE(connects_to(kA) == 3);
  ringlb::core::proxy::ClusterState& cl = rig.ctx().cluster(0);
  CHECK(cl.endpoints[0]->ineligible == kEjected);
  const int64_t until = cl.endpoints[0]->outlier.ejected_until_ns;
  CHECK(until == rig.clock.now_ns() + 5 * kS);

  for (int i = 0; i < 30; ++i) CHECK(one_call(100 + i) == 0);
  CHECK(connects_to(kA) == 3);
  CHECK(exchanges(rig, kB).size() + exchanges(rig, kC).size() >= 30);

  // Its time is up; it answers now.
  rig.reactor().set_connect_result(kA, 0);
  REQUIRE(rig.advance_ms(5000));
  CHECK(cl.endpoints[0]->ineligible == 0);
  for (int i = 0; i < 30; ++i) CHECK(one_call(200 + i) == 0);
  CHECK(connects_to(kA) == 4);
  CHECK(exchanges(rig, kA).size() >= 5);
}

TEST_CASE("proxy ejection: GOAWAY is not a failure") {
  using namespace ringlb::test::proxy_test;
  ringlb::test::ProxyRig rig(two_endpoints());
  ringlb::core::proxy::ClusterState& cl = rig.ctx().cluster(0);
  for (int i = 0; i < 10; ++i) {
    rig.ctx().on_upstream_event(ringlb::core::proxy::UpstreamEvent::kGoaway, cl, *cl.endpoints[0],
                                "GOAWAY (no error)");
  }
  CHECK(cl.endpoints[0]->outlier.local_failures == 0);
  CHECK(cl.endpoints[0]->ineligible == 0);
  rig.ctx().on_upstream_event(ringlb::core::proxy::UpstreamEvent::kConnectionLost, cl,
                              *cl.endpoints[0], "reset by peer");
  CHECK(cl.endpoints[0]->outlier.local_failures == 1);
}

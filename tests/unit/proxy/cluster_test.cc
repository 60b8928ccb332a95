// ClusterState: eligibility beside membership. Health, ejection and slow start change who may
// take calls without a new snapshot, survive snapshot swaps, and retries avoid what they tried.
#include "core/proxy/cluster.h"

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "discovery/snapshot.h"

using ringlb::core::proxy::ClusterState;
using ringlb::core::proxy::EndpointState;

namespace {

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

struct Fixture {
  ringlb::core::config::Config cfg = ringlb::core::config::parse_config(
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n"
      "[[cluster]]\nname = \"c\"\nendpoints = [\"10.0.0.1:1\"]\n",
      "t.toml");
  uint64_t ids = 0;
  ClusterState c;
  Fixture() {
    c.config = &cfg.clusters[0];
    c.next_id = &ids;
    c.apply(make_set({"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"}, 1));
  }
  std::map<std::string, int> spread(int n, std::vector<uint64_t> avoid = {}) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) {
      EndpointState* e = c.pick(avoid);
      REQUIRE(e != nullptr);
      ++out[e->endpoint.name];
    }
    return out;
  }
  EndpointState& ep(size_t i) { return *c.endpoints[i]; }
};

}  // namespace

TEST_CASE("cluster: an ineligible endpoint gets no calls, without a new snapshot") {
  Fixture f;
  CHECK(f.spread(300).size() == 3);
  f.c.set_eligibility(f.ep(1), ringlb::lb::kEjected, ringlb::lb::Eligibility::kFullWeight);
  auto s = f.spread(300);
  CHECK(s.count("10.0.0.2:1") == 0);
  CHECK(s["10.0.0.1:1"] == 150);
  CHECK(s["10.0.0.3:1"] == 150);
  f.c.set_eligibility(f.ep(1), 0, ringlb::lb::Eligibility::kFullWeight);
  CHECK(f.spread(300)["10.0.0.2:1"] == 100);
}

TEST_CASE("cluster: eligibility survives a snapshot swap; a new member starts eligible") {
  Fixture f;
  EndpointState* second = &f.ep(1);
  f.c.set_eligibility(*second, ringlb::lb::kUnhealthy, ringlb::lb::Eligibility::kFullWeight);
  f.c.apply(make_set({"10.0.0.4:1", "10.0.0.2:1", "10.0.0.1:1"}, 2));  // .3 left, .4 came
  CHECK(&f.ep(1) == second);  // same state object, now at index 1 again
  auto s = f.spread(200);
  CHECK(s.count("10.0.0.2:1") == 0);
  CHECK(s["10.0.0.4:1"] == 100);
  CHECK(s["10.0.0.1:1"] == 100);
}

TEST_CASE("cluster: a retry avoids the endpoints the call tried; all ineligible is panic") {
  Fixture f;
  const std::vector<uint64_t> tried = {f.ep(0).id, f.ep(2).id};
  auto s = f.spread(50, tried);
  CHECK(s.size() == 1);
  CHECK(s["10.0.0.2:1"] == 50);
  for (size_t i = 0; i < 3; ++i) {
    f.c.set_eligibility(f.ep(i), ringlb::lb::kUnhealthy, ringlb::lb::Eligibility::kFullWeight);
  }
  // Nothing is eligible: the pick still returns a member (a call with some chance).
  CHECK(f.spread(30).size() == 3);
}

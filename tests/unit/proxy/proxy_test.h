#pragma once
// Shared by the proxy core tests: configs and small helpers over ProxyRig.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "core/proxy/call.h"
#include "proto/grpc.h"
#include "tests/support/proxy_rig.h"

namespace ringlb::test::proxy_test {

inline constexpr const char* kA = "127.0.0.1:1";
inline constexpr const char* kB = "127.0.0.1:2";

using Phase = core::proxy::Call::Phase;
using Action = H2Backend::Action;
using Call = core::proxy::Call;
using proto::percent_decode;

/// A config with one listener (default cluster "c", plus route "/timed." -> "c" with a 250 ms
/// timeout) and cluster "c" at `endpoints` (a TOML array body). `proxy` and `cluster` are extra
/// lines for [proxy] and the [[cluster]] table.
inline std::string config(std::string_view endpoints = "\"127.0.0.1:1\"",
                          std::string_view proxy = "", std::string_view cluster = "") {
  std::string s = "[proxy]\n";
  s += proxy;
  s += "\n[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n";
  s += "routes = [{ prefix = \"/timed.\", cluster = \"c\", timeout = \"250ms\" }]\n";
  s += "[[cluster]]\nname = \"c\"\nendpoints = [";
  s += endpoints;
  s += "]\n";
  s += cluster;
  s += "\n";
  return s;
}

inline std::string two_endpoints(std::string_view proxy = "", std::string_view cluster = "") {
  return config("\"127.0.0.1:1\", \"127.0.0.1:2\"", proxy, cluster);
}

inline constexpr int64_t kMs = 1'000'000;

/// The grpc-timeout a backend saw, in ms (-1 if none or unparsable).
inline int64_t grpc_timeout_ms(const H2Backend::Exchange& e) {
  auto t = proto::parse_grpc_timeout(e.header("grpc-timeout"));
  return t ? t->count() / kMs : -1;
}

inline bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

/// Every exchange of every connection to `address`.
inline std::vector<H2Backend::Exchange*> exchanges(const ProxyRig& rig, const std::string& a) {
  std::vector<H2Backend::Exchange*> out;
  for (H2Backend* b : rig.backends(a)) {
    for (H2Backend::Exchange* e : b->exchanges()) out.push_back(e);
  }
  return out;
}

}  // namespace ringlb::test::proxy_test

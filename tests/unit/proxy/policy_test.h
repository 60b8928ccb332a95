#pragma once
// Shared by the retry-policy and hedging tests (policy_test.cc, hedge_test.cc): a config with
// cluster "c" at up to three endpoints, backends that fail or hold first attempts, and lookups
// of what each endpoint received.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/proxy/proxy_test.h"

namespace ringlb::test::policy_test {

using namespace ringlb::test::proxy_test;

using Exchange = H2Backend::Exchange;
using Decide = std::function<Action(H2Backend&, Exchange&)>;

inline constexpr const char* kC = "127.0.0.1:3";
inline const char* const kAll[] = {kA, kB, kC};

// Cluster "c" at `n` endpoints (127.0.0.1:1 .. n) with `policy` (cluster lines), outlier
// detection off (these tests count attempts; ejections are not theirs to judge); a listener
// whose default cluster is "c", with `routes` (a TOML array body).
inline std::string cfg(std::string_view policy = "retry = { backoff = \"0s\" }",
                       std::string_view routes = "", int n = 2) {
  std::string s = "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"c\"\n";
  if (!routes.empty()) s += "routes = [" + std::string(routes) + "]\n";
  s += "[[cluster]]\nname = \"c\"\noutlier = false\nendpoints = [";
  for (int i = 1; i <= n; ++i) {
    s += (i > 1 ? ", \"127.0.0.1:" : "\"127.0.0.1:") + std::to_string(i) + "\"";
  }
  s += "]\n";
  s += policy;
  s += "\n";
  return s;
}

inline bool is_retry(const Exchange& e) {
  return !e.header("grpc-previous-rpc-attempts").empty();
}

// Every request to any endpoint, endpoint by endpoint.
inline std::vector<Exchange*> all_exchanges(const ProxyRig& rig) {
  std::vector<Exchange*> out;
  for (const char* a : kAll) {
    for (Exchange* e : exchanges(rig, a)) out.push_back(e);
  }
  return out;
}

// The one request the endpoint got (nullptr unless exactly one).
inline Exchange* only(const ProxyRig& rig, const std::string& a) {
  auto ex = exchanges(rig, a);
  return ex.size() == 1 ? ex[0] : nullptr;
}

// The backend connection to `a` that `e` arrived on.
inline H2Backend* backend_of(const ProxyRig& rig, const std::string& a, const Exchange* e) {
  for (H2Backend* b : rig.backends(a)) {
    for (Exchange* x : b->exchanges()) {
      if (x == e) return b;
    }
  }
  return nullptr;
}

// Where the first attempt went: the endpoint whose request carries no previous attempts.
inline std::string first_tried(const ProxyRig& rig) {
  for (const char* a : kAll) {
    for (Exchange* e : exchanges(rig, a)) {
      if (!is_retry(*e)) return a;
    }
  }
  return {};
}

// First attempts get a trailers-only `code` (with `extra` fields); retried and hedged attempts
// (grpc-previous-rpc-attempts present) the mode's normal answer: OK and "from <address>".
inline Decide fail_first(int code, std::vector<std::pair<std::string, std::string>> extra = {}) {
  return [code, extra](H2Backend& b, Exchange& e) {
    if (is_retry(e)) return Action::kAnswer;
    std::vector<std::pair<std::string, std::string>> h = {{"grpc-status", std::to_string(code)}};
    h.insert(h.end(), extra.begin(), extra.end());
    b.respond(e.id, 200, h, true);
    return Action::kHold;
  };
}

// First attempts are held (the test answers them, or nobody does); later ones are answered.
inline Decide hold_first() {
  return [](H2Backend&, Exchange& e) { return is_retry(e) ? Action::kAnswer : Action::kHold; };
}

// Every endpoint decides with `d` and answers "from <address>".
inline void every_endpoint(ProxyRig& rig, const Decide& d) {
  for (const char* a : kAll) {
    rig.mode(a).decide = d;
    rig.mode(a).response_body = std::string("from ") + a;
  }
}

inline void every_endpoint(ProxyRig& rig, Action action) {
  for (const char* a : kAll) {
    rig.mode(a).decide = nullptr;
    rig.mode(a).action = action;
    rig.mode(a).response_body = std::string("from ") + a;
  }
}

inline const char* other(const std::string& a) {
  return a == kA ? kB : kA;
}

// Trailers without grpc-status after whatever send_data queued (H2Backend::send_trailers always
// adds one).
inline void send_bare_trailers(H2Backend& b, int32_t id) {
  Exchange* e = b.exchange(id);
  REQUIRE(e != nullptr);
  e->out_trailers.clear();
  e->out_trailers.add("x-note", "no status here");
  e->out_end = true;
  nghttp2_session_resume_data(b.session(), id);
}

// The fd of the newest connection ringlb opened to `a` that came up.
inline int conn_fd(ProxyRig& rig, const std::string& a) {
  int fd = -1;
  for (const auto& e : rig.reactor().connect_log()) {
    if (e.address == a && e.res == 0) fd = e.fd;
  }
  return fd;
}

}  // namespace ringlb::test::policy_test

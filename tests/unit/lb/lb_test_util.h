#pragma once
// Helpers shared by the lb/ unit tests: endpoint sets, picking through a PickContext, counting.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lb/eligibility.h"
#include "lb/endpoint.h"
#include "lb/picker.h"

namespace ringlb::lb::test {

inline EndpointSet make_set(const std::vector<uint32_t>& weights) {
  EndpointSet set;
  for (size_t i = 0; i < weights.size(); ++i) {
    Endpoint e;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(50051);
    sin.sin_addr.s_addr = htonl(0x0a000000u + static_cast<uint32_t>(i));
    std::memcpy(&e.addr, &sin, sizeof(sin));
    e.addr_len = sizeof(sin);
    e.weight = weights[i];
    e.name = "10.0.0." + std::to_string(i) + ":50051";
    set.endpoints.push_back(std::move(e));
  }
  return set;
}

/// One pick with only the outstanding counts: every member eligible, nothing to avoid.
inline int pick_one(Picker& p, const std::vector<uint32_t>& outstanding) {
  PickContext ctx{.outstanding = outstanding};
  return p.pick(ctx);
}

inline std::vector<int> run(Picker& p, size_t picks, const std::vector<uint32_t>& outstanding) {
  std::vector<int> out;
  out.reserve(picks);
  for (size_t i = 0; i < picks; ++i) out.push_back(pick_one(p, outstanding));
  return out;
}

inline std::vector<uint64_t> counts_of(const std::vector<int>& seq, size_t n) {
  std::vector<uint64_t> counts(n, 0);
  size_t out_of_range = 0;
  for (int i : seq) {
    if (i < 0 || static_cast<size_t>(i) >= n) {
      ++out_of_range;
    } else {
      ++counts[static_cast<size_t>(i)];
    }
  }
  REQUIRE(out_of_range == 0);
  return counts;
}

}  // namespace ringlb::lb::test

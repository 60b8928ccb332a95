#include "lb/picker.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <malloc.h>
#include <netinet/in.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "lb/endpoint.h"
#include "lb/p2c.h"
#include "lb/round_robin.h"
#include "lb_test_util.h"

using ringlb::lb::EndpointSet;
using ringlb::lb::make_picker;
using ringlb::lb::P2cPicker;
using ringlb::lb::Picker;
using ringlb::lb::Policy;
using ringlb::lb::RoundRobinPicker;

namespace {

using ringlb::lb::test::counts_of;
using ringlb::lb::test::make_set;
using ringlb::lb::test::pick_one;
using ringlb::lb::test::run;

// Longest run of one index, counting across the wrap so a periodic sequence is judged whole.
size_t longest_cyclic_run(const std::vector<int>& seq, int who) {
  size_t best = 0, cur = 0;
  for (size_t i = 0; i < 2 * seq.size(); ++i) {
    cur = seq[i % seq.size()] == who ? cur + 1 : 0;
    best = std::max(best, cur);
  }
  return best;
}

std::vector<uint32_t> mixed_weights(size_t n) {
  std::vector<uint32_t> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = static_cast<uint32_t>(1 + (i * 7) % 10);
  return w;
}

// Every window of `period` consecutive picks must hold exactly weight/gcd picks of each endpoint.
void check_exact_windows(const std::vector<int>& seq, const std::vector<uint32_t>& weights) {
  uint64_t g = 0;
  for (uint32_t w : weights) g = std::gcd(g, uint64_t{w});
  uint64_t period = 0;
  for (uint32_t w : weights) period += w / g;
  REQUIRE(seq.size() >= 2 * period);
  std::vector<int64_t> counts(weights.size(), 0);
  for (size_t i = 0; i < period; ++i) ++counts[static_cast<size_t>(seq[i])];
  for (size_t i = 0; i < weights.size(); ++i) {
    REQUIRE_MESSAGE(counts[i] == static_cast<int64_t>(weights[i] / g), "endpoint " << i);
  }
  // Sliding the window changes two counts; checking just those keeps this O(picks).
  bool ok = true;
  for (size_t start = 0; ok && start + period < seq.size(); ++start) {
    const auto out = static_cast<size_t>(seq[start]);
    const auto in = static_cast<size_t>(seq[start + period]);
    --counts[out];
    ++counts[in];
    ok = counts[out] == static_cast<int64_t>(weights[out] / g) &&
         counts[in] == static_cast<int64_t>(weights[in] / g);
    if (!ok) FAIL_CHECK("window starting at " << start + 1 << " is off");
  }
  CHECK(ok);
}

}  // namespace

TEST_CASE("pickers: empty set returns -1") {
  EndpointSet empty;
  std::vector<uint32_t> none;
  for (Policy policy : {Policy::kRoundRobin, Policy::kP2c}) {
    auto p = make_picker(policy, empty, 42);
    for (int i = 0; i < 10; ++i) CHECK(pick_one(*p, none) == -1);
  }
}

TEST_CASE("pickers: single endpoint is always chosen") {
  for (uint32_t weight : {1u, 7u}) {
    auto set = make_set({weight});
    std::vector<uint32_t> outstanding{123};
    for (Policy policy : {Policy::kRoundRobin, Policy::kP2c}) {
      auto p = make_picker(policy, set, 3);
      for (int i = 0; i < 100; ++i) CHECK(pick_one(*p, outstanding) == 0);
    }
  }
}

TEST_CASE("make_picker builds the requested policy") {
  auto set = make_set({1, 2, 3});
  auto rr = make_picker(Policy::kRoundRobin, set, 1);
  auto p2c = make_picker(Policy::kP2c, set, 1);
  CHECK(dynamic_cast<RoundRobinPicker*>(rr.get()) != nullptr);
  CHECK(dynamic_cast<P2cPicker*>(p2c.get()) != nullptr);
}

TEST_CASE("round_robin: equal weights give exact equal counts over k*n picks") {
  for (size_t n : {2u, 3u, 100u, 1000u}) {
    for (uint64_t seed : {0u, 1u, 99u}) {
      std::vector<uint32_t> weights(n, 5);  // equal but not 1: the gcd reduction must see it
      auto set = make_set(weights);
      RoundRobinPicker p(set, seed);
      CHECK(p.mode() == RoundRobinPicker::Mode::kRotate);
      std::vector<uint32_t> outstanding(n, 0);
      const size_t k = 3;
      auto seq = run(p, k * n, outstanding);
      for (uint64_t c : counts_of(seq, n)) CHECK(c == k);
      // A rotation: each pick is the previous one plus one.
      for (size_t i = 1; i < seq.size(); ++i) {
        CHECK(static_cast<size_t>(seq[i]) == (static_cast<size_t>(seq[i - 1]) + 1) % n);
      }
    }
  }
}

TEST_CASE("round_robin: shards start at different offsets") {
  auto set = make_set(std::vector<uint32_t>(100, 1));
  std::vector<uint32_t> outstanding(100, 0);
  std::vector<int> firsts;
  for (uint64_t shard = 0; shard < 8; ++shard) {
    RoundRobinPicker p(set, shard);
    firsts.push_back(pick_one(p, outstanding));
  }
  std::sort(firsts.begin(), firsts.end());
  CHECK(std::unique(firsts.begin(), firsts.end()) - firsts.begin() >= 6);
}

TEST_CASE("round_robin: weights {3,1} give exactly 3:1 over every multiple of 4") {
  auto set = make_set({3, 1});
  std::vector<uint32_t> outstanding(2, 0);
  for (uint64_t seed = 0; seed < 16; ++seed) {
    for (size_t budget : {size_t{4096}, size_t{0}}) {  // schedule and EDF heap paths
      RoundRobinPicker p(set, seed, budget);
      CHECK(p.period() == 4);
      auto seq = run(p, 400, outstanding);
      check_exact_windows(seq, {3, 1});
      for (size_t m = 4; m <= seq.size(); m += 4) {
        std::vector<int> prefix(seq.begin(), seq.begin() + static_cast<long>(m));
        auto counts = counts_of(prefix, 2);
        CHECK(counts[0] == 3 * m / 4);
        CHECK(counts[1] == m / 4);
      }
    }
  }
}

TEST_CASE("round_robin: weights honoured at 100 and 1000 endpoints") {
  for (size_t n : {100u, 1000u}) {
    auto weights = mixed_weights(n);
    auto set = make_set(weights);
    std::vector<uint32_t> outstanding(n, 0);
    const uint64_t total = std::accumulate(weights.begin(), weights.end(), uint64_t{0});
    for (size_t budget : {size_t{1} << 20, size_t{0}}) {
      RoundRobinPicker p(set, 7, budget);
      CHECK(p.mode() ==
            (budget ? RoundRobinPicker::Mode::kSchedule : RoundRobinPicker::Mode::kEdf));
      CHECK(p.period() == total);
      auto seq = run(p, 3 * total, outstanding);
      check_exact_windows(seq, weights);
    }
  }
}

TEST_CASE("round_robin: the EDF heap walks the same cycle as the precomputed schedule") {
  auto weights = mixed_weights(50);
  auto set = make_set(weights);
  std::vector<uint32_t> outstanding(50, 0);
  RoundRobinPicker sched(set, 11, size_t{1} << 20);
  REQUIRE(sched.mode() == RoundRobinPicker::Mode::kSchedule);
  const size_t period = sched.period();
  auto cycle = run(sched, 2 * period, outstanding);  // two periods: any rotation is a substring
  for (uint64_t seed : {1u, 2u, 3u, 12345u}) {
    RoundRobinPicker edf(set, seed, 0);
    REQUIRE(edf.mode() == RoundRobinPicker::Mode::kEdf);
    auto seq = run(edf, period, outstanding);
    CHECK(std::search(cycle.begin(), cycle.end(), seq.begin(), seq.end()) != cycle.end());
  }
}

TEST_CASE("round_robin: the weight gcd is factored out") {
  auto set = make_set({100, 100, 200});
  RoundRobinPicker p(set, 0);
  CHECK(p.mode() == RoundRobinPicker::Mode::kSchedule);
  CHECK(p.period() == 4);
}

TEST_CASE("round_robin: unequal weights interleave smoothly") {
  std::vector<uint32_t> outstanding(3, 0);
  SUBCASE("{5,1,1}: no more than 3 in a row (the cyclic optimum) and B, C apart") {
    auto set = make_set({5, 1, 1});
    for (uint64_t seed = 0; seed < 8; ++seed) {
      RoundRobinPicker p(set, seed);
      auto seq = run(p, 7, outstanding);
      CHECK(longest_cyclic_run(seq, 0) <= 3);
      for (size_t i = 0; i < seq.size(); ++i) {
        const int a = seq[i], b = seq[(i + 1) % seq.size()];
        CHECK_FALSE((a != 0 && b != 0));
      }
    }
  }
  SUBCASE("{1,1,10}: within one of the cyclic optimum of 5 (nginx smooth WRR gives 7)") {
    auto set = make_set({1, 1, 10});
    RoundRobinPicker p(set, 5);
    auto seq = run(p, 12, outstanding);
    CHECK(longest_cyclic_run(seq, 2) <= 6);
  }
  SUBCASE("random weights: runs stay within 2 of the cyclic lower bound") {
    // Lower bound for endpoint i: its w_i picks share W - w_i gaps, so some run is at least
    // ceil(w_i / (W - w_i)).
    uint64_t state = 12345;
    auto next = [&state] {
      return state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    };
    for (int trial = 0; trial < 200; ++trial) {
      const size_t n = 2 + (next() >> 33) % 10;
      std::vector<uint32_t> weights(n);
      for (auto& w : weights) w = static_cast<uint32_t>(1 + (next() >> 33) % 13);
      RoundRobinPicker p(make_set(weights), trial);
      std::vector<uint32_t> load(n, 0);
      auto seq = run(p, p.period(), load);
      const uint64_t total = std::accumulate(weights.begin(), weights.end(), uint64_t{0});
      for (size_t i = 0; i < n; ++i) {
        const uint64_t others = total - weights[i];
        if (others == 0) continue;
        const uint64_t bound = (weights[i] + others - 1) / others;
        CAPTURE(trial);
        CAPTURE(i);
        CHECK(longest_cyclic_run(seq, static_cast<int>(i)) <= bound + 2);
      }
    }
  }
}

TEST_CASE("round_robin: huge weights take the heap path without overflow") {
  std::vector<uint32_t> weights{1'000'003, 1, 999'983};
  auto set = make_set(weights);
  std::vector<uint32_t> outstanding(3, 0);
  RoundRobinPicker p(set, 9);
  CHECK(p.mode() == RoundRobinPicker::Mode::kEdf);
  CHECK(p.period() == 1'999'987);
  auto seq = run(p, p.period(), outstanding);
  auto counts = counts_of(seq, 3);
  CHECK(counts[0] == 1'000'003);
  CHECK(counts[1] == 1);
  CHECK(counts[2] == 999'983);

  auto extreme = make_set({UINT32_MAX, 1, UINT32_MAX - 1});
  for (uint64_t seed = 0; seed < 4; ++seed) {
    RoundRobinPicker q(extreme, seed);
    auto c = counts_of(run(q, 100'000, outstanding), 3);
    CHECK(c[1] <= 1);
    CHECK(c[0] + c[2] + c[1] == 100'000);
    CHECK(c[0] > 49'000);
    CHECK(c[2] > 49'000);
  }
}

TEST_CASE("pickers: weight 0 is treated as 1") {
  auto set = make_set({0, 1});
  std::vector<uint32_t> outstanding(2, 0);
  RoundRobinPicker rr(set, 0);
  CHECK(rr.mode() == RoundRobinPicker::Mode::kRotate);
  P2cPicker p2c(set, 0);
  CHECK_FALSE(p2c.weighted());
  auto c = counts_of(run(rr, 10, outstanding), 2);
  CHECK(c[0] == 5);
}

TEST_CASE("p2c: an idle endpoint wins far more often") {
  auto set = make_set({1, 1, 1});
  std::vector<uint32_t> outstanding{0, 100, 100};
  P2cPicker p(set, 17);
  const size_t picks = 60'000;
  auto c = counts_of(run(p, picks, outstanding), 3);
  // Index 0 wins whenever it is one of the two draws: 2/3 of the time; the others split 1/3.
  CHECK(c[0] > picks * 62 / 100);
  CHECK(c[0] < picks * 71 / 100);
  CHECK(c[1] > picks * 14 / 100);
  CHECK(c[2] > picks * 14 / 100);
}

TEST_CASE("p2c: equal outstanding spreads evenly") {
  for (size_t n : {3u, 10u, 100u}) {
    auto set = make_set(std::vector<uint32_t>(n, 1));
    for (uint32_t load : {0u, 5u}) {
      std::vector<uint32_t> outstanding(n, load);
      P2cPicker p(set, 2024);
      const size_t picks = 2'000 * n;
      auto c = counts_of(run(p, picks, outstanding), n);
      const double expected = static_cast<double>(picks) / static_cast<double>(n);
      double chi2 = 0;
      for (uint64_t x : c) chi2 += (x - expected) * (x - expected) / expected;
      // dof = n - 1; mean chi2 = dof, sd = sqrt(2 dof). Allow dof + 5 sd: fails only if biased.
      const double dof = static_cast<double>(n - 1);
      CHECK(chi2 < dof + 5 * std::sqrt(2 * dof));
    }
  }
}

TEST_CASE("p2c: draws two distinct endpoints") {
  // With weights 1000:1 a draw with replacement would pair 0 with itself ~99.8% of the time and
  // return the loaded endpoint; distinct draws always compare 0 against 1.
  auto set = make_set({1000, 1});
  std::vector<uint32_t> outstanding{5, 0};
  P2cPicker p(set, 3);
  REQUIRE(p.weighted());
  CHECK(counts_of(run(p, 10'000, outstanding), 2)[1] == 10'000);

  auto uniform = make_set({1, 1});
  P2cPicker q(uniform, 3);
  CHECK(counts_of(run(q, 10'000, outstanding), 2)[1] == 10'000);
}

TEST_CASE("p2c: weighted draws follow the weights") {
  SUBCASE("{4,1} with equal (zero) outstanding: about 4:1") {
    auto set = make_set({4, 1});
    std::vector<uint32_t> outstanding{0, 0};
    P2cPicker p(set, 77);
    auto c = counts_of(run(p, 100'000, outstanding), 2);
    const double ratio = static_cast<double>(c[0]) / static_cast<double>(c[1]);
    CHECK(ratio > 3.7);
    CHECK(ratio < 4.3);
  }
  SUBCASE("{1,2,7}: first draws are weight-proportional (alias table)") {
    auto set = make_set({1, 2, 7});
    std::vector<uint32_t> outstanding{0, 0, 0};
    P2cPicker p(set, 5);
    const size_t picks = 200'000;
    auto c = counts_of(run(p, picks, outstanding), 3);
    CHECK(std::abs(static_cast<double>(c[0]) / picks - 0.1) < 0.01);
    CHECK(std::abs(static_cast<double>(c[1]) / picks - 0.2) < 0.01);
    CHECK(std::abs(static_cast<double>(c[2]) / picks - 0.7) < 0.01);
  }
  SUBCASE("least request divides by weight") {
    auto set = make_set({4, 1});
    P2cPicker p(set, 8);
    // 5/4 > 1/1: endpoint 1 is relatively less loaded, and n = 2 always pairs them.
    std::vector<uint32_t> outstanding{5, 1};
    CHECK(counts_of(run(p, 1000, outstanding), 2)[1] == 1000);
    // 3/4 < 1/1: endpoint 0 wins although its raw count is higher.
    outstanding = {3, 1};
    CHECK(counts_of(run(p, 1000, outstanding), 2)[0] == 1000);
  }
  SUBCASE("closed loop: in-flight load settles near 4:1") {
    // Every call lasts the same number of picks, so each endpoint's share of calls equals its
    // share of in-flight load, which least-request-by-weight drives towards the weights.
    auto set = make_set({4, 1});
    P2cPicker p(set, 31);
    std::vector<uint32_t> outstanding{0, 0};
    std::vector<int> in_flight(50, -1);
    std::vector<uint64_t> c(2, 0);
    for (size_t i = 0; i < 100'000; ++i) {
      int& slot = in_flight[i % in_flight.size()];
      if (slot >= 0) --outstanding[static_cast<size_t>(slot)];
      slot = pick_one(p, outstanding);
      ++outstanding[static_cast<size_t>(slot)];
      ++c[static_cast<size_t>(slot)];
    }
    const double ratio = static_cast<double>(c[0]) / static_cast<double>(c[1]);
    CHECK(ratio > 3.5);
    CHECK(ratio < 4.5);
  }
}

TEST_CASE("p2c: weighted sets at 100 and 1000 endpoints stay in range and follow weights") {
  for (size_t n : {100u, 1000u}) {
    auto weights = mixed_weights(n);
    auto set = make_set(weights);
    std::vector<uint32_t> outstanding(n, 0);
    P2cPicker p(set, 1);
    const uint64_t total = std::accumulate(weights.begin(), weights.end(), uint64_t{0});
    const size_t picks = 400 * total;
    auto c = counts_of(run(p, picks, outstanding), n);
    // With zero load the first (weighted) draw wins: endpoint i gets ~ w_i / W of the picks.
    uint64_t heavy = 0, light = 0;
    for (size_t i = 0; i < n; ++i) {
      if (weights[i] == 10) heavy += c[i];
      if (weights[i] == 1) light += c[i];
    }
    const double ratio = static_cast<double>(heavy) / static_cast<double>(light);
    CHECK(ratio > 9.0);
    CHECK(ratio < 11.0);
  }
}

TEST_CASE("pickers: no net heap growth while picking") {
  // Coarse guard for "no allocation per pick": a leaky or growing structure would show here.
  // (Sanitizer builds replace malloc, where mallinfo2 reads 0 and the check is vacuous.)
  for (auto weights : {std::vector<uint32_t>(100, 1), mixed_weights(100)}) {
    auto set = make_set(weights);
    std::vector<uint32_t> outstanding(100, 1);
    for (Policy policy : {Policy::kRoundRobin, Policy::kP2c}) {
      auto p = make_picker(policy, set, 4);
      const size_t before = mallinfo2().uordblks;
      int sink = 0;
      for (int i = 0; i < 100'000; ++i) sink += pick_one(*p, outstanding);
      CHECK(mallinfo2().uordblks == before);
      CHECK(sink >= 0);
    }
  }
}

TEST_CASE("endpoint_key: same address and port, regardless of weight or name") {
  auto a = make_set({1, 1});
  auto b = make_set({9, 1});
  b.endpoints[0].name = "other";
  CHECK(ringlb::lb::endpoint_key(a.endpoints[0]) == ringlb::lb::endpoint_key(b.endpoints[0]));
  CHECK(ringlb::lb::endpoint_key(a.endpoints[0]) != ringlb::lb::endpoint_key(a.endpoints[1]));

  auto port = a.endpoints[0];
  reinterpret_cast<sockaddr_in*>(&port.addr)->sin_port = htons(50052);
  CHECK(ringlb::lb::endpoint_key(port) != ringlb::lb::endpoint_key(a.endpoints[0]));

  ringlb::lb::Endpoint v6;
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(50051);
  inet_pton(AF_INET6, "fe80::1", &sin6.sin6_addr);
  sin6.sin6_scope_id = 1;
  std::memcpy(&v6.addr, &sin6, sizeof(sin6));
  v6.addr_len = sizeof(sin6);
  auto v6_other_scope = v6;
  reinterpret_cast<sockaddr_in6*>(&v6_other_scope.addr)->sin6_scope_id = 2;
  CHECK(ringlb::lb::endpoint_key(v6) != ringlb::lb::endpoint_key(v6_other_scope));
  CHECK(ringlb::lb::endpoint_key(v6) != ringlb::lb::endpoint_key(a.endpoints[0]));
  CHECK(ringlb::lb::endpoint_key(v6) == ringlb::lb::endpoint_key(v6));

  // And back to text, for log lines where only the key is at hand.
  CHECK(ringlb::lb::endpoint_key_text(ringlb::lb::endpoint_key(a.endpoints[0])) ==
        "10.0.0.0:50051");
  CHECK(ringlb::lb::endpoint_key_text(ringlb::lb::endpoint_key(port)) == "10.0.0.0:50052");
  CHECK(ringlb::lb::endpoint_key_text(ringlb::lb::endpoint_key(v6)) == "[fe80::1%1]:50051");
  sin6.sin6_scope_id = 0;
  inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr);
  std::memcpy(&v6.addr, &sin6, sizeof(sin6));
  CHECK(ringlb::lb::endpoint_key_text(ringlb::lb::endpoint_key(v6)) == "[2001:db8::5]:50051");
  CHECK(ringlb::lb::endpoint_key_text("") == "?");
  CHECK(ringlb::lb::endpoint_key_text("xyz") == "?");
}

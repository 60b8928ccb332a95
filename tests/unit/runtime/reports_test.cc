// ReportQueue: shards post from their own threads, the control thread takes them in order.
#include "core/runtime/reports.h"

#include <doctest/doctest.h>
#include <poll.h>

#include <thread>
#include <vector>

using ringlb::core::runtime::ReportQueue;
using ringlb::core::runtime::ShardReport;

namespace {

ShardReport* report(unsigned shard, size_t seq) {
  auto* r = new ShardReport;
  r->kind = ShardReport::Kind::kConnectFailed;
  r->shard = shard;
  r->cluster = seq;  // the sequence number, to check order
  r->endpoint = "10.0.0.1:1";
  return r;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

}  // namespace

TEST_CASE("reports come out oldest first, and the eventfd says when there are some") {
  ReportQueue q;
  REQUIRE(q.fd() >= 0);
  CHECK_FALSE(readable(q.fd()));
  CHECK(q.take_all().empty());
  for (size_t i = 0; i < 5; ++i) q.post(report(0, i));
  CHECK(readable(q.fd()));
  std::vector<ShardReport*> got = q.take_all();
  CHECK_FALSE(readable(q.fd()));
  REQUIRE(got.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(got[i]->cluster == i);
  for (ShardReport* r : got) delete r;
}

TEST_CASE("several shards posting at once: nothing lost, each shard's reports in order") {
  ReportQueue q;
  constexpr unsigned kShards = 4;
  constexpr size_t kEach = 20000;
  std::vector<std::thread> threads;
  for (unsigned s = 0; s < kShards; ++s) {
    threads.emplace_back([&q, s] {
      for (size_t i = 0; i < kEach; ++i) q.post(report(s, i));
    });
  }
  std::vector<size_t> next(kShards, 0);
  size_t total = 0;
  bool ordered = true;
  auto drain = [&] {
    for (ShardReport* r : q.take_all()) {
      ordered = ordered && r->cluster == next[r->shard];
      next[r->shard] = r->cluster + 1;
      ++total;
      delete r;
    }
  };
  while (total < kShards * kEach) {
    drain();
    if (total == kShards * kEach) break;
    pollfd p{q.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);  // woken by a post; bounded so a lost wake-up fails by count, not hang
    bool all_done = true;
    for (unsigned s = 0; s < kShards; ++s) all_done = all_done && next[s] == kEach;
    if (all_done) break;
  }
  for (auto& t : threads) t.join();
  drain();
  CHECK(ordered);
  CHECK(total == kShards * kEach);
}

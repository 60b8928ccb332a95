#include "discovery/followed_name.h"

#include <ares.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "discovery/srv_lookup.h"
#include "tests/unit/discovery/dns_records.h"

using ringlb::discovery::capped_answer_hold;
using ringlb::discovery::FollowedName;
using ringlb::discovery::LookupResult;
using ringlb::discovery::QueryOutcome;
using ringlb::discovery::RecordType;
using ringlb::discovery::RefreshPolicy;
using ringlb::discovery::SrvLookup;
using ringlb::lb::Endpoint;
namespace t = ringlb::discovery::test;

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

RefreshPolicy policy(int64_t hold_ns = -1) {
  RefreshPolicy p;
  p.min_refresh_ns = 1 * kSec;
  p.max_refresh_ns = 30 * kSec;
  p.stale_after_ns = 10 * kSec;
  p.backoff_base_ns = 250 * kMs;
  p.hold_ns = hold_ns;
  return p;
}

LookupResult ok(std::vector<Endpoint> eps, uint32_t ttl = 5) {
  LookupResult r;
  r.outcome = QueryOutcome::kOk;
  r.ttl = ttl;
  r.endpoints = std::move(eps);
  return r;
}

LookupResult empty(const char* detail = "NXDOMAIN") {
  LookupResult r;
  r.outcome = QueryOutcome::kEmpty;
  r.detail = detail;
  return r;
}

LookupResult failure(const char* detail = "Timeout while contacting DNS servers") {
  LookupResult r;
  r.outcome = QueryOutcome::kFailure;
  r.detail = detail;
  return r;
}

std::vector<Endpoint> eps(std::initializer_list<int> ids) {
  std::vector<Endpoint> out;
  for (int i : ids) out.push_back(t::ep4(i));
  return out;
}

size_t members(const FollowedName& f) {
  return f.membership().members().size();
}

}  // namespace

TEST_CASE("followed name: capped_answer_hold keeps wrong drops under 1/100 per refresh") {
  const int64_t iv = 5 * kSec;
  for (size_t m : {0, 1, 8}) CHECK(capped_answer_hold(iv, m) == 3 * iv);
  CHECK(capped_answer_hold(iv, 12) == 6 * iv);
  CHECK(capped_answer_hold(iv, 20) == 13 * iv);
  CHECK(capped_answer_hold(iv, 100000) == 100 * iv);  // capped at 100 intervals
  for (size_t m = 9; m <= 120; ++m) {
    CAPTURE(m);
    const int64_t h = capped_answer_hold(iv, m) / iv;
    CHECK(capped_answer_hold(iv, m) % iv == 0);
    CHECK(h >= 3);
    CHECK(h <= 100);
    const double miss = 1.0 - 8.0 / static_cast<double>(m);
    if (h > 3 && h < 100) {
      // h intervals is enough, and h - 1 would not be.
      CHECK(8.0 * std::pow(miss, static_cast<double>(h + 1)) <= 0.01 + 1e-12);
      CHECK(8.0 * std::pow(miss, static_cast<double>(h)) > 0.01);
    }
    if (m > 9) CHECK(capped_answer_hold(iv, m) >= capped_answer_hold(iv, m - 1));
  }
}

TEST_CASE("followed name: hold_for is the configured hold, else derived from the interval") {
  SUBCASE("configured: used as is, capped answers or not") {
    FollowedName f("svc.local", RecordType::kA, policy(2 * kSec), 1);
    f.record(ok(eps({1, 2}), 20), 0);
    CHECK(f.hold_for(2) == 2 * kSec);
    CHECK(f.hold_for(8) == 2 * kSec);
    FollowedName zero("svc.local", RecordType::kA, policy(0), 1);
    CHECK(zero.hold_for(20) == 0);
  }
  SUBCASE("derived: 3 x the interval the last TTL set") {
    FollowedName f("svc.local", RecordType::kA, policy(), 1);
    CHECK(f.hold_for(2) == 3 * kSec);  // min_refresh before any answer
    f.record(ok(eps({1, 2}), 4), 0);
    CHECK(f.hold_for(2) == 12 * kSec);
    CHECK(f.hold_for(7) == 12 * kSec);
  }
  SUBCASE("derived, answer of 8 or more: sized for a capped answer") {
    FollowedName f("svc.local", RecordType::kA, policy(), 1);
    f.record(ok(eps({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), 4), 0);
    CHECK(members(f) == 12);
    CHECK(f.hold_for(8) == capped_answer_hold(4 * kSec, 12));  // 12 members known, not 8
    CHECK(f.hold_for(8) == 24 * kSec);
    CHECK(f.hold_for(20) == capped_answer_hold(4 * kSec, 20));
  }
}

TEST_CASE("followed name: the first answer publishes, logs once, and sets the next query") {
  FollowedName f("svc.local", RecordType::kA, policy(), 1);
  CHECK_FALSE(f.answered());
  CHECK(f.last_result() == "no answer yet");
  FollowedName::Step s = f.record(ok(eps({1, 2}), 5), 100);
  CHECK(f.answered());
  CHECK(s.next_query_in_ns == 5 * kSec);
  REQUIRE(s.publish);
  CHECK(s.publish->size() == 2);
  CHECK(s.publish->note.empty());
  CHECK(s.log == FollowedName::Log::kInfo);
  CHECK(s.log_text == "DNS svc.local A: ok: 2 records, ttl 5s; 2 members");
  CHECK(f.last_result() == "ok: 2 records, ttl 5s");
  CHECK(f.last_refresh_ns() == 100);

  SUBCASE("the same answer again: nothing to publish or log") {
    FollowedName::Step again = f.record(ok(eps({2, 1}), 5), 5 * kSec);
    CHECK_FALSE(again.publish);
    CHECK(again.log == FollowedName::Log::kNone);
  }
  SUBCASE("a change publishes a newer version") {
    FollowedName::Step more = f.record(ok(eps({1, 2, 3}), 5), 5 * kSec);
    REQUIRE(more.publish);
    CHECK(more.publish->size() == 3);
    CHECK(more.publish->version > s.publish->version);
    CHECK(more.log == FollowedName::Log::kNone);  // still ok: no new state to log
  }
}

TEST_CASE("followed name: a failure keeps the last good set and backs off") {
  FollowedName f("_g._tcp.svc.local", RecordType::kSRV, policy(0 /* strict hold */), 1);
  f.record(ok(eps({1, 2}), 5), 0);
  for (int i = 0; i < 5; ++i) {
    FollowedName::Step s =
        f.record(failure("SRV target b.svc.local A: Server failure"), (10 + i) * kSec);
    CHECK_FALSE(s.publish);
    CHECK(members(f) == 2);
    CHECK(s.log == (i == 0 ? FollowedName::Log::kWarn : FollowedName::Log::kNone));
    const int64_t d = std::min<int64_t>(250 * kMs << i, 30 * kSec);
    CHECK(s.next_query_in_ns >= d / 2);
    CHECK(s.next_query_in_ns <= d);
    if (i == 0) {
      CHECK(s.log_text.find("DNS _g._tcp.svc.local SRV: SRV target b.svc.local A: Server "
                            "failure; keeping 2 members, retry in ") == 0);
    }
  }
  CHECK(f.last_result() == "SRV target b.svc.local A: Server failure");
  FollowedName::Step back = f.record(ok(eps({1, 2}), 5), 20 * kSec);
  CHECK(back.log == FollowedName::Log::kInfo);
  CHECK(back.next_query_in_ns == 5 * kSec);
}

TEST_CASE("followed name: failures before any answer publish one empty set naming the name") {
  FollowedName f("svc.local", RecordType::kA, policy(), 1);
  FollowedName::Step s = f.record(failure("Timeout while contacting DNS servers"), 0);
  CHECK_FALSE(f.answered());  // readiness keeps waiting (bounded) for a real answer
  REQUIRE(s.publish);
  CHECK(s.publish->empty());
  CHECK(s.publish->note == "DNS name svc.local: Timeout while contacting DNS servers");
  // The same reason again: shards already have it.
  CHECK_FALSE(f.record(failure("Timeout while contacting DNS servers"), kSec).publish);
  // Another reason: clients should read the new one.
  FollowedName::Step r = f.record(failure("Server failure"), 2 * kSec);
  REQUIRE(r.publish);
  CHECK(r.publish->note == "DNS name svc.local: Server failure");
}

TEST_CASE("followed name: empty answers keep members until stale_after, then clear") {
  FollowedName f("svc.local", RecordType::kA, policy(), 1);
  f.record(ok(eps({1, 2}), 1), 0);
  FollowedName::Step s = f.record(empty("NXDOMAIN"), 1 * kSec);
  CHECK_FALSE(s.publish);
  CHECK(members(f) == 2);
  CHECK(s.log == FollowedName::Log::kWarn);
  CHECK(s.log_text == "DNS svc.local A: NXDOMAIN; keeping 2 members, retry in 1s");
  CHECK(s.next_query_in_ns == 1 * kSec);
  CHECK_FALSE(f.record(empty("NXDOMAIN"), 10 * kSec).publish);  // 9 s < stale_after
  FollowedName::Step gone = f.record(empty("NXDOMAIN"), 11 * kSec);
  CHECK(members(f) == 0);
  REQUIRE(gone.publish);
  CHECK(gone.publish->empty());
  CHECK(gone.publish->note == "DNS name svc.local: NXDOMAIN for 10s (past stale_after)");
  // Still NXDOMAIN a second later: the note's duration changed, so clients get the new one.
  FollowedName::Step later = f.record(empty("NXDOMAIN"), 12 * kSec);
  REQUIRE(later.publish);
  CHECK(later.publish->note == "DNS name svc.local: NXDOMAIN for 11s (past stale_after)");
  // Records again: members are back, with no note.
  FollowedName::Step back = f.record(ok(eps({3}), 1), 13 * kSec);
  REQUIRE(back.publish);
  CHECK(back.publish->size() == 1);
  CHECK(back.publish->note.empty());
}

TEST_CASE("followed name: a failure in an empty streak neither clears nor resets it") {
  FollowedName f("svc.local", RecordType::kA, policy(), 1);
  f.record(ok(eps({1}), 1), 0);
  f.record(empty(), 1 * kSec);
  f.record(failure(), 6 * kSec);
  CHECK(members(f) == 1);
  f.record(empty(), 11 * kSec);  // 10 s after the streak began
  CHECK(members(f) == 0);
}

TEST_CASE("followed name: members missing from an answer leave after the hold") {
  FollowedName f("svc.local", RecordType::kA, policy(3 * kSec), 1);
  f.record(ok(eps({1, 2}), 1), 0);
  CHECK_FALSE(f.record(ok(eps({1}), 1), 2 * kSec).publish);  // 2 is held
  CHECK(members(f) == 2);
  FollowedName::Step s = f.record(ok(eps({1}), 1), 4 * kSec);  // 4 s since 2 was seen
  REQUIRE(s.publish);
  CHECK(s.publish->size() == 1);
}

TEST_CASE("followed name: an SRV refresh whose target lookup failed keeps the set") {
  // SrvLookup and FollowedName together, as the controller drives them.
  FollowedName f("_g._tcp.svc.local", RecordType::kSRV, policy(0), 1);
  SrvLookup srv;
  auto run = [&](int b_status, int64_t now) {
    auto qs = srv.begin({}, 5, {{"a.svc.local", 80, 1}, {"b.svc.local", 80, 1}});
    for (const auto& q : qs) {
      if (q.type == RecordType::kAAAA) {
        srv.on_result(q.round, q.index, ARES_ENODATA, {});
      } else if (q.name == "a.svc.local") {
        auto msg = t::reply(q.name, q.type, {t::a_rec(q.name, "10.0.0.1")});
        srv.on_result(q.round, q.index, ARES_SUCCESS, msg);
      } else if (b_status == ARES_SUCCESS) {
        auto msg = t::reply(q.name, q.type, {t::a_rec(q.name, "10.0.0.2")});
        srv.on_result(q.round, q.index, ARES_SUCCESS, msg);
      } else {
        srv.on_result(q.round, q.index, b_status, {});
      }
    }
    REQUIRE(srv.pending() == 0);
    return f.record(srv.result(), now);
  };
  CHECK(run(ARES_SUCCESS, 0).publish->size() == 2);
  FollowedName::Step s = run(ARES_ESERVFAIL, 5 * kSec);
  CHECK_FALSE(s.publish);
  CHECK(members(f) == 2);  // hold 0, yet b stays: its lookup failed, it was not answered away
  CHECK(s.next_query_in_ns <= 250 * kMs);  // backoff, not the TTL cadence
  // NXDOMAIN for b: b has no address now, and with hold 0 it leaves.
  FollowedName::Step nx = run(ARES_ENOTFOUND, 6 * kSec);
  REQUIRE(nx.publish);
  REQUIRE(nx.publish->size() == 1);
  CHECK(nx.publish->endpoints[0].name == "10.0.0.1:80");
}

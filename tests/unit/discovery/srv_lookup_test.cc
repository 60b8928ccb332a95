#include "discovery/srv_lookup.h"

#include <ares.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/unit/discovery/dns_records.h"

using ringlb::discovery::LookupResult;
using ringlb::discovery::QueryOutcome;
using ringlb::discovery::RecordType;
using ringlb::discovery::SrvLookup;
using ringlb::discovery::SrvTarget;
namespace t = ringlb::discovery::test;

namespace {

using Queries = std::vector<SrvLookup::Query>;

const SrvLookup::Query& find_query(const Queries& qs, const std::string& name, RecordType type) {
  for (const auto& q : qs) {
    if (q.name == name && q.type == type) return q;
  }
  FAIL("no ", (type == RecordType::kA ? "A" : "AAAA"), " query for ", name);
  return qs.front();
}

// Answers `q` with these address records (NOERROR), or with `status` and no message.
bool answer(SrvLookup& s, const SrvLookup::Query& q,
            const std::vector<ringlb::discovery::DnsRecord>& rrs) {
  auto msg = t::reply(q.name, q.type, rrs);
  return s.on_result(q.round, q.index, ARES_SUCCESS, msg);
}
bool fail(SrvLookup& s, const SrvLookup::Query& q, int status) {
  return s.on_result(q.round, q.index, status, {});
}

}  // namespace

TEST_CASE("srv lookup: each distinct target is looked up as A and as AAAA") {
  SrvLookup s;
  Queries qs =
      s.begin({}, 60, {{"a.pay.local", 80, 1}, {"b.pay.local", 81, 2}, {"A.Pay.Local.", 82, 3}});
  REQUIRE(qs.size() == 4);  // "A.Pay.Local." is a.pay.local: one target, two SRV records
  CHECK(s.pending() == 4);
  find_query(qs, "a.pay.local", RecordType::kA);
  find_query(qs, "a.pay.local", RecordType::kAAAA);
  find_query(qs, "b.pay.local", RecordType::kA);
  find_query(qs, "b.pay.local", RecordType::kAAAA);
  for (size_t i = 0; i < qs.size(); ++i) CHECK(qs[i].index == i);
}

TEST_CASE("srv lookup: a target with only an AAAA record gets its IPv6 address") {
  SrvLookup s;
  Queries qs = s.begin({}, 60, {{"v6.pay.local", 50051, 7}});
  const auto& qa = find_query(qs, "v6.pay.local", RecordType::kA);
  const auto& q6 = find_query(qs, "v6.pay.local", RecordType::kAAAA);
  CHECK_FALSE(fail(s, qa, ARES_ENODATA));  // NODATA: no A record, not a failure
  CHECK(answer(s, q6, {t::aaaa_rec("v6.pay.local", "::1", 30)}));
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "[::1]:50051");
  CHECK(r.endpoints[0].weight == 7);
  CHECK(r.ttl == 30);
}

TEST_CASE("srv lookup: A and AAAA addresses merge, each with the SRV record's port and weight") {
  SrvLookup s;
  Queries qs = s.begin({}, 60, {{"a.pay.local", 80, 5}, {"a.pay.local", 90, 2}});
  REQUIRE(qs.size() == 2);
  // Answers in any order; the AAAA first here.
  CHECK_FALSE(answer(s, qs[1], {t::aaaa_rec("a.pay.local", "2001:db8::1", 40)}));
  CHECK(answer(s, qs[0],
               {t::a_rec("a.pay.local", "10.0.0.1", 50), t::a_rec("a.pay.local", "10.0.0.2", 20)}));
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  CHECK(r.ttl == 20);
  REQUIRE(r.endpoints.size() == 6);  // 3 addresses x 2 SRV records (ports 80 and 90)
  for (const char* ip : {"10.0.0.1", "10.0.0.2", "[2001:db8::1]"}) {
    const auto* e80 = t::find(r.endpoints, std::string(ip) + ":80");
    const auto* e90 = t::find(r.endpoints, std::string(ip) + ":90");
    REQUIRE(e80);
    REQUIRE(e90);
    CHECK(e80->weight == 5);
    CHECK(e90->weight == 2);
  }
}

TEST_CASE("srv lookup: SRV records meeting on one address:port add their weights") {
  SrvLookup s;
  // Found with glue: 10.0.0.1:80 weight 4. The looked-up targets reach the same address:port.
  Queries qs = s.begin({t::ep4(1, 80, 4)}, 60,
                       {{"x.pay.local", 80, 1}, {"x.pay.local", 80, 2}, {"y.pay.local", 80, 10}});
  REQUIRE(qs.size() == 4);
  for (const auto& q : qs) {
    const std::string name = q.name;
    if (q.type == RecordType::kA)
      answer(s, q, {t::a_rec(name, "10.0.0.1")});
    else
      fail(s, q, ARES_ENODATA);
  }
  CHECK(s.pending() == 0);
  LookupResult r = s.result();
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "10.0.0.1:80");
  CHECK(r.endpoints[0].weight == 4 + 1 + 2 + 10);
}

TEST_CASE("srv lookup: glue endpoints and looked-up ones together; TTL is the minimum used") {
  SrvLookup s;
  Queries qs = s.begin({t::ep4(1, 81, 3)}, 25, {{"b.pay.local", 82, 1}, {"c.pay.local", 83, 1}});
  REQUIRE(qs.size() == 4);
  answer(s, find_query(qs, "b.pay.local", RecordType::kA),
         {t::a_rec("b.pay.local", "10.0.0.2", 100)});
  fail(s, find_query(qs, "b.pay.local", RecordType::kAAAA), ARES_ENODATA);
  // c.pay.local is gone: NXDOMAIN gives it no address, and is not a failure.
  fail(s, find_query(qs, "c.pay.local", RecordType::kA), ARES_ENOTFOUND);
  CHECK(fail(s, find_query(qs, "c.pay.local", RecordType::kAAAA), ARES_ENOTFOUND));
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  CHECK(r.ttl == 25);  // the SRV answer's 25 beats the A record's 100; NXDOMAIN adds no TTL
  REQUIRE(r.endpoints.size() == 2);
  CHECK(t::find(r.endpoints, "10.0.0.1:81")->weight == 3);
  CHECK(t::find(r.endpoints, "10.0.0.2:82")->weight == 1);
}

TEST_CASE("srv lookup: any failed target lookup fails the whole refresh") {
  struct Case {
    const char* what;
    int status;
    bool malformed;
  };
  for (Case c : {Case{"SERVFAIL", ARES_ESERVFAIL, false}, Case{"timeout", ARES_ETIMEOUT, false},
                 Case{"REFUSED", ARES_EREFUSED, false}, Case{"malformed", ARES_SUCCESS, true}}) {
    CAPTURE(c.what);
    SrvLookup s;
    Queries qs = s.begin({t::ep4(1, 81)}, 60, {{"ok.pay.local", 80, 1}, {"bad.pay.local", 80, 1}});
    answer(s, find_query(qs, "ok.pay.local", RecordType::kA),
           {t::a_rec("ok.pay.local", "10.0.0.2")});
    fail(s, find_query(qs, "ok.pay.local", RecordType::kAAAA), ARES_ENODATA);
    answer(s, find_query(qs, "bad.pay.local", RecordType::kA),
           {t::a_rec("bad.pay.local", "10.0.0.3")});
    const auto& q = find_query(qs, "bad.pay.local", RecordType::kAAAA);
    bool last;
    if (c.malformed) {
      const std::vector<uint8_t> junk = {1, 2, 3};
      last = s.on_result(q.round, q.index, ARES_SUCCESS, junk);
    } else {
      last = fail(s, q, c.status);
    }
    CHECK(last);
    LookupResult r = s.result();
    CHECK(r.outcome == QueryOutcome::kFailure);  // not kOk with the addresses that did come
    CHECK(r.endpoints.empty());
    CHECK(r.detail.find("SRV target bad.pay.local AAAA: ") == 0);
    if (!c.malformed) CHECK(r.detail.find(ares_strerror(c.status)) != std::string::npos);
  }
}

TEST_CASE("srv lookup: the first failure is the one named") {
  SrvLookup s;
  Queries qs = s.begin({}, 60, {{"a.pay.local", 80, 1}});
  fail(s, qs[1], ARES_ETIMEOUT);
  fail(s, qs[0], ARES_ESERVFAIL);
  CHECK(s.result().detail ==
        std::string("SRV target a.pay.local AAAA: ") + ares_strerror(ARES_ETIMEOUT));
}

TEST_CASE("srv lookup: no address anywhere is an empty answer") {
  SrvLookup s;
  Queries qs = s.begin({}, 60, {{"gone.pay.local", 80, 1}, {"nodata.pay.local", 80, 1}});
  for (const auto& q : qs) fail(s, q, q.name == "gone.pay.local" ? ARES_ENOTFOUND : ARES_ENODATA);
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kEmpty);
  CHECK(r.detail == "SRV targets have no addresses");
  CHECK(r.endpoints.empty());
}

TEST_CASE("srv lookup: stale rounds, unknown indexes and repeats are ignored") {
  SrvLookup s;
  Queries old = s.begin({}, 60, {{"a.pay.local", 80, 1}});
  Queries now = s.begin({}, 60, {{"b.pay.local", 80, 1}});
  CHECK(now[0].round != old[0].round);
  CHECK(s.pending() == 2);
  // The abandoned round's answers (same indexes!) change nothing.
  CHECK_FALSE(answer(s, old[0], {t::a_rec("a.pay.local", "10.0.0.9")}));
  CHECK_FALSE(fail(s, old[1], ARES_ESERVFAIL));
  CHECK(s.pending() == 2);
  CHECK_FALSE(s.on_result(now[0].round, 99, ARES_SUCCESS, {}));
  CHECK_FALSE(answer(s, now[0], {t::a_rec("b.pay.local", "10.0.0.2")}));
  CHECK_FALSE(fail(s, now[0], ARES_ESERVFAIL));  // a repeat of index 0
  CHECK(s.pending() == 1);
  CHECK(fail(s, now[1], ARES_ENODATA));
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "10.0.0.2:80");
}

TEST_CASE("srv lookup: a new round starts clean") {
  SrvLookup s;
  Queries first = s.begin({t::ep4(1, 80)}, 60, {{"a.pay.local", 80, 1}});
  fail(s, first[0], ARES_ESERVFAIL);
  fail(s, first[1], ARES_ENODATA);
  CHECK(s.result().outcome == QueryOutcome::kFailure);
  Queries second = s.begin({}, 30, {{"a.pay.local", 80, 1}});
  answer(s, second[0], {t::a_rec("a.pay.local", "10.0.0.5", 90)});
  fail(s, second[1], ARES_ENODATA);
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  CHECK(r.ttl == 30);
  REQUIRE(r.endpoints.size() == 1);  // 10.0.0.1 was the first round's glue, not this one's
  CHECK(r.endpoints[0].name == "10.0.0.5:80");
}

TEST_CASE("srv lookup: a CNAME-only answer gives no address and no TTL") {
  SrvLookup s;
  Queries qs = s.begin({t::ep4(1, 80)}, 40, {{"alias.pay.local", 80, 1}});
  ringlb::discovery::DnsRecord cname{};
  cname.type = static_cast<RecordType>(5);
  cname.name = "alias.pay.local";
  cname.ttl = 1;
  cname.target = "elsewhere.pay.local";
  answer(s, qs[0], {cname});
  fail(s, qs[1], ARES_ENODATA);
  LookupResult r = s.result();
  CHECK(r.outcome == QueryOutcome::kOk);
  CHECK(r.ttl == 40);
  CHECK(r.endpoints.size() == 1);
}

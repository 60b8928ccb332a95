#include "discovery/answer.h"

#include <ares.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/unit/discovery/dns_records.h"

using ringlb::discovery::interpret_answer;
using ringlb::discovery::LookupResult;
using ringlb::discovery::QueryOutcome;
using ringlb::discovery::read_reply;
using ringlb::discovery::RecordType;
using ringlb::discovery::SrvTarget;
namespace t = ringlb::discovery::test;

TEST_CASE("answer: NXDOMAIN and NODATA are empty answers, not failures") {
  LookupResult nx = interpret_answer(ARES_ENOTFOUND, {}, RecordType::kA, 80);
  CHECK(nx.outcome == QueryOutcome::kEmpty);
  CHECK(nx.detail == "NXDOMAIN");
  CHECK(nx.endpoints.empty());
  LookupResult nodata = interpret_answer(ARES_ENODATA, {}, RecordType::kAAAA, 80);
  CHECK(nodata.outcome == QueryOutcome::kEmpty);
  CHECK(nodata.detail == "no records");
}

TEST_CASE("answer: timeout, SERVFAIL, REFUSED, unreachable are failures named by c-ares") {
  for (int status : {ARES_ETIMEOUT, ARES_ESERVFAIL, ARES_EREFUSED, ARES_ECONNREFUSED, ARES_EFORMERR,
                     ARES_EDESTRUCTION}) {
    CAPTURE(status);
    LookupResult r = interpret_answer(status, {}, RecordType::kA, 80);
    CHECK(r.outcome == QueryOutcome::kFailure);
    CHECK(r.detail == ares_strerror(status));
    CHECK(r.endpoints.empty());
    CHECK(r.unresolved.empty());
  }
}

TEST_CASE("answer: a malformed message is a failure, not an empty answer") {
  const std::vector<uint8_t> junk = {0x12, 0x34, 0x81};
  LookupResult r = interpret_answer(ARES_SUCCESS, junk, RecordType::kA, 80);
  CHECK(r.outcome == QueryOutcome::kFailure);
  CHECK(r.detail.rfind("malformed answer: ", 0) == 0);
  CHECK(r.detail.size() > std::string("malformed answer: ").size());
  auto reply = read_reply(ARES_SUCCESS, junk);
  CHECK(reply.outcome == QueryOutcome::kFailure);
  CHECK_FALSE(reply.answer.has_value());
}

TEST_CASE("answer: A records give endpoints on the configured port and the minimum TTL") {
  auto msg =
      t::reply("svc.local", RecordType::kA,
               {t::a_rec("svc.local", "10.0.0.1", 30), t::a_rec("svc.local", "10.0.0.2", 9)});
  LookupResult r = interpret_answer(ARES_SUCCESS, msg, RecordType::kA, 8080);
  CHECK(r.outcome == QueryOutcome::kOk);
  CHECK(r.ttl == 9);
  REQUIRE(r.endpoints.size() == 2);
  CHECK(t::find(r.endpoints, "10.0.0.1:8080"));
  CHECK(t::find(r.endpoints, "10.0.0.2:8080"));
  CHECK(r.detail.empty());
}

TEST_CASE("answer: records of no usable type are an empty answer") {
  // An AAAA record answering an A question: the server answered, with nothing for us.
  auto msg = t::reply("svc.local", RecordType::kA, {t::aaaa_rec("svc.local", "::1", 30)});
  LookupResult r = interpret_answer(ARES_SUCCESS, msg, RecordType::kA, 80);
  CHECK(r.outcome == QueryOutcome::kEmpty);
  CHECK(r.detail == "no usable records");
  auto reply = read_reply(ARES_SUCCESS, msg);
  CHECK(reply.outcome == QueryOutcome::kOk);  // the transport part went fine
  CHECK(reply.answer.has_value());
}

TEST_CASE("answer: SRV targets without addresses are left to look up, the rest are used") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg = t::reply(q, RecordType::kSRV,
                      {t::srv_rec(q, 1, 3, 81, "glued.pay.local", 20),
                       t::srv_rec(q, 1, 0, 82, "bare.pay.local", 20)},
                      {t::a_rec("glued.pay.local", "10.0.0.1", 10)});
  LookupResult r = interpret_answer(ARES_SUCCESS, msg, RecordType::kSRV, 0);
  CHECK(r.outcome == QueryOutcome::kOk);  // not final: the caller looks bare.pay.local up
  CHECK(r.ttl == 10);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "10.0.0.1:81");
  CHECK(r.endpoints[0].weight == 3);
  REQUIRE(r.unresolved.size() == 1);
  CHECK(r.unresolved[0] == SrvTarget{"bare.pay.local", 82, 1});

  SUBCASE("no target with an address is still not an empty answer") {
    auto bare = t::reply(q, RecordType::kSRV, {t::srv_rec(q, 1, 1, 82, "bare.pay.local")});
    LookupResult b = interpret_answer(ARES_SUCCESS, bare, RecordType::kSRV, 0);
    CHECK(b.outcome == QueryOutcome::kOk);
    CHECK(b.endpoints.empty());
    CHECK(b.unresolved.size() == 1);
  }
}

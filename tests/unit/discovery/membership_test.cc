#include "discovery/membership.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "lb/endpoint.h"

using ringlb::discovery::Member;
using ringlb::discovery::Membership;
using ringlb::lb::Endpoint;

namespace {

constexpr int64_t kSec = 1'000'000'000;

Endpoint ep(int i, uint32_t weight = 1) {
  Endpoint e;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(50051);
  sin.sin_addr.s_addr = htonl(0x0a000000u + static_cast<uint32_t>(i));
  std::memcpy(&e.addr, &sin, sizeof(sin));
  e.addr_len = sizeof(sin);
  e.weight = weight;
  e.name = "10.0.0." + std::to_string(i) + ":50051";
  return e;
}

bool has(const Membership& m, int i) {
  const std::string key = ringlb::lb::endpoint_key(ep(i));
  return std::any_of(m.members().begin(), m.members().end(),
                     [&](const Member& x) { return x.key == key; });
}

// What Route 53 does to a 20-task MULTIVALUE name: 8 records per answer. A fixed rotation
// keeps the test deterministic; every endpoint shows up at least every 3 answers.
std::vector<Endpoint> rotating_answer(int query, int total, int shown = 8) {
  std::vector<Endpoint> out;
  for (int j = 0; j < shown; ++j) out.push_back(ep((query * shown + j) % total));
  return out;
}

}  // namespace

TEST_CASE("membership: 20 endpoints seen 8 at a time all become members and stay") {
  Membership m;
  const int64_t interval = 5 * kSec;
  const int64_t hold = 3 * interval;
  int64_t now = 0;
  CHECK(m.merge(rotating_answer(0, 20), now, hold));
  CHECK(m.members().size() == 8);
  now += interval;
  CHECK(m.merge(rotating_answer(1, 20), now, hold));
  CHECK(m.members().size() == 16);
  now += interval;
  CHECK(m.merge(rotating_answer(2, 20), now, hold));
  CHECK(m.members().size() == 20);
  for (int q = 3; q < 60; ++q) {
    now += interval;
    INFO("query " << q);
    CHECK_FALSE(m.merge(rotating_answer(q, 20), now, hold));  // nothing really changed
    CHECK(m.members().size() == 20);
  }
  for (int i = 0; i < 20; ++i) CHECK(has(m, i));
}

TEST_CASE("membership: an endpoint that leaves the rotation goes after the hold, not before") {
  Membership m;
  const int64_t interval = 5 * kSec;
  const int64_t hold = 3 * interval;
  int64_t now = 0;
  for (int q = 0; q < 5; ++q, now += interval) m.merge(rotating_answer(q, 20), now, hold);
  REQUIRE(m.members().size() == 20);
  // Task 19 is stopped: the name now rotates over 0..18.
  int64_t last_seen_19 = 0;
  for (const Member& x : m.members()) {
    if (x.key == ringlb::lb::endpoint_key(ep(19))) last_seen_19 = x.last_seen_ns;
  }
  bool gone = false;
  for (int q = 0; q < 20 && !gone; ++q, now += interval) {
    const bool changed = m.merge(rotating_answer(q, 19), now, hold);
    if (now - last_seen_19 <= hold) {
      CHECK(has(m, 19));
      CHECK_FALSE(changed);
    } else {
      CHECK_FALSE(has(m, 19));
      CHECK(changed);
      gone = true;
    }
  }
  CHECK(gone);
  CHECK(m.members().size() == 19);
}

TEST_CASE("membership: hold boundary is 'absent for longer than hold'") {
  Membership m;
  const int64_t hold = 15 * kSec;
  CHECK(m.merge({ep(1), ep(2)}, 0, hold));
  CHECK_FALSE(m.merge({ep(1)}, 5 * kSec, hold));
  CHECK_FALSE(m.merge({ep(1)}, 15 * kSec, hold));  // absent exactly hold: stays
  CHECK(has(m, 2));
  CHECK(m.merge({ep(1)}, 15 * kSec + 1, hold));  // one ns longer: leaves
  CHECK_FALSE(has(m, 2));
  CHECK(m.members().size() == 1);
}

TEST_CASE("membership: being seen again within the hold keeps the member and its first_seen") {
  Membership m;
  const int64_t hold = 10 * kSec;
  m.merge({ep(1), ep(2)}, 0, hold);
  m.merge({ep(1)}, 8 * kSec, hold);
  // 1 has been absent 8 s, 2 comes back after 16 s: both within the hold, nothing changes.
  CHECK_FALSE(m.merge({ep(2)}, 16 * kSec, hold));
  CHECK(m.members().size() == 2);
  for (const Member& x : m.members()) {
    CHECK(x.first_seen_ns == 0);
    if (x.key == ringlb::lb::endpoint_key(ep(2))) CHECK(x.last_seen_ns == 16 * kSec);
    if (x.key == ringlb::lb::endpoint_key(ep(1))) CHECK(x.last_seen_ns == 8 * kSec);
  }
}

TEST_CASE("membership: hold 0 is strict, even at the same timestamp") {
  Membership m;
  CHECK(m.merge({ep(1), ep(2), ep(3)}, 0, 0));
  CHECK(m.merge({ep(1), ep(3)}, 0, 0));
  CHECK(m.members().size() == 2);
  CHECK_FALSE(has(m, 2));
  CHECK(m.merge({ep(2)}, kSec, 0));
  CHECK(m.members().size() == 1);
  CHECK(has(m, 2));
  CHECK(m.merge({ep(3)}, 2 * kSec, -1));  // negative hold is treated as strict
  CHECK(m.members().size() == 1);
}

TEST_CASE("membership: merge reports only real changes") {
  Membership m;
  const int64_t hold = 30 * kSec;
  CHECK(m.merge({ep(1), ep(2)}, 0, hold));
  CHECK_FALSE(m.merge({ep(1), ep(2)}, kSec, hold));
  CHECK_FALSE(m.merge({ep(2), ep(1)}, 2 * kSec, hold));      // order does not matter
  CHECK_FALSE(m.merge({ep(2)}, 3 * kSec, hold));             // absent, within hold
  CHECK(m.merge({ep(2), ep(3)}, 4 * kSec, hold));            // new member
  CHECK(m.merge({ep(1, 5), ep(2), ep(3)}, 5 * kSec, hold));  // reweighted
  CHECK_FALSE(m.merge({ep(1, 5)}, 6 * kSec, hold));
  CHECK(m.merge({ep(1, 2)}, 7 * kSec, hold));

  Endpoint renamed = ep(1, 2);
  renamed.name = "task-1";
  CHECK_FALSE(m.merge({renamed}, 8 * kSec, hold));  // same key and weight: not a change...
  for (const Member& x : m.members()) {
    if (x.key == ringlb::lb::endpoint_key(ep(1))) {
      CHECK(x.endpoint.name == "task-1");  // ...but the new name is kept
    }
  }
  CHECK_FALSE(m.merge({}, 1000 * kSec, hold));  // empty answer: ignored, nobody expires
  CHECK(m.members().size() == 3);
}

TEST_CASE("membership: repeated endpoints in one answer are one member, weights added") {
  Membership m;
  CHECK(m.merge({ep(1, 2), ep(1, 3), ep(2, 0)}, 0, kSec));
  REQUIRE(m.members().size() == 2);
  for (const Member& x : m.members()) {
    if (x.key == ringlb::lb::endpoint_key(ep(1))) CHECK(x.endpoint.weight == 5);
    if (x.key == ringlb::lb::endpoint_key(ep(2))) CHECK(x.endpoint.weight == 1);  // 0 -> 1
  }
  CHECK_FALSE(m.merge({ep(1, 3), ep(2), ep(1, 2)}, 1, kSec));
}

TEST_CASE("membership: clear") {
  Membership m;
  CHECK_FALSE(m.clear());
  m.merge({ep(1)}, 0, kSec);
  CHECK(m.clear());
  CHECK(m.members().empty());
  CHECK_FALSE(m.clear());
  CHECK(m.merge({ep(1)}, 1, kSec));  // comes back as new
}

TEST_CASE("membership: snapshot order is stable and independent of answer order") {
  Membership a, b;
  a.merge({ep(3), ep(1), ep(2)}, 0, kSec);
  b.merge({ep(2), ep(3)}, 0, kSec);
  b.merge({ep(1), ep(2, 1)}, 1, kSec);
  auto sa = a.snapshot(7);
  auto sb = b.snapshot(8);
  CHECK(sa->version == 7);
  CHECK(sb->version == 8);
  REQUIRE(sa->size() == 3);
  REQUIRE(sb->size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(ringlb::lb::endpoint_key(sa->endpoints[i]) == ringlb::lb::endpoint_key(sb->endpoints[i]));
    CHECK(sa->endpoints[i].name == sb->endpoints[i].name);
    CHECK(sa->endpoints[i].weight == sb->endpoints[i].weight);
  }
  // Sorted by key, the same order as members().
  for (size_t i = 0; i < 3; ++i) {
    CHECK(ringlb::lb::endpoint_key(sa->endpoints[i]) == a.members()[i].key);
  }
  CHECK(std::is_sorted(a.members().begin(), a.members().end(),
                       [](const Member& x, const Member& y) { return x.key < y.key; }));
  // A later merge that changes nothing gives an identical snapshot.
  a.merge({ep(2), ep(1), ep(3)}, 2, kSec);
  auto sa2 = a.snapshot(9);
  for (size_t i = 0; i < 3; ++i) CHECK(sa2->endpoints[i].name == sa->endpoints[i].name);
  CHECK(Membership().snapshot(1)->empty());
}

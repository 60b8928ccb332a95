#include "discovery/dns_message.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

using ringlb::discovery::build_dns_response;
using ringlb::discovery::DnsAnswer;
using ringlb::discovery::DnsRecord;
using ringlb::discovery::endpoints_from_answer;
using ringlb::discovery::parse_dns_response;
using ringlb::discovery::RecordType;
using ringlb::discovery::Resolved;
using ringlb::discovery::same_dns_name;
using ringlb::discovery::SrvTarget;

namespace {

DnsRecord a_rec(std::string name, const char* ip, uint32_t ttl = 60) {
  DnsRecord r{};
  r.type = RecordType::kA;
  r.name = std::move(name);
  r.ttl = ttl;
  REQUIRE(inet_pton(AF_INET, ip, r.addr) == 1);
  r.addr_len = 4;
  return r;
}

DnsRecord aaaa_rec(std::string name, const char* ip, uint32_t ttl = 60) {
  DnsRecord r{};
  r.type = RecordType::kAAAA;
  r.name = std::move(name);
  r.ttl = ttl;
  REQUIRE(inet_pton(AF_INET6, ip, r.addr) == 1);
  r.addr_len = 16;
  return r;
}

DnsRecord srv_rec(std::string name, uint16_t prio, uint16_t weight, uint16_t port,
                  std::string target, uint32_t ttl = 60) {
  DnsRecord r{};
  r.type = RecordType::kSRV;
  r.name = std::move(name);
  r.ttl = ttl;
  r.priority = prio;
  r.weight = weight;
  r.port = port;
  r.target = std::move(target);
  return r;
}

DnsAnswer parse_ok(const std::vector<uint8_t>& msg) {
  std::string error;
  auto a = parse_dns_response(msg, error);
  INFO("error: " << error);
  REQUIRE(a.has_value());
  return *a;
}

std::string parse_err(const std::vector<uint8_t>& msg) {
  std::string error;
  auto a = parse_dns_response(msg, error);
  CHECK_FALSE(a.has_value());
  CHECK_FALSE(error.empty());
  return error;
}

// Hand-assembles messages the builder would never make (compression, broken fields).
struct Wire {
  std::vector<uint8_t> b;
  Wire& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Wire& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  Wire& u32(uint32_t v) {
    return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v));
  }
  Wire& label(std::string_view s) {
    u8(static_cast<uint8_t>(s.size()));
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Wire& labels(std::initializer_list<std::string_view> ls) {
    for (auto l : ls) label(l);
    return u8(0);
  }
  Wire& ptr(size_t off) { return u16(static_cast<uint16_t>(0xc000 | off)); }
  Wire& header(uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar, uint16_t flags = 0x8180) {
    return u16(0x1234).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
  }
  // type, class IN, ttl, rdlength
  Wire& rr(uint16_t type, uint32_t ttl, uint16_t rdlen) {
    return u16(type).u16(1).u32(ttl).u16(rdlen);
  }
  size_t size() const { return b.size(); }
};

std::string ip_of(const ringlb::lb::Endpoint& e) {
  char text[INET6_ADDRSTRLEN] = {};
  if (e.addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(e.addr).sin_addr, text, sizeof(text));
  } else {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(e.addr).sin6_addr, text,
              sizeof(text));
  }
  return text;
}

uint16_t port_of(const ringlb::lb::Endpoint& e) {
  if (e.addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(e.addr).sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6&>(e.addr).sin6_port);
}

const ringlb::lb::Endpoint* find_ep(const Resolved& r, std::string_view name) {
  for (const auto& e : r.endpoints) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("dns: A records round-trip through build and parse") {
  auto msg = build_dns_response(0xbeef, "orders.internal.local", RecordType::kA, 0,
                                {a_rec("orders.internal.local", "10.0.1.5", 60),
                                 a_rec("orders.internal.local", "10.0.1.6", 30)},
                                {});
  DnsAnswer a = parse_ok(msg);
  CHECK(a.id == 0xbeef);
  CHECK(a.rcode == 0);
  CHECK_FALSE(a.truncated);
  CHECK(a.question == "orders.internal.local");
  REQUIRE(a.answers.size() == 2);
  CHECK(a.additional.empty());
  CHECK(a.answers[0].type == RecordType::kA);
  CHECK(a.answers[0].name == "orders.internal.local");
  CHECK(a.answers[0].ttl == 60);
  CHECK(a.answers[0].addr_len == 4);
  const uint8_t want[4] = {10, 0, 1, 5};
  CHECK(std::memcmp(a.answers[0].addr, want, 4) == 0);
  CHECK(a.answers[1].ttl == 30);
  CHECK(a.answers[1].addr[3] == 6);
}

TEST_CASE("dns: AAAA records round-trip") {
  auto msg = build_dns_response(
      7, "v6.local.", RecordType::kAAAA, 0,
      {aaaa_rec("v6.local.", "2001:db8::1"), aaaa_rec("v6.local.", "fe80::abcd:1", 5)}, {});
  DnsAnswer a = parse_ok(msg);
  REQUIRE(a.answers.size() == 2);
  CHECK(a.answers[0].type == RecordType::kAAAA);
  CHECK(a.answers[0].addr_len == 16);
  CHECK(a.answers[0].name == "v6.local");  // parsed names carry no trailing dot
  uint8_t want[16];
  inet_pton(AF_INET6, "fe80::abcd:1", want);
  CHECK(std::memcmp(a.answers[1].addr, want, 16) == 0);
  CHECK(a.answers[1].ttl == 5);
}

TEST_CASE("dns: SRV with additional A and AAAA round-trips") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg = build_dns_response(
      1, q, RecordType::kSRV, 0,
      {srv_rec(q, 10, 5, 50051, "task-a.pay.local"), srv_rec(q, 10, 0, 50052, "task-b.pay.local")},
      {a_rec("task-a.pay.local", "10.0.0.1", 20), aaaa_rec("task-b.pay.local", "2001:db8::2", 40)});
  DnsAnswer a = parse_ok(msg);
  REQUIRE(a.answers.size() == 2);
  REQUIRE(a.additional.size() == 2);
  CHECK(a.answers[0].type == RecordType::kSRV);
  CHECK(a.answers[0].priority == 10);
  CHECK(a.answers[0].weight == 5);
  CHECK(a.answers[0].port == 50051);
  CHECK(a.answers[0].target == "task-a.pay.local");
  CHECK(a.answers[1].port == 50052);
  CHECK(a.additional[0].type == RecordType::kA);
  CHECK(a.additional[1].type == RecordType::kAAAA);
  CHECK(a.additional[1].name == "task-b.pay.local");
}

TEST_CASE("dns: rcode NXDOMAIN, SERVFAIL and EDNS extended rcode are carried") {
  CHECK(parse_ok(build_dns_response(1, "nope.local", RecordType::kA, 3, {}, {})).rcode == 3);
  CHECK(parse_ok(build_dns_response(1, "x.local", RecordType::kA, 2, {}, {})).rcode == 2);
  CHECK(parse_ok(build_dns_response(1, "x.local", RecordType::kA, 5, {}, {})).rcode == 5);
  // BADVERS (16) needs the OPT record's upper bits.
  DnsAnswer a = parse_ok(build_dns_response(1, "x.local", RecordType::kA, 16, {}, {}));
  CHECK(a.rcode == 16);
  CHECK(a.additional.empty());  // OPT is not an address record
}

TEST_CASE("dns: TC bit is reported") {
  auto msg = build_dns_response(1, "x.local", RecordType::kA, 0, {a_rec("x.local", "1.2.3.4")}, {});
  msg[2] |= 0x02;
  DnsAnswer a = parse_ok(msg);
  CHECK(a.truncated);
  CHECK(a.answers.size() == 1);
}

TEST_CASE("dns: name compression, including a pointer inside an SRV target and chained pointers") {
  Wire w;
  w.header(1, 2, 0, 1);
  const size_t qname = w.size();  // 12
  w.label("_grpc").label("_tcp").label("svc");
  const size_t example = w.size();
  w.labels({"Example", "com"});
  w.u16(33).u16(1);
  // answer 1: SRV, owner = pointer to the question, target = "node1" + pointer to example.com
  w.ptr(qname).rr(33, 120, 6 + 6 + 2).u16(1).u16(7).u16(9000);
  const size_t node1 = w.size();
  w.label("node1").ptr(example);
  // answer 2: a CNAME (skipped), whose rdata is just a pointer
  w.ptr(qname).rr(5, 10, 2).ptr(example);
  // additional: A for node1.example.com, owner name a pointer to a name that ends in a pointer
  w.ptr(node1).rr(1, 30, 4).u8(192).u8(0).u8(2).u8(7);
  DnsAnswer a = parse_ok(w.b);
  CHECK(a.question == "_grpc._tcp.svc.Example.com");
  REQUIRE(a.answers.size() == 1);  // CNAME skipped
  CHECK(a.answers[0].name == "_grpc._tcp.svc.Example.com");
  CHECK(a.answers[0].target == "node1.Example.com");
  CHECK(a.answers[0].port == 9000);
  REQUIRE(a.additional.size() == 1);
  CHECK(a.additional[0].name == "node1.Example.com");

  Resolved r = endpoints_from_answer(a, RecordType::kSRV, 0);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "192.0.2.7:9000");
  CHECK(r.endpoints[0].weight == 7);
  CHECK(r.ttl == 30);
}

TEST_CASE("dns: records of another class and unknown types are skipped") {
  Wire w;
  w.header(0, 3, 0, 0);
  w.labels({"a"}).u16(1).u16(3 /* CH */).u32(5).u16(4).u32(0x01020304);
  w.labels({"a"}).rr(16 /* TXT */, 5, 3).u8(2).u8('h').u8('i');
  w.labels({"a"}).rr(1, 5, 4).u32(0x0a000001);
  DnsAnswer a = parse_ok(w.b);
  REQUIRE(a.answers.size() == 1);
  CHECK(a.answers[0].addr[0] == 10);
  CHECK(a.question.empty());
}

TEST_CASE("dns: a TTL with the top bit set reads as 0") {
  Wire w;
  w.header(0, 1, 0, 0);
  w.labels({"a"}).rr(1, 0x80000000u, 4).u32(0x0a000001);
  CHECK(parse_ok(w.b).answers[0].ttl == 0);
}

TEST_CASE("dns: odd bytes in labels are escaped and round-trip through the builder") {
  Wire w;
  w.header(0, 1, 0, 0);
  w.label("a.b").label(std::string_view("c\\\x01", 3)).u8(0).rr(1, 5, 4).u32(0x0a000001);
  DnsAnswer a = parse_ok(w.b);
  CHECK(a.answers[0].name == "a\\.b.c\\\\\\001");
  auto again = parse_ok(build_dns_response(1, a.answers[0].name, RecordType::kA, 0, a.answers, {}));
  CHECK(again.answers[0].name == a.answers[0].name);
  CHECK(again.question == a.answers[0].name);
}

TEST_CASE("dns: malformed messages give an error, never a crash") {
  SUBCASE("truncated header") {
    for (size_t n = 0; n < 12; ++n) parse_err(std::vector<uint8_t>(n, 0x81));
  }
  SUBCASE("a query is not a response") {
    Wire w;
    w.header(0, 0, 0, 0, 0x0100);
    CHECK(parse_err(w.b).find("query") != std::string::npos);
  }
  SUBCASE("every strict prefix of a valid message is rejected") {
    const std::string q = "_grpc._tcp.pay.local";
    auto msg = build_dns_response(
        1, q, RecordType::kSRV, 0, {srv_rec(q, 1, 1, 80, "t.pay.local")},
        {a_rec("t.pay.local", "10.0.0.1"), aaaa_rec("t.pay.local", "2001:db8::1")});
    parse_ok(msg);
    for (size_t n = 0; n < msg.size(); ++n) {
      std::vector<uint8_t> cut(msg.begin(), msg.begin() + static_cast<ptrdiff_t>(n));
      INFO("prefix " << n);
      parse_err(cut);
    }
  }
  SUBCASE("truncated record header") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).u16(1).u16(1).u32(5);
    CHECK(parse_err(w.b).find("record header") != std::string::npos);
  }
  SUBCASE("rdlength past the end") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).rr(1, 5, 400).u32(0x0a000001);
    CHECK(parse_err(w.b).find("rdlength") != std::string::npos);
  }
  SUBCASE("pointer to itself") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.ptr(12).rr(1, 5, 4).u32(0x0a000001);
    CHECK(parse_err(w.b).find("pointer") != std::string::npos);
  }
  SUBCASE("two pointers pointing at each other") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.ptr(14).ptr(12).u16(1).u16(1);
    CHECK(parse_err(w.b).find("pointer") != std::string::npos);
  }
  SUBCASE("a loop through labels back to the start of the name") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.label("a").label("b").ptr(12).u16(1).u16(1);
    CHECK(parse_err(w.b).find("pointer") != std::string::npos);
  }
  SUBCASE("pointer forward, out of range") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.ptr(0x3fff).u16(1).u16(1);
    parse_err(w.b);
  }
  SUBCASE("pointer forward, in range") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.ptr(18).u16(1).u16(1).labels({"x"});
    parse_err(w.b);
  }
  SUBCASE("pointer into the header") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.ptr(4).u16(1).u16(1);
    CHECK(parse_err(w.b).find("header") != std::string::npos);
  }
  SUBCASE("pointer cut off") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.u8(0xc0);
    parse_err(w.b);
  }
  SUBCASE("label over 63 bytes") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.label(std::string(64, 'x')).u8(0).u16(1).u16(1);
    CHECK(parse_err(w.b).find("over 63") != std::string::npos);
    Wire r;  // the 10 prefix (0x80..0xbf) is reserved too
    r.header(1, 0, 0, 0);
    r.u8(0x80).u8(0).u16(1).u16(1);
    parse_err(r.b);
  }
  SUBCASE("label of exactly 63 bytes is fine") {
    Wire w;
    w.header(1, 0, 0, 0);
    w.label(std::string(63, 'x')).u8(0).u16(1).u16(1);
    CHECK(parse_ok(w.b).question == std::string(63, 'x'));
  }
  SUBCASE("name over 255 bytes") {
    Wire w;
    w.header(1, 0, 0, 0);
    const std::string l63(63, 'x');
    w.labels({l63, l63, l63, l63, l63}).u16(1).u16(1);
    CHECK(parse_err(w.b).find("255") != std::string::npos);
  }
  SUBCASE("name of exactly 255 bytes is fine, 256 is not") {
    const std::string l63(63, 'x');
    Wire ok;  // 3 x 64 + 62 + 1 = 255
    ok.header(1, 0, 0, 0);
    ok.labels({l63, l63, l63, std::string(61, 'y')}).u16(1).u16(1);
    parse_ok(ok.b);
    Wire bad;
    bad.header(1, 0, 0, 0);
    bad.labels({l63, l63, l63, std::string(62, 'y')}).u16(1).u16(1);
    parse_err(bad.b);
  }
  SUBCASE("a long name built from pointers is still capped at 255") {
    Wire w;
    w.header(1, 3, 0, 0);
    const std::string l63(63, 'x');
    const size_t first = w.size();
    w.label(l63).label(l63).u8(0).u16(1).u16(1);  // 129 bytes
    const size_t second = w.size();
    w.label(l63).ptr(first).rr(16, 1, 0);   // 193 bytes: fine
    w.label(l63).ptr(second).rr(16, 1, 0);  // 257 bytes: too long
    w.labels({"a"}).rr(16, 1, 0);
    CHECK(parse_err(w.b).find("255") != std::string::npos);
  }
  SUBCASE("bad A rdlength") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).rr(1, 5, 5).u32(0x0a000001).u8(0);
    CHECK(parse_err(w.b).find("A record") != std::string::npos);
  }
  SUBCASE("bad AAAA rdlength") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).rr(28, 5, 4).u32(0x0a000001);
    CHECK(parse_err(w.b).find("AAAA") != std::string::npos);
  }
  SUBCASE("SRV rdata too short") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).rr(33, 5, 6).u16(1).u16(1).u16(80);
    CHECK(parse_err(w.b).find("SRV") != std::string::npos);
  }
  SUBCASE("SRV target running past its rdata") {
    Wire w;
    w.header(0, 2, 0, 0);
    w.labels({"a"}).rr(33, 5, 8).u16(1).u16(1).u16(80).labels({"t"});  // target needs 9
    w.labels({"a"}).rr(1, 5, 4).u32(0x0a000001);
    CHECK(parse_err(w.b).find("SRV target") != std::string::npos);
  }
  SUBCASE("SRV target shorter than its rdata") {
    Wire w;
    w.header(0, 1, 0, 0);
    w.labels({"a"}).rr(33, 5, 10).u16(1).u16(1).u16(80).labels({"t"}).u8(0);
    parse_err(w.b);
  }
  SUBCASE("counts larger than the records present") {
    auto msg =
        build_dns_response(1, "x.local", RecordType::kA, 0, {a_rec("x.local", "1.2.3.4")}, {});
    msg[7] = 2;  // ancount 2, one present
    parse_err(msg);
    msg[7] = 1;
    msg[11] = 200;  // arcount 200
    parse_err(msg);
  }
}

TEST_CASE("dns: random mutations of valid messages never crash the parser") {
  std::vector<std::vector<uint8_t>> seeds;
  const std::string q = "_grpc._tcp.pay.local";
  seeds.push_back(build_dns_response(
      1, q, RecordType::kSRV, 0,
      {srv_rec(q, 10, 5, 50051, "a.pay.local"), srv_rec(q, 10, 0, 50052, "b.pay.local"),
       srv_rec(q, 20, 1, 50053, "c.pay.local")},
      {a_rec("a.pay.local", "10.0.0.1"), aaaa_rec("b.pay.local", "2001:db8::2"),
       a_rec("c.pay.local", "10.0.0.3")}));
  seeds.push_back(build_dns_response(
      2, "x.local", RecordType::kA, 0,
      {a_rec("x.local", "10.0.0.1"), a_rec("x.local", "10.0.0.2"), aaaa_rec("x.local", "::1")},
      {}));
  seeds.push_back(build_dns_response(3, "x.local", RecordType::kA, 16, {}, {}));
  {
    Wire w;  // compressed SRV, as in the compression test
    w.header(1, 1, 0, 1);
    w.label("_grpc").label("_tcp");
    const size_t example = w.size();
    w.labels({"example", "com"}).u16(33).u16(1);
    w.ptr(12).rr(33, 120, 14).u16(1).u16(7).u16(9000);
    const size_t node1 = w.size();
    w.label("node1").ptr(example);
    w.ptr(node1).rr(1, 30, 4).u32(0xc0000207);
    seeds.push_back(w.b);
  }

  std::mt19937 rng(20240601);
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> m = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      const size_t at = rng() % m.size();
      switch (rng() % 6) {
        case 0:  // random byte
          m[at] = static_cast<uint8_t>(rng());
          break;
        case 1:  // bit flip
          m[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 2:  // truncate
          m.resize(at);
          break;
        case 3:  // insert junk
          m.insert(m.begin() + static_cast<ptrdiff_t>(at), 1 + rng() % 8,
                   static_cast<uint8_t>(rng()));
          break;
        case 4:  // plant a compression pointer anywhere
          m[at] = static_cast<uint8_t>(0xc0 | (rng() % 4));
          if (at + 1 < m.size()) m[at + 1] = static_cast<uint8_t>(rng());
          break;
        case 5:  // small counts or lengths
          m[at] = static_cast<uint8_t>(rng() % 70);
          break;
      }
    }
    std::string error;
    auto a = parse_dns_response(m, error);
    if (a) {
      ++parsed;
      // Whatever parsed must also be safe to turn into endpoints.
      for (RecordType t : {RecordType::kA, RecordType::kAAAA, RecordType::kSRV}) {
        Resolved r = endpoints_from_answer(*a, t, 443);
        for (const auto& ep : r.endpoints) REQUIRE(ep.weight >= 1);
      }
    } else {
      ++rejected;
      REQUIRE_FALSE(error.empty());
    }
  }
  // Both paths must have been exercised for the loop to mean anything.
  CHECK(parsed > 1000);
  CHECK(rejected > 1000);
}

TEST_CASE("endpoints: A answer gives address:port endpoints, weight 1, minimum TTL") {
  auto msg = build_dns_response(
      1, "orders.local", RecordType::kA, 0,
      {a_rec("orders.local", "10.0.1.5", 60), a_rec("orders.local", "10.0.1.6", 15),
       aaaa_rec("orders.local", "2001:db8::9", 1)},  // wrong type for an A query: ignored
      {});
  Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kA, 50051);
  REQUIRE(r.endpoints.size() == 2);
  CHECK(r.endpoints[0].name == "10.0.1.5:50051");
  CHECK(r.endpoints[1].name == "10.0.1.6:50051");
  CHECK(r.endpoints[0].weight == 1);
  CHECK(r.endpoints[0].addr.ss_family == AF_INET);
  CHECK(r.endpoints[0].addr_len == sizeof(sockaddr_in));
  CHECK(port_of(r.endpoints[0]) == 50051);
  CHECK(ip_of(r.endpoints[1]) == "10.0.1.6");
  CHECK(r.ttl == 15);
  CHECK(r.unresolved_srv.empty());
}

TEST_CASE("endpoints: AAAA answer uses [ip]:port names") {
  auto msg = build_dns_response(1, "v6.local", RecordType::kAAAA, 0,
                                {aaaa_rec("v6.local", "2001:db8::1", 9)}, {});
  Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kAAAA, 443);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "[2001:db8::1]:443");
  CHECK(r.endpoints[0].addr.ss_family == AF_INET6);
  CHECK(r.endpoints[0].addr_len == sizeof(sockaddr_in6));
  CHECK(port_of(r.endpoints[0]) == 443);
  CHECK(r.ttl == 9);
}

TEST_CASE("endpoints: A answers through a CNAME and with repeated records") {
  DnsRecord cname{};
  cname.type = static_cast<RecordType>(5);
  cname.name = "alias.local";
  cname.ttl = 3;  // not used, so not in the TTL
  cname.target = "real.local";
  auto msg = build_dns_response(
      1, "alias.local", RecordType::kA, 0,
      {cname, a_rec("real.local", "10.0.0.1", 30), a_rec("real.local", "10.0.0.1", 30)}, {});
  Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kA, 80);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].weight == 1);
  CHECK(r.ttl == 30);
}

TEST_CASE("endpoints: empty and NXDOMAIN answers give nothing") {
  Resolved r = endpoints_from_answer(
      parse_ok(build_dns_response(1, "x", RecordType::kA, 3, {}, {})), RecordType::kA, 80);
  CHECK(r.endpoints.empty());
  CHECK(r.ttl == 0);
  r = endpoints_from_answer(parse_ok(build_dns_response(1, "x", RecordType::kSRV, 0, {}, {})),
                            RecordType::kSRV, 80);
  CHECK(r.endpoints.empty());
  CHECK(r.unresolved_srv.empty());
}

TEST_CASE("endpoints: SRV ports and weights come from the SRV, addresses from additional") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg = build_dns_response(
      1, q, RecordType::kSRV, 0,
      {srv_rec(q, 10, 5, 50051, "task-a.pay.local", 100),
       srv_rec(q, 10, 0, 50052, "task-b.pay.local", 100),
       srv_rec(q, 10, 2, 50053, "task-c.pay.local", 100)},
      {a_rec("task-a.pay.local", "10.0.0.1", 50), a_rec("task-a.pay.local", "10.0.0.11", 50),
       aaaa_rec("task-b.pay.local", "2001:db8::2", 40), a_rec("task-b.pay.local", "10.0.0.2", 45),
       a_rec("unrelated.pay.local", "10.9.9.9", 1)});
  Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 1 /* ignored */);
  REQUIRE(r.endpoints.size() == 4);
  const auto* a1 = find_ep(r, "10.0.0.1:50051");
  const auto* a2 = find_ep(r, "10.0.0.11:50051");
  const auto* b6 = find_ep(r, "[2001:db8::2]:50052");
  const auto* b4 = find_ep(r, "10.0.0.2:50052");
  REQUIRE(a1);
  REQUIRE(a2);
  REQUIRE(b6);
  REQUIRE(b4);
  CHECK(a1->weight == 5);
  CHECK(a2->weight == 5);
  CHECK(b6->weight == 1);  // weight 0 -> 1
  CHECK(port_of(*b6) == 50052);
  CHECK(r.ttl == 40);  // the unrelated record's TTL 1 is not used
  REQUIRE(r.unresolved_srv.size() == 1);
  CHECK(r.unresolved_srv[0].name == "task-c.pay.local");
  CHECK(r.unresolved_srv[0].port == 50053);
  CHECK(r.unresolved_srv[0].weight == 2);
}

TEST_CASE("endpoints: SRV uses only the lowest priority value") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg = build_dns_response(
      1, q, RecordType::kSRV, 0,
      {srv_rec(q, 20, 1, 81, "backup.pay.local", 5), srv_rec(q, 10, 1, 80, "main.pay.local", 60),
       srv_rec(q, 30, 1, 82, "never.pay.local", 5)},
      {a_rec("backup.pay.local", "10.0.0.20", 5), a_rec("main.pay.local", "10.0.0.10", 60)});
  Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].name == "10.0.0.10:80");
  CHECK(r.ttl == 60);               // TTLs of unused priorities do not count
  CHECK(r.unresolved_srv.empty());  // "never" is not lowest priority, so it is not asked for
}

TEST_CASE("endpoints: SRV minimum TTL covers SRV and address records") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg = build_dns_response(1, q, RecordType::kSRV, 0, {srv_rec(q, 1, 1, 80, "a.pay.local", 7)},
                                {a_rec("a.pay.local", "10.0.0.1", 60)});
  CHECK(endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0).ttl == 7);
}

TEST_CASE("endpoints: SRV names compare case-insensitively, trailing dot ignored") {
  const std::string q = "_grpc._tcp.pay.local";
  auto msg =
      build_dns_response(1, q, RecordType::kSRV, 0, {srv_rec(q, 1, 3, 80, "Task-A.PAY.local.")},
                         {a_rec("task-a.pay.LOCAL", "10.0.0.1", 60)});
  DnsAnswer a = parse_ok(msg);
  Resolved r = endpoints_from_answer(a, RecordType::kSRV, 0);
  REQUIRE(r.endpoints.size() == 1);
  CHECK(r.endpoints[0].weight == 3);

  // The same with a hand-made answer whose names keep their trailing dots.
  a.answers[0].target = "TASK-A.pay.local.";
  a.additional[0].name = "task-a.pay.local.";
  CHECK(endpoints_from_answer(a, RecordType::kSRV, 0).endpoints.size() == 1);

  CHECK(same_dns_name("A.b.", "a.B"));
  CHECK(same_dns_name("", "."));
  CHECK_FALSE(same_dns_name("a.b", "a.b.c"));
  CHECK_FALSE(same_dns_name("a\\.", "a"));  // an escaped dot is part of the label
}

TEST_CASE("endpoints: SRV edge cases") {
  const std::string q = "_grpc._tcp.pay.local";
  SUBCASE("target '.' means no service and does not win the priority choice") {
    auto msg = build_dns_response(1, q, RecordType::kSRV, 0,
                                  {srv_rec(q, 0, 0, 80, "."), srv_rec(q, 5, 1, 81, "a.pay.local")},
                                  {a_rec("a.pay.local", "10.0.0.1")});
    Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
    REQUIRE(r.endpoints.size() == 1);
    CHECK(r.endpoints[0].name == "10.0.0.1:81");
    auto only = build_dns_response(1, q, RecordType::kSRV, 0, {srv_rec(q, 0, 0, 80, ".")}, {});
    r = endpoints_from_answer(parse_ok(only), RecordType::kSRV, 0);
    CHECK(r.endpoints.empty());
    CHECK(r.unresolved_srv.empty());
  }
  SUBCASE("port 0 is unusable") {
    auto msg = build_dns_response(1, q, RecordType::kSRV, 0, {srv_rec(q, 1, 1, 0, "a.pay.local")},
                                  {a_rec("a.pay.local", "10.0.0.1")});
    Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
    CHECK(r.endpoints.empty());
    CHECK(r.unresolved_srv.empty());
  }
  SUBCASE("repeated SRV records and repeated addresses count once") {
    auto msg = build_dns_response(
        1, q, RecordType::kSRV, 0,
        {srv_rec(q, 1, 4, 80, "a.pay.local"), srv_rec(q, 1, 4, 80, "A.pay.local."),
         srv_rec(q, 1, 1, 90, "gone.pay.local"), srv_rec(q, 1, 2, 90, "gone.pay.local")},
        {a_rec("a.pay.local", "10.0.0.1"), a_rec("a.pay.local", "10.0.0.1")});
    Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
    REQUIRE(r.endpoints.size() == 1);
    CHECK(r.endpoints[0].weight == 4);
    // Each distinct record once: both weights count, as they would with glue.
    REQUIRE(r.unresolved_srv.size() == 2);
    CHECK(r.unresolved_srv[0] == SrvTarget{"gone.pay.local", 90, 1});
    CHECK(r.unresolved_srv[1] == SrvTarget{"gone.pay.local", 90, 2});
  }
  SUBCASE("two targets on one address:port add their weights") {
    auto msg = build_dns_response(
        1, q, RecordType::kSRV, 0,
        {srv_rec(q, 1, 4, 80, "a.pay.local"), srv_rec(q, 1, 6, 80, "b.pay.local")},
        {a_rec("a.pay.local", "10.0.0.1"), a_rec("b.pay.local", "10.0.0.1")});
    Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
    REQUIRE(r.endpoints.size() == 1);
    CHECK(r.endpoints[0].weight == 10);
  }
  SUBCASE("target addresses in the answer section are used too") {
    auto msg = build_dns_response(
        1, q, RecordType::kSRV, 0,
        {srv_rec(q, 1, 1, 80, "a.pay.local"), a_rec("a.pay.local", "10.0.0.1")}, {});
    Resolved r = endpoints_from_answer(parse_ok(msg), RecordType::kSRV, 0);
    REQUIRE(r.endpoints.size() == 1);
    CHECK(r.endpoints[0].name == "10.0.0.1:80");
  }
  SUBCASE("an SRV record in an A answer is ignored") {
    auto msg = build_dns_response(1, q, RecordType::kA, 0, {srv_rec(q, 1, 1, 80, "a.pay.local")},
                                  {a_rec("a.pay.local", "10.0.0.1")});
    CHECK(endpoints_from_answer(parse_ok(msg), RecordType::kA, 80).endpoints.empty());
  }
}

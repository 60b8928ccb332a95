#pragma once
// Test helpers: DNS records and response messages (via discovery::build_dns_response) for the
// tests of what answers mean (answer_test, srv_lookup_test, followed_name_test).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "discovery/dns_message.h"
#include "lb/endpoint.h"

namespace ringlb::discovery::test {

inline DnsRecord a_rec(std::string name, const char* ip, uint32_t ttl = 60) {
  DnsRecord r{};
  r.type = RecordType::kA;
  r.name = std::move(name);
  r.ttl = ttl;
  REQUIRE(inet_pton(AF_INET, ip, r.addr) == 1);
  r.addr_len = 4;
  return r;
}

inline DnsRecord aaaa_rec(std::string name, const char* ip, uint32_t ttl = 60) {
  DnsRecord r{};
  r.type = RecordType::kAAAA;
  r.name = std::move(name);
  r.ttl = ttl;
  REQUIRE(inet_pton(AF_INET6, ip, r.addr) == 1);
  r.addr_len = 16;
  return r;
}

inline DnsRecord srv_rec(std::string name, uint16_t prio, uint16_t weight, uint16_t port,
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

/// A NOERROR response to `qname`/`qtype` with these answer (and additional) records.
inline std::vector<uint8_t> reply(const std::string& qname, RecordType qtype,
                                  const std::vector<DnsRecord>& answers,
                                  const std::vector<DnsRecord>& additional = {}) {
  return build_dns_response(7, qname, qtype, 0, answers, additional);
}

/// An IPv4 endpoint 10.0.0.i:port.
inline lb::Endpoint ep4(int i, uint16_t port = 50051, uint32_t weight = 1) {
  lb::Endpoint e;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(0x0a000000u + static_cast<uint32_t>(i));
  std::memcpy(&e.addr, &sin, sizeof(sin));
  e.addr_len = sizeof(sin);
  e.weight = weight;
  e.name = "10.0.0." + std::to_string(i) + ":" + std::to_string(port);
  return e;
}

/// The endpoint named `name` ("10.0.0.1:80", "[::1]:80") in `eps`, or nullptr.
inline const lb::Endpoint* find(const std::vector<lb::Endpoint>& eps, const std::string& name) {
  for (const lb::Endpoint& e : eps) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace ringlb::discovery::test

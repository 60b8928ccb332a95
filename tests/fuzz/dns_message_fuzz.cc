// libFuzzer target: discovery::parse_dns_response on arbitrary bytes (what a resolver, or anyone
// who can spoof one, sends back). Beyond "no crash, no UB, no leak" it checks two properties a
// caller relies on: a parsed answer survives build_dns_response -> parse_dns_response unchanged
// (names escape and unescape consistently), and endpoints_from_answer returns endpoints that are
// unique by endpoint_key with a weight >= 1. Built and run by tests/fuzz/run.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <span>
#include <string>

#include "discovery/dns_message.h"
#include "lb/endpoint.h"

namespace {

using namespace ringlb::discovery;

[[noreturn]] void die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "dns_message_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool same_record(const DnsRecord& a, const DnsRecord& b) {
  return a.type == b.type && a.name == b.name && a.ttl == b.ttl && a.addr_len == b.addr_len &&
         std::memcmp(a.addr, b.addr, sizeof a.addr) == 0 && a.priority == b.priority &&
         a.weight == b.weight && a.port == b.port && a.target == b.target;
}

bool same_records(const std::vector<DnsRecord>& a, const std::vector<DnsRecord>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!same_record(a[i], b[i])) return false;
  }
  return true;
}

void check_round_trip(const DnsAnswer& a) {
  std::vector<uint8_t> wire =
      build_dns_response(a.id, a.question, RecordType::kA, a.rcode, a.answers, a.additional);
  std::string error;
  std::optional<DnsAnswer> b = parse_dns_response(wire, error);
  if (!b) die("a rebuilt answer does not parse", error);
  if (b->id != a.id || b->rcode != a.rcode || b->question != a.question) {
    die("header or question changed in a round trip", a.question + " -> " + b->question);
  }
  if (!same_records(a.answers, b->answers) || !same_records(a.additional, b->additional)) {
    die("records changed in a round trip", a.question);
  }
}

void check_endpoints(const DnsAnswer& a, RecordType type) {
  Resolved r = endpoints_from_answer(a, type, 50051);
  std::set<std::string> keys;
  for (const ringlb::lb::Endpoint& e : r.endpoints) {
    if (e.weight < 1) die("endpoint with weight 0", e.name);
    if (!keys.insert(ringlb::lb::endpoint_key(e)).second) die("duplicate endpoint", e.name);
  }
  if (type != RecordType::kSRV && !r.unresolved_srv.empty()) {
    die("unresolved SRV targets for an address query", r.unresolved_srv.front().name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string error;
  std::optional<DnsAnswer> answer = parse_dns_response(std::span<const uint8_t>(data, size), error);
  if (!answer) {
    if (error.empty()) die("rejected without a reason", std::to_string(size) + " bytes");
    return 0;
  }
  check_round_trip(*answer);
  for (RecordType t : {RecordType::kA, RecordType::kAAAA, RecordType::kSRV}) {
    check_endpoints(*answer, t);
  }
  (void)same_dns_name(answer->question, answer->question + ".");
  return 0;
}

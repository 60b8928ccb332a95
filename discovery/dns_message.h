#pragma once
// DNS response messages: parsing (RFC 1035 wire format) and turning answers into endpoints.
// Pure functions, no sockets: the c-ares transport (resolver.h) hands us the raw bytes so that
// what a record means for membership is decided here, testably. Callable from any thread; in
// practice the control thread. Never includes core/.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lb/endpoint.h"

namespace ringlb::discovery {

enum class RecordType : uint16_t { kA = 1, kAAAA = 28, kSRV = 33 };

struct DnsRecord {
  RecordType type;
  // Owner name in presentation form: no trailing dot ("" is the root), '.' and '\' inside a
  // label escaped with '\', other non-printable bytes as \DDD.
  std::string name;
  uint32_t ttl = 0;  // RFC 2181 8: a TTL with the top bit set reads as 0
  uint8_t addr[16] = {};
  uint8_t addr_len = 0;  // A: 4 bytes, AAAA: 16
  uint16_t priority = 0, weight = 0, port = 0;
  std::string target;  // SRV target ("" for ".", which means "no service here")
};

struct DnsAnswer {
  // Low 4 bits from the header, extended by the EDNS OPT record when one is present.
  int rcode = 0;
  bool truncated = false;  // TC bit: c-ares retries over TCP; a parsed TC answer may be partial
  std::vector<DnsRecord> answers;
  std::vector<DnsRecord> additional;
  uint16_t id = 0;
  std::string question;  // name of the first question, "" when there is none
};

/// Parses a whole DNS response message (RFC 1035 wire format, name compression, pointer loops
/// rejected, bounds checked everywhere). Records of other types (CNAME, etc.) are skipped, as are
/// records of a class other than IN. nullopt + error on malformed input.
/// Stricter than RFC 1035 in two places real servers never hit: a compression pointer must point
/// before the name that holds it (which makes loops impossible) and after the header; and a
/// message whose header says it is a query (QR = 0) is rejected. Bytes after the last record
/// counted by the header are ignored.
std::optional<DnsAnswer> parse_dns_response(std::span<const uint8_t> msg, std::string& error);

/// One SRV record whose target had no address in the message: the caller looks the target up
/// (A and AAAA) and gives each address this port and weight.
struct SrvTarget {
  std::string name;  // presentation form, no trailing dot
  uint16_t port = 0;
  uint32_t weight = 1;  // SRV weight, 0 already read as 1

  bool operator==(const SrvTarget&) const = default;
};

struct Resolved {
  std::vector<lb::Endpoint> endpoints;  // addr/addr_len/weight/name ("ip:port", IPv6 [ip]:port)
  uint32_t ttl = 0;                     // minimum TTL over the records used; 0 if none
  // SRV records (lowest priority, each distinct record once) whose target has no address in the
  // message; the caller resolves them itself (SrvLookup).
  std::vector<SrvTarget> unresolved_srv;
};

/// A/AAAA: each address of that type in the answer section with `port`, weight 1. The owner name
/// is not checked, so an answer reached through a CNAME chain works. SRV: each target's addresses
/// (A and AAAA) with the SRV port and weight (weight 0 -> 1); only records of the lowest priority
/// value are used. Names compare case-insensitively, trailing dot ignored.
/// Endpoints are unique by lb::endpoint_key: duplicate address records collapse, and when two
/// distinct SRV records lead to the same address:port their weights add up.
/// SRV records with target "." or port 0 are unusable and ignored (also for the priority choice).
/// Target addresses are looked up in the additional section and, for servers that put them
/// there, the answer section.
Resolved endpoints_from_answer(const DnsAnswer& answer, RecordType type, uint16_t port);

/// For tests and tools: builds a response message (header id, flags with rcode, one question,
/// answer and additional records). Names are written uncompressed; `\.`, `\\` and `\DDD` escapes
/// are understood so parsed names round-trip. An rcode above 15 adds an EDNS OPT record for the
/// upper bits. A record of another type than A/AAAA/SRV gets `target` (if any) as its rdata name,
/// which is enough for CNAME, NS and PTR.
std::vector<uint8_t> build_dns_response(uint16_t id, std::string_view qname, RecordType qtype,
                                        int rcode, const std::vector<DnsRecord>& answers,
                                        const std::vector<DnsRecord>& additional);

/// Case-insensitive (ASCII) DNS name equality, ignoring one trailing dot on either side.
bool same_dns_name(std::string_view a, std::string_view b);

}  // namespace ringlb::discovery

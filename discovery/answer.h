#pragma once
// What one DNS query's result means for a followed name: the c-ares status and raw message
// turned into an outcome (ok / empty / failure) with endpoints and a reason a person can read.
// Pure: no sockets, no clock. Owner: the control thread. Never includes core/.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "discovery/dns_message.h"
#include "discovery/refresh.h"
#include "lb/endpoint.h"

namespace ringlb::discovery {

/// One refresh's result, as the membership policy (FollowedName) takes it.
struct LookupResult {
  QueryOutcome outcome = QueryOutcome::kFailure;
  uint32_t ttl = 0;                     // minimum TTL over the records used; 0 if none
  std::vector<lb::Endpoint> endpoints;  // unique by lb::endpoint_key
  std::string detail;                   // why, when not kOk: "NXDOMAIN", "timeout", ...
  // SRV only: records whose targets the caller must look up (SrvLookup) before the result is
  // final. While this is not empty, `outcome` is kOk and `endpoints` holds what the answer
  // already gave addresses for (possibly nothing).
  std::vector<SrvTarget> unresolved;
};

/// A reply read as far as the transport goes. `answer` is set when the server answered with
/// records to look at (ARES_SUCCESS and a well-formed message); otherwise `outcome` is final:
/// kEmpty for NXDOMAIN (ARES_ENOTFOUND) and NODATA (ARES_ENODATA), kFailure for anything else
/// (timeout, SERVFAIL, REFUSED, connection refused, malformed message).
struct Reply {
  QueryOutcome outcome = QueryOutcome::kFailure;
  std::string detail;
  std::optional<DnsAnswer> answer;
};
/// `status`/`message` as discovery::Resolver::Callback gives them. ARES_EDESTRUCTION (the
/// resolver is going away) reads as a failure; callers normally drop such a result unread.
Reply read_reply(int status, std::span<const uint8_t> message);

/// The result of the query for a followed name of record type `type` (`port` for A/AAAA; SRV
/// records carry theirs). An answer without usable records is kEmpty ("no usable records"),
/// unless SRV targets are left to look up (see LookupResult::unresolved).
LookupResult interpret_answer(int status, std::span<const uint8_t> message, RecordType type,
                              uint16_t port);

/// "A", "AAAA", "SRV" (or the number) for logs.
const char* record_type_name(RecordType t);

}  // namespace ringlb::discovery

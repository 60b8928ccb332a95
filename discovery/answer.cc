#include "discovery/answer.h"

#include <ares.h>

namespace ringlb::discovery {

Reply read_reply(int status, std::span<const uint8_t> message) {
  Reply r;
  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    // The server answered: the name (or this type of it) has no records. Not a failure.
    r.outcome = QueryOutcome::kEmpty;
    r.detail = status == ARES_ENOTFOUND ? "NXDOMAIN" : "no records";
    return r;
  }
  if (status != ARES_SUCCESS) {
    r.outcome = QueryOutcome::kFailure;
    r.detail = ares_strerror(status);
    return r;
  }
  std::string error;
  r.answer = parse_dns_response(message, error);
  if (!r.answer) {
    r.outcome = QueryOutcome::kFailure;
    r.detail = "malformed answer: " + error;
    return r;
  }
  r.outcome = QueryOutcome::kOk;
  return r;
}

LookupResult interpret_answer(int status, std::span<const uint8_t> message, RecordType type,
                              uint16_t port) {
  LookupResult out;
  Reply reply = read_reply(status, message);
  out.outcome = reply.outcome;
  out.detail = std::move(reply.detail);
  if (!reply.answer) return out;
  Resolved r = endpoints_from_answer(*reply.answer, type, port);
  out.ttl = r.ttl;
  out.endpoints = std::move(r.endpoints);
  out.unresolved = std::move(r.unresolved_srv);
  if (out.endpoints.empty() && out.unresolved.empty()) {
    out.outcome = QueryOutcome::kEmpty;
    out.detail = "no usable records";
  }
  return out;
}

const char* record_type_name(RecordType t) {
  switch (t) {
    case RecordType::kA:
      return "A";
    case RecordType::kAAAA:
      return "AAAA";
    case RecordType::kSRV:
      return "SRV";
  }
  return "?";
}

}  // namespace ringlb::discovery

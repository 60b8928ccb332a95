#pragma once
// Membership: who is in a DNS-discovered cluster, remembered across answers. Route 53 (Cloud Map
// MULTIVALUE) returns at most 8 healthy records per answer, chosen per query, so a service with
// 20 tasks is only ever seen 8 at a time; treating each answer as the whole truth would churn
// the set (and every shard's pools) on every refresh. Members stay until they have been missing
// from every answer for longer than a hold time. Owner: the control thread. Pure logic.
#include <cstdint>
#include <string>
#include <vector>

#include "lb/endpoint.h"

namespace ringlb::discovery {

struct Member {
  lb::Endpoint endpoint;
  std::string key;  // lb::endpoint_key(endpoint)
  int64_t first_seen_ns = 0;
  int64_t last_seen_ns = 0;
};

class Membership {  // owner: control thread
 public:
  /// Merges one successful, non-empty answer seen at now_ns: members in it are added or refreshed
  /// (weight/name updated); a member absent from every answer for longer than hold_ns leaves
  /// (hold_ns == 0: absent now = gone, Envoy STRICT_DNS; a negative hold counts as 0).
  /// Endpoints repeated in `answer` (same key) are one member with the weights added up.
  /// An empty answer changes nothing and returns false: NXDOMAIN and empty answers are the
  /// refresh policy's business (RefreshSchedule::stale, then clear()), not a reason to expire.
  /// Returns true if the member set (keys or weights) changed.
  bool merge(const std::vector<lb::Endpoint>& answer, int64_t now_ns, int64_t hold_ns);
  /// Everyone leaves; true if anyone was there.
  bool clear();
  /// Sorted by key.
  const std::vector<Member>& members() const { return members_; }
  /// Immutable snapshot via discovery::make_endpoint_set, members in a stable order (sorted by
  /// key) so equal sets give equal snapshots.
  lb::EndpointSetPtr snapshot(uint64_t version) const;

 private:
  std::vector<Member> members_;  // sorted by key, keys unique
};

}  // namespace ringlb::discovery

#pragma once
// SrvLookup: the follow-up lookups of one SRV refresh. When an SRV answer names targets without
// giving their addresses, each distinct target is looked up as A and as AAAA; the refresh is
// done when every lookup is in. Pure bookkeeping: the caller sends the queries and feeds back
// what c-ares returns, so every merge and failure rule is testable without a network.
// Owner: the control thread, one per DNS-followed SRV cluster. Never includes core/.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "discovery/answer.h"
#include "discovery/dns_message.h"
#include "lb/endpoint.h"

namespace ringlb::discovery {

class SrvLookup {  // owner: control thread
 public:
  struct Query {
    uint64_t round = 0;  // hand back to on_result() unchanged
    size_t index = 0;
    std::string name;
    RecordType type = RecordType::kA;
  };

  /// Starts the lookups of one refresh. `found` and `ttl`: what the SRV answer itself gave
  /// (endpoints with glue addresses, minimum TTL of the SRV and glue records). Returns the
  /// queries to send: A and AAAA for each distinct target name (compared case-insensitively).
  /// An unfinished earlier round is abandoned: its results are ignored from now on.
  std::vector<Query> begin(std::vector<lb::Endpoint> found, uint32_t ttl,
                           const std::vector<SrvTarget>& targets);

  /// The result of one query, `status`/`message` as Resolver::Callback gives them. Results of
  /// another round, unknown indexes and repeats are ignored (false). Returns true when this
  /// was the round's last pending lookup; result() is then final.
  bool on_result(uint64_t round, size_t index, int status, std::span<const uint8_t> message);

  /// Lookups of the current round still out.
  size_t pending() const { return pending_; }

  /// The round's outcome once pending() is 0:
  /// - kFailure if any lookup failed (timeout, SERVFAIL, REFUSED, malformed answer): a target
  ///   we could not resolve says nothing about its members, so the whole refresh failed;
  ///   `detail` names the first such lookup;
  /// - kEmpty ("SRV targets have no addresses") when neither the answer nor any lookup gave an
  ///   address (NXDOMAIN and NODATA give a target no address, and are not failures);
  /// - kOk otherwise: each address of a target once per SRV record naming it, with that
  ///   record's port and weight; endpoints that meet on one address:port add their weights.
  ///   TTL: the minimum over the SRV answer and the address records used.
  LookupResult result() const;

 private:
  struct Target {
    std::string name;
    std::vector<std::pair<uint16_t, uint32_t>> uses;  // (port, weight) of each SRV record
  };
  void add(const lb::Endpoint& e);

  uint64_t round_ = 0;
  std::vector<Target> targets_;  // query index i: targets_[i / 2], A if i is even, else AAAA
  std::vector<bool> done_;
  size_t pending_ = 0;
  std::vector<lb::Endpoint> endpoints_;
  std::unordered_map<std::string, size_t> index_;  // lb::endpoint_key -> position in endpoints_
  uint32_t ttl_ = 0;
  std::string failure_;  // first failed lookup, "" if none
};

}  // namespace ringlb::discovery

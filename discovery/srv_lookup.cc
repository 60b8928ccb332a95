#include "discovery/srv_lookup.h"

#include <algorithm>
#include <limits>

namespace ringlb::discovery {

std::vector<SrvLookup::Query> SrvLookup::begin(std::vector<lb::Endpoint> found, uint32_t ttl,
                                               const std::vector<SrvTarget>& targets) {
  ++round_;
  targets_.clear();
  endpoints_.clear();
  index_.clear();
  failure_.clear();
  ttl_ = ttl;
  for (const lb::Endpoint& e : found) add(e);
  for (const SrvTarget& t : targets) {
    auto same = [&](const Target& x) { return same_dns_name(x.name, t.name); };
    auto it = std::find_if(targets_.begin(), targets_.end(), same);
    if (it == targets_.end()) it = targets_.insert(targets_.end(), Target{t.name, {}});
    it->uses.emplace_back(t.port, t.weight);
  }
  done_.assign(targets_.size() * 2, false);
  pending_ = done_.size();
  std::vector<Query> out;
  out.reserve(done_.size());
  for (size_t i = 0; i < done_.size(); ++i) {
    out.push_back(
        {round_, i, targets_[i / 2].name, i % 2 == 0 ? RecordType::kA : RecordType::kAAAA});
  }
  return out;
}

void SrvLookup::add(const lb::Endpoint& e) {
  auto [pos, fresh] = index_.emplace(lb::endpoint_key(e), endpoints_.size());
  if (fresh) {
    endpoints_.push_back(e);
    return;
  }
  // Two SRV records reaching one address:port: the backend is owed both shares (as in
  // endpoints_from_answer when the addresses came with the answer).
  uint32_t& w = endpoints_[pos->second].weight;
  w = w > std::numeric_limits<uint32_t>::max() - e.weight ? std::numeric_limits<uint32_t>::max()
                                                          : w + e.weight;
}

bool SrvLookup::on_result(uint64_t round, size_t index, int status,
                          std::span<const uint8_t> message) {
  if (round != round_ || index >= done_.size() || done_[index]) return false;
  done_[index] = true;
  --pending_;
  const Target& target = targets_[index / 2];
  const RecordType type = index % 2 == 0 ? RecordType::kA : RecordType::kAAAA;
  Reply reply = read_reply(status, message);
  if (reply.outcome == QueryOutcome::kFailure) {
    if (failure_.empty()) {
      failure_ = "SRV target " + target.name + " " + record_type_name(type) + ": " + reply.detail;
    }
  } else if (reply.answer) {
    for (const auto& [port, weight] : target.uses) {
      Resolved r = endpoints_from_answer(*reply.answer, type, port);
      if (r.endpoints.empty()) continue;  // e.g. only a CNAME: no address, and no TTL to use
      ttl_ = std::min(ttl_, r.ttl);
      for (lb::Endpoint& e : r.endpoints) {
        e.weight = weight;
        add(e);
      }
    }
  }
  return pending_ == 0;
}

LookupResult SrvLookup::result() const {
  LookupResult out;
  out.ttl = ttl_;
  if (!failure_.empty()) {
    out.outcome = QueryOutcome::kFailure;
    out.detail = failure_;
  } else if (endpoints_.empty()) {
    out.outcome = QueryOutcome::kEmpty;
    out.detail = "SRV targets have no addresses";
  } else {
    out.outcome = QueryOutcome::kOk;
    out.endpoints = endpoints_;
  }
  return out;
}

}  // namespace ringlb::discovery

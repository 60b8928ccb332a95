#include "discovery/membership.h"

#include <algorithm>
#include <limits>
#include <map>

#include "discovery/snapshot.h"

namespace ringlb::discovery {

bool Membership::merge(const std::vector<lb::Endpoint>& answer, int64_t now_ns, int64_t hold_ns) {
  if (answer.empty()) return false;
  if (hold_ns < 0) hold_ns = 0;

  // Sorted and unique by key, so one walk against members_ (also sorted) does the merge.
  std::map<std::string, lb::Endpoint> incoming;
  for (const lb::Endpoint& e : answer) {
    const uint32_t w = std::max<uint32_t>(e.weight, 1);  // Endpoint promises weight >= 1
    auto [it, fresh] = incoming.try_emplace(lb::endpoint_key(e), e);
    if (fresh) {
      it->second.weight = w;
    } else {
      uint32_t& sum = it->second.weight;
      sum = sum > std::numeric_limits<uint32_t>::max() - w ? std::numeric_limits<uint32_t>::max()
                                                           : sum + w;
    }
  }

  bool changed = false;
  std::vector<Member> next;
  next.reserve(members_.size() + incoming.size());
  auto old = members_.begin();
  auto in = incoming.begin();
  auto keep_absent = [&](Member& m) {
    // hold 0 is strict: being absent from this answer is enough, even at the same timestamp.
    if (hold_ns > 0 && now_ns - m.last_seen_ns <= hold_ns) {
      next.push_back(std::move(m));
    } else {
      changed = true;
    }
  };
  while (old != members_.end() || in != incoming.end()) {
    if (in == incoming.end() || (old != members_.end() && old->key < in->first)) {
      keep_absent(*old++);
    } else if (old == members_.end() || in->first < old->key) {
      Member m;
      m.key = in->first;
      m.endpoint = std::move(in->second);
      m.first_seen_ns = now_ns;
      m.last_seen_ns = now_ns;
      next.push_back(std::move(m));
      changed = true;
      ++in;
    } else {
      Member& m = *old;
      if (m.endpoint.weight != in->second.weight) changed = true;
      // Same key, so same peer; the name can only differ in spelling and is not a change.
      m.endpoint = std::move(in->second);
      m.last_seen_ns = now_ns;
      next.push_back(std::move(m));
      ++old;
      ++in;
    }
  }
  members_ = std::move(next);
  return changed;
}

bool Membership::clear() {
  const bool had = !members_.empty();
  members_.clear();
  return had;
}

lb::EndpointSetPtr Membership::snapshot(uint64_t version) const {
  std::vector<lb::Endpoint> eps;
  eps.reserve(members_.size());
  for (const Member& m : members_) eps.push_back(m.endpoint);
  return make_endpoint_set(std::move(eps), version);
}

}  // namespace ringlb::discovery

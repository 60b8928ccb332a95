#include "discovery/snapshot.h"

#include <string>
#include <unordered_map>

namespace ringlb::discovery {

lb::EndpointSetPtr make_endpoint_set(std::vector<lb::Endpoint> members, uint64_t version) {
  auto set = std::make_shared<lb::EndpointSet>();
  set->version = version;
  std::unordered_map<std::string, size_t> seen;
  for (lb::Endpoint& e : members) {
    auto [it, fresh] = seen.emplace(lb::endpoint_key(e), set->endpoints.size());
    if (fresh) {
      set->endpoints.push_back(std::move(e));
    } else {
      set->endpoints[it->second].weight += e.weight;
    }
  }
  return set;
}

}  // namespace ringlb::discovery

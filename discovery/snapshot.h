#pragma once
// Building EndpointSet snapshots from members (static lists now; DNS answers later).
// Control thread. Never includes core/.
#include <cstdint>
#include <vector>

#include "lb/endpoint.h"

namespace ringlb::discovery {

/// Freezes `members` into an immutable snapshot. Endpoints that name the same address are
/// merged (weights added), so a duplicated list entry cannot skew balancing silently.
lb::EndpointSetPtr make_endpoint_set(std::vector<lb::Endpoint> members, uint64_t version);

}  // namespace ringlb::discovery

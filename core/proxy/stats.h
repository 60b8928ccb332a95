#pragma once
// Counters a shard keeps for operators (Prometheus via the admin's /metrics). Plain integers
// written only by the shard that owns them (no atomics, no shared cache lines on the hot path);
// the admin reads a copy the shard makes when asked (ShardMessage::kCollect -> ShardSnapshot).
// Owner: one shard.
#include <array>
#include <cstdint>

namespace ringlb::core::proxy {

/// Per endpoint (kept in EndpointState, so it survives snapshot swaps and reloads).
struct EndpointCounters {
  // Filled in by the metrics work (issue 10).
};

/// Per cluster (kept in ClusterState).
struct ClusterCounters {
  // Filled in by the metrics work (issue 10).
};

/// Per listener (kept by the Context, one per listener).
struct ListenerCounters {
  // Filled in by the metrics work (issue 10).
};

}  // namespace ringlb::core::proxy

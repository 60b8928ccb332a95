#pragma once
// ShardSnapshot: what one shard tells the control thread about itself when asked
// (ShardMessage::kCollect): a copy of its per-endpoint state and its counters, made on the shard
// thread (Shard::fill_snapshot) and handed over whole in a ShardReport (kSnapshot). The admin
// builds /metrics, /endpoints and /live from these. Owner: made by a shard, then the control
// thread's; never shared.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/proxy/stats.h"

namespace ringlb::core::runtime {

struct EndpointView {
  std::string name;                 // "ip:port"
  std::string key;                  // lb::endpoint_key
  uint8_t ineligible = 0;           // lb::kUnhealthy | kEjected | kDraining as this shard has it
  uint16_t weight_permille = 1000;  // slow start: the share of its weight it takes now
  int64_t ejected_until_ns = 0;     // when kEjected is set
  uint32_t outstanding = 0;         // calls in flight
  uint32_t connections = 0;         // upstream connections open
  bool removed = false;             // left the endpoint set; draining its calls
  proxy::EndpointCounters counters;
};

struct ClusterView {
  std::string name;
  uint64_t set_version = 0;
  std::vector<EndpointView> endpoints;  // the current set first, then removed ones draining
  proxy::ClusterCounters counters;
};

struct ShardSnapshot {
  unsigned shard = 0;
  int64_t taken_ns = 0;
  std::vector<ClusterView> clusters;               // by cluster name (config order)
  std::vector<proxy::ListenerCounters> listeners;  // config order
  uint64_t access_log_lines = 0;    // access-log lines this shard queued for the writer
  uint64_t access_log_dropped = 0;  // ... and dropped because its ring was full
  // Per route and method: call counts by grpc-status and latency histograms (the shard's
  // proxy::MethodTable, copied; the renderer sums rows over shards and caps them again).
  std::vector<proxy::MethodRow> methods;
};

}  // namespace ringlb::core::runtime

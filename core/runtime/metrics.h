#pragma once
// Prometheus text (format 0.0.4) for GET /metrics. Owner: the control thread.
#include <memory>
#include <string>
#include <vector>

#include "core/runtime/shard_snapshot.h"

namespace ringlb::core::runtime {

class Controller;

/// The whole /metrics body from the controller's own state and one collection of shard
/// snapshots (those that answered, shard order).
std::string render_metrics(const Controller& controller,
                           const std::vector<std::unique_ptr<ShardSnapshot>>& snapshots);

}  // namespace ringlb::core::runtime

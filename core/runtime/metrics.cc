// Stub (admin branch): the metrics work replaces this file with the real rendering.
#include "core/runtime/metrics.h"

namespace ringlb::core::runtime {

std::string render_metrics(const Controller&, const std::vector<std::unique_ptr<ShardSnapshot>>&) {
  return "# metrics: see the metrics helper\n";
}

}  // namespace ringlb::core::runtime

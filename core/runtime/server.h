#pragma once
// The control thread's side of running: listeners, shards, signals, drain. Start-up and
// shutdown only; never on the data path.
#include <vector>

#include "core/config/config.h"
#include "lb/endpoint.h"

namespace ringlb::core::runtime {

/// Binds every listener, starts the shards and serves until SIGTERM/SIGINT; then drains and
/// returns 0. A second signal exits at once. Returns non-zero (after logging why) if start-up
/// fails: nothing is left bound in that case.
int run_server(const config::Config& config);

/// The endpoint set each cluster starts with, in config order: its static endpoints, or an
/// empty set (with a note saying why) for a DNS cluster until the first answer.
std::vector<lb::EndpointSetPtr> initial_endpoint_sets(const config::Config& config);

}  // namespace ringlb::core::runtime

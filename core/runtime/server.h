#pragma once
// The control thread's side of running: listeners, shards, signals, drain. Start-up and
// shutdown only; never on the data path.
#include <string>
#include <vector>

#include "core/config/config.h"
#include "lb/endpoint.h"

namespace ringlb::core::runtime {

/// Binds every listener, starts the shards and serves until SIGTERM/SIGINT; then drains and
/// returns 0. A second signal exits at once. Returns non-zero (after logging why) if start-up
/// fails: nothing is left bound in that case.
/// `log_level_pinned`: --log-level was given, so log.level (at start and on reload) is not
/// applied.
int run_server(const config::Config& config, bool log_level_pinned = false);

/// One listener's sockets, one SO_REUSEPORT socket per shard (`workers`), appended to `fds` in
/// shard order. With port 0 the first socket picks the port and the others join it. With
/// `defer_if_taken` and another process already listening on the address, the sockets are only
/// bound (`deferred` set: start_listening later); else they listen now. False (`error` set,
/// nothing left open) on failure. Logs where it listens.
bool bind_listener(const config::ListenerConfig& l, unsigned workers, bool defer_if_taken,
                   std::vector<int>& fds, bool& deferred, std::string& error);

/// The endpoint set each cluster starts with, in config order: its static endpoints, or an
/// empty set (with a note saying why) for a DNS cluster until the first answer.
std::vector<lb::EndpointSetPtr> initial_endpoint_sets(const config::Config& config);
/// One log line per TLS listener (the certificate it serves) and cluster; prepare_tls first.
void log_tls(const std::shared_ptr<const config::Config>& config);

}  // namespace ringlb::core::runtime

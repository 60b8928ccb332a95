#pragma once
// ReloadPlan: what a config reload changes, computed from the running config and the new one
// (pure: no I/O, no threads; the control thread calls it, tests drive it alone). Listeners are
// matched by address, clusters by name; everything indexed by either is remapped through it.
// Settings that cannot change while running are put back to the running values in the new
// config and named, so the rest applies and the operator learns what needs a restart.
#include <cstddef>
#include <string>
#include <vector>

#include "core/config/config.h"

namespace ringlb::core::runtime {

struct ClusterChange {
  bool added = false;      // no cluster of this name ran before
  bool lb = false;         // lb policy changed: the picker is rebuilt over the same set
  bool endpoints = false;  // static member list changed (applied like a DNS change)
  bool source = false;     // static <-> DNS switch: a new membership source
  bool dns = false;        // DNS settings (name, port, record, refresh...) changed: a new follow
  bool health = false;     // [health_check] changed: its checks restart
  bool policies = false;   // outlier, slow start, retry, hedge, keepalive, connect_timeout
  size_t endpoints_added = 0, endpoints_removed = 0;  // static lists, by address
  bool changed() const { return lb || endpoints || source || dns || health || policies; }
};

struct ReloadPlan {
  /// Per listener of the new config: its index in the running config, or -1 (new).
  std::vector<int> listener_from;
  /// Running listeners (indices) that are not in the new config: they stop accepting and drain.
  std::vector<size_t> listeners_removed;
  /// Per cluster of the new config: its index in the running config, or -1 (new).
  std::vector<int> cluster_from;
  /// Running clusters (indices) not in the new config: they drain, then are freed.
  std::vector<size_t> clusters_removed;
  /// Per cluster of the new config.
  std::vector<ClusterChange> clusters;
  /// Keys whose new value needs a restart (the running value was kept), e.g. "proxy.workers".
  std::vector<std::string> needs_restart;
  bool routes_changed = false;  // some listener that stays has other routes or default cluster
  bool log_level_changed = false;

  /// "1 listener added, 1 cluster changed (endpoints +1 -1), 0 removed"-style summary.
  std::string summary() const;
  /// Per new cluster: the old index's new index, for remapping state indexed by cluster (-1:
  /// removed).
  std::vector<int> cluster_to(size_t old_count) const;
};

/// Compares `running` with `next` and puts the settings that need a restart back to their
/// running values in `next` (listing them in needs_restart).
ReloadPlan plan_reload(const config::Config& running, config::Config& next);

/// The same address (family, address and port as bound), whatever text named it.
bool same_address(const io::SocketAddress& a, const io::SocketAddress& b);

}  // namespace ringlb::core::runtime

#include "core/runtime/reload_plan.h"

#include <sys/socket.h>

#include <cstring>
#include <set>
#include <utility>

namespace ringlb::core::runtime {
namespace {

// A static member list as a set of (address, weight) pairs.
std::set<std::pair<std::string, uint32_t>> members(const config::ClusterConfig& c) {
  std::set<std::pair<std::string, uint32_t>> out;
  for (const config::EndpointConfig& e : c.endpoints) out.emplace(e.address.text, e.weight);
  return out;
}

std::set<std::string> addresses(const config::ClusterConfig& c) {
  std::set<std::string> out;
  for (const config::EndpointConfig& e : c.endpoints) out.insert(e.address.text);
  return out;
}

ClusterChange compare(const config::ClusterConfig& a, const config::ClusterConfig& b) {
  ClusterChange ch;
  ch.lb = a.lb != b.lb;
  ch.source = a.uses_dns() != b.uses_dns();
  ch.dns = b.uses_dns() && !(a.dns == b.dns);
  ch.health = !(a.health_check == b.health_check);
  ch.policies = !(a.outlier == b.outlier) || a.slow_start != b.slow_start ||
                !(a.retry == b.retry) || !(a.hedge == b.hedge) || !(a.keepalive == b.keepalive) ||
                a.connect_timeout != b.connect_timeout;
  if (!b.uses_dns() && members(a) != members(b)) {
    ch.endpoints = true;
    std::set<std::string> was = addresses(a), now = addresses(b);
    for (const std::string& s : now) ch.endpoints_added += was.contains(s) ? 0 : 1;
    for (const std::string& s : was) ch.endpoints_removed += now.contains(s) ? 0 : 1;
  }
  return ch;
}

bool same_listener_routes(const config::ListenerConfig& a, const config::ListenerConfig& b) {
  return a.cluster == b.cluster && a.routes == b.routes;
}

// The settings read once at start (threads, reactors, the memory split, the admin socket, the
// resolver, the access log writer, the metrics tables): the running value stays.
template <typename T>
void keep(const T& running, T& next, const char* key, std::vector<std::string>& out) {
  if (running == next) return;
  next = running;
  out.emplace_back(key);
}

void keep_restart_settings(const config::Config& r, config::Config& n,
                           std::vector<std::string>& out) {
  keep(r.proxy.workers, n.proxy.workers, "proxy.workers", out);
  keep(r.proxy.io_backend, n.proxy.io_backend, "proxy.io_backend", out);
  keep(r.proxy.memory_limit, n.proxy.memory_limit, "proxy.memory_limit", out);
  if (r.admin.enabled != n.admin.enabled || !same_address(r.admin.address, n.admin.address)) {
    n.admin.enabled = r.admin.enabled;
    n.admin.address = r.admin.address;
    out.emplace_back("admin.address");
  }
  keep(r.admin.max_connections, n.admin.max_connections, "admin.max_connections", out);
  keep(r.admin.request_timeout, n.admin.request_timeout, "admin.request_timeout", out);
  std::vector<std::string> rr, nr;
  for (const io::SocketAddress& a : r.discovery.resolvers) rr.push_back(a.text);
  for (const io::SocketAddress& a : n.discovery.resolvers) nr.push_back(a.text);
  if (rr != nr) {
    n.discovery.resolvers = r.discovery.resolvers;
    out.emplace_back("discovery.resolvers");
  }
  keep(r.discovery.query_timeout, n.discovery.query_timeout, "discovery.query_timeout", out);
  keep(r.log.access, n.log.access, "log.access", out);
  keep(r.log.access_path, n.log.access_path, "log.access_path", out);
  keep(r.log.access_buffer, n.log.access_buffer, "log.access_buffer", out);
  keep(r.log.access_sample, n.log.access_sample, "log.access_sample", out);
  keep(r.metrics.max_methods, n.metrics.max_methods, "metrics.max_methods", out);
}

std::string count(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

}  // namespace

bool same_address(const io::SocketAddress& a, const io::SocketAddress& b) {
  return a.len == b.len && std::memcmp(&a.storage, &b.storage, a.len) == 0;
}

ReloadPlan plan_reload(const config::Config& running, config::Config& next) {
  ReloadPlan p;
  keep_restart_settings(running, next, p.needs_restart);
  std::vector<bool> listener_kept(running.listeners.size(), false);
  for (const config::ListenerConfig& l : next.listeners) {
    int from = -1;
    for (size_t i = 0; i < running.listeners.size(); ++i) {
      if (!listener_kept[i] && same_address(running.listeners[i].address, l.address)) {
        from = static_cast<int>(i);
        listener_kept[i] = true;
        p.routes_changed |= !same_listener_routes(running.listeners[i], l);
        break;
      }
    }
    p.listener_from.push_back(from);
  }
  for (size_t i = 0; i < listener_kept.size(); ++i) {
    if (!listener_kept[i]) p.listeners_removed.push_back(i);
  }
  std::vector<bool> cluster_kept(running.clusters.size(), false);
  for (const config::ClusterConfig& c : next.clusters) {
    int from = -1;
    for (size_t i = 0; i < running.clusters.size(); ++i) {
      if (running.clusters[i].name == c.name) from = static_cast<int>(i);
    }
    p.cluster_from.push_back(from);
    if (from < 0) {
      ClusterChange ch;
      ch.added = true;
      p.clusters.push_back(ch);
      continue;
    }
    cluster_kept[static_cast<size_t>(from)] = true;
    p.clusters.push_back(compare(running.clusters[static_cast<size_t>(from)], c));
  }
  for (size_t i = 0; i < cluster_kept.size(); ++i) {
    if (!cluster_kept[i]) p.clusters_removed.push_back(i);
  }
  p.log_level_changed = next.log.level_set && next.log.level != running.log.level;
  return p;
}

std::vector<int> ReloadPlan::cluster_to(size_t old_count) const {
  std::vector<int> to(old_count, -1);
  for (size_t i = 0; i < cluster_from.size(); ++i) {
    if (cluster_from[i] >= 0) to[static_cast<size_t>(cluster_from[i])] = static_cast<int>(i);
  }
  return to;
}

std::string ReloadPlan::summary() const {
  size_t l_added = 0, c_added = 0, c_changed = 0, ep_add = 0, ep_rm = 0;
  std::vector<std::string> what;
  for (int f : listener_from) l_added += f < 0 ? 1 : 0;
  bool lb = false, source = false, dns = false, health = false, policies = false;
  for (const ClusterChange& c : clusters) {
    if (c.added) {
      ++c_added;
      continue;
    }
    if (!c.changed()) continue;
    ++c_changed;
    ep_add += c.endpoints_added;
    ep_rm += c.endpoints_removed;
    lb |= c.lb, source |= c.source, dns |= c.dns, health |= c.health, policies |= c.policies;
  }
  std::string s = count(l_added, "listener") + " added, " +
                  std::to_string(listeners_removed.size()) + " removed";
  if (routes_changed) s += ", routes changed";
  s += "; " + count(c_added, "cluster") + " added, " + std::to_string(c_changed) + " changed";
  std::string details;
  auto add = [&](const std::string& d) { details += (details.empty() ? "" : ", ") + d; };
  if (ep_add + ep_rm > 0)
    add("endpoints +" + std::to_string(ep_add) + " -" + std::to_string(ep_rm));
  if (lb) add("lb");
  if (source) add("membership source");
  if (dns) add("dns");
  if (health) add("health_check");
  if (policies) add("policies");
  if (!details.empty()) s += " (" + details + ")";
  s += ", " + std::to_string(clusters_removed.size()) + " removed";
  if (log_level_changed) s += "; log level changed";
  return s;
}

}  // namespace ringlb::core::runtime

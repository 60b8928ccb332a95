// Controller::reload: SIGHUP and POST /reload. Reads the config file again; a bad one changes
// nothing (the error names FILE:LINE:COLUMN). A good one is applied without dropping anything:
// the new snapshot goes to every shard by message (kReconfigure), state indexed by cluster is
// remapped by name here (eligibility, outlier policies, DNS follows, health checks), new
// listeners are bound here and handed over. What ReloadPlan says and does is in reload_plan.h;
// what a shard does with it in shard_reload.cc and proxy/context_reload.cc.
// Owner: the control thread.
#include <unistd.h>

#include <cstring>

#include "core/base/log.h"
#include "core/proxy/tls_contexts.h"
#include "core/runtime/access_log.h"
#include "core/runtime/control.h"
#include "core/runtime/health_checker.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "discovery/snapshot.h"

namespace ringlb::core::runtime {
namespace {

base::LogLevel log_level(config::LogConfig::Level l) {
  switch (l) {
    case config::LogConfig::Level::kDebug:
      return base::LogLevel::kDebug;
    case config::LogConfig::Level::kWarn:
      return base::LogLevel::kWarn;
    case config::LogConfig::Level::kError:
      return base::LogLevel::kError;
    default:
      return base::LogLevel::kInfo;
  }
}

// New listeners' sockets, [listener of the new config][shard]; empty for those that stay.
// Bound before anything changes: a reload that cannot bind one applies nothing.
bool bind_new(const ReloadPlan& plan, const config::Config& next, size_t workers,
              std::vector<std::vector<int>>& fds, std::string& error) {
  fds.assign(next.listeners.size(), {});
  for (size_t j = 0; j < next.listeners.size(); ++j) {
    if (plan.listener_from[j] >= 0) continue;
    bool deferred = false;
    if (!bind_listener(next.listeners[j], static_cast<unsigned>(workers), false, fds[j], deferred,
                       error)) {
      error = "listener " + next.listeners[j].address.text + ": " + error;
      for (auto& per : fds) {
        for (int fd : per) ::close(fd);
      }
      return false;
    }
  }
  return true;
}

}  // namespace

Controller::ReloadResult Controller::reload() {
  if (draining_) {
    LOG_WARN("reload refused: draining");
    return {false, "draining: no reload"};
  }
  if (!serving_) {
    // Start-up still owns the listening sockets (a takeover listens on them once ready).
    LOG_WARN("reload refused: not serving yet");
    return {false, "starting: no reload before ready"};
  }
  // logrotate's postrotate sends SIGHUP: the access log file is reopened whether or not the
  // config file (re)loads.
  if (std::string e; access_log_ != nullptr && !access_log_->reopen(e)) LOG_ERROR("%s", e.c_str());
  config::Config loaded;
  try {
    if (config_->env_var.empty()) {
      loaded = config::load_config(config_->source);
    } else {
      // A process's environment is fixed at exec, so this re-parses the same text (the access
      // log was reopened above all the same). Said in the log, so nobody waits for a changed
      // value that cannot arrive.
      LOG_INFO(
          "reload: config from environment variable %s: re-parsing the same text (the "
          "environment of a running process does not change; restart to change it)",
          config_->env_var.c_str());
      loaded = config::load_config_env(config_->env_var);
    }
  } catch (const config::ConfigError& e) {
    LOG_ERROR("reload failed: %s; still running the previous config", e.what());
    return {false, e.what()};
  }
  ReloadPlan plan = plan_reload(*config_, loaded);
  auto next = std::make_shared<const config::Config>(std::move(loaded));
  // Certificates and keys are read with the config; one BoringSSL rejects fails the reload,
  // and the running ones stay.
  if (auto tls = proxy::prepare_tls(next); !tls) {
    LOG_ERROR("reload failed: %s; still running the previous config and certificates",
              tls.error().message.c_str());
    return {false, tls.error().message};
  }
  log_tls(next);
  std::vector<std::vector<int>> fds;
  std::string error;
  if (!bind_new(plan, *next, shards_.size(), fds, error)) {
    LOG_ERROR("reload failed: %s; still running the previous config", error.c_str());
    return {false, error};
  }
  const uint64_t generation = ++generation_;
  std::vector<lb::EndpointSetPtr> sets = reload_sets(plan, *next);
  std::vector<size_t> removed_uids = remap_cluster_state(plan, *next);
  const std::vector<int> cluster_to = plan.cluster_to(config_->clusters.size());
  std::shared_ptr<const config::Config> old = std::move(config_);
  config_ = next;
  // Every shard: the snapshot, in the order of its messages (those posted before use the old
  // cluster indices, those after the new ones; reports carry their generation).
  for (size_t s = 0; s < shards_.size(); ++s) {
    auto r = std::make_unique<ShardReload>();
    r->reconfig.config = next;
    r->reconfig.generation = generation;
    r->reconfig.listener_from = plan.listener_from;
    r->reconfig.cluster_from = plan.cluster_from;
    r->reconfig.sets = sets;
    r->listen_fds.assign(next->listeners.size(), -1);
    for (size_t j = 0; j < fds.size(); ++j) {
      if (!fds[j].empty()) r->listen_fds[j] = fds[j][s];
    }
    shards_[s]->post_reconfigure(std::move(r));
  }
  reload_dns(plan, cluster_to);
  reload_health(plan, *old, removed_uids, sets);
  if (!log_level_pinned_ && next->log.level_set) base::set_log_level(log_level(next->log.level));

  std::string message = "applied: " + plan.summary();
  if (!plan.needs_restart.empty()) {
    message += "; needs a restart to take effect:";
    for (size_t i = 0; i < plan.needs_restart.size(); ++i)
      message += (i == 0 ? " " : ", ") + plan.needs_restart[i];
  }
  LOG_INFO("reload: %s (config generation %llu)", message.c_str(),
           static_cast<unsigned long long>(generation));
  return {true, message};
}

std::vector<lb::EndpointSetPtr> Controller::reload_sets(const ReloadPlan& plan,
                                                        const config::Config& next) {
  // Static lists (new clusters, changed lists, DNS -> static) go as a new set, applied like a
  // DNS change; new DNS clusters start empty until their first answer; the rest keep theirs
  // (static -> DNS too, until the first answer replaces it).
  std::vector<lb::EndpointSetPtr> initial = initial_endpoint_sets(next);
  std::vector<lb::EndpointSetPtr> sets(next.clusters.size());
  for (size_t j = 0; j < next.clusters.size(); ++j) {
    const ClusterChange& ch = plan.clusters[j];
    const bool dns = next.clusters[j].uses_dns();
    if (ch.added || (!dns && (ch.endpoints || ch.source))) {
      sets[j] =
          dns ? initial[j] : discovery::make_endpoint_set(initial[j]->endpoints, generation_ + 1);
    }
  }
  return sets;
}

std::vector<size_t> Controller::remap_cluster_state(const ReloadPlan& plan,
                                                    const config::Config& next) {
  // Ejections, health and their backoff streaks follow the cluster's name; policies are the
  // new config's.
  const size_t n = next.clusters.size();
  std::vector<std::unordered_map<std::string, EndpointEligibility>> eligibility(n);
  std::vector<lb::OutlierDetector> outlier;
  std::vector<size_t> members(n), uids(n);
  for (size_t j = 0; j < n; ++j) {
    const config::ClusterConfig& c = next.clusters[j];
    outlier.emplace_back(proxy::outlier_policy(c.outlier));
    const int from = plan.cluster_from[j];
    if (from < 0) {
      members[j] = c.endpoints.size();
      uids[j] = next_uid_++;
      continue;
    }
    const size_t f = static_cast<size_t>(from);
    eligibility[j] = std::move(eligibility_[f]);
    members[j] = c.uses_dns() ? members_[f] : c.endpoints.size();
    uids[j] = cluster_uid_[f];
  }
  std::vector<size_t> removed;
  for (size_t i : plan.clusters_removed) removed.push_back(cluster_uid_[i]);
  eligibility_ = std::move(eligibility);
  outlier_ = std::move(outlier);
  members_ = std::move(members);
  cluster_uid_ = std::move(uids);
  return removed;
}

void Controller::reload_health(const ReloadPlan& plan, const config::Config& old,
                               const std::vector<size_t>& removed_uids,
                               const std::vector<lb::EndpointSetPtr>& sets) {
  const config::HealthCheckConfig off;  // enabled = false: stops every check of a cluster
  const lb::EndpointSet none;
  if (health_) {
    for (size_t i = 0; i < removed_uids.size(); ++i) {
      const config::ClusterConfig& c = old.clusters[plan.clusters_removed[i]];
      health_->set_endpoints(removed_uids[i], c.name, off, none);
    }
  }
  for (size_t j = 0; j < config_->clusters.size(); ++j) {
    const config::ClusterConfig& c = config_->clusters[j];
    const ClusterChange& ch = plan.clusters[j];
    const size_t uid = cluster_uid_[j];
    // Changed settings or membership source: that cluster's checks start over.
    // New TLS settings (certificates, CA, names): its checks start over with them too.
    const int from = plan.cluster_from[j];
    const bool tls_changed = from >= 0 && c.tls != old.clusters[static_cast<size_t>(from)].tls;
    if ((ch.health || ch.source || tls_changed) && health_) {
      health_->set_endpoints(uid, c.name, off, none);
    }
    if (!c.health_check.enabled) continue;
    if (!ch.added && !ch.health && !ch.endpoints && !ch.source && !tls_changed) continue;
    lb::EndpointSetPtr members = sets[j];
    if (!members && c.uses_dns()) members = dns_members(j);
    if (!members && !c.uses_dns()) members = initial_endpoint_sets(*config_)[j];
    if (!members) continue;  // a DNS cluster's first answer brings them (finish())
    ensure_health_checker();
    health_->set_endpoints(uid, c.name, c.health_check, *members, health_tls(j));
  }
}

}  // namespace ringlb::core::runtime

#include "core/proxy/router.h"

namespace ringlb::core::proxy {
namespace {
int cluster_index(const config::Config& config, const std::string& name) {
  for (size_t i = 0; i < config.clusters.size(); ++i) {
    if (config.clusters[i].name == name) return static_cast<int>(i);
  }
  return -1;  // the config loader rejects unknown names, so this is only an empty default
}
}  // namespace

Router::Router(const config::ListenerConfig& listener, const config::Config& config)
    : name_(listener.address.text) {
  for (const config::RouteConfig& r : listener.routes) {
    int route = static_cast<int>(routes_.size());
    routes_.push_back(
        {r.prefix,
         {cluster_index(config, r.cluster), route, r.timeout.count(), &r.retry, &r.hedge}});
  }
  if (!listener.cluster.empty()) {
    int c = cluster_index(config, listener.cluster);
    if (c >= 0) {
      const config::ClusterConfig& cc = config.clusters[static_cast<size_t>(c)];
      default_ = {c, -1, 0, &cc.retry, &cc.hedge};
    }
  }
}

RouteMatch Router::match(std::string_view path) const {
  for (const Entry& e : routes_) {
    if (path.starts_with(e.prefix)) return e.target;
  }
  return default_;
}

}  // namespace ringlb::core::proxy

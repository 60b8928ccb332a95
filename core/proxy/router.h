#pragma once
// Router: maps a call's :path to a cluster, per listener. Built at start-up; immutable; read by
// shards. Owner: built by the control thread; immutable, so any thread (each shard holds its own
// copy) may read it. Prefix routes are tried in config order, then the default cluster.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/config/config.h"
#include "core/h2/tls.h"

namespace ringlb::core::proxy {

struct RouteMatch {
  int cluster = -1;        // index into Config::clusters; -1 = no route
  int route = -1;          // index into the listener's routes; -1 = the default cluster
  int64_t timeout_ns = 0;  // route timeout, 0 = none
  // The policies for calls on this route (the route's keys over its cluster's); they point into
  // the config, which outlives every router. Null only when cluster < 0.
  const config::RetryPolicy* retry = nullptr;
  const config::HedgePolicy* hedge = nullptr;
};

class Router {
 public:
  Router(const config::ListenerConfig& listener, const config::Config& config);
  RouteMatch match(std::string_view path) const;
  const std::string& listener_name() const { return name_; }
  /// The listener's TLS context (tls_contexts.h), or null: cleartext h2c.
  std::shared_ptr<h2::TlsContext> tls;

 private:
  struct Entry {
    std::string prefix;
    RouteMatch target;
  };
  std::vector<Entry> routes_;
  RouteMatch default_;
  std::string name_;
};

}  // namespace ringlb::core::proxy

#include "core/config/config_json.h"

#include <array>

#include "core/base/json.h"

namespace ringlb::core::config {
namespace {

using base::JsonWriter;

constexpr std::array<std::string_view, 17> kStatusNames = {
    "ok",        "cancelled",      "unknown",           "invalid_argument",   "deadline_exceeded",
    "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
    "aborted",   "out_of_range",   "unimplemented",     "internal",           "unavailable",
    "data_loss", "unauthenticated"};

// Strings go through here: a secret key's value never leaves.
void text(JsonWriter& w, std::string_view key, std::string_view value) {
  w.key(key);
  if (is_secret_key(key)) {
    w.value("[redacted]");
  } else {
    w.value(value);
  }
}

void dur(JsonWriter& w, std::string_view key, Duration d) {
  text(w, key, duration_text(d));
}

void num(JsonWriter& w, std::string_view key, uint64_t v) {
  w.key(key);
  if (is_secret_key(key)) {
    w.value("[redacted]");
  } else {
    w.value(v);
  }
}

void flag(JsonWriter& w, std::string_view key, bool v) {
  w.key(key).value(v);
}

const char* backend_name(io::IoBackend b) {
  switch (b) {
    case io::IoBackend::kIoUring:
      return "io_uring";
    case io::IoBackend::kEpoll:
      return "epoll";
    default:
      return "auto";
  }
}

void write_proxy(JsonWriter& w, const ProxyConfig& p) {
  w.key("proxy").begin_object();
  if (p.workers == 0) {
    text(w, "workers", "auto");
  } else {
    num(w, "workers", p.workers);
  }
  text(w, "io_backend", backend_name(p.io_backend));
  dur(w, "drain_timeout", p.drain_timeout);
  num(w, "max_connections", p.max_connections);
  num(w, "max_concurrent_streams", p.max_concurrent_streams);
  num(w, "stream_buffer", p.stream_buffer);
  num(w, "connection_window", p.connection_window);
  num(w, "max_header_list_size", p.max_header_list_size);
  dur(w, "idle_timeout", p.idle_timeout);
  dur(w, "handshake_timeout", p.handshake_timeout);
  dur(w, "header_timeout", p.header_timeout);
  dur(w, "body_timeout", p.body_timeout);
  dur(w, "send_timeout", p.send_timeout);
  num(w, "retry_buffer", p.retry_buffer);
  num(w, "memory_limit", p.memory_limit);
  w.end_object();
}

void write_limits(JsonWriter& w, const LimitsConfig& l) {
  w.key("limits").begin_object();
  num(w, "turn_bytes", l.turn_bytes);
  num(w, "reset_rate", l.reset_rate);
  num(w, "reset_burst", l.reset_burst);
  num(w, "address_reset_rate", l.address_reset_rate);
  num(w, "address_reset_burst", l.address_reset_burst);
  dur(w, "refuse_for", l.refuse_for);
  num(w, "max_empty_frames", l.max_empty_frames);
  num(w, "window_updates_per_data_frame", l.window_updates_per_data_frame);
  num(w, "priority_per_stream", l.priority_per_stream);
  num(w, "control_rate", l.control_rate);
  num(w, "control_burst", l.control_burst);
  num(w, "max_outbound_control_frames", l.max_outbound_control_frames);
  w.end_object();
}

void write_retry(JsonWriter& w, const RetryPolicy& r) {
  w.key("retry").begin_object();
  w.key("on").begin_array();
  for (size_t code = 0; code < kStatusNames.size(); ++code) {
    if (r.on >> code & 1u) w.value(kStatusNames[code]);
  }
  w.end_array();
  num(w, "attempts", r.attempts);
  if (r.per_try_share_permille != 0) {
    text(w, "per_try_timeout", std::to_string(r.per_try_share_permille / 10) + "%");
  } else if (r.per_try_timeout.count() == 0) {
    text(w, "per_try_timeout", "off");
  } else {
    dur(w, "per_try_timeout", r.per_try_timeout);
  }
  dur(w, "backoff", r.backoff);
  dur(w, "max_backoff", r.max_backoff);
  num(w, "budget_percent", r.budget_percent);
  num(w, "budget_min_per_second", r.budget_min_per_second);
  w.end_object();
}

void write_hedge(JsonWriter& w, const HedgePolicy& h) {
  w.key("hedge").begin_object();
  flag(w, "enabled", h.enabled);
  if (h.after.count() == 0) {
    text(w, "after", "auto");
  } else {
    dur(w, "after", h.after);
  }
  w.key("methods").begin_array();
  for (const std::string& m : h.methods) w.value(m);
  w.end_array();
  w.end_object();
}

void write_listener(JsonWriter& w, const ListenerConfig& l) {
  w.begin_object();
  text(w, "address", l.address.text);
  text(w, "cluster", l.cluster);
  w.key("routes").begin_array();
  for (const RouteConfig& r : l.routes) {
    w.begin_object();
    text(w, "prefix", r.prefix);
    text(w, "cluster", r.cluster);
    dur(w, "timeout", r.timeout);
    write_retry(w, r.retry);
    write_hedge(w, r.hedge);
    w.end_object();
  }
  w.end_array();
  if (l.tls.enabled) {  // the files, never their contents
    w.key("tls").begin_object();
    text(w, "cert", l.tls.cert.path);
    text(w, "key", l.tls.key.path);
    if (!l.tls.client_ca.path.empty()) {
      text(w, "client_ca", l.tls.client_ca.path);
      text(w, "client_cert", l.tls.require_client_cert ? "required" : "optional");
    }
    text(w, "min_version", l.tls.tls13_only ? "1.3" : "1.2");
    w.key("sni_certs").begin_array();
    for (const auto& [cert, key] : l.tls.sni_certs) {
      w.begin_object();
      text(w, "cert", cert.path);
      text(w, "key", key.path);
      w.end_object();
    }
    w.end_array();
    w.end_object();
  }
  w.end_object();
}

void write_dns(JsonWriter& w, const DnsConfig& d) {
  w.key("dns").begin_object();
  text(w, "name", d.name);
  num(w, "port", d.port);
  text(w, "record",
       d.record == DnsRecord::kSRV    ? "SRV"
       : d.record == DnsRecord::kAAAA ? "AAAA"
                                      : "A");
  dur(w, "min_refresh", d.min_refresh);
  dur(w, "max_refresh", d.max_refresh);
  dur(w, "stale_after", d.stale_after);
  if (d.hold.count() < 0) {
    text(w, "hold", "auto");
  } else {
    dur(w, "hold", d.hold);
  }
  w.end_object();
}

void write_policies(JsonWriter& w, const ClusterConfig& c) {
  const KeepaliveConfig& k = c.keepalive;
  w.key("keepalive").begin_object();
  flag(w, "enabled", k.enabled);
  dur(w, "interval", k.interval);
  dur(w, "timeout", k.timeout);
  dur(w, "idle", k.idle);
  w.end_object();
  const HealthCheckConfig& h = c.health_check;
  w.key("health_check").begin_object();
  flag(w, "enabled", h.enabled);
  dur(w, "interval", h.interval);
  dur(w, "timeout", h.timeout);
  num(w, "unhealthy", h.unhealthy);
  num(w, "healthy", h.healthy);
  text(w, "service", h.service);
  w.end_object();
  const OutlierConfig& o = c.outlier;
  w.key("outlier").begin_object();
  flag(w, "enabled", o.enabled);
  num(w, "consecutive_failures", o.consecutive_failures);
  num(w, "consecutive_unavailable", o.consecutive_unavailable);
  dur(w, "base_ejection", o.base_ejection);
  dur(w, "max_ejection", o.max_ejection);
  num(w, "max_ejected_percent", o.max_ejected_percent);
  num(w, "panic_threshold", o.panic_threshold);
  w.end_object();
  write_retry(w, c.retry);
  write_hedge(w, c.hedge);
}

void write_cluster(JsonWriter& w, const ClusterConfig& c) {
  w.begin_object();
  text(w, "name", c.name);
  text(w, "lb", c.lb == LbPolicy::kP2c ? "p2c" : "round_robin");
  w.key("endpoints").begin_array();
  for (const EndpointConfig& e : c.endpoints) {
    w.begin_object();
    text(w, "address", e.address.text);
    num(w, "weight", e.weight);
    w.end_object();
  }
  w.end_array();
  if (c.uses_dns()) write_dns(w, c.dns);
  dur(w, "connect_timeout", c.connect_timeout);
  write_policies(w, c);
  dur(w, "slow_start", c.slow_start);
  if (c.tls.enabled) {
    w.key("tls").begin_object();
    text(w, "sni", c.tls.sni);
    text(w, "ca", c.tls.ca.path);
    if (!c.tls.cert.path.empty()) {
      text(w, "cert", c.tls.cert.path);
      text(w, "key", c.tls.key.path);
    }
    flag(w, "verify", c.tls.verify);
    w.end_object();
  }
  w.end_object();
}

void write_rest(JsonWriter& w, const Config& c) {
  w.key("discovery").begin_object();
  w.key("resolvers").begin_array();
  for (const io::SocketAddress& a : c.discovery.resolvers) w.value(a.text);
  w.end_array();
  dur(w, "query_timeout", c.discovery.query_timeout);
  w.end_object();
  w.key("admin").begin_object();
  text(w, "address", c.admin.enabled ? c.admin.address.text : "off");
  num(w, "max_connections", c.admin.max_connections);
  dur(w, "request_timeout", c.admin.request_timeout);
  w.end_object();
  static constexpr std::array<const char*, 4> kLevels = {"debug", "info", "warn", "error"};
  w.key("log").begin_object();
  text(w, "level", kLevels[static_cast<size_t>(c.log.level)]);
  text(w, "access",
       c.log.access == AccessLogTarget::kOff      ? "off"
       : c.log.access == AccessLogTarget::kStdout ? "stdout"
                                                  : c.log.access_path);
  w.key("access_sample").value(c.log.access_sample);
  num(w, "access_buffer", c.log.access_buffer);
  w.end_object();
  w.key("metrics").begin_object();
  num(w, "max_methods", c.metrics.max_methods);
  w.end_object();
}

}  // namespace

bool is_secret_key(std::string_view key) {
  return key == "key" || key.ends_with("_key") || key.find("password") != std::string_view::npos ||
         key.find("secret") != std::string_view::npos ||
         key.find("private") != std::string_view::npos;
}

std::string duration_text(Duration d) {
  const int64_t ns = d.count();
  if (ns == 0) return "0s";
  struct Unit {
    int64_t ns;
    const char* name;
  };
  static constexpr std::array<Unit, 6> kUnits = {{{3'600'000'000'000, "h"},
                                                  {60'000'000'000, "m"},
                                                  {1'000'000'000, "s"},
                                                  {1'000'000, "ms"},
                                                  {1'000, "us"},
                                                  {1, "ns"}}};
  for (const Unit& u : kUnits) {
    if (ns % u.ns == 0) return std::to_string(ns / u.ns) + u.name;
  }
  return std::to_string(ns) + "ns";
}

std::string config_to_json(const Config& config) {
  JsonWriter w;
  w.begin_object();
  text(w, "source", config.source);
  write_proxy(w, config.proxy);
  write_limits(w, config.limits);
  w.key("listeners").begin_array();
  for (const ListenerConfig& l : config.listeners) write_listener(w, l);
  w.end_array();
  w.key("clusters").begin_array();
  for (const ClusterConfig& c : config.clusters) write_cluster(w, c);
  w.end_array();
  write_rest(w, config);
  w.end_object();
  return w.take();
}

}  // namespace ringlb::core::config

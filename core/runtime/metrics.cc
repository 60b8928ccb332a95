#include "core/runtime/metrics.h"

#include <ares.h>
#include <dirent.h>
#include <nghttp2/nghttp2.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "core/base/log.h"
#include "core/proxy/stats.h"
#include "core/runtime/control.h"
#include "core/runtime/shard_snapshot.h"
#include "discovery/answer.h"
#include "lb/eligibility.h"

// The metric families, in the order they are rendered. Counters end in _total; times are in
// seconds. Shard counters are summed over the shards that answered the collection.
//
// ringlb_build_info{version,nghttp2}               gauge 1
// ringlb_workers                                   gauge: shards
// ringlb_io_backend{backend="io_uring|epoll"}      gauge 1
// ringlb_shards_answered / ringlb_shards_missing   gauges: this collection's answers
// ringlb_listener_connections_open{listener}       gauge
// ringlb_listener_connections_accepted_total{listener}
// ringlb_listener_connections_rejected_total{listener,reason}
//     reason: max_connections | draining | setup_failed | accept_error | address_refused
// ringlb_downstream_abuse_total{listener,reason}   clients sent away (proxy::AbuseReason)
// ringlb_downstream_timeouts_total{listener,stage} stage timeouts (proxy::TimeoutStage)
// ringlb_cluster_calls_started_total{cluster}      calls routed to the cluster
// ringlb_cluster_calls_total{cluster,grpc_code}    calls ended, by the status the client got
// ringlb_cluster_retries_total{cluster,reason}     reason: status | connection_lost |
//                                                  per_try_timeout
// ringlb_cluster_hedges_total{cluster}
// ringlb_cluster_replays_total{cluster}            transparent replays (nothing reached a
//                                                  backend: connect failed, refused stream)
// ringlb_cluster_retry_budget_refusals_total{cluster}
// ringlb_cluster_no_endpoint_picks_total{cluster}  picks that found no endpoint
// ringlb_cluster_panic_picks_total{cluster}        picks among all members (too few eligible)
// ringlb_cluster_endpoints{cluster}                gauge: members of the current set
// ringlb_dns_refreshes_total{cluster,result}       result: ok | empty | nxdomain | timeout |
//                                                  error (DNS clusters only)
// ringlb_endpoint_attempts_started_total{cluster,endpoint}
// ringlb_endpoint_attempts_total{cluster,endpoint,grpc_code}  attempts ended, by what each got
//                                                  (proxy::EndpointCounters::attempts_ended)
// ringlb_endpoint_calls_in_flight{cluster,endpoint}        gauge: attempts outstanding
// ringlb_endpoint_connections_open{cluster,endpoint}       gauge
// ringlb_endpoint_connects_total{cluster,endpoint}
// ringlb_endpoint_connect_failures_total{cluster,endpoint}
// ringlb_endpoint_connections_lost_total{cluster,endpoint}
// ringlb_endpoint_ping_timeouts_total{cluster,endpoint}
// ringlb_endpoint_goaways_received_total{cluster,endpoint}
// ringlb_endpoint_stream_resets_received_total{cluster,endpoint}
// ringlb_endpoint_state{cluster,endpoint,state}    gauge 0/1 for each state: healthy (may
//     take calls: none of the next three), unhealthy (health checks), ejected (outlier
//     detection), draining (left the endpoint set), slow_start (ramping up its share). From the
//     shards' views (any shard) and the control thread's decisions.
// ringlb_calls_total{route,method,grpc_code}       calls ended, by route and method
// ringlb_call_duration_seconds{route,method}       histogram: request headers to the client's
//     stream closing; buckets 0.0005 ... 10 s
//   route: the matched route's prefix, "default" (the listener's default cluster), "none" (no
//     route matched, or the call was refused before routing).
//   method: the gRPC :path; "non_grpc" for every plain HTTP/2 call; "other" past
//     metrics.max_methods (per shard and again over the merged set), for unrouted calls and
//     for paths that are not printable ASCII or are too long.
//   grpc_code: "OK", "CANCELLED", ... "UNAUTHENTICATED"; "none" when the call ended without a
//     grpc-status (plain HTTP/2, or a gRPC stream reset before its status). Only codes seen
//     are listed.
// ringlb_log_dropped_lines_total                   log lines dropped (the log ring was full)
// ringlb_access_log_lines_total / ringlb_access_log_dropped_total
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds (as Prometheus' clients do)

namespace ringlb::core::runtime {

std::string_view dns_result_label(size_t r) {
  static constexpr std::string_view kNames[kDnsResults] = {"ok", "empty", "nxdomain", "timeout",
                                                           "error"};
  return r < kDnsResults ? kNames[r] : "error";
}

DnsResult dns_result_of(const discovery::LookupResult& r) {
  switch (r.outcome) {
    case discovery::QueryOutcome::kOk:
      return DnsResult::kOk;
    case discovery::QueryOutcome::kEmpty:
      // discovery/answer.cc names NXDOMAIN so; NODATA and unusable records are "empty".
      return r.detail == "NXDOMAIN" ? DnsResult::kNxdomain : DnsResult::kEmpty;
    case discovery::QueryOutcome::kFailure:
      break;
  }
  // An SRV target's failure carries the reason inside a longer text.
  static const std::string_view timeout = ares_strerror(ARES_ETIMEOUT);
  return r.detail.find(timeout) != std::string::npos ? DnsResult::kTimeout : DnsResult::kError;
}

ProcessStats read_process_stats() {
  ProcessStats p;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) p.max_fds = rl.rlim_cur;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++p.open_fds;
    }
    closedir(d);
    if (p.open_fds > 0) --p.open_fds;  // the directory's own fd
  }
  char buf[1024];
  FILE* f = fopen("/proc/self/stat", "re");
  if (f == nullptr) return p;
  const size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const char* s = strrchr(buf, ')');
  if (s == nullptr) return p;
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
  long long rss = 0;
  if (sscanf(s + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu "
             "%llu %lld",
             &utime, &stime, &start, &vsize, &rss) != 5) {
    return p;
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  p.cpu_seconds = static_cast<double>(utime + stime) / tick;
  p.vm_bytes = vsize;
  p.rss_bytes = static_cast<uint64_t>(std::max<long long>(rss, 0)) *
                static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  // The start time is in ticks since boot; the boot time is in /proc/stat.
  if (FILE* st = fopen("/proc/stat", "re")) {
    char line[256];
    while (fgets(line, sizeof line, st) != nullptr) {
      unsigned long long btime = 0;
      if (sscanf(line, "btime %llu", &btime) == 1) {
        p.start_time = static_cast<double>(btime) + static_cast<double>(start) / tick;
        break;
      }
    }
    fclose(st);
  }
  p.ok = true;
  return p;
}

namespace {

using proxy::kStatusSlots;
using Label = std::pair<std::string_view, std::string_view>;

// Text format 0.0.4: one # HELP and # TYPE per family, then its samples.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_.append("# HELP ").append(name).push_back(' ');
    for (char c : help) {  // HELP escapes backslash and newline
      if (c == '\\') {
        out_.append("\\\\");
      } else if (c == '\n') {
        out_.append("\\n");
      } else {
        out_.push_back(c);
      }
    }
    out_.append("\n# TYPE ").append(name).push_back(' ');
    out_.append(type).push_back('\n');
  }

  void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t v) {
    head(name, labels);
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    out_.append(b, r.ptr).push_back('\n');
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, double v) {
    head(name, labels);
    // Plain decimals (seconds to the nanosecond), never exponents: easier on people and tools.
    char b[64];
    int n = snprintf(b, sizeof b, "%.9f", v);
    while (n > 1 && b[n - 1] == '0') --n;
    if (n > 0 && b[n - 1] == '.') --n;
    out_.append(b, static_cast<size_t>(n)).push_back('\n');
  }
  /// `extra` after `labels` (a histogram's le).
  void sample(std::string_view name, std::initializer_list<Label> labels, Label extra, uint64_t v) {
    head(name, labels, &extra);
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    out_.append(b, r.ptr).push_back('\n');
  }

 private:
  void head(std::string_view name, std::initializer_list<Label> labels,
            const Label* extra = nullptr) {
    out_.append(name);
    if (labels.size() == 0 && extra == nullptr) {
      out_.push_back(' ');
      return;
    }
    out_.push_back('{');
    bool first = true;
    auto put = [&](const Label& l) {
      if (!first) out_.push_back(',');
      first = false;
      out_.append(l.first).append("=\"");
      for (char c : l.second) {  // label values escape backslash, quote and newline
        if (c == '\\') {
          out_.append("\\\\");
        } else if (c == '"') {
          out_.append("\\\"");
        } else if (c == '\n') {
          out_.append("\\n");
        } else {
          out_.push_back(c);
        }
      }
      out_.push_back('"');
    };
    for (const Label& l : labels) put(l);
    if (extra != nullptr) put(*extra);
    out_.append("} ");
  }

  std::string& out_;
};

void add(proxy::EndpointCounters& a, const proxy::EndpointCounters& b) {
  a.attempts += b.attempts;
  for (size_t i = 0; i < kStatusSlots; ++i) a.attempts_ended[i] += b.attempts_ended[i];
  a.connects += b.connects;
  a.connect_failures += b.connect_failures;
  a.connections_lost += b.connections_lost;
  a.ping_timeouts += b.ping_timeouts;
  a.goaways += b.goaways;
  a.resets += b.resets;
}

void add(proxy::ClusterCounters& a, const proxy::ClusterCounters& b) {
  a.calls += b.calls;
  for (size_t i = 0; i < kStatusSlots; ++i) a.calls_ended[i] += b.calls_ended[i];
  for (size_t i = 0; i < a.retries.size(); ++i) a.retries[i] += b.retries[i];
  a.hedges += b.hedges;
  a.replays += b.replays;
  a.budget_refusals += b.budget_refusals;
  a.no_endpoint += b.no_endpoint;
  a.panic_picks += b.panic_picks;
  for (size_t i = 0; i < proxy::kTlsFailures; ++i) a.tls_failures[i] += b.tls_failures[i];
}

void add(proxy::MethodCounters& a, const proxy::MethodCounters& b) {
  for (size_t i = 0; i < kStatusSlots; ++i) a.calls[i] += b.calls[i];
  for (size_t i = 0; i < a.latency.size(); ++i) a.latency[i] += b.latency[i];
  a.latency_sum_ns += b.latency_sum_ns;
}

uint64_t total(const std::array<uint64_t, kStatusSlots>& by_code) {
  uint64_t n = 0;
  for (uint64_t v : by_code) n += v;
  return n;
}

struct EndpointAgg {
  proxy::EndpointCounters c;
  uint64_t in_flight = 0;
  uint64_t connections = 0;
  uint8_t bits = 0;       // lb::IneligibleBits, any shard or the control thread
  bool draining = false;  // removed from the set on some shard
  bool ramping = false;   // slow start on some shard
  bool member = false;    // in the current set on some shard
};

struct ClusterAgg {
  std::string name;
  proxy::ClusterCounters c;
  std::map<std::string, EndpointAgg> endpoints;  // by name: a stable order
  size_t members = 0;                            // the largest current set a shard has
  bool tls = false;                              // the running config has TLS to it
};

using Snapshots = std::vector<std::unique_ptr<ShardSnapshot>>;

std::vector<ClusterAgg> merge_clusters(const Controller& ctl, const Snapshots& shards) {
  const config::Config& cfg = ctl.config();
  std::vector<ClusterAgg> out;
  std::map<std::string, size_t, std::less<>> index;
  auto slot = [&](const std::string& name) -> ClusterAgg& {
    auto [it, fresh] = index.try_emplace(name, out.size());
    if (fresh) out.push_back(ClusterAgg{name, {}, {}, 0, false});
    return out[it->second];
  };
  for (const config::ClusterConfig& c : cfg.clusters) slot(c.name).tls = c.tls.enabled;
  for (const auto& s : shards) {
    if (!s) continue;
    for (const ClusterView& v : s->clusters) {
      ClusterAgg& a = slot(v.name);
      add(a.c, v.counters);
      size_t members = 0;
      for (const EndpointView& e : v.endpoints) {
        EndpointAgg& ea = a.endpoints[e.name];
        add(ea.c, e.counters);
        ea.in_flight += e.outstanding;
        ea.connections += e.connections;
        ea.bits |= e.ineligible;
        ea.draining = ea.draining || e.removed || (e.ineligible & lb::kDraining) != 0;
        ea.ramping = ea.ramping || e.weight_permille < 1000;
        ea.member = ea.member || !e.removed;
        members += e.removed ? 0 : 1;
      }
      a.members = std::max(a.members, members);
    }
  }
  // What the control thread decided (health, ejections), which every shard has been told.
  for (size_t i = 0; i < cfg.clusters.size(); ++i) {
    ClusterAgg& a = out[i];
    for (const auto& [key, e] : ctl.eligibility(i)) {
      if (e.bits == 0) continue;
      EndpointAgg& ea = a.endpoints[e.name];
      ea.bits |= e.bits;
    }
  }
  return out;
}

using MethodKey = std::pair<std::string, std::string>;  // route, method

/// The shards' method rows summed, then capped at `max` named methods over the merged set: the
/// busiest keep their names, the rest fold into their route's "other".
std::map<MethodKey, proxy::MethodCounters> merge_methods(const Snapshots& shards, size_t max) {
  std::map<MethodKey, proxy::MethodCounters> merged;
  for (const auto& s : shards) {
    if (!s) continue;
    for (const proxy::MethodRow& r : s->methods) add(merged[{r.route, r.method}], r.counters);
  }
  std::vector<std::pair<uint64_t, MethodKey>> named;
  for (const auto& [k, c] : merged) {
    if (k.second != "other") named.emplace_back(total(c.calls), k);
  }
  if (named.size() <= max) return merged;
  std::sort(named.begin(), named.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (size_t i = max; i < named.size(); ++i) {
    auto it = merged.find(named[i].second);
    proxy::MethodCounters c = it->second;
    merged.erase(it);
    add(merged[{named[i].second.first, "other"}], c);
  }
  return merged;
}

void render_listeners(Writer& w, const config::Config& cfg, const Snapshots& shards) {
  std::vector<proxy::ListenerCounters> sum(cfg.listeners.size());
  for (const auto& s : shards) {
    if (!s) continue;
    // Past the config's listeners: removed ones still draining on that shard (not shown).
    for (size_t i = 0; i < s->listeners.size() && i < sum.size(); ++i) {
      const proxy::ListenerCounters& l = s->listeners[i];
      sum[i].open += l.open;
      sum[i].accepted += l.accepted;
      for (size_t r = 0; r < proxy::kRejections; ++r) sum[i].rejected[r] += l.rejected[r];
      for (size_t r = 0; r < proxy::kAbuseReasons; ++r) sum[i].abuse[r] += l.abuse[r];
      for (size_t t = 0; t < proxy::kTimeoutStages; ++t) sum[i].timeouts[t] += l.timeouts[t];
      for (size_t t = 0; t < proxy::kTlsHandshakes; ++t) {
        sum[i].tls_handshakes[t] += l.tls_handshakes[t];
      }
      for (size_t t = 0; t < proxy::kTlsFailures; ++t) sum[i].tls_failures[t] += l.tls_failures[t];
    }
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < sum.size(); ++i) {
    names.push_back(cfg.listeners[i].address.text);
  }
  w.family("ringlb_listener_connections_open", "gauge", "Client connections open.");
  for (size_t i = 0; i < sum.size(); ++i) {
    w.sample("ringlb_listener_connections_open", {{"listener", names[i]}}, sum[i].open);
  }
  w.family("ringlb_listener_connections_accepted_total", "counter",
           "Client connections accepted (those turned away after accept included).");
  for (size_t i = 0; i < sum.size(); ++i) {
    w.sample("ringlb_listener_connections_accepted_total", {{"listener", names[i]}},
             sum[i].accepted);
  }
  w.family("ringlb_listener_connections_rejected_total", "counter",
           "Client connections turned away, by reason: max_connections (closed at once), "
           "draining (told to go away at once), setup_failed, accept_error (accept failed).");
  for (size_t i = 0; i < sum.size(); ++i) {
    for (size_t r = 0; r < proxy::kRejections; ++r) {
      w.sample("ringlb_listener_connections_rejected_total",
               {{"listener", names[i]}, {"reason", proxy::rejection_label(r)}}, sum[i].rejected[r]);
    }
  }
  w.family("ringlb_downstream_abuse_total", "counter",
           "Client connections sent away (GOAWAY ENHANCE_YOUR_CALM, or closed) for breaking a "
           "[limits] limit, by reason.");
  for (size_t i = 0; i < sum.size(); ++i) {
    for (size_t r = 0; r < proxy::kAbuseReasons; ++r) {
      w.sample("ringlb_downstream_abuse_total",
               {{"listener", names[i]}, {"reason", proxy::abuse_label(r)}}, sum[i].abuse[r]);
    }
  }
  w.family("ringlb_downstream_timeouts_total", "counter",
           "Client connection stages that timed out: handshake (connection closed), headers "
           "(closed), body and send (the stream reset, or the connection closed when its socket "
           "is stuck), idle (two-phase GOAWAY).");
  for (size_t i = 0; i < sum.size(); ++i) {
    for (size_t t = 0; t < proxy::kTimeoutStages; ++t) {
      w.sample("ringlb_downstream_timeouts_total",
               {{"listener", names[i]}, {"stage", proxy::timeout_label(t)}}, sum[i].timeouts[t]);
    }
  }
  // TLS: only the listeners that terminate it.
  w.family("ringlb_downstream_tls_handshakes_total", "counter",
           "Client TLS handshakes, by result: full, resumed (a session ticket), failed.");
  static constexpr const char* kResults[] = {"full", "resumed", "failed"};
  for (size_t i = 0; i < sum.size(); ++i) {
    if (!cfg.listeners[i].tls.enabled) continue;
    for (size_t t = 0; t < proxy::kTlsHandshakes; ++t) {
      w.sample("ringlb_downstream_tls_handshakes_total",
               {{"listener", names[i]}, {"result", kResults[t]}}, sum[i].tls_handshakes[t]);
    }
  }
  w.family("ringlb_downstream_tls_failures_total", "counter",
           "Client TLS handshakes that failed, by reason: no_alpn_h2, timeout, no_client_cert, "
           "unknown_ca, expired, name_mismatch, bad_certificate, alert, protocol.");
  for (size_t i = 0; i < sum.size(); ++i) {
    if (!cfg.listeners[i].tls.enabled) continue;
    for (size_t t = 1; t < proxy::kTlsFailures; ++t) {
      w.sample("ringlb_downstream_tls_failures_total",
               {{"listener", names[i]},
                {"reason", h2::tls_failure_label(static_cast<h2::TlsFailure>(t))}},
               sum[i].tls_failures[t]);
    }
  }
}

// One counter per cluster, read from its summed counters by `get`.
template <class Get>
void cluster_family(Writer& w, const std::vector<ClusterAgg>& cs, std::string_view name,
                    std::string_view type, std::string_view help, Get get) {
  w.family(name, type, help);
  for (const ClusterAgg& c : cs) w.sample(name, {{"cluster", c.name}}, get(c));
}

void render_clusters(Writer& w, const std::vector<ClusterAgg>& cs) {
  cluster_family(w, cs, "ringlb_cluster_calls_started_total", "counter",
                 "Calls routed to the cluster.", [](const ClusterAgg& c) { return c.c.calls; });
  w.family("ringlb_cluster_calls_total", "counter",
           "Calls ended, by the grpc-status the client got (none: no grpc-status).");
  for (const ClusterAgg& c : cs) {
    for (size_t k = 0; k < kStatusSlots; ++k) {
      if (c.c.calls_ended[k] == 0) continue;
      w.sample("ringlb_cluster_calls_total",
               {{"cluster", c.name}, {"grpc_code", proxy::status_label(k)}}, c.c.calls_ended[k]);
    }
  }
  static constexpr std::string_view kReasons[] = {"status", "connection_lost", "per_try_timeout"};
  w.family("ringlb_cluster_retries_total", "counter",
           "Retries by policy, by reason: a retryable status, a lost connection, a per-try "
           "timeout.");
  for (const ClusterAgg& c : cs) {
    for (size_t r = 0; r < c.c.retries.size(); ++r) {
      w.sample("ringlb_cluster_retries_total", {{"cluster", c.name}, {"reason", kReasons[r]}},
               c.c.retries[r]);
    }
  }
  cluster_family(w, cs, "ringlb_cluster_hedges_total", "counter", "Hedged attempts started.",
                 [](const ClusterAgg& c) { return c.c.hedges; });
  cluster_family(w, cs, "ringlb_cluster_replays_total", "counter",
                 "Attempts replayed transparently (nothing had reached a backend).",
                 [](const ClusterAgg& c) { return c.c.replays; });
  cluster_family(w, cs, "ringlb_cluster_retry_budget_refusals_total", "counter",
                 "Retries or hedges the retry budget refused.",
                 [](const ClusterAgg& c) { return c.c.budget_refusals; });
  cluster_family(w, cs, "ringlb_cluster_no_endpoint_picks_total", "counter",
                 "Picks that found no endpoint (the call failed UNAVAILABLE).",
                 [](const ClusterAgg& c) { return c.c.no_endpoint; });
  cluster_family(w, cs, "ringlb_cluster_panic_picks_total", "counter",
                 "Picks made among all members because too few were eligible.",
                 [](const ClusterAgg& c) { return c.c.panic_picks; });
  cluster_family(w, cs, "ringlb_cluster_endpoints", "gauge", "Members of the endpoint set.",
                 [](const ClusterAgg& c) { return static_cast<uint64_t>(c.members); });
  w.family("ringlb_upstream_tls_failures_total", "counter",
           "TLS handshakes with backends that failed, by reason: unknown_ca, expired, "
           "name_mismatch, no_alpn_h2, timeout, alert, protocol (and bad_certificate).");
  for (const ClusterAgg& c : cs) {
    if (!c.tls) continue;
    for (size_t t = 1; t < proxy::kTlsFailures; ++t) {
      w.sample(
          "ringlb_upstream_tls_failures_total",
          {{"cluster", c.name}, {"reason", h2::tls_failure_label(static_cast<h2::TlsFailure>(t))}},
          c.c.tls_failures[t]);
    }
  }
}

void render_dns(Writer& w, const Controller& ctl) {
  w.family("ringlb_dns_refreshes_total", "counter",
           "DNS refreshes of a cluster's name, by result: ok, empty (no usable records), "
           "nxdomain, timeout, error.");
  for (const config::ClusterConfig& c : ctl.config().clusters) {
    if (!c.uses_dns()) continue;
    const auto& all = ctl.dns_refreshes();
    auto it = all.find(c.name);
    for (size_t r = 0; r < kDnsResults; ++r) {
      w.sample("ringlb_dns_refreshes_total", {{"cluster", c.name}, {"result", dns_result_label(r)}},
               it == all.end() ? uint64_t{0} : it->second.results[r]);
    }
  }
}

template <class Get>
void endpoint_family(Writer& w, const std::vector<ClusterAgg>& cs, std::string_view name,
                     std::string_view type, std::string_view help, Get get) {
  w.family(name, type, help);
  for (const ClusterAgg& c : cs) {
    for (const auto& [ep, a] : c.endpoints) {
      w.sample(name, {{"cluster", c.name}, {"endpoint", ep}}, static_cast<uint64_t>(get(a)));
    }
  }
}

void render_endpoint_states(Writer& w, const std::vector<ClusterAgg>& cs) {
  w.family("ringlb_endpoint_state", "gauge",
           "1 for each eligibility state that applies: healthy (may take calls), unhealthy, "
           "ejected, draining (left the endpoint set), slow_start (ramping up).");
  for (const ClusterAgg& c : cs) {
    for (const auto& [ep, a] : c.endpoints) {
      const bool unhealthy = (a.bits & lb::kUnhealthy) != 0;
      const bool ejected = (a.bits & lb::kEjected) != 0;
      const bool healthy = !unhealthy && !ejected && !a.draining && a.member;
      const std::pair<std::string_view, bool> states[] = {{"healthy", healthy},
                                                          {"unhealthy", unhealthy},
                                                          {"ejected", ejected},
                                                          {"draining", a.draining},
                                                          {"slow_start", a.ramping}};
      for (const auto& [state, on] : states) {
        w.sample("ringlb_endpoint_state", {{"cluster", c.name}, {"endpoint", ep}, {"state", state}},
                 uint64_t{on ? 1u : 0u});
      }
    }
  }
}

void render_endpoints(Writer& w, const std::vector<ClusterAgg>& cs) {
  endpoint_family(w, cs, "ringlb_endpoint_attempts_started_total", "counter",
                  "Attempts (upstream streams) started.",
                  [](const EndpointAgg& a) { return a.c.attempts; });
  w.family("ringlb_endpoint_attempts_total", "counter",
           "Attempts ended, by what each got: the backend's grpc-status or the local outcome "
           "(UNAVAILABLE: connection failed or lost; DEADLINE_EXCEEDED: per-try timeout; "
           "CANCELLED: ringlb let go of it; none: a plain HTTP/2 answer).");
  for (const ClusterAgg& c : cs) {
    for (const auto& [ep, a] : c.endpoints) {
      for (size_t k = 0; k < kStatusSlots; ++k) {
        if (a.c.attempts_ended[k] == 0) continue;
        w.sample("ringlb_endpoint_attempts_total",
                 {{"cluster", c.name}, {"endpoint", ep}, {"grpc_code", proxy::status_label(k)}},
                 a.c.attempts_ended[k]);
      }
    }
  }
  endpoint_family(w, cs, "ringlb_endpoint_calls_in_flight", "gauge",
                  "Attempts outstanding on the endpoint.",
                  [](const EndpointAgg& a) { return a.in_flight; });
  endpoint_family(w, cs, "ringlb_endpoint_connections_open", "gauge", "Upstream connections open.",
                  [](const EndpointAgg& a) { return a.connections; });
  endpoint_family(w, cs, "ringlb_endpoint_connects_total", "counter",
                  "Upstream connections started.",
                  [](const EndpointAgg& a) { return a.c.connects; });
  endpoint_family(w, cs, "ringlb_endpoint_connect_failures_total", "counter",
                  "Upstream connections that never came up (refused, timed out, no SETTINGS).",
                  [](const EndpointAgg& a) { return a.c.connect_failures; });
  endpoint_family(w, cs, "ringlb_endpoint_connections_lost_total", "counter",
                  "Upstream connections that died while in use.",
                  [](const EndpointAgg& a) { return a.c.connections_lost; });
  endpoint_family(w, cs, "ringlb_endpoint_ping_timeouts_total", "counter",
                  "Upstream connections closed because a keepalive PING went unanswered.",
                  [](const EndpointAgg& a) { return a.c.ping_timeouts; });
  endpoint_family(w, cs, "ringlb_endpoint_goaways_received_total", "counter",
                  "GOAWAY frames received from the endpoint (the first per connection).",
                  [](const EndpointAgg& a) { return a.c.goaways; });
  endpoint_family(w, cs, "ringlb_endpoint_stream_resets_received_total", "counter",
                  "RST_STREAM frames received from the endpoint.",
                  [](const EndpointAgg& a) { return a.c.resets; });
  render_endpoint_states(w, cs);
}

void render_methods(Writer& w, const std::map<MethodKey, proxy::MethodCounters>& ms) {
  w.family("ringlb_calls_total", "counter",
           "Calls ended, by route, method and the grpc-status the client got.");
  for (const auto& [k, c] : ms) {
    for (size_t code = 0; code < kStatusSlots; ++code) {
      if (c.calls[code] == 0) continue;
      w.sample("ringlb_calls_total",
               {{"route", k.first}, {"method", k.second}, {"grpc_code", proxy::status_label(code)}},
               c.calls[code]);
    }
  }
  static constexpr std::string_view kLe[proxy::kLatencyBuckets] = {
      "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
      "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf"};
  w.family("ringlb_call_duration_seconds", "histogram",
           "Call duration, from the request headers to the end of the client's stream.");
  for (const auto& [k, c] : ms) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b < proxy::kLatencyBuckets; ++b) {
      cumulative += c.latency[b];
      w.sample("ringlb_call_duration_seconds_bucket", {{"route", k.first}, {"method", k.second}},
               {"le", kLe[b]}, cumulative);
    }
    w.sample("ringlb_call_duration_seconds_sum", {{"route", k.first}, {"method", k.second}},
             static_cast<double>(c.latency_sum_ns) / 1e9);
    w.sample("ringlb_call_duration_seconds_count", {{"route", k.first}, {"method", k.second}},
             cumulative);
  }
}

void render_process(Writer& w) {
  const ProcessStats p = read_process_stats();
  if (!p.ok) return;
  w.family("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
  w.sample("process_cpu_seconds_total", {}, p.cpu_seconds);
  w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  w.sample("process_resident_memory_bytes", {}, p.rss_bytes);
  w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  w.sample("process_virtual_memory_bytes", {}, p.vm_bytes);
  w.family("process_open_fds", "gauge", "Number of open file descriptors.");
  w.sample("process_open_fds", {}, p.open_fds);
  w.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
  w.sample("process_max_fds", {}, p.max_fds);
  w.family("process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
  w.sample("process_start_time_seconds", {}, p.start_time);
}

}  // namespace

std::string render_metrics(const Controller& ctl, const Snapshots& shards) {
  std::string out;
  out.reserve(64 * 1024);
  Writer w(out);
  const config::Config& cfg = ctl.config();
  size_t answered = 0;
  uint64_t access_lines = 0, access_dropped = 0;
  for (const auto& s : shards) {
    if (!s) continue;
    ++answered;
    access_lines += s->access_log_lines;
    access_dropped += s->access_log_dropped;
  }
  const size_t workers = ctl.workers();

  w.family("ringlb_build_info", "gauge", "ringlb's version and the nghttp2 it runs with.");
  const nghttp2_info* h2 = nghttp2_version(0);
  w.sample("ringlb_build_info", {{"version", RINGLB_VERSION}, {"nghttp2", h2->version_str}},
           uint64_t{1});
  w.family("ringlb_workers", "gauge", "Worker shards (threads serving calls).");
  w.sample("ringlb_workers", {}, static_cast<uint64_t>(workers));
  w.family("ringlb_io_backend", "gauge", "The io backend in use (1).");
  w.sample("ringlb_io_backend",
           {{"backend", ctl.io_backend() == io::IoBackend::kIoUring ? "io_uring" : "epoll"}},
           uint64_t{1});
  w.family("ringlb_shards_answered", "gauge", "Shards whose counters this scrape includes.");
  w.sample("ringlb_shards_answered", {}, static_cast<uint64_t>(answered));
  w.family("ringlb_shards_missing", "gauge",
           "Shards that did not answer in time (their counters are missing from the sums).");
  w.sample("ringlb_shards_missing", {},
           static_cast<uint64_t>(workers > answered ? workers - answered : 0));

  render_listeners(w, cfg, shards);
  const std::vector<ClusterAgg> clusters = merge_clusters(ctl, shards);
  render_clusters(w, clusters);
  render_dns(w, ctl);
  render_endpoints(w, clusters);
  render_methods(w, merge_methods(shards, cfg.metrics.max_methods));

  w.family("ringlb_log_dropped_lines_total", "counter",
           "Log lines dropped because the log ring was full.");
  w.sample("ringlb_log_dropped_lines_total", {}, base::log_dropped_lines());
  w.family("ringlb_access_log_lines_total", "counter", "Access-log lines queued for writing.");
  w.sample("ringlb_access_log_lines_total", {}, access_lines);
  w.family("ringlb_access_log_dropped_total", "counter",
           "Access-log lines dropped because a shard's ring was full.");
  w.sample("ringlb_access_log_dropped_total", {}, access_dropped);
  render_process(w);
  return out;
}

}  // namespace ringlb::core::runtime

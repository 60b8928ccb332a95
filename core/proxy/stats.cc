#include "core/proxy/stats.h"

#include <algorithm>
#include <functional>

#include "core/proxy/context.h"
#include "proto/grpc.h"

namespace ringlb::core::proxy {

std::string_view status_label(size_t slot) {
  if (slot >= kNoStatus) return "none";
  return proto::status_name(static_cast<proto::StatusCode>(slot));
}

std::string_view rejection_label(size_t r) {
  static constexpr std::string_view kNames[kRejections] = {
      "max_connections", "draining", "setup_failed", "accept_error", "address_refused"};
  return r < kRejections ? kNames[r] : "unknown";
}

void count_upstream_event(EndpointCounters& c, UpstreamEvent e) {
  switch (e) {
    case UpstreamEvent::kConnectFailed:
      ++c.connect_failures;
      break;
    case UpstreamEvent::kConnectionLost:
      ++c.connections_lost;
      break;
    case UpstreamEvent::kGoaway:
      ++c.goaways;
      break;
    case UpstreamEvent::kPingTimeout:
      ++c.ping_timeouts;
      break;
  }
}

size_t MethodTable::Hash::operator()(View v) const {
  // The route mostly follows from the method (a listener's routes match on :path): its length
  // tells the rare pairs apart well enough, and equality settles the rest.
  return std::hash<std::string_view>{}(v.method) + v.route.size() * 0x9e3779b97f4a7c15ULL;
}

MethodCounters& MethodTable::at(std::string_view route, std::string_view method) {
  if (auto it = map_.find(View{route, method}); it != map_.end()) return it->second;
  const bool other = method == "other";
  // Checked on first sight only: a label that is no good never gets a row, so it misses here
  // every time and lands in "other".
  if (!other && (named_ >= max_rows_ || !usable_label(method))) return at(route, "other");
  if (!other) ++named_;
  // First sight of this pair: the one allocation, kept for the shard's life.
  return map_.try_emplace(Key{std::string(route), std::string(method)}).first->second;
}

std::vector<MethodRow> MethodTable::rows() const {
  std::vector<MethodRow> out;
  out.reserve(map_.size());
  for (const auto& [k, c] : map_) out.push_back({k.route, k.method, c});
  return out;
}

std::string_view route_label(const Context& ctx, const CallRecord& r) {
  if (r.cluster < 0) return "none";
  if (r.route < 0) return "default";
  // The record's indices are those of the snapshot the call started under (a reload may have
  // come since); a listener index past it is a removed listener's.
  const config::Config& cfg = ctx.call_config();
  if (r.listener >= cfg.listeners.size()) return "default";
  const auto& routes = cfg.listeners[r.listener].routes;
  if (static_cast<size_t>(r.route) >= routes.size()) return "default";
  return routes[static_cast<size_t>(r.route)].prefix;
}

std::string_view method_label(const CallRecord& r) {
  if (!r.grpc) return "non_grpc";
  if (r.cluster < 0) return "other";
  return r.path;  // MethodTable::at folds paths that make no good label into "other"
}

bool usable_label(std::string_view method) {
  if (method.empty() || method.size() > kMaxMethodLabel) return false;
  // Label values must be UTF-8; printable ASCII also keeps them readable.
  return std::all_of(method.begin(), method.end(),
                     [](char ch) { return ch >= 0x20 && ch <= 0x7e; });
}

namespace {
size_t latency_bucket(int64_t ns) {
  // The first bound >= ns ("le"); past the last: the +Inf bucket.
  return static_cast<size_t>(
      std::lower_bound(kLatencyBoundsNs.begin(), kLatencyBoundsNs.end(), ns) -
      kLatencyBoundsNs.begin());
}
}  // namespace

namespace {
// The cluster a call went to, in the running numbering: the record's index is that of the
// snapshot the call started under, which differs only for calls that spanned a reload. Null
// when a reload removed it.
ClusterState* call_cluster(Context& ctx, const CallRecord& r) {
  if (r.cluster < 0) return nullptr;
  const size_t i = static_cast<size_t>(r.cluster);
  const config::Config& started = ctx.call_config();
  if (&started == &ctx.config()) return i < ctx.cluster_count() ? &ctx.cluster(i) : nullptr;
  if (i >= started.clusters.size()) return nullptr;
  for (size_t k = 0; k < ctx.cluster_count(); ++k) {
    if (ctx.cluster(k).config->name == started.clusters[i].name) return &ctx.cluster(k);
  }
  return nullptr;
}
}  // namespace

void count_call(Context& ctx, const CallRecord& r) {
  const size_t code = status_slot(r.grpc_status);
  if (ClusterState* cs = call_cluster(ctx, r)) {
    ClusterCounters& c = cs->counters;
    ++c.calls_ended[code];
    for (size_t i = 0; i < kRetryReasons; ++i) c.retries[i] += r.retries_by[i];
    c.hedges += r.hedges;
    c.replays += r.replays;
    c.budget_refusals += r.budget_refusals;
  }
  // A call that ended before its headers were complete has no start: it took no time.
  const int64_t ns = r.start_ns > 0 && r.end_ns > r.start_ns ? r.end_ns - r.start_ns : 0;
  MethodCounters& m = ctx.stats().methods.at(route_label(ctx, r), method_label(r));
  ++m.calls[code];
  ++m.latency[latency_bucket(ns)];
  m.latency_sum_ns += static_cast<uint64_t>(ns);
}

}  // namespace ringlb::core::proxy

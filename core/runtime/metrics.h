#pragma once
// Prometheus metrics (the admin's GET /metrics): render_metrics turns the shards' snapshots
// (their counters, summed over shards here) and what the control thread keeps (config, DNS
// refresh counts, eligibility, the io backend) into the text exposition format 0.0.4. Every
// metric family is listed, with its labels, in metrics.cc. Owner: the control thread (the
// shards' counters arrive as copies, ShardSnapshot).
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::discovery {
struct LookupResult;
}

namespace ringlb::core::runtime {

class Controller;
struct ShardSnapshot;

/// How one DNS refresh of a cluster ended (ringlb_dns_refreshes_total's result label).
enum class DnsResult : uint8_t {
  kOk,        // records with usable addresses
  kEmpty,     // an answer without usable records (NODATA, no address of the wanted type)
  kNxdomain,  // the name does not exist
  kTimeout,   // no server answered in time
  kError,     // SERVFAIL, REFUSED, a malformed answer, a transport error
};
inline constexpr size_t kDnsResults = 5;
/// "ok", "empty", "nxdomain", "timeout", "error".
std::string_view dns_result_label(size_t result);
/// What a refresh's final result (Controller::finish) counts as.
DnsResult dns_result_of(const discovery::LookupResult& result);

/// One DNS cluster's refreshes, by DnsResult. Kept by the Controller, by cluster name.
struct DnsRefreshCounters {
  std::array<uint64_t, kDnsResults> results{};
};

/// The whole /metrics body (text format 0.0.4: "text/plain; version=0.0.4; charset=utf-8").
/// `shards`: the snapshots that answered a collection (Controller::collect); shards that did not
/// are counted in ringlb_shards_missing and their counters are absent from the sums.
/// Control thread.
std::string render_metrics(const Controller& controller,
                           const std::vector<std::unique_ptr<ShardSnapshot>>& shards);

/// Process figures from /proc/self (Linux). Any thread.
struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  double start_time = 0;   // seconds since the Unix epoch
  uint64_t rss_bytes = 0;  // resident set
  uint64_t vm_bytes = 0;   // virtual memory size
  uint64_t open_fds = 0;   // entries in /proc/self/fd
  uint64_t max_fds = 0;    // RLIMIT_NOFILE (soft)
  bool ok = false;         // /proc/self/stat was read
};
ProcessStats read_process_stats();

}  // namespace ringlb::core::runtime

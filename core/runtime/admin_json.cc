// GET /endpoints: the controller's view (config, DNS state, eligibility decided for every shard)
// merged with what each shard reported in its snapshot. Owner: the control thread.
#include <algorithm>
#include <map>
#include <unordered_map>

#include "core/base/json.h"
#include "core/runtime/admin.h"
#include "core/runtime/control.h"
#include "lb/eligibility.h"

namespace ringlb::core::runtime {
namespace {

const char* lb_name(config::LbPolicy p) {
  return p == config::LbPolicy::kP2c ? "p2c" : "round_robin";
}

// One endpoint as every shard that knows it sees it.
struct Merged {
  std::string name, key;
  bool eligible = true;  // eligible on every shard that reported it
  bool removed = false;  // draining on some shard: it left the set
  uint16_t weight_permille = 1000;
  uint64_t outstanding = 0;
  uint64_t connections = 0;
  unsigned shards = 0;
};

std::vector<Merged> merge(const std::string& cluster,
                          const std::vector<std::unique_ptr<ShardSnapshot>>& snapshots) {
  std::vector<Merged> out;
  std::unordered_map<std::string, size_t> index;  // by key
  for (const auto& s : snapshots) {
    for (const ClusterView& cv : s->clusters) {
      if (cv.name != cluster) continue;
      for (const EndpointView& e : cv.endpoints) {
        auto [it, fresh] = index.emplace(e.key, out.size());
        if (fresh) out.push_back({e.name, e.key});
        Merged& m = out[it->second];
        m.eligible &= e.ineligible == 0 && !e.removed;
        m.removed |= e.removed;
        m.weight_permille = std::min(m.weight_permille, e.weight_permille);
        m.outstanding += e.outstanding;
        m.connections += e.connections;
        ++m.shards;
      }
    }
  }
  return out;
}

void write_dns(base::JsonWriter& w, const Controller::DnsStatus& d, int64_t now_ns) {
  w.key("dns").begin_object();
  w.key("name").value(d.name);
  w.key("members").value(static_cast<uint64_t>(d.members));
  w.key("last_result").value(d.last_result);
  w.key("last_refresh_age_seconds");
  if (d.last_refresh_ns == 0) {
    w.null();
  } else {
    w.value(static_cast<double>(now_ns - d.last_refresh_ns) / 1e9);
  }
  w.end_object();
}

void write_endpoint(base::JsonWriter& w, const Merged& m, const Controller::EndpointEligibility* e,
                    int64_t now_ns) {
  uint8_t bits = e != nullptr ? e->bits : 0;
  bool ejected = (bits & lb::kEjected) != 0;
  w.begin_object();
  w.key("address").value(m.name);
  w.key("eligible").value(m.eligible);
  w.key("health").value((bits & lb::kUnhealthy) != 0 ? "unhealthy" : "healthy");
  w.key("ejected").value(ejected);
  w.key("ejection_seconds_left");
  if (ejected && e->outlier.ejected_until_ns != 0) {
    w.value(static_cast<double>(std::max<int64_t>(0, e->outlier.ejected_until_ns - now_ns)) / 1e9);
  } else {
    w.null();
  }
  if (e != nullptr) w.key("ejections").value(e->ejections);
  w.key("slow_start_weight").value(m.weight_permille / 1000.0);
  w.key("draining").value(m.removed);
  w.key("calls_in_flight").value(m.outstanding);
  w.key("connections").value(m.connections);
  w.key("shards").value(m.shards);
  w.end_object();
}

}  // namespace

std::string endpoints_json(const Controller& controller,
                           const std::vector<std::unique_ptr<ShardSnapshot>>& snapshots,
                           const std::vector<unsigned>& missing, int64_t now_ns) {
  const config::Config& cfg = controller.config();
  std::vector<Controller::DnsStatus> dns = controller.dns_status();
  base::JsonWriter w;
  w.begin_object();
  w.key("shards").value(static_cast<uint64_t>(controller.shard_count()));
  w.key("shards_missing").begin_array();
  for (unsigned s : missing) w.value(s);
  w.end_array();
  w.key("clusters").begin_array();
  for (size_t i = 0; i < cfg.clusters.size(); ++i) {
    const config::ClusterConfig& c = cfg.clusters[i];
    w.begin_object();
    w.key("name").value(c.name);
    w.key("lb").value(lb_name(c.lb));
    auto d = std::find_if(dns.begin(), dns.end(),
                          [&](const Controller::DnsStatus& s) { return s.cluster == c.name; });
    if (d != dns.end()) write_dns(w, *d, now_ns);
    const auto& eligibility = controller.eligibility(i);
    w.key("endpoints").begin_array();
    for (const Merged& m : merge(c.name, snapshots)) {
      auto e = eligibility.find(m.key);
      write_endpoint(w, m, e == eligibility.end() ? nullptr : &e->second, now_ns);
    }
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.take();
}

}  // namespace ringlb::core::runtime

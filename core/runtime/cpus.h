#pragma once
// How many shards "workers = auto" means. Control thread, at start-up.
#include <string>

namespace ringlb::core::runtime {

/// CPUs this process may use: the affinity mask, capped by every cgroup v2 `cpu.max` quota on
/// the way up from this process's cgroup (ceil(quota/period)); at least 1. `why` says which
/// limit decided, for the log.
unsigned usable_cpus(std::string* why = nullptr);
/// The same from explicit inputs (for tests): affinity count and cpu.max texts, innermost first.
unsigned usable_cpus_from(unsigned affinity, const std::string* cpu_max_texts, size_t n);

}  // namespace ringlb::core::runtime

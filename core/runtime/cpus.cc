#include "core/runtime/cpus.h"

#include <sched.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace ringlb::core::runtime {
namespace {

// "max 100000" -> 0 (no limit); "25000 100000" -> ceil(0.25) = 1.
unsigned quota_cpus(const std::string& text) {
  std::istringstream in(text);
  std::string quota;
  long period = 100000;
  in >> quota >> period;
  if (quota.empty() || quota == "max" || period <= 0) return 0;
  long q = std::strtol(quota.c_str(), nullptr, 10);
  if (q <= 0) return 0;
  return static_cast<unsigned>((q + period - 1) / period);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

unsigned usable_cpus_from(unsigned affinity, const std::string* cpu_max_texts, size_t n) {
  unsigned cpus = affinity == 0 ? 1 : affinity;
  for (size_t i = 0; i < n; ++i) {
    unsigned q = quota_cpus(cpu_max_texts[i]);
    if (q != 0 && q < cpus) cpus = q;
  }
  return cpus < 1 ? 1 : cpus;
}

unsigned usable_cpus(std::string* why) {
  cpu_set_t set;
  unsigned affinity = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) affinity = CPU_COUNT(&set);
  // cgroup v2: "0::/some/path"; walk from there up to the root.
  std::vector<std::string> texts;
  std::string line = read_file("/proc/self/cgroup");
  if (auto pos = line.find("0::"); pos != std::string::npos) {
    std::string path = line.substr(pos + 3);
    path = path.substr(0, path.find('\n'));
    for (;;) {
      std::string t = read_file("/sys/fs/cgroup" + path + "/cpu.max");
      if (!t.empty()) texts.push_back(t);
      if (path.empty() || path == "/") break;
      path = path.substr(0, path.rfind('/'));
    }
  }
  unsigned n = usable_cpus_from(affinity, texts.data(), texts.size());
  if (why != nullptr) {
    *why = "affinity " + std::to_string(affinity) + " CPUs";
    if (n < affinity) *why += ", cgroup cpu.max quota allows " + std::to_string(n);
  }
  return n;
}

}  // namespace ringlb::core::runtime

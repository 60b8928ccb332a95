// The affinity mask and the cgroup quotas (v2 and v1); the ECS task metadata is in cpus_ecs.cc.
#include "core/runtime/cpus.h"

#include <sched.h>
#include <sys/stat.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace ringlb::core::runtime {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A whole decimal integer, or nullopt.
std::optional<int64_t> integer(std::string_view s) {
  s = trim(s);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

unsigned ceil_div(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return 0;
  int64_t n = quota / period + (quota % period != 0 ? 1 : 0);
  return n > 4096 ? 4096 : static_cast<unsigned>(n);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t k) { return s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct Mount {
  bool v2 = false;
  std::string root;   // the cgroup this mount shows at `point` ("/" unless bind-mounted)
  std::string point;  // where it is mounted
};

// The cgroup2 mounts and the v1 mounts that carry the cpu controller.
std::vector<Mount> cgroup_mounts(std::string_view mountinfo) {
  std::vector<Mount> out;
  for (std::string_view line : split(mountinfo, '\n')) {
    std::vector<std::string_view> f = split(line, ' ');
    size_t dash = 0;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash < 5 || dash + 3 >= f.size()) continue;  // ... ROOT POINT ... - TYPE SOURCE OPTS
    std::string_view type = f[dash + 1];
    bool cpu = false;
    if (type == "cgroup") {
      for (std::string_view opt : split(f[dash + 3], ',')) cpu |= opt == "cpu";
    }
    if (type == "cgroup2" || cpu)
      out.push_back({type == "cgroup2", unescape(f[3]), unescape(f[4])});
  }
  if (mountinfo.empty()) {  // unreadable: where systemd and Docker put them
    out.push_back({true, "/", "/sys/fs/cgroup"});
    out.push_back({false, "/", "/sys/fs/cgroup/cpu,cpuacct"});
    out.push_back({false, "/", "/sys/fs/cgroup/cpu"});
  }
  return out;
}

// The process's cgroup path in the v2 hierarchy ("0::PATH") or the v1 one with the cpu
// controller ("N:cpu,cpuacct:PATH"); "" when there is none.
std::string cgroup_path(std::string_view proc_cgroup, bool v2) {
  for (std::string_view line : split(proc_cgroup, '\n')) {
    size_t c1 = line.find(':');
    size_t c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path(trim(line.substr(c2 + 1)));
    if (v2 && line.substr(0, c1) == "0" && controllers.empty()) return path;
    if (!v2) {
      for (std::string_view c : split(controllers, ',')) {
        if (c == "cpu") return path;
      }
    }
  }
  return "";
}

// The directory under `m` that holds `path`'s files (as the process sees them).
std::string cgroup_dir(const Mount& m, const std::string& path, const std::string& root) {
  std::string rel;
  if (path.find("/..") != std::string::npos) {
    // Outside our cgroup namespace's root: nothing of it is visible.
  } else if (m.root == "/") {
    rel = path;
  } else if (path == m.root || path.starts_with(m.root + "/")) {
    rel = path.substr(m.root.size());
  }
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  std::string dir = m.point + rel;
  // Not there (a namespace or a bind mount shows less than the path names): the mount point
  // is this process's own cgroup, the most that can be seen.
  if (rel.empty() || !is_dir(root + dir)) dir = m.point;
  return dir;
}

// The tightest quota in `dir` and its parents up to the mount point.
std::optional<CpuLimit> walk_up(const Mount& m, std::string dir, const std::string& root) {
  std::optional<CpuLimit> best;
  for (;;) {
    unsigned n = 0;
    std::string why;
    if (m.v2) {
      std::string file = dir + "/cpu.max";
      std::string text = read_file(root + file);
      n = cpus_from_cpu_max(text);
      why = "cgroup v2 cpu.max at " + file + ": " + std::string(trim(text));
    } else {
      std::string quota = read_file(root + dir + "/cpu.cfs_quota_us");
      std::string period = read_file(root + dir + "/cpu.cfs_period_us");
      n = cpus_from_cfs(quota, period);
      why = "cgroup v1 cfs quota at " + dir + ": " + std::string(trim(quota)) + "/" +
            std::string(trim(period));
    }
    if (n != 0 && (!best || n < best->cpus)) best = CpuLimit{n, why};
    if (dir.size() <= m.point.size()) break;
    size_t slash = dir.rfind('/');
    if (slash == std::string::npos || slash < m.point.size()) break;
    dir.resize(slash);
  }
  return best;
}

}  // namespace

unsigned cpus_from_cpu_max(std::string_view text) {
  std::vector<std::string_view> f = split(trim(text), ' ');
  if (f.empty() || f[0] == "max") return 0;
  auto quota = integer(f[0]);
  auto period = f.size() > 1 ? integer(f[1]) : std::optional<int64_t>(100000);
  if (!quota || !period) return 0;
  return ceil_div(*quota, *period);
}

unsigned cpus_from_cfs(std::string_view quota, std::string_view period) {
  auto q = integer(quota);
  auto p = trim(period).empty() ? std::optional<int64_t>(100000) : integer(period);
  if (!q || !p) return 0;
  return ceil_div(*q, *p);  // -1: no limit
}

std::optional<CpuLimit> cgroup_cpu_limit(std::string_view proc_cgroup, std::string_view mountinfo,
                                         const std::string& root) {
  std::optional<CpuLimit> best;
  for (const Mount& m : cgroup_mounts(mountinfo)) {
    std::string path = cgroup_path(proc_cgroup, m.v2);
    if (path.empty()) continue;  // not in that hierarchy (v1 only, or v2 only)
    std::optional<CpuLimit> l = walk_up(m, cgroup_dir(m, path, root), root);
    if (l && (!best || l->cpus < best->cpus)) best = std::move(l);
  }
  return best;
}

CpuLimit decide_cpus(unsigned affinity, const std::optional<CpuLimit>& cgroup,
                     std::optional<double> ecs_cpu) {
  CpuLimit out{affinity == 0 ? 1 : affinity, "affinity " + std::to_string(affinity) + " CPUs"};
  std::vector<std::string> others;
  auto consider = [&](unsigned n, std::string why) {
    if (n < out.cpus) {
      others.insert(others.begin(), std::move(out.why));
      out = CpuLimit{n, std::move(why)};
    } else {
      others.push_back(std::move(why));
    }
  };
  if (cgroup) {
    consider(cgroup->cpus, cgroup->why);
  } else {
    others.push_back("no cgroup CPU quota");
  }
  if (ecs_cpu) {
    double c = std::ceil(*ecs_cpu);
    char buf[64];
    snprintf(buf, sizeof buf, "ECS task metadata Limits.CPU=%g", *ecs_cpu);
    consider(c < 1 ? 1 : c > 4096 ? 4096 : static_cast<unsigned>(c), buf);
  }
  if (out.cpus < 1) out.cpus = 1;
  for (size_t i = 0; i < others.size(); ++i) out.why += (i ? ", " : "; also ") + others[i];
  return out;
}

unsigned usable_cpus(std::string* why) {
  cpu_set_t set;
  unsigned affinity = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) affinity = CPU_COUNT(&set);
  std::optional<CpuLimit> cgroup =
      cgroup_cpu_limit(read_file("/proc/self/cgroup"), read_file("/proc/self/mountinfo"), "");
  CpuLimit l = decide_cpus(affinity, cgroup, ecs_task_cpu_from_env());
  if (why != nullptr) *why = "auto from " + l.why;
  return l.cpus;
}

}  // namespace ringlb::core::runtime

// workers = "auto": quota arithmetic, cgroup v2 and v1 trees (nested, namespaced, bind-mounted,
// hybrid) laid out in a temporary directory standing for "/", the ECS task metadata document's
// task-level Limits.CPU (and the malformed ones), and how the three limits combine.
#include "core/runtime/cpus.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace rt = ringlb::core::runtime;
namespace fs = std::filesystem;

namespace {

// A scratch directory that stands for "/"; files are written below it.
class FakeRoot {
 public:
  FakeRoot() {
    std::string tmpl = (fs::temp_directory_path() / "ringlb-cpus-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir_ = tmpl;
  }
  ~FakeRoot() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write(const std::string& path, const std::string& text) {
    fs::path p = dir_ + path;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void mkdir(const std::string& path) { fs::create_directories(dir_ + path); }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

constexpr const char* kV2Mount = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
constexpr const char* kV1Mounts =
    "31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n"
    "36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:17 - cgroup cgroup rw,cpu,cpuacct\n"
    "37 31 0:34 / /sys/fs/cgroup/memory rw,nosuid shared:18 - cgroup cgroup rw,memory\n";

unsigned cpus_of(const std::optional<rt::CpuLimit>& l) {
  return l ? l->cpus : 0;
}

}  // namespace

TEST_CASE("cpus: quota arithmetic, v2 cpu.max and v1 cfs") {
  CHECK(rt::cpus_from_cpu_max("max 100000\n") == 0);
  CHECK(rt::cpus_from_cpu_max("25000 100000\n") == 1);
  CHECK(rt::cpus_from_cpu_max("100000 100000") == 1);
  CHECK(rt::cpus_from_cpu_max("150000 100000") == 2);
  CHECK(rt::cpus_from_cpu_max("200000 100000") == 2);
  CHECK(rt::cpus_from_cpu_max("200001 100000") == 3);
  CHECK(rt::cpus_from_cpu_max("") == 0);
  CHECK(rt::cpus_from_cpu_max("garbage") == 0);
  CHECK(rt::cpus_from_cpu_max("50000 0") == 0);
  CHECK(rt::cpus_from_cfs("-1\n", "100000\n") == 0);
  CHECK(rt::cpus_from_cfs("25000\n", "100000\n") == 1);
  CHECK(rt::cpus_from_cfs("150000", "100000") == 2);
  CHECK(rt::cpus_from_cfs("50000", "50000") == 1);
  CHECK(rt::cpus_from_cfs("", "100000") == 0);  // unreadable
  CHECK(rt::cpus_from_cfs("x", "100000") == 0);
}

TEST_CASE("cpus: cgroup v2, nested: the tightest quota on the way up wins, with its path") {
  FakeRoot r;
  r.write("/sys/fs/cgroup/cpu.max", "");  // the real root has none; an empty file reads as none
  r.write("/sys/fs/cgroup/ecs/cpu.max", "max 100000\n");
  r.write("/sys/fs/cgroup/ecs/task/cpu.max", "25000 100000\n");
  r.write("/sys/fs/cgroup/ecs/task/ctr/cpu.max", "max 100000\n");
  auto l = rt::cgroup_cpu_limit("0::/ecs/task/ctr\n", kV2Mount, r.dir());
  REQUIRE(l);
  CHECK(l->cpus == 1);
  CHECK(l->why == "cgroup v2 cpu.max at /sys/fs/cgroup/ecs/task/cpu.max: 25000 100000");

  // The container's own quota is tighter than its parent's: that one.
  r.write("/sys/fs/cgroup/ecs/task/cpu.max", "300000 100000\n");
  r.write("/sys/fs/cgroup/ecs/task/ctr/cpu.max", "150000 100000\n");
  CHECK(cpus_of(rt::cgroup_cpu_limit("0::/ecs/task/ctr\n", kV2Mount, r.dir())) == 2);

  // "max" everywhere: no limit.
  r.write("/sys/fs/cgroup/ecs/task/cpu.max", "max 100000\n");
  r.write("/sys/fs/cgroup/ecs/task/ctr/cpu.max", "max 100000\n");
  CHECK_FALSE(rt::cgroup_cpu_limit("0::/ecs/task/ctr\n", kV2Mount, r.dir()));
}

TEST_CASE("cpus: cgroup v2 in a cgroup namespace: path \"/\" reads the mount's own cpu.max") {
  FakeRoot r;
  r.write("/sys/fs/cgroup/cpu.max", "50000 100000\n");
  auto l = rt::cgroup_cpu_limit("0::/\n", kV2Mount, r.dir());
  REQUIRE(l);
  CHECK(l->cpus == 1);
  CHECK(l->why == "cgroup v2 cpu.max at /sys/fs/cgroup/cpu.max: 50000 100000");
  // A path outside the namespace root ("/../x") or not visible at all: the mount itself.
  CHECK(cpus_of(rt::cgroup_cpu_limit("0::/../sibling\n", kV2Mount, r.dir())) == 1);
  CHECK(cpus_of(rt::cgroup_cpu_limit("0::/docker/abc\n", kV2Mount, r.dir())) == 1);
}

TEST_CASE("cpus: cgroup v1 (Fargate platform 1.4): cfs quota under the cpu controller") {
  FakeRoot r;
  const std::string base = "/sys/fs/cgroup/cpu,cpuacct";
  r.write(base + "/cpu.cfs_quota_us", "-1\n");
  r.write(base + "/cpu.cfs_period_us", "100000\n");
  r.write(base + "/ecs/cpu.cfs_quota_us", "-1\n");
  r.write(base + "/ecs/cpu.cfs_period_us", "100000\n");
  r.write(base + "/ecs/TASK/cpu.cfs_quota_us", "25000\n");
  r.write(base + "/ecs/TASK/cpu.cfs_period_us", "100000\n");
  r.write(base + "/ecs/TASK/CTR/cpu.cfs_quota_us", "-1\n");
  r.write(base + "/ecs/TASK/CTR/cpu.cfs_period_us", "100000\n");
  const std::string cg =
      "11:memory:/ecs/TASK/CTR\n"
      "4:cpu,cpuacct:/ecs/TASK/CTR\n"
      "1:name=systemd:/ecs/TASK/CTR\n";
  auto l = rt::cgroup_cpu_limit(cg, kV1Mounts, r.dir());
  REQUIRE(l);
  CHECK(l->cpus == 1);
  CHECK(l->why == "cgroup v1 cfs quota at " + base + "/ecs/TASK: 25000/100000");

  SUBCASE("150000/100000 -> 2") {
    r.write(base + "/ecs/TASK/cpu.cfs_quota_us", "150000\n");
    CHECK(cpus_of(rt::cgroup_cpu_limit(cg, kV1Mounts, r.dir())) == 2);
  }
  SUBCASE("-1 everywhere: no limit") {
    r.write(base + "/ecs/TASK/cpu.cfs_quota_us", "-1\n");
    CHECK_FALSE(rt::cgroup_cpu_limit(cg, kV1Mounts, r.dir()));
  }
  SUBCASE("no mountinfo: the usual mount points") {
    CHECK(cpus_of(rt::cgroup_cpu_limit(cg, "", r.dir())) == 1);
  }
  SUBCASE("a separate cpu mount (/sys/fs/cgroup/cpu), as this kind of host has") {
    FakeRoot r2;
    r2.write("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "50000\n");
    r2.write("/sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n");
    const char* mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
    CHECK(cpus_of(rt::cgroup_cpu_limit("1:cpu:/job\n2:cpuacct:/\n", mi, r2.dir())) == 1);
  }
}

TEST_CASE("cpus: cgroup v1 bind-mounted or namespaced: only the container's own cgroup") {
  FakeRoot r;
  // Docker without a cgroup namespace: the mount's root is the container's cgroup and only it
  // is visible at the mount point; the path in /proc/self/cgroup is the full one.
  r.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "150000\n");
  r.write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  const char* bind =
      "36 31 0:33 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n";
  auto l = rt::cgroup_cpu_limit("4:cpu,cpuacct:/docker/abc\n", bind, r.dir());
  REQUIRE(l);
  CHECK(l->cpus == 2);
  CHECK(l->why == "cgroup v1 cfs quota at /sys/fs/cgroup/cpu,cpuacct: 150000/100000");
  // Below the mount's root: the part under it.
  r.write("/sys/fs/cgroup/cpu,cpuacct/sub/cpu.cfs_quota_us", "25000\n");
  r.write("/sys/fs/cgroup/cpu,cpuacct/sub/cpu.cfs_period_us", "100000\n");
  CHECK(cpus_of(rt::cgroup_cpu_limit("4:cpu,cpuacct:/docker/abc/sub\n", bind, r.dir())) == 1);
  // A cgroup namespace: the path is "/", the mount's root too.
  CHECK(cpus_of(rt::cgroup_cpu_limit("4:cpu,cpuacct:/\n", kV1Mounts, r.dir())) == 2);
}

TEST_CASE("cpus: hybrid host: v1 cpu controller and an empty unified hierarchy") {
  FakeRoot r;
  r.write("/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "100000\n");
  r.write("/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_period_us", "100000\n");
  r.mkdir("/sys/fs/cgroup/unified/svc");
  const std::string mi = std::string(kV1Mounts) +
                         "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n";
  auto l = rt::cgroup_cpu_limit("4:cpu,cpuacct:/svc\n0::/svc\n", mi, r.dir());
  REQUIRE(l);
  CHECK(l->cpus == 1);
  // Nothing at all to read: no limit, no crash.
  FakeRoot empty;
  CHECK_FALSE(rt::cgroup_cpu_limit("4:cpu,cpuacct:/svc\n0::/svc\n", mi, empty.dir()));
  CHECK_FALSE(rt::cgroup_cpu_limit("", "", empty.dir()));
}

TEST_CASE("cpus: ECS task metadata: the task-level Limits.CPU, whatever the layout") {
  // Trimmed from a Fargate v4 /task answer: containers carry their own Limits (CPU units).
  const char* doc = R"({
    "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
    "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c",
    "Family": "ringlb", "Revision": "7", "DesiredStatus": "RUNNING",
    "Containers": [ { "Name": "ringlb", "Limits": { "CPU": 2, "Memory": 0 },
                      "Labels": {"a\"b": "c\\d"}, "Networks": [ {"IPv4Addresses": ["10.0.2.106"]} ] } ],
    "Limits" : {
        "Memory" : 512 ,
        "CPU" : 0.25
    },
    "PullStartedAt": "2020-10-02T00:43:06.202617438Z", "ClockDrift": {"ClockErrorBound": 0.5,
    "ReferenceTimestamp": "2021-09-07T16:57:44Z", "ClockSynchronizationStatus": "SYNCHRONIZED"},
    "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496}, "Ok": true, "No": null
  })";
  auto cpu = rt::ecs_task_cpu(doc);
  REQUIRE(cpu);
  REQUIRE(*cpu);
  CHECK(**cpu == doctest::Approx(0.25));
  CHECK(**rt::ecs_task_cpu(R"({"Limits":{"CPU":2}})") == doctest::Approx(2.0));
  CHECK(**rt::ecs_task_cpu("{\"Limits\":{\"CPU\":1.5e0,\"Memory\":3072}}") == doctest::Approx(1.5));
  // Limits before the containers, on one line.
  CHECK(**rt::ecs_task_cpu(R"({"Limits":{"CPU":4},"Containers":[{"Limits":{"CPU":0}}]})") ==
        doctest::Approx(4.0));
}

TEST_CASE("cpus: ECS task metadata: absent, or malformed") {
  // No task size (EC2 tasks may have none): not an error, no cap.
  auto none = rt::ecs_task_cpu(R"({"Containers":[{"Limits":{"CPU":0.5}}]})");
  REQUIRE(none);
  CHECK_FALSE(*none);
  CHECK_FALSE(*rt::ecs_task_cpu(R"({"Limits":{"Memory":512}})"));
  CHECK_FALSE(*rt::ecs_task_cpu("{}"));
  CHECK_FALSE(*rt::ecs_task_cpu(R"({"Limits":{}})"));
  for (const char* bad :
       {"", "null", "[]", "{", R"({"Limits":{"CPU":0.25})", R"({"Limits":{"CPU":0.25}} trailing)",
        R"({"Limits" {"CPU":1}})", R"({"Limits":{"CPU":.5}})", R"({"a":tru})",
        R"({"a":"unterminated})", "{\"a\":\"ctl\x01\"}", R"({"Limits":{"CPU":1,}})"}) {
    CAPTURE(bad);
    auto r = rt::ecs_task_cpu(bad);
    CHECK_FALSE(r.has_value());
  }
  CHECK(rt::ecs_task_cpu(R"({"Limits":{"CPU":"0.25"}})").error().message ==
        "Limits.CPU is not a number");
  CHECK(rt::ecs_task_cpu(R"({"Limits":{"CPU":0}})").error().message ==
        "Limits.CPU is not positive");
  CHECK(rt::ecs_task_cpu(R"({"Limits":{"CPU":-1}})").error().message ==
        "Limits.CPU is not positive");
  // Deep nesting is refused, not a stack overflow.
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_FALSE(rt::ecs_task_cpu(deep).has_value());
}

TEST_CASE("cpus: the three limits combined; the log says which decided") {
  rt::CpuLimit a = rt::decide_cpus(2, std::nullopt, std::nullopt);
  CHECK(a.cpus == 2);
  CHECK(a.why == "affinity 2 CPUs; also no cgroup CPU quota");
  rt::CpuLimit e = rt::decide_cpus(2, std::nullopt, 0.25);
  CHECK(e.cpus == 1);
  CHECK(e.why == "ECS task metadata Limits.CPU=0.25; also affinity 2 CPUs, no cgroup CPU quota");
  rt::CpuLimit two = rt::decide_cpus(2, std::nullopt, 2.0);
  CHECK(two.cpus == 2);
  CHECK(two.why == "affinity 2 CPUs; also no cgroup CPU quota, ECS task metadata Limits.CPU=2");
  CHECK(rt::decide_cpus(8, std::nullopt, 2.0).cpus == 2);
  CHECK(rt::decide_cpus(8, std::nullopt, 1.01).cpus == 2);  // ceil
  CHECK(rt::decide_cpus(8, std::nullopt, 0.001).cpus == 1);
  rt::CpuLimit cg{1, "cgroup v1 cfs quota at /x: 25000/100000"};
  rt::CpuLimit c = rt::decide_cpus(4, cg, 2.0);
  CHECK(c.cpus == 1);
  CHECK(c.why ==
        "cgroup v1 cfs quota at /x: 25000/100000; also affinity 4 CPUs, ECS task metadata "
        "Limits.CPU=2");
  // The ECS limit below the cgroup's: it decides, and both others are named.
  rt::CpuLimit d =
      rt::decide_cpus(4, rt::CpuLimit{3, "cgroup v2 cpu.max at /y: 300000 100000"}, 0.5);
  CHECK(d.cpus == 1);
  CHECK(d.why ==
        "ECS task metadata Limits.CPU=0.5; also cgroup v2 cpu.max at /y: 300000 100000, "
        "affinity 4 CPUs");
  CHECK(rt::decide_cpus(0, std::nullopt, std::nullopt).cpus == 1);  // affinity unreadable
}

#pragma once
// How many shards "workers = auto" means. Control thread, at start-up, before any shard runs
// (the ECS task metadata is a blocking GET of at most 1 s).
//
// Three limits, the smallest wins: the affinity mask; every cgroup CPU quota from this process's
// cgroup up to the root of what it can see (v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
// `cpu.cfs_period_us`; Fargate platform 1.4 runs cgroup v1); and on ECS the task-level
// `Limits.CPU` from the task metadata endpoint, because a container's own cgroup may carry no
// quota while its task is held to 0.25 vCPU (the task's cgroup is above the container's and,
// inside the container's cgroup namespace or bind mount, invisible).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.h"

namespace ringlb::core::runtime {

/// A CPU count and what decided it, for the start-up log.
struct CpuLimit {
  unsigned cpus = 0;
  std::string why;  // "cgroup v2 cpu.max at /sys/fs/cgroup/a/cpu.max: 25000 100000"
};

/// A v2 `cpu.max` text: "25000 100000" -> ceil(0.25) = 1; "max 100000" or junk -> 0 (no limit).
unsigned cpus_from_cpu_max(std::string_view text);
/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` texts: "150000", "100000" -> 2; "-1" -> 0.
unsigned cpus_from_cfs(std::string_view quota, std::string_view period);

/// The tightest cgroup CPU quota over this process's cgroup and its ancestors, v2 and v1 alike.
/// Inputs are injectable: the texts of /proc/self/cgroup and /proc/self/mountinfo (empty: the
/// usual mount points are assumed), and `root`, the directory that stands for "/" when cgroup
/// files are read ("" for the real one; tests point it at a tree of their own). A cgroup path
/// that is not below its mount's root, or not there at all (a cgroup namespace shows "/", a bind
/// mount shows only the container's own cgroup), is read at the mount point itself. nullopt: no
/// quota anywhere.
std::optional<CpuLimit> cgroup_cpu_limit(std::string_view proc_cgroup, std::string_view mountinfo,
                                         const std::string& root);

/// The task-level `"Limits": {"CPU": 0.25, ...}` of an ECS task metadata v4 `/task` document, in
/// vCPUs (the containers' own `Limits`, nested in `Containers`, are not it). nullopt when the
/// document has none (EC2 tasks may have no task size); an error when it is not a JSON object
/// or the value is not a positive number.
base::Result<std::optional<double>> ecs_task_cpu(std::string_view json);

/// With ECS_CONTAINER_METADATA_URI_V4 set: GET $URI/task within 1 s and its task-level
/// Limits.CPU. Any failure (unreachable, timeout, not 200, malformed) is logged as a warning and
/// gives nullopt, as does an unset variable (silently).
std::optional<double> ecs_task_cpu_from_env();

/// The decision from its inputs: the affinity count, capped by the cgroup limit and by
/// ceil(`ecs_cpu`); at least 1. `why` names the limit that decided, then "; also " the others.
CpuLimit decide_cpus(unsigned affinity, const std::optional<CpuLimit>& cgroup,
                     std::optional<double> ecs_cpu);

/// CPUs this process may use, from the real affinity mask, /proc and /sys, and (when
/// ECS_CONTAINER_METADATA_URI_V4 is set) GET $URI/task with a 1 s budget: any failure there is
/// logged as a warning and caps nothing. At least 1. `why` is for the log.
unsigned usable_cpus(std::string* why = nullptr);

}  // namespace ringlb::core::runtime

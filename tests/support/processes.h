// Processes and cgroups as e2e tests see them from outside: which processes run below the
// daemon, whether a process seen earlier still runs (a reused pid is told apart by its start
// time; a zombie has ended), and the v1 cgroup trees a daemon made, to check and to sweep.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ember::testing {

struct ProcInfo {
  pid_t ppid = 0;
  char state = 0;
  unsigned long long start = 0;  // start time in clock ticks: tells a reused pid apart
  std::string comm;
};

std::optional<ProcInfo> read_proc(pid_t pid);
// Every live process below `root` (not `root` itself), with its start time.
std::map<pid_t, ProcInfo> descendants(pid_t root);
// True while the process `was` describes runs (not ended, not a zombie awaiting its reaper).
bool still_running(pid_t pid, const ProcInfo& was);
// Waits up to `limit` for every process of `set` to end; returns those still running, and how
// long it took in `took`.
std::vector<pid_t> survivors(const std::map<pid_t, ProcInfo>& set,
                             std::chrono::steady_clock::time_point since,
                             std::chrono::milliseconds limit, std::chrono::milliseconds& took);

// The v1 `ember-<tag>` directories a daemon's log names ("worker cgroups under cgroup v1 at
// ..."); empty under v2 or without cgroups.
std::vector<std::filesystem::path> v1_cgroup_dirs(const std::string& daemon_log);
// Worker cgroups (w-*) below `dirs`.
std::vector<std::filesystem::path> worker_cgroups(const std::vector<std::filesystem::path>& dirs);
// Pids in the cgroup `dir` and below it.
std::vector<pid_t> cgroup_pids(const std::filesystem::path& dir);
// Removes `dirs` and the worker cgroups in them once their processes are gone (up to 2 s), as
// the daemon's next start would: what a test that killed the daemon leaves behind.
void sweep_cgroups(const std::vector<std::filesystem::path>& dirs);

}  // namespace ember::testing

// A cgroup per worker for memory, pids and cpu, under a subtree the daemon owns.
//
// v2 (production, systemd with Delegate=yes): the daemon's own cgroup is delegated to it. The
// daemon moves itself into a leaf `daemon/` (a v2 cgroup with children may hold no process),
// enables the controllers for its children and creates one `w-<id>` per worker; workers are
// cloned straight into theirs (CLONE_INTO_CGROUP) and killed as a whole with `cgroup.kill`.
//
// v1 (hosts with the legacy hierarchies): one `ember-<tag>` directory under the daemon's own
// cgroup in each of the memory, pids and cpu hierarchies, a `w-<id>` per worker in each, the
// worker's pid written into each before it runs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/os/unique_fd.h"

namespace ember::os {

struct CgroupLimits {
  uint64_t memory_bytes = 128ull << 20;  // swap is not allowed on top
  uint32_t max_pids = 256;
  uint32_t cpu_weight = 100;       // share under contention, 1..10000 (v2 scale)
  uint32_t cpu_max_percent = 100;  // of one CPU
};

// What the kernel counted for one cgroup.
struct CgroupEvents {
  uint64_t oom_kills = 0;     // processes killed for memory
  uint64_t pids_limited = 0;  // forks refused at the pids limit
  uint64_t memory_peak = 0;   // bytes, when the kernel reports it
};

class Cgroup {
 public:
  virtual ~Cgroup() = default;  // kills what is left inside and removes the directories
  virtual const std::string& name() const = 0;
  // v2: the directory, for CLONE_INTO_CGROUP; -1 on v1.
  virtual int dir_fd() const = 0;
  // v1: each hierarchy's cgroup.procs, opened for writing the new pid; empty on v2.
  virtual std::vector<int> procs_fds() const = 0;
  virtual CgroupEvents events() const = 0;
  // The most memory the cgroup has used so far, in bytes; 0 when the kernel does not say.
  // One pread of a file kept open: cheap enough to read after every call.
  virtual uint64_t memory_peak() const = 0;
  // The processes inside now.
  virtual std::vector<pid_t> pids() const = 0;
  // Kills every process inside.
  virtual void kill() = 0;
  // Applies `limits` now (the memory limit may go down as well as up).
  virtual Status set_limits(const CgroupLimits& limits) = 0;
  // Changes only the CPU weight (v2 scale); a no-op without the cpu controller.
  virtual void set_cpu_weight(uint32_t weight) = 0;
};

class CgroupTree {
 public:
  enum class Version { kV1, kV2 };
  virtual ~CgroupTree() = default;
  virtual Version version() const = 0;
  // Where the workers' cgroups live, for logs.
  virtual std::string describe() const = 0;
  virtual Result<std::unique_ptr<Cgroup>> create(const std::string& name,
                                                 const CgroupLimits& limits) = 0;
  // Kills and removes every worker cgroup left by an earlier run; returns how many.
  virtual int remove_stale() = 0;

  // The delegated v2 directory `dir`: the calling process (and `also`, the spawner) are moved
  // into `dir/daemon` and the memory, pids and cpu controllers enabled for the children.
  static Result<std::unique_ptr<CgroupTree>> v2(const std::filesystem::path& dir,
                                                std::vector<pid_t> also = {});
  // v1 hierarchies: `roots` are the daemon's own cgroups in the memory, pids and cpu
  // hierarchies; `ember-<tag>` is made in each.
  static Result<std::unique_ptr<CgroupTree>> v1(const std::filesystem::path& memory,
                                                const std::filesystem::path& pids,
                                                const std::filesystem::path& cpu,
                                                const std::string& tag);
  // Finds a writable tree on this host: v2 when /sys/fs/cgroup is a cgroup2 mount whose
  // daemon cgroup has the controllers, v1 otherwise. The error says why neither works.
  static Result<std::unique_ptr<CgroupTree>> detect(
      const std::string& tag, std::vector<pid_t> also = {},
      const std::filesystem::path& fs_root = "/sys/fs/cgroup");
};

// Parses /proc/self/cgroup text: the path of `controller` ("" for the v2 entry "0::").
std::optional<std::string> cgroup_path_of(std::string_view proc_self_cgroup,
                                          std::string_view controller);

}  // namespace ember::os

// The sandbox every worker runs in (DESIGN §2.4), as one object the scheduler asks for workers.
// It owns the spawner helper, probes each layer once at start-up, keeps one network namespace
// and one host uid per function, and gives each worker its own cgroup.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/os/cgroup.h"
#include "ember/os/child_process.h"
#include "ember/os/unique_fd.h"
#include "ember/sandbox/root.h"
#include "ember/sandbox/spawner.h"

namespace ember::sandbox {

struct SandboxOptions {
  std::filesystem::path runtimes_dir;     // bound read-only at /opt/ember/runtime
  std::vector<std::string> interpreters;  // node, python: bound when they live outside /usr
  std::string tag = "default";            // names this daemon's v1 cgroups (one per state dir)
  uid_t uid_base = 600000000;             // host uids for functions: base, base+1, ...
  uint32_t uid_count = 65536;
  uint32_t max_pids = 256;         // processes and threads per worker
  rlim_t max_open_files = 1024;    // per worker process
  uint32_t cpu_max_percent = 100;  // of one CPU, per worker
  bool insecure = false;           // start without network isolation
  // ember-python-zygote to start, and the python3 it stands for; empty: none. Python workers
  // (WorkerSpec::zygote) are then its children (docs/sandbox.md#the-python-zygote).
  std::filesystem::path python_zygote;
  std::string python_path = "/usr/bin/python3";
};

// Which layers are on; the probe at start-up fills it in.
struct Layers {
  bool namespaces = false;  // user, pid, mount, ipc, uts and the pivoted root
  bool network = false;     // a network namespace per function
  bool seccomp = false;
  std::string cgroups;  // "v2", "v1" or "" (rlimits only)
  size_t seccomp_rules = 0;
  std::string summary() const;
};

// What the scheduler knows about the worker it wants.
struct WorkerSpec {
  std::string function;
  std::string bundle_dir;  // host path
  int memory_mb = 128;
  int tmp_mb = 64;
  bool host_network = false;
  // A pre-started worker of no function yet (docs/sandbox.md#pre-initialised-workers): `function`
  // is only a label, `bundle_dir` is empty (/var/task is an empty directory until bind()), and
  // it gets a host uid and a network namespace of its own, kept until it ends.
  bool pooled = false;
  // A python worker: forked from the python zygote when there is one, otherwise started as the
  // request's argv says. Sandboxed the same way either way.
  bool zygote = false;
};

struct Worker {
  os::ChildProcess process;
  std::unique_ptr<os::Cgroup> cgroup;  // null without cgroups
  // What the worker holds while it lives (a pooled worker's uid): released when this goes.
  std::shared_ptr<const void> lease;
};

class Sandbox {
 public:
  // Starts the spawner helper (so call it while the process has one thread), probes every
  // layer and logs what is on. Fails when network isolation is missing and not `insecure`.
  static Result<std::unique_ptr<Sandbox>> create(SandboxOptions options);
  ~Sandbox();

  const Layers& layers() const { return layers_; }
  // Paths as a worker sees them.
  std::string task_root(const std::string& bundle_dir) const;
  std::string runtime_root() const;

  // Starts `request` (argv, env, cwd and fds filled in) as the worker `spec` describes.
  Result<Worker> spawn(SpawnRequest request, const WorkerSpec& spec);
  // Gives the pooled worker `process` (started by spawn() with `pooled.pooled`) to the function
  // `spec` describes: its cgroup's limits, then its bundle at /var/task and its /tmp size. What a
  // pooled worker keeps of its own (uid, network namespace) is described in docs/sandbox.md.
  Status bind(const os::ChildProcess& process, os::Cgroup* cgroup, const WorkerSpec& pooled,
              const WorkerSpec& spec);
  // The function is gone: its network namespace and uid are released.
  void forget(const std::string& function);

  Spawner& spawner() { return *spawner_; }

 private:
  Sandbox(SandboxOptions options, std::unique_ptr<Spawner> spawner)
      : options_(std::move(options)), spawner_(std::move(spawner)) {}
  Status probe();
  Result<uid_t> uid_for(const std::string& function);
  Result<int> netns_for(const std::string& function);
  Result<uid_t> pooled_uid();
  os::CgroupLimits limits_for(int memory_mb) const;

  SandboxOptions options_;
  std::unique_ptr<Spawner> spawner_;
  std::unique_ptr<Spawner> zygote_;  // null without one, or once it has ended
  std::unique_ptr<os::CgroupTree> cgroups_;
  Layers layers_;
  HostLayout host_;
  std::vector<std::string> extra_dirs_;
  std::map<std::string, uid_t> uids_;
  uint32_t next_uid_ = 0;
  // Host uids of pooled workers: the top of the range (below the probe's), each held by one
  // worker at a time and given back when it ends.
  struct PooledUids {
    std::vector<uid_t> free;
  };
  std::shared_ptr<PooledUids> pooled_uids_ = std::make_shared<PooledUids>();
  uint32_t pooled_uid_count_ = 0;
  std::map<std::string, os::UniqueFd> netns_;
  std::set<std::string> warned_host_network_;
  uint64_t next_worker_ = 1;
};

}  // namespace ember::sandbox

// Process creation for workers. A small single-threaded helper is forked at start-up, before any
// thread exists; it creates workers on request with clone3, so the daemon never forks itself
// (forking a large multi-threaded daemon costs tens of milliseconds and is unsafe between fork
// and exec). Workers are created with CLONE_PARENT: they are the daemon's own children, reaped
// by the daemon through their pidfds.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/os/child_process.h"
#include "ember/os/unique_fd.h"
#include "ember/sandbox/seccomp.h"

namespace ember::sandbox {

// One step in building a worker's root file system. The steps run in the new mount namespace,
// in order, with the current directory at the root being built, so every `target` is relative
// ("usr", "etc/hosts"). The daemon writes the plan (root_plan() in sandbox.h); the spawner only
// carries it out.
struct RootOp {
  enum class Kind : uint32_t {
    kDir = 1,     // mkdir target (mode)
    kFile,        // write `text` into target (mode)
    kSymlink,     // symlink target -> text
    kBindHost,    // bind the host path `text` at target (created as a file or directory)
    kBindInside,  // bind the path `text` of the new root at target (masks: dev/null over a file)
    kTmpfs,       // a tmpfs at target of `size` bytes and `mode`
    kProc,        // a fresh procfs at target
    kReadOnly,    // make the mount at target read-only (flags it carries are kept)
  };
  Kind kind;
  std::string target;
  std::string text;
  uint64_t size = 0;
  uint32_t mode = 0755;
  bool read_only = true;  // for binds
  bool optional = false;  // skipped when the target does not exist (masks over /proc files)
};

// Where and how a worker is isolated. Every namespace but the network one is new per worker;
// the network namespace is shared by a function's workers and joined first.
struct Isolation {
  bool namespaces = true;  // false: only the cgroups below apply
  uid_t host_uid = 0;      // what the worker's uid is on the host
  gid_t host_gid = 0;
  uid_t uid = 1000;  // the worker's uid and gid inside its user namespace
  gid_t gid = 1000;
  std::string hostname = "ember";
  int netns_fd = -1;         // a network namespace to join; -1 keeps the host's network
  std::vector<RootOp> root;  // the new root; empty: no mount namespace, no pivot_root
  // cgroups: a v2 directory to clone into, or v1 `cgroup.procs` files to write the pid into.
  int cgroup_dir_fd = -1;
  std::vector<int> cgroup_procs_fds;
};

struct SpawnRequest {
  std::vector<std::string> argv;  // argv[0] is the executable's absolute path
  std::vector<std::string> env;   // the complete environment, "NAME=value"
  std::string cwd = "/";
  // Descriptors that become the child's 0, 1, 2 and 3; -1 gives /dev/null for 0-2 and nothing
  // for 3. Every other descriptor is closed in the child.
  std::array<int, 4> fds = {-1, -1, -1, -1};
  std::optional<Isolation> isolation;  // none: a plain child process
  // Resource limits set in the child (RLIMIT_NOFILE always; these when non-zero).
  rlim_t max_processes = 0;   // RLIMIT_NPROC, counted per host uid
  rlim_t max_data_bytes = 0;  // RLIMIT_DATA
};

// What confines every process the spawner creates. Prepared before the helper is forked, so the
// helper holds it in its own memory and applies it with raw syscalls between clone and exec.
struct Confinement {
  std::optional<SeccompProgram> seccomp;  // loaded last, just before execve
  rlim_t max_open_files = 1024;           // RLIMIT_NOFILE; core dumps are always off
};

// A zygote: a helper whose process image already holds an initialised runtime, so that its
// children continue in it instead of executing one (docs/sandbox.md#the-python-zygote). Every
// step of the sandbox is the helper's own (child.h); only the last one, execve, is replaced.
struct ChildEntry {
  void (*before_clone)() = nullptr;  // in the zygote, before each clone
  void (*after_clone)() = nullptr;   // in the zygote, after it
  // In the child, fully sandboxed, where execve would have run: argv and the environment of the
  // request. Must not return; the child exits 127 if it does.
  void (*run)(char* const* argv, char* const* envp) = nullptr;
  // Where the C library keeps the calling thread's id, for the kernel to write the child's
  // there (CLONE_CHILD_SETTID), as fork() has it written; null: not known.
  pid_t* child_tid = nullptr;
};

// Serves spawn requests on `sock` as the helper does, until the daemon closes its end; the
// children of a zygote run `entry` (non-null) instead of execve. Never returns.
[[noreturn]] void serve_spawn_requests(int sock, pid_t daemon_pid, const Confinement& confinement,
                                       const ChildEntry* entry);

// Owns the helper process and the socket to it. spawn() is thread-safe.
class Spawner {
 public:
  // Forks the helper. Must run while the process has a single thread.
  static Result<std::unique_ptr<Spawner>> start(Confinement confinement = {});
  // Starts the zygote executable `program` (argv[0]) with `args` after it, its socket as
  // descriptor 3 and the seccomp program on descriptor 4, in an empty environment but `env`.
  // It serves as a helper (spawn requests only) whose children are the daemon's. Returns once
  // the zygote says it is ready (one byte, 'R'), or fails if it ends or has not within 10 s.
  // Must run while the process has a single thread.
  static Result<std::unique_ptr<Spawner>> start_zygote(const Confinement& confinement,
                                                       const std::string& program,
                                                       const std::vector<std::string>& args,
                                                       const std::vector<std::string>& env);
  ~Spawner();

  // Creates a process; errors from setting up the sandbox or from exec (missing binary,
  // permissions) are reported here, naming the step that failed.
  Result<os::ChildProcess> spawn(const SpawnRequest& request);

  // A new network namespace with only the loopback interface, up.
  Result<os::UniqueFd> new_network_namespace();

  // Binds the host directory `source` read-only (nosuid, nodev) at `target` (absolute, as the
  // worker sees it; an empty directory there) in the mount namespace of the worker `pidfd`
  // names, and resizes its /tmp to `tmp_bytes` unless 0. Used to give a pre-started worker its
  // function's bundle.
  Status mount_into(int pidfd, const std::string& source, const std::string& target,
                    uint64_t tmp_bytes);

  pid_t helper_pid() const { return helper_pid_; }
  // Readable once the helper has exited. The helper is part of the daemon: without it no worker
  // starts, and it is the second line that kills workers when the daemon dies.
  int helper_pidfd() const { return helper_pidfd_.get(); }

 private:
  // Forks a helper that runs `child` with its end of the socket (exiting 127 if that returns).
  static Result<std::unique_ptr<Spawner>> fork_helper(const char* what,
                                                      const std::function<void(int)>& child);
  Spawner(pid_t helper, os::UniqueFd pidfd, os::UniqueFd socket)
      : helper_pid_(helper), helper_pidfd_(std::move(pidfd)), socket_(std::move(socket)) {}

  pid_t helper_pid_;
  os::UniqueFd helper_pidfd_;
  os::UniqueFd socket_;
  std::mutex mu_;
};

}  // namespace ember::sandbox

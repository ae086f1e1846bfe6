// Process creation for workers. A small single-threaded helper is forked at start-up, before any
// thread exists; it creates workers on request with clone3, so the daemon never forks itself
// (forking a large multi-threaded daemon costs tens of milliseconds and is unsafe between fork
// and exec). Workers are created with CLONE_PARENT: they are the daemon's own children, reaped
// by the daemon through their pidfds.
#pragma once

#include <sys/types.h>

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/os/child_process.h"
#include "ember/os/unique_fd.h"

namespace ember::sandbox {

struct SpawnRequest {
  std::vector<std::string> argv;  // argv[0] is the executable's absolute path
  std::vector<std::string> env;   // the complete environment, "NAME=value"
  std::string cwd = "/";
  // Descriptors that become the child's 0, 1, 2 and 3; -1 gives /dev/null for 0-2 and nothing
  // for 3. Every other descriptor is closed in the child.
  std::array<int, 4> fds = {-1, -1, -1, -1};
};

// Owns the helper process and the socket to it. spawn() is thread-safe.
class Spawner {
 public:
  // Forks the helper. Must run while the process has a single thread.
  static Result<std::unique_ptr<Spawner>> start();
  ~Spawner();

  // Creates a process; errors from exec (missing binary, permissions) are reported here.
  Result<os::ChildProcess> spawn(const SpawnRequest& request);

  pid_t helper_pid() const { return helper_pid_; }

 private:
  Spawner(pid_t helper, os::UniqueFd socket) : helper_pid_(helper), socket_(std::move(socket)) {}

  pid_t helper_pid_;
  os::UniqueFd socket_;
  std::mutex mu_;
};

}  // namespace ember::sandbox

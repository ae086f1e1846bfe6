// A child process known by its pidfd, so that its pid can never be confused with a recycled one.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "ember/common/result.h"
#include "ember/os/unique_fd.h"

namespace ember::os {

struct ExitStatus {
  bool signaled = false;
  int code = 0;                  // exit code, or the signal number when signaled
  std::string describe() const;  // "exited with code 3", "killed by signal 9 (Killed)"
};

// Owns a child process of this process. Destroying it kills the process (SIGKILL) and reaps it
// if it has not been reaped yet, so no child outlives its owner's interest in it. One owner
// thread.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Readable once the process has exited; for an event loop to wait on.
  int pidfd() const { return pidfd_.get(); }
  bool reaped() const { return status_.has_value(); }
  // Whether the process has ended, reaped or not; never reaps it.
  bool exited() const;

  // Sends a signal through the pidfd; a process that already exited is not an error.
  Status signal(int signo);
  // The exit status when the process has exited (and reaps it), nullopt while it runs.
  Result<std::optional<ExitStatus>> try_wait();
  // Waits for the exit.
  Result<ExitStatus> wait();

 private:
  Result<std::optional<ExitStatus>> wait_impl(int options);
  void kill_and_reap();

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  std::optional<ExitStatus> status_;
};

}  // namespace ember::os

#include "ember/os/child_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ember::os {

std::string ExitStatus::describe() const {
  if (!signaled) return "exited with code " + std::to_string(code);
  return "killed by signal " + std::to_string(code) + " (" + ::strsignal(code) + ")";
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      status_(std::exchange(other.status_, std::nullopt)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

ChildProcess::~ChildProcess() { kill_and_reap(); }

void ChildProcess::kill_and_reap() {
  if (!pidfd_.valid() || status_) return;
  (void)signal(SIGKILL);
  (void)wait();
}

Status ChildProcess::signal(int signo) {
  if (status_) return {};
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signo, nullptr, 0) != 0 && errno != ESRCH) {
    return Error::system("pidfd_send_signal", std::to_string(pid_), errno);
  }
  return {};
}

Result<std::optional<ExitStatus>> ChildProcess::wait_impl(int options) {
  if (status_) return status_;
  siginfo_t info{};
  while (true) {
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info,
                 WEXITED | options) == 0) {
      break;
    }
    if (errno != EINTR) return Error::system("waitid", std::to_string(pid_), errno);
  }
  if (info.si_pid == 0) return std::optional<ExitStatus>();  // WNOHANG: still running
  ExitStatus s;
  s.signaled = info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED;
  s.code = info.si_status;
  status_ = s;
  return status_;
}

Result<std::optional<ExitStatus>> ChildProcess::try_wait() { return wait_impl(WNOHANG); }

bool ChildProcess::exited() const {
  if (reaped()) return true;
  if (!pidfd_) return false;
  pollfd p{pidfd_.get(), POLLIN, 0};  // a pidfd is readable once its process has ended
  return ::poll(&p, 1, 0) > 0;
}

Result<ExitStatus> ChildProcess::wait() {
  auto r = wait_impl(0);
  if (!r) return std::move(r).error();
  return **r;
}

}  // namespace ember::os

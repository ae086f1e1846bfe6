#include "child.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ember::sandbox::child {

using wire::Prepared;
using wire::PreparedOp;

const char* step_name(int32_t step) {
  switch (step) {
    case kStepSync:
      return "sandbox sync";
    case kStepMountPrivate:
      return "make mounts private";
    case kStepRootTmpfs:
      return "mount the root tmpfs";
    case kStepOp:
      return "build the root";
    case kStepPivotRoot:
      return "pivot_root";
    case kStepRootReadOnly:
      return "make the root read-only";
    case kStepHostname:
      return "sethostname";
    case kStepDescriptors:
      return "set up descriptors";
    case kStepChdir:
      return "chdir";
    case kStepRlimit:
      return "setrlimit";
    case kStepIdentity:
      return "switch uid and gid";
    case kStepCapabilities:
      return "drop capabilities";
    case kStepDeathSignal:
      return "arm the parent-death signal";
    case kStepNoNewPrivs:
      return "no_new_privs";
    case kStepSeccomp:
      return "load seccomp";
    default:
      return "execve";
  }
}

const char* op_name(uint32_t kind) {
  switch (static_cast<RootOp::Kind>(kind)) {
    case RootOp::Kind::kDir:
      return "mkdir";
    case RootOp::Kind::kFile:
      return "write";
    case RootOp::Kind::kSymlink:
      return "symlink";
    case RootOp::Kind::kBindHost:
    case RootOp::Kind::kBindInside:
      return "bind";
    case RootOp::Kind::kTmpfs:
      return "tmpfs";
    case RootOp::Kind::kProc:
      return "proc";
    case RootOp::Kind::kReadOnly:
      return "read-only";
  }
  return "op";
}

namespace {

// Every function here runs in the child between clone3 and execve.

// Mount flags that a bind mount carries and a remount must repeat: the kernel refuses to clear
// flags locked by a more privileged namespace.
// Async-signal-safe.
unsigned long carried_flags(const char* path) {
  struct statfs st;
  if (::statfs(path, &st) != 0) return 0;
  unsigned long f = 0;
  if (st.f_flags & ST_NOSUID) f |= MS_NOSUID;
  if (st.f_flags & ST_NODEV) f |= MS_NODEV;
  if (st.f_flags & ST_NOEXEC) f |= MS_NOEXEC;
  if (st.f_flags & ST_NOATIME) f |= MS_NOATIME;
  if (st.f_flags & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (st.f_flags & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

// Async-signal-safe.
int remount_read_only(const char* target) {
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | carried_flags(target);
  return ::mount(nullptr, target, nullptr, flags, nullptr);
}

// A mount point for a bind: an empty directory or file. An existing one is fine.
// Async-signal-safe.
int make_mount_point(const char* target, bool dir) {
  struct stat st;
  if (::lstat(target, &st) == 0) return 0;
  if (dir) return (::mkdir(target, 0755) == 0 || errno == EEXIST) ? 0 : -1;
  int fd = ::open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return -1;
  ::close(fd);
  return 0;
}

// Async-signal-safe.
bool exists(const char* path) {
  struct stat st;
  return ::lstat(path, &st) == 0;
}

// Runs one step of the root plan; returns 0 or -1 with errno set.
// Async-signal-safe.
int run_op(const PreparedOp& op) {
  using K = RootOp::Kind;
  if (op.optional && !exists(op.target)) return 0;
  switch (static_cast<K>(op.kind)) {
    case K::kDir:
      return (::mkdir(op.target, op.mode) == 0 || errno == EEXIST) ? 0 : -1;
    case K::kFile: {
      int fd = ::open(op.target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, op.mode);
      if (fd < 0) return -1;
      size_t left = std::strlen(op.text);
      const char* p = op.text;
      while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          int e = errno;
          ::close(fd);
          errno = e;
          return -1;
        }
        p += n;
        left -= static_cast<size_t>(n);
      }
      return ::close(fd);
    }
    case K::kSymlink:
      return ::symlink(op.text, op.target);
    case K::kBindHost:
      // A detached copy of the host mount, made and flagged by the helper before the clone.
      if (make_mount_point(op.target, op.is_dir) != 0) return -1;
      return static_cast<int>(
          ::syscall(SYS_move_mount, op.tree, "", AT_FDCWD, op.target, MOVE_MOUNT_F_EMPTY_PATH));
    case K::kBindInside: {
      struct stat st;
      if (::stat(op.text, &st) != 0) return -1;
      if (make_mount_point(op.target, S_ISDIR(st.st_mode)) != 0) return -1;
      if (::mount(op.text, op.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) return -1;
      return op.read_only ? remount_read_only(op.target) : 0;
    }
    case K::kTmpfs:
      if (::mkdir(op.target, 0755) != 0 && errno != EEXIST) return -1;
      return ::mount("tmpfs", op.target, "tmpfs", MS_NOSUID | MS_NODEV, op.options);
    case K::kProc:
      if (::mkdir(op.target, 0555) != 0 && errno != EEXIST) return -1;
      return ::mount("proc", op.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
    case K::kReadOnly:
      if (::mount(op.target, op.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) return -1;
      return remount_read_only(op.target);
  }
  errno = EINVAL;
  return -1;
}

// Async-signal-safe.
[[noreturn]] void child_fail(int error_fd, int32_t step, int32_t op, int err) {
  ChildError e{err, step, op};
  [[maybe_unused]] ssize_t ignored = ::write(error_fd, &e, sizeof e);
  ::_exit(127);
}

// Builds the root in a tmpfs mounted over /tmp of the new mount namespace, then makes it the
// root. /tmp is only the place where the tmpfs is assembled: every host path was opened before
// the clone, so hiding the host's /tmp hides nothing the plan needs.
// Async-signal-safe.
void build_root(const Prepared& p, int error_fd) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    child_fail(error_fd, kStepMountPrivate, -1, errno);
  }
  if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755") != 0 ||
      ::chdir("/tmp") != 0) {
    child_fail(error_fd, kStepRootTmpfs, -1, errno);
  }
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (run_op(p.ops[i]) != 0) child_fail(error_fd, kStepOp, static_cast<int32_t>(i), errno);
  }
  // The old root goes on top of the new one and is detached at once: nothing of the host's
  // file system stays reachable.
  if (::syscall(SYS_pivot_root, ".", ".") != 0 || ::umount2(".", MNT_DETACH) != 0 ||
      ::chdir("/") != 0) {
    child_fail(error_fd, kStepPivotRoot, -1, errno);
  }
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
    child_fail(error_fd, kStepRootReadOnly, -1, errno);
  }
}

// Takes the final identity and gives up every capability, for good: the bounding set is
// emptied, so not even a setuid binary or file capabilities could bring one back.
// Async-signal-safe.
void drop_privileges(const Prepared& p, int error_fd) {
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 ||
      ::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) {
    child_fail(error_fd, kStepIdentity, -1, errno);
  }
  for (int cap = 0; cap <= p.last_cap; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      child_fail(error_fd, kStepCapabilities, -1, errno);
    }
  }
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) {
    child_fail(error_fd, kStepIdentity, -1, errno);
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &header, data) != 0) {
    child_fail(error_fd, kStepCapabilities, -1, errno);
  }
}

// True when the daemon has died: its end of the helper's socket, which only the daemon holds,
// is closed. The kernel closes a dying process's descriptors before it reparents its children,
// so a child that sees the daemon alive after arming its death signal will get that signal.
// Async-signal-safe.
bool daemon_gone(int lifeline, pid_t daemon_pid, bool isolated) {
  // Outside a pid namespace the parent is visible too; inside one getppid() is 0.
  if (!isolated && ::getppid() != daemon_pid) return true;
  pollfd p{lifeline, POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  return n < 0 || (n > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)));
}

}  // namespace

// Async-signal-safe.
[[noreturn]] void exec_child(const Prepared& p, int error_fd, int sync_fd, int lifeline,
                             pid_t daemon_pid, const Confinement& confinement,
                             const sock_fprog* filter, const ChildEntry* entry) {
  // Die with the daemon while the sandbox is set up. The kernel clears this signal at every
  // change of credentials (setfsuid and setresuid below), so it is armed again after the last.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  char byte = 1;
  if (::write(sync_fd, &byte, 1) != 1 || ::read(sync_fd, &byte, 1) != 1) {
    child_fail(error_fd, kStepSync, -1, EPIPE);
  }
  ::close(sync_fd);
  if (p.isolate) {
    // Until the final switch, files are created as the worker's own user: the namespace's
    // root is not mapped, and a tmpfs refuses owners it cannot map.
    ::syscall(SYS_setfsgid, p.gid);
    ::syscall(SYS_setfsuid, p.uid);
  } else if (::getppid() != daemon_pid) {
    ::_exit(127);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::setsid();
  if (!p.ops.empty()) build_root(p, error_fd);
  if (p.isolate && ::sethostname(p.hostname, std::strlen(p.hostname)) != 0) {
    child_fail(error_fd, kStepHostname, -1, errno);
  }

  for (int target = 0; target < 4; ++target) {
    int source = p.fds[target];
    if (source < 0 && target < 3) source = ::open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
    // All sources sit at kFirstHighFd or above, so no dup2 clobbers one still needed.
    if (source >= 0 && ::dup2(source, target) < 0)
      child_fail(error_fd, kStepDescriptors, -1, errno);
  }
  if (::dup3(error_fd, 4, O_CLOEXEC) < 0) child_fail(error_fd, kStepDescriptors, -1, errno);
  error_fd = 4;
  if (::dup3(lifeline, kLifelineFd, O_CLOEXEC) < 0) {
    child_fail(error_fd, kStepDescriptors, -1, errno);
  }
  if (::syscall(SYS_close_range, kLifelineFd + 1, ~0U, 0) != 0) {
    child_fail(error_fd, kStepDescriptors, -1, errno);
  }
  if (p.fds[3] < 0) ::close(3);
  if (::chdir(p.cwd) != 0) child_fail(error_fd, kStepChdir, -1, errno);

  const rlimit files{confinement.max_open_files, confinement.max_open_files};
  const rlimit no_core{0, 0};
  const rlimit procs{p.max_processes, p.max_processes};
  const rlimit data{p.max_data, p.max_data};
  if (::setrlimit(RLIMIT_NOFILE, &files) != 0 || ::setrlimit(RLIMIT_CORE, &no_core) != 0 ||
      (p.max_processes && ::setrlimit(RLIMIT_NPROC, &procs) != 0) ||
      (p.max_data && ::setrlimit(RLIMIT_DATA, &data) != 0)) {
    child_fail(error_fd, kStepRlimit, -1, errno);
  }
  if (p.isolate) drop_privileges(p, error_fd);
  // No credential changes from here to execve (it gains nothing: no setuid file is honoured and
  // the bounding set is empty), so the death signal armed now stays. If the daemon died before
  // this point, no signal will come: leave now.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(error_fd, kStepDeathSignal, -1, errno);
  if (daemon_gone(kLifelineFd, daemon_pid, p.isolate)) {
    child_fail(error_fd, kStepDeathSignal, -1, ESRCH);
  }
  ::close(kLifelineFd);
  // no_new_privs first: the kernel refuses an unprivileged filter without it, and it keeps
  // setuid binaries from regaining what the sandbox takes away.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    child_fail(error_fd, kStepNoNewPrivs, -1, errno);
  // The filter goes last: from here on only what the policy allows works, execve included.
  if (filter && ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, filter) != 0) {
    child_fail(error_fd, kStepSeccomp, -1, errno);
  }
  if (entry && entry->run) {
    // A zygote's child: the runtime is already in this image. The error pipe closes here, as
    // execve would have closed it, so the helper hears of success.
    ::close(error_fd);
    entry->run(p.argv.data(), p.env.data());
    ::_exit(127);
  }
  ::execve(p.argv[0], p.argv.data(), p.env.data());
  child_fail(error_fd, kStepExecve, -1, errno);
}

}  // namespace ember::sandbox::child

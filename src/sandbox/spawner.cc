#include "ember/sandbox/spawner.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ember::sandbox {

namespace {

// Requests and replies are single SOCK_SEQPACKET messages with descriptors attached.
//
// A request starts with a u32 kind. kSpawn carries the fields of a SpawnRequest (see encode()
// and Parsed below) with its descriptors attached in this order: the child's 0-3 (those in the
// mask), the network namespace, the cgroup directory, the v1 cgroup.procs files. kNetns has no
// body. A reply is a ReplyHead with a pidfd (kSpawn) or a namespace descriptor (kNetns).
constexpr size_t kMaxRequestBytes = 256 * 1024;
constexpr size_t kMaxFds = 16;
constexpr int kFirstHighFd = 16;
constexpr uint32_t kSpawn = 1;
constexpr uint32_t kNetns = 2;

struct ReplyHead {
  int32_t error;
  int32_t pid;
  char where[120];
};

// Sends `data` with `fds` attached.
ssize_t send_with_fds(int sock, const void* data, size_t size, const int* fds, size_t nfds) {
  iovec iov{const_cast<void*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

// Receives one message; received descriptors are close-on-exec.
ssize_t recv_with_fds(int sock, void* data, size_t size, int* fds, size_t* nfds) {
  iovec iov{data, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  *nfds = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (*nfds < kMaxFds) {
          fds[(*nfds)++] = fd;
        } else {
          ::close(fd);
        }
      }
    }
  }
  if (n >= 0 && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    for (size_t i = 0; i < *nfds; ++i) ::close(fds[i]);
    *nfds = 0;
    errno = EMSGSIZE;
    return -1;
  }
  return n;
}

// ---- encoding, in the daemon ----

class Writer {
 public:
  void u32(uint32_t v) { bytes_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void u64(uint64_t v) { bytes_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void str(const std::string& s) {
    bytes_.append(s.data(), s.size());  // a NUL inside ends the string early: harmless
    bytes_.push_back('\0');
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

// ---- decoding, in the helper ----

class Reader {
 public:
  Reader(const char* data, size_t size) : p_(data), end_(data + size) {}
  bool u32(uint32_t& v) { return take(&v, sizeof v); }
  bool u64(uint64_t& v) { return take(&v, sizeof v); }
  bool str(const char*& s) {
    const void* nul = std::memchr(p_, '\0', static_cast<size_t>(end_ - p_));
    if (!nul) return false;
    s = p_;
    p_ = static_cast<const char*>(nul) + 1;
    return true;
  }

 private:
  bool take(void* out, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }
  const char* p_;
  const char* end_;
};

struct PreparedOp {
  uint32_t kind = 0;
  uint32_t mode = 0;
  uint32_t read_only = 0;
  uint32_t optional = 0;
  uint64_t size = 0;
  const char* target = nullptr;
  const char* text = nullptr;
  bool is_dir = false;    // kBindHost: the source is a directory
  int tree = -1;          // kBindHost: a detached copy of the source mount (open_tree)
  char options[64] = {};  // kTmpfs: mount data
};

// A spawn request as the helper holds it: pointers into the request buffer and descriptors it
// owns, all ready before the clone.
struct Prepared {
  std::vector<char*> argv;
  std::vector<char*> env;
  const char* cwd = "/";
  const char* hostname = "";
  std::array<int, 4> fds = {-1, -1, -1, -1};
  bool isolate = false;
  uint32_t host_uid = 0, host_gid = 0, uid = 0, gid = 0;
  uint64_t max_processes = 0, max_data = 0;
  int netns = -1;
  int cgroup_dir = -1;
  std::vector<int> cgroup_procs;
  std::vector<PreparedOp> ops;
  std::vector<int> owned;  // every descriptor above, closed after the clone
  int last_cap = 40;
};

// Why a child failed before execve; written to the error pipe.
struct ChildError {
  int32_t error;
  int32_t step;
  int32_t op;
};

enum Step : int32_t {
  kStepSync,
  kStepMountPrivate,
  kStepRootTmpfs,
  kStepOp,
  kStepPivotRoot,
  kStepRootReadOnly,
  kStepHostname,
  kStepDescriptors,
  kStepChdir,
  kStepRlimit,
  kStepIdentity,
  kStepCapabilities,
  kStepDeathSignal,
  kStepNoNewPrivs,
  kStepSeccomp,
  kStepExecve,
};

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

// ---- the child, between clone3 and execve: async-signal-safe calls only ----

// Mount flags that a bind mount carries and a remount must repeat: the kernel refuses to clear
// flags locked by a more privileged namespace.
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

int remount_read_only(const char* target) {
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | carried_flags(target);
  return ::mount(nullptr, target, nullptr, flags, nullptr);
}

// A mount point for a bind: an empty directory or file. An existing one is fine.
int make_mount_point(const char* target, bool dir) {
  struct stat st;
  if (::lstat(target, &st) == 0) return 0;
  if (dir) return (::mkdir(target, 0755) == 0 || errno == EEXIST) ? 0 : -1;
  int fd = ::open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return -1;
  ::close(fd);
  return 0;
}

bool exists(const char* path) {
  struct stat st;
  return ::lstat(path, &st) == 0;
}

// Runs one step of the root plan; returns 0 or -1 with errno set.
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

[[noreturn]] void child_fail(int error_fd, int32_t step, int32_t op, int err) {
  ChildError e{err, step, op};
  [[maybe_unused]] ssize_t ignored = ::write(error_fd, &e, sizeof e);
  ::_exit(127);
}

// Builds the root in a tmpfs mounted over /tmp of the new mount namespace, then makes it the
// root. /tmp is only the place where the tmpfs is assembled: every host path was opened before
// the clone, so hiding the host's /tmp hides nothing the plan needs.
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

// The child's own descriptor for the lifeline, between close_range and the last check.
constexpr int kLifelineFd = 5;

// Async-signal-safe.
[[noreturn]] void exec_child(const Prepared& p, int error_fd, int sync_fd, int lifeline,
                             pid_t daemon_pid, const Confinement& confinement,
                             const sock_fprog* filter) {
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
  ::execve(p.argv[0], p.argv.data(), p.env.data());
  child_fail(error_fd, kStepExecve, -1, errno);
}

// ---- the helper ----

void reply(int sock, int error, pid_t pid, const char* where, int fd) {
  ReplyHead head{};
  head.error = error;
  head.pid = pid;
  std::snprintf(head.where, sizeof head.where, "%s", where);
  send_with_fds(sock, &head, sizeof head, &fd, fd >= 0 ? 1 : 0);
}

int high_dup(int fd) {
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, kFirstHighFd);
  return high;
}

bool write_file(const char* path, const char* text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t len = std::strlen(text);
  bool ok = ::write(fd, text, len) == static_cast<ssize_t>(len);
  ::close(fd);
  return ok;
}

// Parses a kSpawn request. Returns nullptr, or the reason it is malformed.
const char* parse_spawn(Reader& r, const int* fds, size_t nfds, Prepared& p) {
  uint32_t fd_mask, n_procs, isolate, argc, envc, nops;
  if (!r.u32(fd_mask) || !r.u32(n_procs) || !r.u32(isolate) || !r.u32(p.host_uid) ||
      !r.u32(p.host_gid) || !r.u32(p.uid) || !r.u32(p.gid) || !r.u64(p.max_processes) ||
      !r.u64(p.max_data) || !r.u32(argc) || !r.u32(envc) || !r.u32(nops) || !r.str(p.cwd) ||
      !r.str(p.hostname)) {
    return "request";
  }
  p.isolate = isolate != 0;
  for (uint32_t i = 0; i < argc; ++i) {
    const char* s;
    if (!r.str(s)) return "request";
    p.argv.push_back(const_cast<char*>(s));
  }
  for (uint32_t i = 0; i < envc; ++i) {
    const char* s;
    if (!r.str(s)) return "request";
    p.env.push_back(const_cast<char*>(s));
  }
  if (argc == 0) return "request";
  p.argv.push_back(nullptr);
  p.env.push_back(nullptr);
  for (uint32_t i = 0; i < nops; ++i) {
    PreparedOp op;
    if (!r.u32(op.kind) || !r.u32(op.mode) || !r.u32(op.read_only) || !r.u32(op.optional) ||
        !r.u64(op.size) || !r.str(op.target) || !r.str(op.text)) {
      return "request";
    }
    p.ops.push_back(op);
  }
  if (!p.isolate && !p.ops.empty()) return "request: a root without a user namespace";
  // Descriptors, moved above the range the child writes into.
  size_t used = 0;
  auto take = [&](int& out) -> bool {
    if (used >= nfds) return false;
    out = high_dup(fds[used++]);
    if (out < 0) return false;
    p.owned.push_back(out);
    return true;
  };
  for (int i = 0; i < 4; ++i) {
    if ((fd_mask & (1u << i)) && !take(p.fds[i])) return "descriptors";
  }
  if ((fd_mask & (1u << 4)) && !take(p.netns)) return "descriptors";
  if ((fd_mask & (1u << 5)) && !take(p.cgroup_dir)) return "descriptors";
  for (uint32_t i = 0; i < n_procs; ++i) {
    int fd;
    if (!take(fd)) return "descriptors";
    p.cgroup_procs.push_back(fd);
  }
  return nullptr;
}

// Makes a detached, flagged copy of every host path to bind, and formats what the child needs,
// before the clone. The copies are made here because the child, once in its own user namespace,
// can neither traverse the daemon's private directories nor bind mounts of another namespace;
// it only moves the copies into place.
int prepare_ops(Prepared& p, char* where, size_t where_size) {
  for (auto& op : p.ops) {
    if (static_cast<RootOp::Kind>(op.kind) == RootOp::Kind::kBindHost) {
      int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, op.text,
                                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
      int high = tree >= 0 ? high_dup(tree) : -1;
      int err = errno;
      if (tree >= 0) ::close(tree);
      if (high < 0) {
        std::snprintf(where, where_size, "open_tree %s", op.text);
        return err;
      }
      p.owned.push_back(high);
      op.tree = high;
      struct stat st;
      if (::fstat(high, &st) != 0) return errno;
      op.is_dir = S_ISDIR(st.st_mode);
      mount_attr attr{};
      attr.attr_set = MOUNT_ATTR_NOSUID |
                      (op.read_only ? MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV : MOUNT_ATTR_NOEXEC);
      if (::syscall(SYS_mount_setattr, high, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                    sizeof attr) != 0) {
        err = errno;
        std::snprintf(where, where_size, "mount_setattr %s", op.text);
        return err;
      }
    } else if (static_cast<RootOp::Kind>(op.kind) == RootOp::Kind::kTmpfs) {
      std::snprintf(op.options, sizeof op.options, "size=%llu,mode=%o",
                    static_cast<unsigned long long>(op.size), op.mode);
    }
  }
  return 0;
}

// A worker the helper started, held so that the helper can kill it if the daemon dies.
struct Tracked {
  int pidfd;
  pid_t pid;
  bool own_pid_namespace;  // killing it kills everything it started
};

bool exited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;
}

// Forgets the workers that have exited, with one poll() for all of them.
void prune(std::vector<Tracked>& workers) {
  if (workers.empty()) return;
  std::vector<pollfd> polls(workers.size());
  for (size_t i = 0; i < workers.size(); ++i) polls[i] = pollfd{workers[i].pidfd, POLLIN, 0};
  if (::poll(polls.data(), polls.size(), 0) <= 0) return;
  size_t kept = 0;
  for (size_t i = 0; i < workers.size(); ++i) {
    if (polls[i].revents != 0) {
      ::close(workers[i].pidfd);
    } else {
      workers[kept++] = workers[i];
    }
  }
  workers.resize(kept);
}

// The second line of defence when the daemon dies: a worker's own parent-death signal may have
// been cleared (by code that runs in it), so the helper kills every worker it started. A worker
// without its own pid namespace is also killed with its process group (it called setsid()); the
// group is only signalled while the worker is alive, so its id cannot have been reused.
void kill_workers(std::vector<Tracked>& workers) {
  for (const auto& w : workers) {
    if (!w.own_pid_namespace && !exited(w.pidfd)) ::kill(-w.pid, SIGKILL);
    ::syscall(SYS_pidfd_send_signal, w.pidfd, SIGKILL, nullptr, 0);
    ::close(w.pidfd);
  }
  workers.clear();
}

void serve_spawn(int sock, pid_t daemon_pid, Reader& r, const int* fds, size_t nfds,
                 const Confinement& confinement, const sock_fprog* filter, int host_netns,
                 int last_cap, std::vector<Tracked>& workers) {
  prune(workers);
  Prepared p;
  p.last_cap = last_cap;
  struct Closer {
    std::vector<int>& fds;
    ~Closer() {
      for (int fd : fds) ::close(fd);
    }
  } closer{p.owned};
  if (const char* bad = parse_spawn(r, fds, nfds, p)) return reply(sock, EPROTO, 0, bad, -1);
  char where[120] = "";
  if (int err = prepare_ops(p, where, sizeof where)) return reply(sock, err, 0, where, -1);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return reply(sock, errno, 0, "pipe", -1);
  int error_fd = high_dup(pipefd[1]);
  ::close(pipefd[1]);
  // The child waits on `sync` until the helper has mapped its ids and placed it in its cgroups.
  int sync[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sync) != 0) {
    int err = errno;
    ::close(pipefd[0]);
    ::close(error_fd);
    return reply(sock, err, 0, "socketpair", -1);
  }
  int child_sync = sync[1] >= 0 ? high_dup(sync[1]) : -1;
  if (sync[1] >= 0) ::close(sync[1]);

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_PARENT;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  if (p.isolate) args.flags |= CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  if (!p.ops.empty()) args.flags |= CLONE_NEWNS;
  if (p.cgroup_dir >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(p.cgroup_dir);
  }
  // The worker starts in the function's network namespace: the helper steps into it for the
  // clone and straight back out.
  if (p.netns >= 0 && ::setns(p.netns, CLONE_NEWNET) != 0) {
    int err = errno;
    for (int fd : {pipefd[0], error_fd, sync[0], child_sync}) {
      if (fd >= 0) ::close(fd);
    }
    return reply(sock, err, 0, "join the network namespace", -1);
  }
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) exec_child(p, error_fd, child_sync, sock, daemon_pid, confinement, filter);
  int clone_errno = errno;
  if (p.netns >= 0 && ::setns(host_netns, CLONE_NEWNET) != 0) ::_exit(1);  // cannot go on safely
  ::close(error_fd);
  if (child_sync >= 0) ::close(child_sync);
  if (pid < 0) {
    ::close(pipefd[0]);
    if (sync[0] >= 0) ::close(sync[0]);
    return reply(sock, clone_errno, 0, "clone3", -1);
  }

  int setup_error = 0;
  const char* setup_where = "";
  {
    // The child has armed its death signal; map its ids and place it in its cgroups, then let
    // it go. If the daemon died meanwhile, the signal came too early: kill the child here.
    char byte = 0;
    char path[64], map[64];
    if (::read(sync[0], &byte, 1) == 1) {
      if (p.isolate) {
        std::snprintf(map, sizeof map, "%u %u 1\n", p.uid, p.host_uid);
        std::snprintf(path, sizeof path, "/proc/%ld/uid_map", pid);
        if (!write_file(path, map)) setup_error = errno, setup_where = "write uid_map";
        std::snprintf(map, sizeof map, "%u %u 1\n", p.gid, p.host_gid);
        std::snprintf(path, sizeof path, "/proc/%ld/gid_map", pid);
        if (!setup_error && !write_file(path, map)) {
          setup_error = errno, setup_where = "write gid_map";
        }
      }
      std::snprintf(map, sizeof map, "%ld", pid);
      for (int fd : p.cgroup_procs) {
        if (!setup_error && ::write(fd, map, std::strlen(map)) < 0) {
          setup_error = errno, setup_where = "join the cgroup";
        }
      }
      if (!setup_error && ::getppid() != daemon_pid) setup_error = ESRCH, setup_where = "daemon";
      if (!setup_error && ::write(sync[0], &byte, 1) != 1) setup_error = errno;
    }
    ::close(sync[0]);
    if (setup_error) ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  }
  // End of file means execve succeeded (the pipe was close-on-exec); a ChildError is why not.
  ChildError child_error{};
  ssize_t got;
  do {
    got = ::read(pipefd[0], &child_error, sizeof child_error);
  } while (got < 0 && errno == EINTR);
  ::close(pipefd[0]);
  // The child is the daemon's; it reaps the pidfd each reply hands over.
  if (setup_error) {
    reply(sock, setup_error, static_cast<pid_t>(pid), setup_where, pidfd);
  } else if (got == sizeof child_error) {
    if (child_error.step == kStepOp && child_error.op >= 0 &&
        static_cast<size_t>(child_error.op) < p.ops.size()) {
      const auto& op = p.ops[static_cast<size_t>(child_error.op)];
      std::snprintf(where, sizeof where, "sandbox root: %s /%s", op_name(op.kind), op.target);
    } else {
      std::snprintf(where, sizeof where, "%s", step_name(child_error.step));
    }
    reply(sock, child_error.error, static_cast<pid_t>(pid), where, pidfd);
  } else if (got != 0) {
    reply(sock, EPROTO, static_cast<pid_t>(pid), "sandbox setup", pidfd);
  } else {
    reply(sock, 0, static_cast<pid_t>(pid), "", pidfd);
    workers.push_back(Tracked{pidfd, static_cast<pid_t>(pid), p.isolate});
    return;
  }
  ::close(pidfd);
}

// A network namespace with the loopback interface up and nothing else. The helper steps into
// it to bring `lo` up and takes a handle to it, then steps back.
void serve_netns(int sock, int host_netns) {
  if (::unshare(CLONE_NEWNET) != 0) return reply(sock, errno, 0, "unshare(CLONE_NEWNET)", -1);
  int err = 0;
  const char* where = "";
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    err = errno, where = "loopback flags";
  } else {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) err = errno, where = "bring loopback up";
  }
  if (s >= 0) ::close(s);
  int ns = err ? -1 : ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (!err && ns < 0) err = errno, where = "open the network namespace";
  if (::setns(host_netns, CLONE_NEWNET) != 0) ::_exit(1);  // cannot go on safely
  reply(sock, err, 0, where, ns);
  if (ns >= 0) ::close(ns);
}

void serve_one(int sock, pid_t daemon_pid, std::vector<char>& buf, const Confinement& confinement,
               const sock_fprog* filter, int host_netns, int last_cap,
               std::vector<Tracked>& workers) {
  int fds[kMaxFds];
  size_t nfds = 0;
  ssize_t n = recv_with_fds(sock, buf.data(), buf.size(), fds, &nfds);
  if (n <= 0) {
    // The daemon closed its end: it stopped, or it died and the kernel closed it. Either way
    // no worker may stay behind it.
    kill_workers(workers);
    ::_exit(0);
  }
  struct Closer {
    int* fds;
    size_t n;
    ~Closer() {
      for (size_t i = 0; i < n; ++i) ::close(fds[i]);
    }
  } closer{fds, nfds};
  Reader r(buf.data(), static_cast<size_t>(n));
  uint32_t kind = 0;
  if (!r.u32(kind)) return reply(sock, EPROTO, 0, "request", -1);
  if (kind == kNetns) return serve_netns(sock, host_netns);
  if (kind == kSpawn) {
    return serve_spawn(sock, daemon_pid, r, fds, nfds, confinement, filter, host_netns, last_cap,
                       workers);
  }
  reply(sock, EPROTO, 0, "request kind", -1);
}

int read_last_cap() {
  int fd = ::open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  char text[16] = {};
  if (fd >= 0) {
    [[maybe_unused]] ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
  }
  int value = std::atoi(text);
  return value > 0 ? value : 63;  // PR_CAPBSET_DROP answers EINVAL past the last one
}

[[noreturn]] void helper_main(int sock, pid_t daemon_pid, const Confinement& confinement) {
  // No parent-death signal here: when the daemon dies, the kernel closes its end of `sock`, and
  // the helper must live on long enough to kill the workers (serve_one). It never changes its
  // credentials, and between requests it waits on `sock`, so that end of file always comes.
  if (::getppid() != daemon_pid) ::_exit(0);
  ::prctl(PR_SET_NAME, "ember-spawner");
  // Above every descriptor a child sets up: it keeps this one as its lifeline (exec_child).
  if (int high = high_dup(sock); high >= 0) {
    ::close(sock);
    sock = high;
  }
  std::vector<Tracked> workers;
  std::vector<char> buf(kMaxRequestBytes);
  std::optional<sock_fprog> filter;
  if (confinement.seccomp) filter = confinement.seccomp->fprog();
  int host_netns = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  const int last_cap = read_last_cap();
  while (true) {
    serve_one(sock, daemon_pid, buf, confinement, filter ? &*filter : nullptr, host_netns, last_cap,
              workers);
  }
}

}  // namespace

Result<std::unique_ptr<Spawner>> Spawner::start(Confinement confinement) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Error::system("socketpair", "spawner", errno);
  }
  const pid_t daemon_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return Error::system("fork", "spawner", err);
  }
  if (pid == 0) {
    ::close(sv[0]);
    helper_main(sv[1], daemon_pid, confinement);
  }
  ::close(sv[1]);
  // The helper is this process's child and not yet reaped, so the pid cannot name another.
  os::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    int err = errno;
    ::close(sv[0]);  // the helper sees end of file and exits
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Error::system("pidfd_open", "spawner", err);
  }
  return std::unique_ptr<Spawner>(new Spawner(pid, std::move(pidfd), os::UniqueFd(sv[0])));
}

Spawner::~Spawner() {
  socket_.reset();  // the helper sees end of file and exits
  int status = 0;
  while (::waitpid(helper_pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

Result<os::ChildProcess> Spawner::spawn(const SpawnRequest& req) {
  if (req.argv.empty()) return Error::invalid("spawn: empty argv");
  const Isolation none;
  const Isolation& iso = req.isolation ? *req.isolation : none;
  std::vector<int> fds;
  uint32_t mask = 0;
  for (int i = 0; i < 4; ++i) {
    if (req.fds[i] >= 0) {
      mask |= 1u << i;
      fds.push_back(req.fds[i]);
    }
  }
  if (iso.netns_fd >= 0) {
    mask |= 1u << 4;
    fds.push_back(iso.netns_fd);
  }
  if (iso.cgroup_dir_fd >= 0) {
    mask |= 1u << 5;
    fds.push_back(iso.cgroup_dir_fd);
  }
  for (int fd : iso.cgroup_procs_fds) fds.push_back(fd);
  if (fds.size() > kMaxFds) return Error::invalid("spawn: too many descriptors");

  Writer w;
  w.u32(kSpawn);
  w.u32(mask);
  w.u32(static_cast<uint32_t>(iso.cgroup_procs_fds.size()));
  w.u32(req.isolation && iso.namespaces ? 1u : 0u);
  w.u32(iso.host_uid);
  w.u32(iso.host_gid);
  w.u32(iso.uid);
  w.u32(iso.gid);
  w.u64(req.max_processes);
  w.u64(req.max_data_bytes);
  w.u32(static_cast<uint32_t>(req.argv.size()));
  w.u32(static_cast<uint32_t>(req.env.size()));
  // A root is only ever built inside a user namespace: never with the host's privileges.
  const bool isolate = req.isolation && iso.namespaces;
  const std::vector<RootOp> no_root;
  const std::vector<RootOp>& root = isolate ? iso.root : no_root;
  w.u32(static_cast<uint32_t>(root.size()));
  w.str(req.cwd);
  w.str(iso.hostname);
  for (const auto& a : req.argv) w.str(a);
  for (const auto& e : req.env) w.str(e);
  for (const auto& op : root) {
    w.u32(static_cast<uint32_t>(op.kind));
    w.u32(op.mode);
    w.u32(op.read_only ? 1 : 0);
    w.u32(op.optional ? 1 : 0);
    w.u64(op.size);
    w.str(op.target);
    w.str(op.text);
  }
  if (w.bytes().size() > kMaxRequestBytes) return Error::too_large("spawn: request too large");

  std::lock_guard lock(mu_);
  if (send_with_fds(socket_.get(), w.bytes().data(), w.bytes().size(), fds.data(), fds.size()) <
      0) {
    return Error::system("send to", "spawner", errno);
  }
  ReplyHead head_reply{};
  int pidfd = -1;
  size_t got_fds = 0;
  ssize_t n = recv_with_fds(socket_.get(), &head_reply, sizeof head_reply, &pidfd, &got_fds);
  if (n != static_cast<ssize_t>(sizeof head_reply)) {
    if (got_fds) ::close(pidfd);
    return Error::system("receive from", "spawner", n < 0 ? errno : EPROTO);
  }
  os::UniqueFd owned(got_fds ? pidfd : -1);
  if (head_reply.error != 0) {
    if (owned) os::ChildProcess(head_reply.pid, std::move(owned));  // reaps the failed child
    head_reply.where[sizeof head_reply.where - 1] = '\0';
    return Error::system(head_reply.where, req.argv[0], head_reply.error);
  }
  if (!owned) return Error::system("spawn", req.argv[0], EPROTO);
  return os::ChildProcess(head_reply.pid, std::move(owned));
}

Result<os::UniqueFd> Spawner::new_network_namespace() {
  Writer w;
  w.u32(kNetns);
  std::lock_guard lock(mu_);
  if (send_with_fds(socket_.get(), w.bytes().data(), w.bytes().size(), nullptr, 0) < 0) {
    return Error::system("send to", "spawner", errno);
  }
  ReplyHead head_reply{};
  int fd = -1;
  size_t got_fds = 0;
  ssize_t n = recv_with_fds(socket_.get(), &head_reply, sizeof head_reply, &fd, &got_fds);
  if (n != static_cast<ssize_t>(sizeof head_reply)) {
    if (got_fds) ::close(fd);
    return Error::system("receive from", "spawner", n < 0 ? errno : EPROTO);
  }
  os::UniqueFd owned(got_fds ? fd : -1);
  if (head_reply.error != 0) {
    head_reply.where[sizeof head_reply.where - 1] = '\0';
    return Error::system(head_reply.where, "network namespace", head_reply.error);
  }
  if (!owned) return Error::system("network namespace", "spawner", EPROTO);
  return owned;
}

}  // namespace ember::sandbox

#include "helper.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "child.h"
#include "helper_wire.h"

namespace ember::sandbox::helper {

using namespace wire;  // NOLINT: the helper speaks the wire throughout
using child::ChildError;

namespace {

void reply(int sock, int error, pid_t pid, const char* where, int fd) {
  ReplyHead head{};
  head.error = error;
  head.pid = pid;
  std::snprintf(head.where, sizeof head.where, "%s", where);
  send_with_fds(sock, &head, sizeof head, &fd, fd >= 0 ? 1 : 0);
}

bool write_file(const char* path, const char* text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t len = std::strlen(text);
  bool ok = ::write(fd, text, len) == static_cast<ssize_t>(len);
  ::close(fd);
  return ok;
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
                 int last_cap, std::vector<Tracked>& workers, const ChildEntry* entry) {
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
  if (entry && entry->child_tid) {
    args.flags |= CLONE_CHILD_SETTID;
    args.child_tid = reinterpret_cast<uint64_t>(entry->child_tid);
  }
  if (entry && entry->before_clone) entry->before_clone();
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) {
    child::exec_child(p, error_fd, child_sync, sock, daemon_pid, confinement, filter, entry);
  }
  int clone_errno = errno;
  if (entry && entry->after_clone) entry->after_clone();
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
      if (!setup_error && ::send(sync[0], &byte, 1, MSG_NOSIGNAL) != 1) setup_error = errno;
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
    if (child_error.step == child::kStepOp && child_error.op >= 0 &&
        static_cast<size_t>(child_error.op) < p.ops.size()) {
      const auto& op = p.ops[static_cast<size_t>(child_error.op)];
      std::snprintf(where, sizeof where, "sandbox root: %s /%s", child::op_name(op.kind),
                    op.target);
    } else {
      std::snprintf(where, sizeof where, "%s", child::step_name(child_error.step));
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

// Binds a host directory into a worker's mount namespace. The tree is cloned and flagged here,
// in the host's namespace, where the source can be reached; then the helper steps into the
// worker's namespace (setns resets its root and working directory), moves the tree into place,
// and steps back, restoring its root and working directory. A helper that cannot step back cannot
// go on safely and exits, which the daemon sees as the helper's death.
void serve_mount(int sock, Reader& r, const int* fds, size_t nfds, int host_mntns, int host_root,
                 int host_cwd) {
  const char* source = nullptr;
  const char* target = nullptr;
  uint64_t tmp_bytes = 0;
  if (nfds != 1 || !r.str(source) || !r.str(target) || !r.u64(tmp_bytes) || target[0] != '/') {
    return reply(sock, EPROTO, 0, "mount request", -1);
  }
  if (host_mntns < 0 || host_root < 0 || host_cwd < 0) {
    return reply(sock, ENOSYS, 0, "mount namespace", -1);
  }
  int tree = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, source,
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
  if (tree < 0) return reply(sock, errno, 0, "open_tree", -1);
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV;
  if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) !=
      0) {
    int err = errno;
    ::close(tree);
    return reply(sock, err, 0, "mount_setattr", -1);
  }
  int err = 0;
  const char* where = "";
  char options[64];
  std::snprintf(options, sizeof options, "size=%llu", static_cast<unsigned long long>(tmp_bytes));
  if (::setns(fds[0], CLONE_NEWNS) != 0) {
    err = errno, where = "join the mount namespace";
  } else {
    if (::syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      err = errno, where = "move_mount";
    } else if (tmp_bytes > 0 &&
               ::mount(nullptr, "/tmp", nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, options) != 0) {
      err = errno, where = "resize /tmp";
    }
    // setns gave the helper the namespace's root: its own (a chroot, say) comes back too.
    if (::setns(host_mntns, CLONE_NEWNS) != 0 || ::fchdir(host_root) != 0 || ::chroot(".") != 0 ||
        ::fchdir(host_cwd) != 0) {
      ::_exit(1);
    }
  }
  ::close(tree);
  reply(sock, err, 0, where, -1);
}

void serve_one(int sock, pid_t daemon_pid, std::vector<char>& buf, const Confinement& confinement,
               const sock_fprog* filter, int host_netns, int host_mntns, int host_root,
               int host_cwd, int last_cap, std::vector<Tracked>& workers, const ChildEntry* entry) {
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
  // A request carries a function's environment, its secrets included. Nothing of it may stay
  // in this process's memory once served: a zygote's later children are copies of that memory.
  // (Every string of a request is read in place, in `buf`.)
  struct Wiper {
    char* data;
    size_t n;
    ~Wiper() { ::explicit_bzero(data, n); }
  } wiper{buf.data(), static_cast<size_t>(n)};
  Reader r(buf.data(), static_cast<size_t>(n));
  uint32_t kind = 0;
  if (!r.u32(kind)) return reply(sock, EPROTO, 0, "request", -1);
  // A zygote only spawns: namespaces and mounts stay with the helper.
  if (kind == kNetns && !entry) return serve_netns(sock, host_netns);
  if (kind == kMount && !entry) {
    return serve_mount(sock, r, fds, nfds, host_mntns, host_root, host_cwd);
  }
  if (kind == kSpawn) {
    return serve_spawn(sock, daemon_pid, r, fds, nfds, confinement, filter, host_netns, last_cap,
                       workers, entry);
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

}  // namespace

[[noreturn]] void helper_main(int sock, pid_t daemon_pid, const Confinement& confinement,
                              const ChildEntry* entry) {
  // No parent-death signal here: when the daemon dies, the kernel closes its end of `sock`, and
  // the helper must live on long enough to kill the workers (serve_one). It never changes its
  // credentials, and between requests it waits on `sock`, so that end of file always comes.
  if (::getppid() != daemon_pid) ::_exit(0);
  ::prctl(PR_SET_NAME, entry ? "ember-zygote" : "ember-spawner");
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
  int host_mntns = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  int host_root = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int host_cwd = ::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int last_cap = read_last_cap();
  while (true) {
    serve_one(sock, daemon_pid, buf, confinement, filter ? &*filter : nullptr, host_netns,
              host_mntns, host_root, host_cwd, last_cap, workers, entry);
  }
}

}  // namespace ember::sandbox::helper

namespace ember::sandbox {

[[noreturn]] void serve_spawn_requests(int sock, pid_t daemon_pid, const Confinement& confinement,
                                       const ChildEntry* entry) {
  helper::helper_main(sock, daemon_pid, confinement, entry);
}

}  // namespace ember::sandbox

#include "ember/sandbox/spawner.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ember::sandbox {

namespace {

// Requests and replies are single SOCK_SEQPACKET messages. A request is
//   u32 argc, u32 envc, u32 fd_mask, then cwd, argv and env as NUL-terminated strings,
// with the descriptors of fd_mask attached in order; a reply is
//   i32 error (0 or errno), i32 pid, char where[32],
// with the pidfd attached on success.
constexpr size_t kMaxRequestBytes = 128 * 1024;
constexpr int kFirstHighFd = 16;

struct ReplyHead {
  int32_t error;
  int32_t pid;
  char where[32];
};

// Sends `data` with `fds` attached.
ssize_t send_with_fds(int sock, const void* data, size_t size, const int* fds, size_t nfds) {
  iovec iov{const_cast<void*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
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
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
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
      for (size_t i = 0; i < count && *nfds < 4; ++i) {
        std::memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
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

// ---- the helper process ----

struct Prepared {
  std::vector<char*> argv;
  std::vector<char*> env;
  const char* cwd = "/";
  std::array<int, 4> fds = {-1, -1, -1, -1};
};

// Runs in the new process between clone3 and execve: async-signal-safe calls only. Everything
// it uses was prepared by the helper before the clone.
[[noreturn]] void exec_child(const Prepared& p, int error_fd, pid_t daemon_pid) {
  // Die with the daemon; if it is already gone, the signal will never come, so check.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(127);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::setsid();
  int err = 0;
  for (int target = 0; target < 4 && err == 0; ++target) {
    int source = p.fds[target];
    if (source < 0 && target < 3) source = ::open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
    // All sources sit at kFirstHighFd or above, so no dup2 clobbers one still needed.
    if (source >= 0 && ::dup2(source, target) < 0) err = errno;
  }
  if (err == 0 && ::dup3(error_fd, 4, O_CLOEXEC) < 0) err = errno;
  if (err == 0 && ::syscall(SYS_close_range, 5, ~0U, 0) != 0) err = errno;
  if (err == 0 && p.fds[3] < 0) ::close(3);
  if (err == 0 && ::chdir(p.cwd) != 0) err = errno;
  if (err == 0) {
    ::execve(p.argv[0], p.argv.data(), p.env.data());
    err = errno;
  }
  [[maybe_unused]] ssize_t ignored = ::write(4, &err, sizeof err);
  ::_exit(127);
}

void reply(int sock, int error, pid_t pid, const char* where, int pidfd) {
  ReplyHead head{};
  head.error = error;
  head.pid = pid;
  std::strncpy(head.where, where, sizeof head.where - 1);
  send_with_fds(sock, &head, sizeof head, &pidfd, pidfd >= 0 ? 1 : 0);
}

void serve_one(int sock, pid_t daemon_pid, std::vector<char>& buf) {
  int fds[4];
  size_t nfds = 0;
  ssize_t n = recv_with_fds(sock, buf.data(), buf.size(), fds, &nfds);
  if (n <= 0) ::_exit(0);  // the daemon closed its end: nothing left to serve
  struct Closer {
    int* fds;
    size_t n;
    ~Closer() {
      for (size_t i = 0; i < n; ++i) ::close(fds[i]);
    }
  } closer{fds, nfds};

  uint32_t head[3];
  if (static_cast<size_t>(n) < sizeof head) return reply(sock, EPROTO, 0, "request", -1);
  std::memcpy(head, buf.data(), sizeof head);
  const uint32_t argc = head[0], envc = head[1], mask = head[2];
  Prepared p;
  const char* cursor = buf.data() + sizeof head;
  const char* end = buf.data() + n;
  auto next_string = [&]() -> char* {
    const char* nul = static_cast<const char*>(std::memchr(cursor, '\0', end - cursor));
    if (!nul) return nullptr;
    char* s = const_cast<char*>(cursor);
    cursor = nul + 1;
    return s;
  };
  p.cwd = next_string();
  for (uint32_t i = 0; i < argc && p.cwd; ++i) p.argv.push_back(next_string());
  for (uint32_t i = 0; i < envc && p.cwd; ++i) p.env.push_back(next_string());
  bool malformed = !p.cwd || argc == 0 ||
                   std::find(p.argv.begin(), p.argv.end(), nullptr) != p.argv.end() ||
                   std::find(p.env.begin(), p.env.end(), nullptr) != p.env.end();
  if (malformed) return reply(sock, EPROTO, 0, "request", -1);
  p.argv.push_back(nullptr);
  p.env.push_back(nullptr);

  size_t used = 0;
  for (int i = 0; i < 4; ++i) {
    if (!(mask & (1u << i))) continue;
    if (used >= nfds) return reply(sock, EPROTO, 0, "descriptors", -1);
    p.fds[i] = ::fcntl(fds[used++], F_DUPFD_CLOEXEC, kFirstHighFd);
    if (p.fds[i] < 0) return reply(sock, errno, 0, "dup", -1);
  }
  struct HighCloser {
    std::array<int, 4>& fds;
    ~HighCloser() {
      for (int fd : fds) {
        if (fd >= 0) ::close(fd);
      }
    }
  } high_closer{p.fds};

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return reply(sock, errno, 0, "pipe", -1);
  int error_fd = ::fcntl(pipefd[1], F_DUPFD_CLOEXEC, kFirstHighFd);
  ::close(pipefd[1]);

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_PARENT;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) exec_child(p, error_fd, daemon_pid);
  int clone_errno = errno;
  ::close(error_fd);
  if (pid < 0) {
    ::close(pipefd[0]);
    return reply(sock, clone_errno, 0, "clone3", -1);
  }
  // End of file means execve succeeded (the pipe was close-on-exec); four bytes are its errno.
  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(pipefd[0], &exec_errno, sizeof exec_errno);
  } while (got < 0 && errno == EINTR);
  ::close(pipefd[0]);
  if (got == sizeof exec_errno) {
    // The child is the daemon's; it reaps the pidfd this reply hands over.
    reply(sock, exec_errno, static_cast<pid_t>(pid), "execve", pidfd);
  } else {
    reply(sock, 0, static_cast<pid_t>(pid), "", pidfd);
  }
  ::close(pidfd);
}

[[noreturn]] void helper_main(int sock, pid_t daemon_pid) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != daemon_pid) ::_exit(0);
  ::prctl(PR_SET_NAME, "ember-spawner");
  std::vector<char> buf(kMaxRequestBytes);
  while (true) serve_one(sock, daemon_pid, buf);
}

}  // namespace

Result<std::unique_ptr<Spawner>> Spawner::start() {
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
    helper_main(sv[1], daemon_pid);
  }
  ::close(sv[1]);
  return std::unique_ptr<Spawner>(new Spawner(pid, os::UniqueFd(sv[0])));
}

Spawner::~Spawner() {
  socket_.reset();  // the helper sees end of file and exits
  int status = 0;
  while (::waitpid(helper_pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

Result<os::ChildProcess> Spawner::spawn(const SpawnRequest& req) {
  if (req.argv.empty()) return Error::invalid("spawn: empty argv");
  std::string msg;
  uint32_t head[3] = {static_cast<uint32_t>(req.argv.size()), static_cast<uint32_t>(req.env.size()),
                      0};
  int fds[4];
  size_t nfds = 0;
  for (int i = 0; i < 4; ++i) {
    if (req.fds[i] >= 0) {
      head[2] |= 1u << i;
      fds[nfds++] = req.fds[i];
    }
  }
  msg.append(reinterpret_cast<const char*>(head), sizeof head);
  auto add = [&](const std::string& s) {
    msg.append(s);
    msg.push_back('\0');
  };
  add(req.cwd);
  for (const auto& a : req.argv) add(a);
  for (const auto& e : req.env) add(e);
  if (msg.size() > kMaxRequestBytes) return Error::too_large("spawn: request too large");

  std::lock_guard lock(mu_);
  if (send_with_fds(socket_.get(), msg.data(), msg.size(), fds, nfds) < 0) {
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
    return Error::system(head_reply.where, req.argv[0], head_reply.error);
  }
  if (!owned) return Error::system("spawn", req.argv[0], EPROTO);
  return os::ChildProcess(head_reply.pid, std::move(owned));
}

}  // namespace ember::sandbox

#include "ember/sandbox/spawner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "ember/os/fs.h"
#include "helper.h"
#include "helper_wire.h"

namespace ember::sandbox {

using namespace wire;  // NOLINT: the daemon's side of the wire

namespace {
constexpr int kZygoteStartTimeoutMs = 10'000;
}  // namespace

Result<std::unique_ptr<Spawner>> Spawner::fork_helper(const char* what,
                                                      const std::function<void(int)>& child) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Error::system("socketpair", what, errno);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return Error::system("fork", what, err);
  }
  if (pid == 0) {
    ::close(sv[0]);
    child(sv[1]);
    ::_exit(127);
  }
  ::close(sv[1]);
  // The helper is this process's child and not yet reaped, so the pid cannot name another.
  os::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    int err = errno;
    ::close(sv[0]);  // the helper sees end of file and exits
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Error::system("pidfd_open", what, err);
  }
  return std::unique_ptr<Spawner>(new Spawner(pid, std::move(pidfd), os::UniqueFd(sv[0])));
}

Result<std::unique_ptr<Spawner>> Spawner::start(Confinement confinement) {
  const pid_t daemon_pid = ::getpid();
  return fork_helper("spawner",
                     [&](int sock) { helper::helper_main(sock, daemon_pid, confinement); });
}

Result<std::unique_ptr<Spawner>> Spawner::start_zygote(const Confinement& confinement,
                                                       const std::string& program,
                                                       const std::vector<std::string>& args,
                                                       const std::vector<std::string>& env) {
  // The seccomp program travels in a memfd: the zygote cannot compile it as the daemon did.
  os::UniqueFd program_fd(
      static_cast<int>(::syscall(SYS_memfd_create, "ember-seccomp", MFD_CLOEXEC)));
  if (!program_fd) return Error::system("memfd_create", "zygote", errno);
  if (confinement.seccomp) {
    const auto& code = confinement.seccomp->instructions;
    if (auto written = os::write_all(program_fd.get(),
                                     std::string_view(reinterpret_cast<const char*>(code.data()),
                                                      code.size() * sizeof(sock_filter)));
        !written) {
      return written.error();
    }
    ::lseek(program_fd.get(), 0, SEEK_SET);
  }
  // Everything the child needs is made before the fork: between fork and execve it only moves
  // descriptors.
  std::vector<std::string> argv_text = {program};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<std::string> env_text = env;
  std::vector<char*> argv, envp;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  auto zygote = fork_helper("zygote", [&](int sock) {
    // Above 4 first, so that neither dup2 below clobbers the other's source.
    int high_sock = ::fcntl(sock, F_DUPFD, 10);
    int code = ::fcntl(program_fd.get(), F_DUPFD, 10);
    if (high_sock < 0 || code < 0 || ::dup2(high_sock, 3) != 3 || ::dup2(code, 4) != 4 ||
        ::syscall(SYS_close_range, 5, ~0U, 0) != 0) {
      return;
    }
    ::execve(program.c_str(), argv.data(), envp.data());
  });
  if (!zygote) return zygote;
  // The zygote says once that its interpreter is ready (one byte); waiting for it here, at
  // start-up, keeps a first python start from holding the event loop while it initialises.
  pollfd ready{(*zygote)->socket_.get(), POLLIN, 0};
  char byte = 0;
  int n;
  do {
    n = ::poll(&ready, 1, kZygoteStartTimeoutMs);
  } while (n < 0 && errno == EINTR);
  if (n != 1 || ::recv((*zygote)->socket_.get(), &byte, 1, 0) != 1 || byte != 'R') {
    return Error::system("start", program, n == 0 ? ETIMEDOUT : EPIPE);
  }
  return zygote;
}

Spawner::~Spawner() {
  socket_.reset();  // the helper sees end of file and exits
  int status = 0;
  while (::waitpid(helper_pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

namespace {

struct Reply {
  ReplyHead head;
  os::UniqueFd fd;  // the pidfd or namespace descriptor the reply carried, if any
};

// Sends one request and receives its reply; the caller holds the spawner's lock.
Result<Reply> exchange(int sock, const std::string& request, const std::vector<int>& fds) {
  if (send_with_fds(sock, request.data(), request.size(), fds.data(), fds.size()) < 0) {
    return Error::system("send to", "spawner", errno);
  }
  Reply reply{};
  int fd = -1;
  size_t got_fds = 0;
  ssize_t n = recv_with_fds(sock, &reply.head, sizeof reply.head, &fd, &got_fds);
  if (got_fds) reply.fd.reset(fd);
  if (n != static_cast<ssize_t>(sizeof reply.head)) {
    return Error::system("receive from", "spawner", n < 0 ? errno : EPROTO);
  }
  reply.head.where[sizeof reply.head.where - 1] = '\0';
  return reply;
}

}  // namespace

Result<os::ChildProcess> Spawner::spawn(const SpawnRequest& req) {
  std::vector<int> fds;
  auto request = encode_spawn(req, fds);
  if (!request) return request.error();
  std::lock_guard lock(mu_);
  auto reply = exchange(socket_.get(), *request, fds);
  if (!reply) return reply.error();
  if (reply->head.error != 0) {
    // A child that failed its set-up is reaped here, when the helper sent its pidfd.
    if (reply->fd) os::ChildProcess(reply->head.pid, std::move(reply->fd));
    return Error::system(reply->head.where, req.argv[0], reply->head.error);
  }
  if (!reply->fd) return Error::system("spawn", req.argv[0], EPROTO);
  return os::ChildProcess(reply->head.pid, std::move(reply->fd));
}

Result<os::UniqueFd> Spawner::new_network_namespace() {
  Writer w;
  w.u32(kNetns);
  std::lock_guard lock(mu_);
  auto reply = exchange(socket_.get(), w.bytes(), {});
  if (!reply) return reply.error();
  if (reply->head.error != 0) {
    return Error::system(reply->head.where, "network namespace", reply->head.error);
  }
  if (!reply->fd) return Error::system("network namespace", "spawner", EPROTO);
  return std::move(reply->fd);
}

Status Spawner::mount_into(int pidfd, const std::string& source, const std::string& target,
                           uint64_t tmp_bytes) {
  Writer w;
  w.u32(kMount);
  w.str(source);
  w.str(target);
  w.u64(tmp_bytes);
  std::lock_guard lock(mu_);
  auto reply = exchange(socket_.get(), w.bytes(), {pidfd});
  if (!reply) return reply.error();
  if (reply->head.error != 0) return Error::system(reply->head.where, target, reply->head.error);
  return {};
}

}  // namespace ember::sandbox

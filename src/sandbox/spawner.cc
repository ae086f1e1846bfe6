#include "ember/sandbox/spawner.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "helper.h"
#include "helper_wire.h"

namespace ember::sandbox {

using namespace wire;  // NOLINT: the daemon's side of the wire

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
    helper::helper_main(sv[1], daemon_pid, confinement);
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

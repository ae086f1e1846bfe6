#include "helper_wire.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace ember::sandbox::wire {

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

int high_dup(int fd) {
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, kFirstHighFd);
  return high;
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

Result<std::string> encode_spawn(const SpawnRequest& req, std::vector<int>& fds) {
  if (req.argv.empty()) return Error::invalid("spawn: empty argv");
  const Isolation none;
  const Isolation& iso = req.isolation ? *req.isolation : none;
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
  return w.bytes();
}

}  // namespace ember::sandbox::wire

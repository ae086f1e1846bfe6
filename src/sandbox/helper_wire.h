// The wire between the daemon and its spawner helper. Requests and replies are single
// SOCK_SEQPACKET messages with descriptors attached. A kSpawn request starts with the u32 kind,
// then the fields of a SpawnRequest (encode_spawn), with its descriptors attached in this order:
// the child's 0-3 (those in the mask), the network namespace, the cgroup directory, the v1
// cgroup.procs files. kNetns has no body. kMount carries a worker's pidfd and, as strings, the
// host directory to bind and where, then the u64 size /tmp is to get (0: unchanged). A reply is
// a ReplyHead with a pidfd (kSpawn), a namespace descriptor (kNetns) or nothing (kMount). The
// daemon encodes, the helper decodes; nothing here runs in a child between clone and execve.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ember/common/result.h"
#include "ember/sandbox/spawner.h"

namespace ember::sandbox::wire {

constexpr size_t kMaxRequestBytes = 256 * 1024;
constexpr size_t kMaxFds = 16;
// Descriptors the helper holds for a child sit at this number or above, clear of the 0-5 the
// child sets up, so no dup2 there clobbers one still needed.
constexpr int kFirstHighFd = 16;
constexpr uint32_t kSpawn = 1;
constexpr uint32_t kNetns = 2;
constexpr uint32_t kMount = 3;

struct ReplyHead {
  int32_t error;
  int32_t pid;
  char where[120];
};

// Sends `data` with `fds` attached.
ssize_t send_with_fds(int sock, const void* data, size_t size, const int* fds, size_t nfds);
// Receives one message; received descriptors are close-on-exec.
ssize_t recv_with_fds(int sock, void* data, size_t size, int* fds, size_t* nfds);

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

// A copy of `fd` at kFirstHighFd or above, close-on-exec; -1 on failure.
int high_dup(int fd);

// Encodes `req` as a kSpawn message; `fds` gets the descriptors to attach, in wire order.
Result<std::string> encode_spawn(const SpawnRequest& req, std::vector<int>& fds);

// Decodes a kSpawn message after its kind into `p`, moving the attached descriptors above
// kFirstHighFd (p.owned). Returns nullptr, or what is malformed.
const char* parse_spawn(Reader& r, const int* fds, size_t nfds, Prepared& p);

}  // namespace ember::sandbox::wire

// The file system a sandboxed worker sees, as a plan of RootOps: a read-only tmpfs root with the
// host's /usr, a few generated /etc files, the bundle at /var/task, the runtime shims at
// /opt/ember/runtime, a private size-limited /tmp, a minimal /dev and a fresh /proc with the
// host-wide files masked. Pure: the plan is data, checked by unit tests and carried out by the
// spawner.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ember/sandbox/spawner.h"

namespace ember::sandbox {

inline constexpr const char* kTaskRoot = "/var/task";
inline constexpr const char* kRuntimeRoot = "/opt/ember/runtime";
inline constexpr uid_t kWorkerUid = 1000;  // the worker's uid and gid inside its namespace
inline constexpr gid_t kWorkerGid = 1000;

// What of the host's top level a root reproduces; read once at start-up.
struct HostLayout {
  std::vector<std::pair<std::string, std::string>> symlinks;  // "bin" -> "usr/bin" (merged /usr)
  std::vector<std::string> dirs;                              // "lib64" when it is a directory
  std::vector<std::string> etc;  // host /etc entries bound read-only: ld.so.cache, ssl, ...

  // Reads /bin, /sbin, /lib* and the /etc entries a runtime may need from `root` ("/").
  static HostLayout read(const std::string& root = "/");
};

struct WorkerRoot {
  std::string bundle_dir;               // host path, bound at /var/task; empty: an empty dir
  std::string runtime_dir;              // host path, bound at /opt/ember/runtime
  std::vector<std::string> extra_dirs;  // host directories bound at their own path
  uint64_t tmp_bytes = 64ull << 20;     // size of /tmp
};

std::vector<RootOp> root_plan(const WorkerRoot& root, const HostLayout& host);

}  // namespace ember::sandbox

// What the kernel says about this process, for /metrics and benchmarks.
#pragma once

#include <cstdint>

namespace ember::os {

struct ProcStats {
  uint64_t rss_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;           // the soft RLIMIT_NOFILE
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // since the epoch
};

// Reads /proc/self; a field the kernel does not give stays 0.
ProcStats self_stats();

}  // namespace ember::os

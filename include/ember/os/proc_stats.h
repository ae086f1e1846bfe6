// What the kernel says about this process, for /metrics and benchmarks.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>

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

// How a process's main thread spent its life so far, from /proc/PID/schedstat: running on a CPU,
// and runnable but waiting for one. The rest of its life it was blocked (on I/O, a timer, a
// read that had nothing to read).
struct SchedTimes {
  std::chrono::nanoseconds on_cpu{0};
  std::chrono::nanoseconds waiting_for_cpu{0};

  SchedTimes& operator+=(const SchedTimes& o) {
    on_cpu += o.on_cpu;
    waiting_for_cpu += o.waiting_for_cpu;
    return *this;
  }
};

// nullopt when the process is gone or the kernel keeps no such statistics (CONFIG_SCHED_INFO).
std::optional<SchedTimes> sched_times(pid_t pid);

}  // namespace ember::os

#include "ember/os/proc_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace ember::os {

namespace {

// Seconds since the epoch at which the machine booted: "btime" in /proc/stat.
double boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

std::optional<SchedTimes> sched_times(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/schedstat");
  long long on_cpu = 0, waiting = 0;
  if (!(in >> on_cpu >> waiting)) return std::nullopt;
  return SchedTimes{std::chrono::nanoseconds(on_cpu), std::chrono::nanoseconds(waiting)};
}

ProcStats self_stats() {
  ProcStats s;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  {
    std::ifstream in("/proc/self/stat");
    std::string line;
    std::getline(in, line);
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    auto close = line.rfind(')');
    if (close != std::string::npos && ticks > 0) {
      std::istringstream rest(line.substr(close + 2));
      std::string field;
      double utime = 0, stime = 0, start = 0, rss = 0;
      // Field 3 (state) is the first after ')'; utime is 14, stime 15, starttime 22, rss 24.
      for (int i = 3; i <= 24 && rest >> field; ++i) {
        if (i == 14) utime = std::stod(field);
        if (i == 15) stime = std::stod(field);
        if (i == 22) start = std::stod(field);
        if (i == 24) rss = std::stod(field);
      }
      s.cpu_seconds = (utime + stime) / ticks;
      s.start_time_seconds = boot_time() + start / ticks;
      s.rss_bytes = static_cast<uint64_t>(rss * page);
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++s.open_fds;
  }
  if (s.open_fds > 0) --s.open_fds;  // the directory being listed
  if (rlimit r{}; ::getrlimit(RLIMIT_NOFILE, &r) == 0) s.max_fds = r.rlim_cur;
  return s;
}

}  // namespace ember::os

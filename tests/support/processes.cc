#include "processes.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

namespace ember::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::optional<ProcInfo> read_proc(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  const auto open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return std::nullopt;
  ProcInfo p;
  p.comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 2));
  rest >> p.state >> p.ppid;
  std::string skip;
  for (int field = 5; field < 22; ++field) rest >> skip;  // fields 5..21
  rest >> p.start;                                        // field 22
  return p;
}

std::map<pid_t, ProcInfo> descendants(pid_t root) {
  std::map<pid_t, ProcInfo> all;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stoi(name));
    if (auto p = read_proc(pid); p && p->state != 'Z') all.emplace(pid, *p);
  }
  std::map<pid_t, ProcInfo> out;
  std::vector<pid_t> frontier{root};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    for (const auto& [pid, info] : all) {
      if (info.ppid == parent && out.emplace(pid, info).second) frontier.push_back(pid);
    }
  }
  return out;
}

bool still_running(pid_t pid, const ProcInfo& was) {
  auto now = read_proc(pid);
  return now && now->start == was.start && now->state != 'Z';
}

std::vector<pid_t> survivors(const std::map<pid_t, ProcInfo>& set, steady_clock::time_point since,
                             milliseconds limit, milliseconds& took) {
  std::vector<pid_t> left;
  while (true) {
    left.clear();
    for (const auto& [pid, info] : set) {
      if (still_running(pid, info)) left.push_back(pid);
    }
    took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - since);
    if (left.empty() || took >= limit) return left;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

std::vector<fs::path> v1_cgroup_dirs(const std::string& daemon_log) {
  static const std::string kMarker = "worker cgroups under cgroup v1 at ";
  std::vector<fs::path> out;
  const auto at = daemon_log.rfind(kMarker);
  if (at == std::string::npos) return out;
  const auto end = daemon_log.find('\n', at);
  std::istringstream list(daemon_log.substr(at + kMarker.size(), end - at - kMarker.size()));
  std::string item;
  while (std::getline(list, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    if (auto space = item.find(' '); space != std::string::npos) item.resize(space);
    // Only what the daemon made: never a parent it was given.
    if (fs::path(item).filename().string().starts_with("ember-")) out.emplace_back(item);
  }
  return out;
}

std::vector<fs::path> worker_cgroups(const std::vector<fs::path>& dirs) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& dir : dirs) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.is_directory() && e.path().filename().string().starts_with("w-")) {
        out.push_back(e.path());
      }
    }
  }
  return out;
}

std::vector<pid_t> cgroup_pids(const fs::path& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  auto read = [&](const fs::path& d) {
    std::ifstream procs(d / "cgroup.procs");
    for (pid_t pid; procs >> pid;) out.push_back(pid);
  };
  read(dir);
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory()) read(it->path());
  }
  return out;
}

void sweep_cgroups(const std::vector<fs::path>& dirs) {
  const auto until = steady_clock::now() + milliseconds(2000);
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;
    // Deepest first: a cgroup is removed with rmdir, and only once it is empty.
    std::vector<fs::path> all;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (it->is_directory()) all.push_back(it->path());
    }
    all.push_back(dir);
    std::sort(all.begin(), all.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    for (const auto& d : all) {
      while (::rmdir(d.c_str()) != 0 && errno == EBUSY && steady_clock::now() < until) {
        std::this_thread::sleep_for(milliseconds(10));
      }
    }
  }
}

}  // namespace ember::testing

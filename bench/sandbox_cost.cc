// What each sandbox layer adds to starting a worker: spawns a process to completion in each
// configuration, layer by layer, and prints p50/p90/p99 in microseconds as a markdown table.
//
//   ember-bench-sandbox [ROUNDS]        (as root; runs against 127.0.0.1 nothing, touches no
//   network)
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "ember/os/cgroup.h"
#include "ember/sandbox/root.h"
#include "ember/sandbox/seccomp.h"
#include "ember/sandbox/spawner.h"

using namespace ember;
using namespace ember::sandbox;
using Clock = std::chrono::steady_clock;

namespace {

struct Row {
  std::string name;
  std::vector<double> us;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Spawns `argv` and waits for its exit; returns the microseconds it took, or -1.
double run_once(Spawner& s, const std::vector<std::string>& argv, std::optional<Isolation> iso) {
  SpawnRequest req;
  req.argv = argv;
  req.env = {"PATH=/usr/bin:/bin", "HOME=/tmp"};
  req.cwd = "/";
  req.isolation = std::move(iso);
  auto t0 = Clock::now();
  auto child = s.spawn(req);
  if (!child) {
    std::fprintf(stderr, "spawn: %s\n", child.error().message.c_str());
    return -1;
  }
  auto status = child->wait();
  auto t1 = Clock::now();
  if (!status || status->signaled || status->code != 0) return -1;
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::string runtimes = EMBER_SOURCE_DIR "/runtimes";
  auto policy = compile_seccomp();
  if (!policy) return 1;
  Confinement with_filter;
  with_filter.seccomp = std::move(*policy);
  auto plain = Spawner::start();
  auto filtered = Spawner::start(std::move(with_filter));
  if (!plain || !filtered) return 1;
  auto netns = (*filtered)->new_network_namespace();
  auto tree = os::CgroupTree::detect("bench");

  auto isolation = [&](bool root, bool net) {
    Isolation iso;
    iso.host_uid = iso.host_gid = 600065534;
    if (root) {
      WorkerRoot r;
      r.bundle_dir = runtimes;
      r.runtime_dir = runtimes;
      iso.root = root_plan(r, HostLayout::read());
    }
    if (net && netns) iso.netns_fd = netns->get();
    return iso;
  };

  struct Config {
    std::string name;
    Spawner* spawner;
    bool isolate, root, net, cgroup;
  };
  std::vector<Config> configs = {
      {"plain child (clone3, rlimits, fds)", plain->get(), false, false, false, false},
      {"+ seccomp filter", filtered->get(), false, false, false, false},
      {"+ user, pid, ipc, uts namespaces, dropped identity", filtered->get(), true, false, false,
       false},
      {"+ mount namespace, pivoted read-only root, /proc, /dev, /tmp", filtered->get(), true, true,
       false, false},
      {"+ joining the function's network namespace", filtered->get(), true, true, true, false},
      {"+ a cgroup (create, limits, join, remove)", filtered->get(), true, true, true, true},
  };

  const std::vector<std::vector<std::string>> programs = {
      {"/usr/bin/true"}, {"/usr/bin/node", "-e", "0"}, {"/usr/bin/python3", "-I", "-c", "pass"}};
  std::printf("| layers | program | p50 µs | p90 µs | p99 µs |\n|---|---|---:|---:|---:|\n");
  for (const auto& program : programs) {
    if (::access(program[0].c_str(), X_OK) != 0) continue;
    const int n = program[0] == "/usr/bin/true" ? rounds : std::max(10, rounds / 10);
    for (const auto& c : configs) {
      if (c.cgroup && !tree) continue;
      std::vector<double> us;
      for (int i = 0; i < n; ++i) {
        std::optional<Isolation> iso;
        std::unique_ptr<os::Cgroup> cg;
        auto t0 = Clock::now();
        if (c.isolate) iso = isolation(c.root, c.net);
        if (c.cgroup) {
          auto made = (*tree)->create("bench-" + std::to_string(i), os::CgroupLimits{});
          if (!made) break;
          cg = std::move(*made);
          iso->cgroup_dir_fd = cg->dir_fd();
          iso->cgroup_procs_fds = cg->procs_fds();
        }
        double t = run_once(*c.spawner, program, std::move(iso));
        cg.reset();
        if (t < 0) break;
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      if (us.size() != static_cast<size_t>(n)) {
        std::printf("| %s | `%s` | failed | | |\n", c.name.c_str(), program[0].c_str());
        continue;
      }
      std::printf("| %s | `%s` | %.0f | %.0f | %.0f |\n", c.name.c_str(), program[0].c_str(),
                  pct(us, 0.5), pct(us, 0.9), pct(us, 0.99));
    }
  }
  return 0;
}

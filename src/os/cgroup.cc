#include "ember/os/cgroup.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace ember::os {

namespace fs = std::filesystem;

namespace {

// Writes a control file. O_CREAT|O_TRUNC behaves like `echo value > file` on a cgroup file
// system and lets a plain directory stand in for one in tests.
Status write_control(const fs::path& file, std::string_view value) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Error::system("open", file.string(), errno);
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n != static_cast<ssize_t>(value.size())) {
    return Error::system("write", file.string(), n < 0 ? errno : EIO);
  }
  return {};
}

std::string read_control(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value of `key` in a "key value" per line file (memory.events, memory.oom_control).
uint64_t keyed_value(const std::string& text, std::string_view key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

// A number read again from the start of a control file kept open; 0 when it is not there.
uint64_t number_at(const UniqueFd& fd) {
  if (!fd) return 0;
  char buf[32];
  ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  return std::strtoull(buf, nullptr, 10);
}

uint64_t number(const std::string& text) {
  try {
    return std::stoull(text);
  } catch (...) {
    return 0;
  }
}

std::vector<pid_t> pids_in(const fs::path& procs) {
  std::ifstream in(procs);
  std::vector<pid_t> pids;
  pid_t pid;
  while (in >> pid) pids.push_back(pid);
  return pids;
}

// Directories whose removal failed because processes were still leaving them; retried later.
struct Graveyard {
  std::mutex mu;
  std::vector<fs::path> dirs;

  void bury(const fs::path& dir) {
    // The kernel may still be releasing the last exited process: give it a few moments.
    for (int i = 0; i < 20; ++i) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
      if (errno != EBUSY) break;
      std::this_thread::sleep_for(std::chrono::microseconds(250));
    }
    std::lock_guard lock(mu);
    dirs.push_back(dir);
  }
  void retry() {
    std::lock_guard lock(mu);
    std::erase_if(dirs,
                  [](const fs::path& d) { return ::rmdir(d.c_str()) == 0 || errno == ENOENT; });
  }
  // The last chance, at a stop: each waits up to a second for the kernel to release it (a
  // loaded machine takes a while to reap the last killed workers).
  void drain();
};

// Removes a cgroup directory, waiting up to a second for processes killed in it to leave.
// Only used for leftovers at start-up.
bool remove_when_empty(const fs::path& dir) {
  for (int i = 0; i < 200; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
    if (errno != EBUSY) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

void Graveyard::drain() {
  std::lock_guard lock(mu);
  std::erase_if(dirs, [](const fs::path& d) { return remove_when_empty(d); });
}

// ---- v2 ----

class V2Cgroup final : public Cgroup {
 public:
  V2Cgroup(std::string name, fs::path dir, UniqueFd fd, std::shared_ptr<Graveyard> graves, bool cpu)
      : name_(std::move(name)),
        dir_(std::move(dir)),
        fd_(std::move(fd)),
        graves_(graves),
        cpu_(cpu) {
    // memory.peak exists from Linux 5.19.
    peak_ = UniqueFd(::open((dir_ / "memory.peak").c_str(), O_RDONLY | O_CLOEXEC));
  }
  ~V2Cgroup() override {
    kill();
    peak_.reset();
    fd_.reset();
    graves_->bury(dir_);
  }
  const std::string& name() const override { return name_; }
  int dir_fd() const override { return fd_.get(); }
  std::vector<int> procs_fds() const override { return {}; }
  CgroupEvents events() const override {
    CgroupEvents e;
    e.oom_kills = keyed_value(read_control(dir_ / "memory.events"), "oom_kill");
    e.pids_limited = keyed_value(read_control(dir_ / "pids.events"), "max");
    e.memory_peak = number(read_control(dir_ / "memory.peak"));
    return e;
  }
  uint64_t memory_peak() const override { return number_at(peak_); }
  std::vector<pid_t> pids() const override { return pids_in(dir_ / "cgroup.procs"); }
  void kill() override {
    if (write_control(dir_ / "cgroup.kill", "1")) return;
    for (pid_t pid : pids_in(dir_ / "cgroup.procs")) ::kill(pid, SIGKILL);  // before 5.14
  }
  Status set_limits(const CgroupLimits& limits) override {
    if (auto s = write_control(dir_ / "memory.max", std::to_string(limits.memory_bytes)); !s) {
      return s;
    }
    if (auto s = write_control(dir_ / "pids.max", std::to_string(limits.max_pids)); !s) return s;
    if (cpu_) {  // optional: the cpu controller may be off
      set_cpu_weight(limits.cpu_weight);
      (void)write_control(dir_ / "cpu.max",
                          fmt::format("{} 100000", limits.cpu_max_percent * 1000));
    }
    return {};
  }
  void set_cpu_weight(uint32_t weight) override {
    if (cpu_) (void)write_control(dir_ / "cpu.weight", std::to_string(weight));
  }

 private:
  std::string name_;
  fs::path dir_;
  UniqueFd fd_;
  UniqueFd peak_;
  std::shared_ptr<Graveyard> graves_;
  bool cpu_;
};

class V2Tree final : public CgroupTree {
 public:
  explicit V2Tree(fs::path dir, bool cpu) : dir_(std::move(dir)), cpu_(cpu) {}
  Version version() const override { return Version::kV2; }
  std::string describe() const override { return "cgroup v2 at " + dir_.string(); }

  Result<std::unique_ptr<Cgroup>> create(const std::string& name,
                                         const CgroupLimits& limits) override {
    graves_->retry();
    fs::path dir = dir_ / ("w-" + name);
    if (::mkdir(dir.c_str(), 0755) != 0) return Error::system("mkdir", dir.string(), errno);
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
      int e = errno;
      ::rmdir(dir.c_str());
      return Error::system("open", dir.string(), e);
    }
    auto cgroup = std::make_unique<V2Cgroup>(name, dir, std::move(fd), graves_, cpu_);
    if (auto s = cgroup->set_limits(limits); !s) return s.error();
    // Optional: swap accounting may be off.
    (void)write_control(dir / "memory.swap.max", "0");
    (void)write_control(dir / "memory.oom.group", "1");  // an OOM kill takes the whole worker
    return std::unique_ptr<Cgroup>(std::move(cgroup));
  }

  int remove_stale() override {
    int removed = 0;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      if (!entry.is_directory() || !entry.path().filename().string().starts_with("w-")) continue;
      if (!write_control(entry.path() / "cgroup.kill", "1")) {
        for (pid_t pid : pids_in(entry.path() / "cgroup.procs")) ::kill(pid, SIGKILL);
      }
      if (remove_when_empty(entry.path())) ++removed;
    }
    return removed;
  }

 private:
  fs::path dir_;
  bool cpu_;
  std::shared_ptr<Graveyard> graves_ = std::make_shared<Graveyard>();
};

// ---- v1 ----

class V1Cgroup final : public Cgroup {
 public:
  V1Cgroup(std::string name, std::vector<fs::path> dirs, std::vector<UniqueFd> procs,
           std::shared_ptr<Graveyard> graves)
      : name_(std::move(name)), dirs_(std::move(dirs)), procs_(std::move(procs)), graves_(graves) {
    // The memory hierarchy comes first.
    if (!dirs_.empty()) {
      peak_ = UniqueFd(
          ::open((dirs_.front() / "memory.max_usage_in_bytes").c_str(), O_RDONLY | O_CLOEXEC));
    }
  }
  ~V1Cgroup() override {
    kill();
    peak_.reset();
    procs_.clear();
    for (const auto& d : dirs_) graves_->bury(d);
  }
  const std::string& name() const override { return name_; }
  int dir_fd() const override { return -1; }
  std::vector<int> procs_fds() const override {
    std::vector<int> fds;
    for (const auto& fd : procs_) fds.push_back(fd.get());
    return fds;
  }
  CgroupEvents events() const override {
    CgroupEvents e;
    for (const auto& d : dirs_) {
      if (fs::exists(d / "memory.oom_control")) {
        e.oom_kills = keyed_value(read_control(d / "memory.oom_control"), "oom_kill");
        e.memory_peak = number(read_control(d / "memory.max_usage_in_bytes"));
      }
      if (fs::exists(d / "pids.events")) {
        e.pids_limited = keyed_value(read_control(d / "pids.events"), "max");
      }
    }
    return e;
  }
  uint64_t memory_peak() const override { return number_at(peak_); }
  std::vector<pid_t> pids() const override {
    return dirs_.empty() ? std::vector<pid_t>{} : pids_in(dirs_.front() / "cgroup.procs");
  }
  void kill() override {
    // No cgroup.kill in v1. Workers are the first process of a pid namespace, so killing it
    // takes the rest; a second pass catches a process caught mid-fork.
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& d : dirs_) {
        for (pid_t pid : pids_in(d / "cgroup.procs")) ::kill(pid, SIGKILL);
      }
    }
  }
  Status set_limits(const CgroupLimits& limits) override {
    const fs::path& memory = dirs_[0];
    const std::string bytes = std::to_string(limits.memory_bytes);
    // Memory plus swap, when swap is accounted, is never below memory alone: raising, it goes
    // first; lowering, it goes second.
    const fs::path memsw = memory / "memory.memsw.limit_in_bytes";
    const bool swap = fs::exists(memsw);
    if (swap && number(read_control(memory / "memory.limit_in_bytes")) < limits.memory_bytes) {
      (void)write_control(memsw, bytes);
    }
    if (auto s = write_control(memory / "memory.limit_in_bytes", bytes); !s) return s;
    if (swap) (void)write_control(memsw, bytes);  // no swapping past the limit
    if (auto s = write_control(dirs_[1] / "pids.max", std::to_string(limits.max_pids)); !s) {
      return s;
    }
    if (dirs_.size() > 2) {
      set_cpu_weight(limits.cpu_weight);
      (void)write_control(dirs_[2] / "cpu.cfs_quota_us",
                          std::to_string(limits.cpu_max_percent * 1000));
    }
    return {};
  }
  void set_cpu_weight(uint32_t weight) override {
    // v1's shares: 1024 is v2's default weight of 100.
    if (dirs_.size() > 2)
      (void)write_control(dirs_[2] / "cpu.shares", std::to_string(weight * 1024 / 100));
  }

 private:
  std::string name_;
  std::vector<fs::path> dirs_;  // memory, pids, then cpu when available
  std::vector<UniqueFd> procs_;
  UniqueFd peak_;
  std::shared_ptr<Graveyard> graves_;
};

class V1Tree final : public CgroupTree {
 public:
  V1Tree(fs::path memory, fs::path pids, std::optional<fs::path> cpu)
      : memory_(std::move(memory)), pids_(std::move(pids)), cpu_(std::move(cpu)) {}
  // The workers are gone by now; their parents go too, so a stopped daemon leaves nothing.
  ~V1Tree() override {
    graves_->drain();
    for (const auto& base : bases()) (void)remove_when_empty(base);
  }
  std::vector<fs::path> bases() const {
    std::vector<fs::path> b = {memory_, pids_};
    if (cpu_) b.push_back(*cpu_);
    return b;
  }
  Version version() const override { return Version::kV1; }
  std::string describe() const override {
    return "cgroup v1 at " + memory_.string() + ", " + pids_.string() +
           (cpu_ ? ", " + cpu_->string() : std::string(" (no cpu controller)"));
  }

  Result<std::unique_ptr<Cgroup>> create(const std::string& name,
                                         const CgroupLimits& limits) override {
    graves_->retry();
    std::vector<fs::path> dirs;
    std::vector<UniqueFd> procs;
    std::vector<fs::path> bases = {memory_, pids_};
    if (cpu_) bases.push_back(*cpu_);
    for (const auto& base : bases) {
      fs::path dir = base / ("w-" + name);
      // Another daemon's start-up may have swept our base while it was empty: make it again.
      if (::mkdir(dir.c_str(), 0755) != 0 && errno == ENOENT) {
        ::mkdir(base.c_str(), 0755);
      }
      if (!fs::is_directory(dir) && ::mkdir(dir.c_str(), 0755) != 0) {
        int e = errno;
        for (const auto& d : dirs) ::rmdir(d.c_str());
        return Error::system("mkdir", dir.string(), e);
      }
      dirs.push_back(dir);
    }
    for (const auto& dir : dirs) {
      procs.emplace_back(::open((dir / "cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
      if (!procs.back()) {
        int e = errno;
        for (const auto& d : dirs) ::rmdir(d.c_str());
        return Error::system("open", (dir / "cgroup.procs").string(), e);
      }
    }
    auto cgroup = std::make_unique<V1Cgroup>(name, dirs, std::move(procs), graves_);
    (void)write_control(dirs[0] / "memory.swappiness", "0");
    if (cpu_) (void)write_control(dirs[2] / "cpu.cfs_period_us", "100000");
    if (auto s = cgroup->set_limits(limits); !s) return s.error();
    return std::unique_ptr<Cgroup>(std::move(cgroup));
  }

  int remove_stale() override {
    int removed = 0;
    for (const auto& base : bases()) {
      std::error_code ec;
      // Empty trees of daemons that were killed: rmdir only succeeds on an empty one, and a
      // live daemon whose tree is swept while empty makes it again.
      for (const auto& sibling : fs::directory_iterator(base.parent_path(), ec)) {
        const std::string n = sibling.path().filename().string();
        if (n.starts_with("ember-") && sibling.path() != base) ::rmdir(sibling.path().c_str());
      }
      for (const auto& entry : fs::directory_iterator(base, ec)) {
        if (!entry.is_directory() || !entry.path().filename().string().starts_with("w-")) {
          continue;
        }
        for (int pass = 0; pass < 2; ++pass) {
          for (pid_t pid : pids_in(entry.path() / "cgroup.procs")) ::kill(pid, SIGKILL);
        }
        if (remove_when_empty(entry.path()) && base == memory_) ++removed;
      }
    }
    return removed;
  }

 private:
  fs::path memory_, pids_;
  std::optional<fs::path> cpu_;
  std::shared_ptr<Graveyard> graves_ = std::make_shared<Graveyard>();
};

bool has_word(const std::string& text, std::string_view word) {
  std::istringstream in(text);
  std::string w;
  while (in >> w) {
    if (w == word) return true;
  }
  return false;
}

// Where the v1 hierarchy holding `controller` is mounted, from /proc/self/mountinfo.
std::optional<fs::path> v1_mount_of(std::string_view controller) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ... mount-point ... - fstype source super-options
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream after(line.substr(dash + 3));
    std::string fstype, source, options;
    after >> fstype >> source >> options;
    if (fstype != "cgroup") continue;
    std::istringstream opts(options);
    std::string opt;
    bool found = false;
    while (std::getline(opts, opt, ',')) found = found || opt == controller;
    if (!found) continue;
    std::istringstream before(line.substr(0, dash));
    std::string id, parent, devno, root, mount_point;
    before >> id >> parent >> devno >> root >> mount_point;
    if (root != "/") continue;  // a bind of part of the hierarchy: paths would not line up
    return fs::path(mount_point);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> cgroup_path_of(std::string_view text, std::string_view controller) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    // hierarchy-id:controller-list:path
    auto first = line.find(':');
    auto second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    std::string list = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (controller.empty()) {
      if (line.substr(0, first) == "0" && list.empty()) return path;
      continue;
    }
    std::istringstream names(list);
    std::string name;
    while (std::getline(names, name, ',')) {
      if (name == controller) return path;
    }
  }
  return std::nullopt;
}

Result<std::unique_ptr<CgroupTree>> CgroupTree::v2(const fs::path& dir, std::vector<pid_t> also) {
  const std::string controllers = read_control(dir / "cgroup.controllers");
  if (!has_word(controllers, "memory") || !has_word(controllers, "pids")) {
    return Error::unsupported(
        fmt::format("{} does not offer the memory and pids controllers (it has: {})", dir.string(),
                    controllers.empty() ? "none" : controllers.substr(0, controllers.find('\n'))));
  }
  const bool cpu = has_word(controllers, "cpu");
  fs::path leaf = dir / "daemon";
  if (::mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error::system("mkdir", leaf.string(), errno);
  }
  also.insert(also.begin(), ::getpid());
  for (pid_t pid : also) {
    if (auto s = write_control(leaf / "cgroup.procs", std::to_string(pid)); !s) return s.error();
  }
  std::string enable = cpu ? "+memory +pids +cpu" : "+memory +pids";
  if (auto s = write_control(dir / "cgroup.subtree_control", enable); !s) return s.error();
  return std::unique_ptr<CgroupTree>(new V2Tree(dir, cpu));
}

Result<std::unique_ptr<CgroupTree>> CgroupTree::v1(const fs::path& memory, const fs::path& pids,
                                                   const fs::path& cpu, const std::string& tag) {
  const std::string name = "ember-" + tag;
  auto make = [&](const fs::path& root) -> Result<fs::path> {
    fs::path dir = root / name;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return Error::system("mkdir", dir.string(), errno);
    }
    return dir;
  };
  auto m = make(memory);
  if (!m) return m.error();
  auto p = make(pids);
  if (!p) return p.error();
  std::optional<fs::path> c;
  if (!cpu.empty()) {
    if (auto made = make(cpu)) c = *made;
  }
  return std::unique_ptr<CgroupTree>(new V1Tree(*m, *p, c));
}

Result<std::unique_ptr<CgroupTree>> CgroupTree::detect(const std::string& tag,
                                                       std::vector<pid_t> also,
                                                       const fs::path& fs_root) {
  const std::string self = read_control("/proc/self/cgroup");
  struct statfs st;
  std::string why_not_v2;
  if (::statfs(fs_root.c_str(), &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) {
    auto path = cgroup_path_of(self, "");
    if (!path) return Error::unsupported("no cgroup v2 entry in /proc/self/cgroup");
    auto tree = v2(fs_root / fs::path(*path).relative_path(), std::move(also));
    if (tree) return tree;
    why_not_v2 = tree.error().message;
  } else {
    why_not_v2 = fs_root.string() + " is not a cgroup v2 mount";
  }
  auto memory_mount = v1_mount_of("memory");
  auto pids_mount = v1_mount_of("pids");
  if (!memory_mount || !pids_mount) {
    return Error::unsupported(why_not_v2 + "; no cgroup v1 memory and pids hierarchies either");
  }
  auto under = [&](const fs::path& mount, std::string_view controller) {
    auto path = cgroup_path_of(self, controller);
    return mount / fs::path(path.value_or("/")).relative_path();
  };
  auto cpu_mount = v1_mount_of("cpu");
  auto tree = v1(under(*memory_mount, "memory"), under(*pids_mount, "pids"),
                 cpu_mount ? under(*cpu_mount, "cpu") : fs::path(), tag);
  if (!tree) return Error::unsupported(why_not_v2 + "; v1: " + tree.error().message);
  return tree;
}

}  // namespace ember::os

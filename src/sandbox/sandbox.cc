#include "ember/sandbox/sandbox.h"

#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "ember/sandbox/seccomp.h"

namespace ember::sandbox {

namespace fs = std::filesystem;

std::string Layers::summary() const {
  std::vector<std::string> on;
  if (namespaces) on.emplace_back("namespaces (user, pid, mount, ipc, uts) with a private root");
  if (network) on.emplace_back("a network namespace per function");
  if (seccomp) on.push_back(fmt::format("seccomp ({} rules)", seccomp_rules));
  if (!cgroups.empty()) on.push_back("cgroup " + cgroups + " (memory, pids, cpu)");
  on.emplace_back("rlimits");
  std::string text;
  for (const auto& layer : on) text += (text.empty() ? "" : ", ") + layer;
  return text;
}

namespace {

// Whether `path` may run as root: it and every directory above it belong to root (or to this
// process's user) and no one else can change them. A directory others may write to is accepted
// only with the sticky bit (/tmp), where they cannot replace what they do not own.
Status safe_to_run_as_root(const fs::path& path) {
  fs::path at = fs::absolute(path).lexically_normal();
  while (true) {
    struct stat st {};
    if (::lstat(at.c_str(), &st) != 0) return Error::system("stat", at.string(), errno);
    if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
      return Error::invalid(at.string() + " belongs to another user");
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
        !(S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0)) {
      return Error::invalid(at.string() + " is writable by other users");
    }
    if (!at.has_relative_path()) return {};
    at = at.parent_path();
  }
}

}  // namespace

Result<std::unique_ptr<Sandbox>> Sandbox::create(SandboxOptions options) {
  Confinement confinement;
  confinement.max_open_files = options.max_open_files;
  auto policy = compile_seccomp();
  std::string seccomp_error;
  size_t rules = 0;
  if (policy) {
    rules = policy->rules;
    confinement.seccomp = std::move(*policy);
  } else {
    seccomp_error = policy.error().message;
  }
  auto spawner = Spawner::start(confinement);
  if (!spawner) return spawner.error();
  std::unique_ptr<Sandbox> sandbox(new Sandbox(std::move(options), std::move(*spawner)));
  sandbox->layers_.seccomp = seccomp_error.empty();
  sandbox->layers_.seccomp_rules = rules;
  if (!seccomp_error.empty()) {
    spdlog::warn(
        "sandbox: seccomp is off ({}): workers can make every system call, including "
        "ones that attack the kernel",
        seccomp_error);
  }
  if (auto s = sandbox->probe(); !s) return s.error();
  const auto& zygote = sandbox->options_.python_zygote;
  if (!zygote.empty() && sandbox->layers_.namespaces) {
    // The zygote runs as root, outside any sandbox, with the shim imported: both must be as
    // safe from other users as the daemon's own binary.
    Status safe = safe_to_run_as_root(zygote);
    if (safe) safe = safe_to_run_as_root(zygote.parent_path() / "bootstrap.py");
    Result<std::unique_ptr<Spawner>> started = safe.error();
    if (safe) {
      const size_t instructions =
          confinement.seccomp ? confinement.seccomp->instructions.size() : 0;
      started = Spawner::start_zygote(
          confinement, zygote.string(),
          {std::to_string(confinement.max_open_files), std::to_string(instructions),
           sandbox->options_.python_path, zygote.parent_path().string()},
          {"LANG=C.UTF-8"});
    }
    if (started) {
      sandbox->zygote_ = std::move(*started);
      spdlog::info("sandbox: python workers are forked from {} (pid {})",
                   zygote.filename().string(), sandbox->zygote_->helper_pid());
    } else {
      spdlog::warn("sandbox: no python zygote ({}): python workers start python3",
                   started.error().message);
    }
  }
  return sandbox;
}

Sandbox::~Sandbox() = default;

Status Sandbox::probe() {
  host_ = HostLayout::read();
  pooled_uid_count_ = std::min<uint32_t>(4096, options_.uid_count / 4);
  for (uint32_t i = 0; i < pooled_uid_count_; ++i) {
    pooled_uids_->free.push_back(options_.uid_base + options_.uid_count - 1 - pooled_uid_count_ +
                                 i);
  }
  for (const auto& interpreter : options_.interpreters) {
    std::error_code ec;
    fs::path real = fs::canonical(interpreter, ec);
    if (ec || real.string().starts_with("/usr/")) continue;
    // An interpreter installed elsewhere (/opt/node/bin/node) comes with its tree.
    fs::path dir = real.parent_path();
    if (dir.has_parent_path() && dir.parent_path() != "/") dir = dir.parent_path();
    if (std::find(extra_dirs_.begin(), extra_dirs_.end(), dir.string()) == extra_dirs_.end()) {
      extra_dirs_.push_back(dir.string());
    }
  }

  // Network: one namespace, made and dropped.
  if (auto ns = spawner_->new_network_namespace()) {
    layers_.network = true;
  } else {
    spdlog::warn(
        "sandbox: network namespaces are unavailable ({}): functions share the host's "
        "network and can reach 127.0.0.1, the admin API included",
        ns.error().message);
  }

  // Namespaces and the root: run /usr/bin/true in a full sandbox.
  {
    Isolation iso;
    iso.host_uid = iso.host_gid = options_.uid_base + options_.uid_count - 1;
    iso.uid = kWorkerUid;
    iso.gid = kWorkerGid;
    WorkerRoot root;
    root.bundle_dir = options_.runtimes_dir.string();
    root.runtime_dir = options_.runtimes_dir.string();
    root.tmp_bytes = 1 << 20;
    iso.root = root_plan(root, host_);
    SpawnRequest req;
    req.argv = {"/usr/bin/true"};
    req.cwd = "/";
    req.isolation = std::move(iso);
    auto child = spawner_->spawn(req);
    Result<os::ExitStatus> status = child ? child->wait() : Result<os::ExitStatus>(child.error());
    if (status && !status->signaled && status->code == 0) {
      layers_.namespaces = true;
    } else {
      spdlog::warn(
          "sandbox: namespaces are unavailable ({}): workers see the host's file "
          "system, processes and users",
          status ? status->describe() : status.error().message);
    }
  }
  if (!layers_.namespaces && layers_.network) {
    // Joining a network namespace happens with the other namespaces; without them it is lost.
    layers_.network = false;
    spdlog::warn("sandbox: network isolation needs the other namespaces; it is off too");
  }

  // cgroups: find a writable tree, clear what an earlier run left, try one cgroup.
  auto tree = os::CgroupTree::detect(options_.tag, {spawner_->helper_pid()});
  if (tree) {
    int stale = (*tree)->remove_stale();
    if (stale > 0) spdlog::info("sandbox: removed {} worker cgroups left by an earlier run", stale);
    auto test = (*tree)->create("probe", os::CgroupLimits{});
    if (test) {
      layers_.cgroups = (*tree)->version() == os::CgroupTree::Version::kV2 ? "v2" : "v1";
      spdlog::info("sandbox: worker cgroups under {}", (*tree)->describe());
      cgroups_ = std::move(*tree);
    } else {
      tree = test.error();
    }
  }
  if (!tree) {
    spdlog::warn(
        "sandbox: cgroups are unavailable ({}): memory and process counts fall back "
        "to rlimits per process, an OOM kill is not reported as such and CPU is not "
        "shared fairly",
        tree.error().message);
  }

  spdlog::info("sandbox: {}", layers_.summary());
  if (!layers_.network && !options_.insecure) {
    return Error::unsupported(
        "without network namespaces functions could reach the admin API on 127.0.0.1; run "
        "emberd as root (or with CAP_SYS_ADMIN), or pass --insecure to start anyway");
  }
  if (!layers_.network) spdlog::warn("sandbox: starting INSECURE, as --insecure asks");
  return {};
}

std::string Sandbox::task_root(const std::string& bundle_dir) const {
  return layers_.namespaces ? kTaskRoot : bundle_dir;
}

std::string Sandbox::runtime_root() const {
  return layers_.namespaces ? kRuntimeRoot : options_.runtimes_dir.string();
}

Result<uid_t> Sandbox::uid_for(const std::string& function) {
  if (auto it = uids_.find(function); it != uids_.end()) return it->second;
  // The last uid of the range belongs to the start-up probe, the ones below it to pooled workers.
  if (next_uid_ + 1 + pooled_uid_count_ >= options_.uid_count) {
    return Error::unsupported("sandbox: every host uid of the configured range is in use");
  }
  uid_t uid = options_.uid_base + next_uid_++;
  uids_.emplace(function, uid);
  return uid;
}

Result<int> Sandbox::netns_for(const std::string& function) {
  if (auto it = netns_.find(function); it != netns_.end()) return it->second.get();
  auto ns = spawner_->new_network_namespace();
  if (!ns) return ns.error();
  int fd = ns->get();
  netns_.emplace(function, std::move(*ns));
  return fd;
}

os::CgroupLimits Sandbox::limits_for(int memory_mb) const {
  os::CgroupLimits limits;
  limits.memory_bytes = static_cast<uint64_t>(memory_mb) << 20;
  limits.max_pids = options_.max_pids;
  // CPU share follows memory, as on Lambda: 1 GB weighs as much as the default.
  limits.cpu_weight = static_cast<uint32_t>(std::clamp(memory_mb * 100 / 1024, 1, 10000));
  limits.cpu_max_percent = options_.cpu_max_percent;
  return limits;
}

Result<Worker> Sandbox::spawn(SpawnRequest request, const WorkerSpec& spec) {
  Worker worker;
  const uint64_t memory_bytes = static_cast<uint64_t>(spec.memory_mb) << 20;
  if (spec.pooled && !layers_.namespaces) {
    return Error::unsupported("sandbox: pre-started workers need the namespace layer");
  }
  if (cgroups_) {
    os::CgroupLimits limits = limits_for(spec.memory_mb);
    // A pre-started worker starts in the background: it yields the CPUs to the workers serving
    // calls, and bind() gives it its function's weight.
    if (spec.pooled) limits.cpu_weight = 1;
    auto cgroup = cgroups_->create(fmt::format("{}-{}", spec.function, next_worker_++), limits);
    if (!cgroup) return cgroup.error();
    worker.cgroup = std::move(*cgroup);
  } else {
    // RLIMIT_NPROC counts every process of the uid: only meaningful with a uid per function.
    if (layers_.namespaces) request.max_processes = options_.max_pids;
    request.max_data_bytes = memory_bytes;
  }

  // A pooled worker's own network namespace lives as long as it does: the handle goes when
  // spawn() returns.
  os::UniqueFd own_netns;
  if (layers_.namespaces) {
    Result<uid_t> uid = spec.pooled ? pooled_uid() : uid_for(spec.function);
    if (!uid) return uid.error();
    if (spec.pooled) {
      // Given back once the worker, and with it everything in its pid namespace, is gone.
      worker.lease = std::shared_ptr<const void>(
          nullptr, [uids = std::weak_ptr<PooledUids>(pooled_uids_), uid = *uid](const void*) {
            if (auto u = uids.lock()) u->free.push_back(uid);
          });
    }
    Isolation iso;
    iso.host_uid = *uid;
    iso.host_gid = *uid;
    iso.uid = kWorkerUid;
    iso.gid = kWorkerGid;
    WorkerRoot root;
    root.bundle_dir = spec.bundle_dir;
    root.runtime_dir = options_.runtimes_dir.string();
    root.extra_dirs = extra_dirs_;
    root.tmp_bytes = static_cast<uint64_t>(spec.tmp_mb) << 20;
    iso.root = root_plan(root, host_);
    if (spec.host_network) {
      if (warned_host_network_.insert(spec.function).second) {
        spdlog::warn(
            "sandbox: [fn={}] runs in the HOST network namespace (\"network\": "
            "\"host\"): it can reach 127.0.0.1, the admin API included",
            spec.function);
      }
    } else if (layers_.network && spec.pooled) {
      auto ns = spawner_->new_network_namespace();
      if (!ns) return ns.error();
      own_netns = std::move(*ns);
      iso.netns_fd = own_netns.get();
    } else if (layers_.network) {
      auto ns = netns_for(spec.function);
      if (!ns) return ns.error();
      iso.netns_fd = *ns;
    }
    request.isolation = std::move(iso);
  }
  if (worker.cgroup) {
    auto& iso = request.isolation;
    if (!iso) {
      // Without namespaces the spawner still places the process in its cgroups.
      iso.emplace();
      iso->namespaces = false;
    }
    iso->cgroup_dir_fd = worker.cgroup->dir_fd();
    iso->cgroup_procs_fds = worker.cgroup->procs_fds();
  }
  // A python worker is a fork of the zygote, if the zygote stands for the python3 the request
  // names (a reload may have named another since it started).
  std::optional<Result<os::ChildProcess>> forked;
  if (spec.zygote && zygote_ && !request.argv.empty() && request.argv[0] == options_.python_path) {
    forked = zygote_->spawn(request);
    pollfd ended{zygote_->helper_pidfd(), POLLIN, 0};
    if (!*forked && ::poll(&ended, 1, 50) == 1) {
      spdlog::warn("sandbox: the python zygote has ended ({}): python workers start python3",
                   forked->error().message);
      zygote_.reset();
      // A child it let go before it died would share this request's descriptors: it is in the
      // worker's cgroup by then, which is emptied before a python3 takes its place. Without a
      // cgroup to empty, this start fails and the next one starts python3.
      if (!worker.cgroup) return forked->error();
      worker.cgroup->kill();
      forked.reset();
    }
  }
  Result<os::ChildProcess> child = forked ? std::move(*forked) : spawner_->spawn(request);
  if (!child) return child.error();
  worker.process = std::move(*child);
  return worker;
}

Result<uid_t> Sandbox::pooled_uid() {
  auto& free = pooled_uids_->free;
  if (free.empty())
    return Error::unsupported("sandbox: every host uid for pooled workers is in use");
  const uid_t uid = free.back();
  free.pop_back();
  return uid;
}

Status Sandbox::bind(const os::ChildProcess& process, os::Cgroup* cgroup, const WorkerSpec& pooled,
                     const WorkerSpec& spec) {
  if (!pooled.pooled || !layers_.namespaces) {
    return Error::invalid("sandbox: only a pooled worker can be bound to a function");
  }
  // The limits first: the worker may already be running (it was sent LOAD). They follow
  // memory_mb; a function of the pool's size keeps them but the CPU weight, which was the lowest
  // while the worker waited (spawn()).
  if (cgroup) {
    const os::CgroupLimits limits = limits_for(spec.memory_mb);
    if (spec.memory_mb != pooled.memory_mb) {
      if (auto st = cgroup->set_limits(limits); !st) return st;
    } else {
      cgroup->set_cpu_weight(limits.cpu_weight);
    }
  }
  const uint64_t tmp_bytes =
      spec.tmp_mb != pooled.tmp_mb ? static_cast<uint64_t>(spec.tmp_mb) << 20 : 0;
  return spawner_->mount_into(process.pidfd(), spec.bundle_dir, kTaskRoot, tmp_bytes);
}

void Sandbox::forget(const std::string& function) {
  netns_.erase(function);
  // The uid stays reserved for the name: a function deployed again under it gets the same one.
}

}  // namespace ember::sandbox

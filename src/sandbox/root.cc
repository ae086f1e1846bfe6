#include "ember/sandbox/root.h"

#include <filesystem>

namespace ember::sandbox {

namespace fs = std::filesystem;

namespace {

using K = RootOp::Kind;

RootOp op(K kind, std::string target, std::string text = {}) {
  RootOp o;
  o.kind = kind;
  o.target = std::move(target);
  o.text = std::move(text);
  return o;
}

RootOp file(std::string target, std::string text) {
  RootOp o = op(K::kFile, std::move(target), std::move(text));
  o.mode = 0644;
  return o;
}

RootOp tmpfs(std::string target, uint64_t size, uint32_t mode) {
  RootOp o = op(K::kTmpfs, std::move(target));
  o.size = size;
  o.mode = mode;
  return o;
}

RootOp optional(RootOp o) {
  o.optional = true;
  return o;
}

// Every directory on the way to `path` (relative), parents first.
void add_parents(std::vector<RootOp>& plan, const fs::path& path) {
  fs::path so_far;
  for (const auto& part : path.parent_path()) {
    so_far /= part;
    plan.push_back(op(K::kDir, so_far.string()));
  }
}

// Host /etc entries worth sharing, read-only: the dynamic loader's cache, TLS roots and OpenSSL
// settings, and the alternatives some /usr/bin links go through.
constexpr const char* kEtcEntries[] = {"ld.so.cache", "ssl", "alternatives", "mime.types"};
constexpr const char* kTopLevel[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
constexpr const char* kDevices[] = {"null", "zero", "full", "random", "urandom"};
// Host-wide files of a fresh /proc that tell about or act on the whole machine.
constexpr const char* kMaskedProcFiles[] = {
    "kcore", "keys",       "timer_list", "sched_debug", "sysrq-trigger", "latency_stats",
    "kmsg",  "kpagecount", "kpageflags", "kpagecgroup", "config.gz",     "vmallocinfo"};
constexpr const char* kMaskedProcDirs[] = {"acpi", "scsi", "firmware", "driver", "tty"};
constexpr const char* kReadOnlyProc[] = {"sys", "bus", "fs", "irq"};

}  // namespace

HostLayout HostLayout::read(const std::string& root) {
  HostLayout h;
  std::error_code ec;
  for (const char* name : kTopLevel) {
    fs::path p = fs::path(root) / name;
    auto st = fs::symlink_status(p, ec);
    if (ec) continue;
    if (fs::is_symlink(st)) {
      h.symlinks.emplace_back(name, fs::read_symlink(p, ec).string());
    } else if (fs::is_directory(st)) {
      h.dirs.emplace_back(name);
    }
  }
  for (const char* name : kEtcEntries) {
    if (fs::exists(fs::path(root) / "etc" / name, ec)) h.etc.emplace_back(name);
  }
  return h;
}

std::vector<RootOp> root_plan(const WorkerRoot& root, const HostLayout& host) {
  std::vector<RootOp> plan;
  plan.push_back(op(K::kBindHost, "usr", "/usr"));
  for (const auto& [name, target] : host.symlinks) plan.push_back(op(K::kSymlink, name, target));
  for (const auto& name : host.dirs) plan.push_back(op(K::kBindHost, name, "/" + name));

  plan.push_back(op(K::kDir, "etc"));
  plan.push_back(file("etc/passwd",
                      "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                      "sbx_user:x:1000:1000:Ember function:/tmp:/usr/sbin/nologin\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
  plan.push_back(file("etc/group", "root:x:0:\nsbx_user:x:1000:\nnogroup:x:65534:\n"));
  plan.push_back(file("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"));
  plan.push_back(file("etc/hostname", "ember\n"));
  plan.push_back(file("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"));
  plan.push_back(file("etc/resolv.conf", ""));
  for (const auto& name : host.etc) plan.push_back(op(K::kBindHost, "etc/" + name, "/etc/" + name));

  plan.push_back(op(K::kDir, "var"));
  // Without a bundle yet (a pooled worker), an empty directory the bundle is bound on later.
  plan.push_back(root.bundle_dir.empty() ? op(K::kDir, "var/task")
                                         : op(K::kBindHost, "var/task", root.bundle_dir));
  plan.push_back(op(K::kDir, "opt"));
  plan.push_back(op(K::kDir, "opt/ember"));
  plan.push_back(op(K::kBindHost, "opt/ember/runtime", root.runtime_dir));
  // /tmp before the extra directories: one that lives under /tmp must not be hidden by it.
  plan.push_back(tmpfs("tmp", root.tmp_bytes, 01777));
  for (const auto& dir : root.extra_dirs) {
    fs::path inside = fs::path(dir).relative_path();
    if (inside.empty()) continue;
    add_parents(plan, inside);
    plan.push_back(op(K::kBindHost, inside.string(), dir));
  }

  plan.push_back(tmpfs("dev", 64 * 1024, 0755));
  for (const char* name : kDevices) {
    RootOp dev = op(K::kBindHost, std::string("dev/") + name, std::string("/dev/") + name);
    dev.read_only = false;
    plan.push_back(std::move(dev));
  }
  plan.push_back(op(K::kSymlink, "dev/fd", "/proc/self/fd"));
  plan.push_back(op(K::kSymlink, "dev/stdin", "/proc/self/fd/0"));
  plan.push_back(op(K::kSymlink, "dev/stdout", "/proc/self/fd/1"));
  plan.push_back(op(K::kSymlink, "dev/stderr", "/proc/self/fd/2"));
  plan.push_back(op(K::kSymlink, "dev/shm", "/tmp"));
  plan.push_back(op(K::kReadOnly, "dev"));

  plan.push_back(op(K::kProc, "proc"));
  for (const char* name : kMaskedProcFiles) {
    plan.push_back(optional(op(K::kBindInside, std::string("proc/") + name, "dev/null")));
  }
  for (const char* name : kMaskedProcDirs) {
    plan.push_back(optional(tmpfs(std::string("proc/") + name, 4096, 0555)));
    plan.push_back(optional(op(K::kReadOnly, std::string("proc/") + name)));
  }
  for (const char* name : kReadOnlyProc) {
    plan.push_back(optional(op(K::kReadOnly, std::string("proc/") + name)));
  }
  return plan;
}

}  // namespace ember::sandbox

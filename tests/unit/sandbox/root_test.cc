// The root plan is data: what each worker's file system is made of, checked without running it.
#include "ember/sandbox/root.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "temp_dir.h"

namespace ember::sandbox {
namespace {

using K = RootOp::Kind;

const RootOp* find(const std::vector<RootOp>& plan, const std::string& target) {
  auto it =
      std::find_if(plan.begin(), plan.end(), [&](const RootOp& op) { return op.target == target; });
  return it == plan.end() ? nullptr : &*it;
}

size_t index_of(const std::vector<RootOp>& plan, const std::string& target) {
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].target == target) return i;
  }
  return plan.size();
}

HostLayout merged_usr() {
  HostLayout h;
  h.symlinks = {{"bin", "usr/bin"}, {"lib", "usr/lib"}};
  h.dirs = {"lib32"};
  h.etc = {"ld.so.cache", "ssl"};
  return h;
}

TEST(RootPlan, BindsUsrBundleAndRuntimeReadOnly) {
  WorkerRoot root{"/state/bundles/abc", "/opt/ember/share/runtimes", {}, 8 << 20};
  auto plan = root_plan(root, merged_usr());
  for (auto [target, source] : std::vector<std::pair<std::string, std::string>>{
           {"usr", "/usr"},
           {"var/task", "/state/bundles/abc"},
           {"opt/ember/runtime", "/opt/ember/share/runtimes"},
           {"lib32", "/lib32"},
           {"etc/ld.so.cache", "/etc/ld.so.cache"},
           {"etc/ssl", "/etc/ssl"}}) {
    const RootOp* op = find(plan, target);
    ASSERT_NE(op, nullptr) << target;
    EXPECT_EQ(op->kind, K::kBindHost) << target;
    EXPECT_EQ(op->text, source) << target;
    EXPECT_TRUE(op->read_only) << target;
  }
  EXPECT_EQ(find(plan, "bin")->kind, K::kSymlink);
  EXPECT_EQ(find(plan, "bin")->text, "usr/bin");
}

TEST(RootPlan, APooledWorkerWaitsWithAnEmptyTaskDirectoryAndAllElse) {
  auto pooled = root_plan(WorkerRoot{"", "/r", {}, 64 << 20}, merged_usr());
  auto bound = root_plan(WorkerRoot{"/b", "/r", {}, 64 << 20}, merged_usr());
  ASSERT_EQ(pooled.size(), bound.size());
  const RootOp* task = find(pooled, "var/task");
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->kind, K::kDir) << "the bundle is bound on it later";
  // Everything else is the same plan: a pooled worker is confined as a cold-started one.
  for (size_t i = 0; i < pooled.size(); ++i) {
    if (pooled[i].target == "var/task") continue;
    EXPECT_EQ(pooled[i].kind, bound[i].kind) << pooled[i].target;
    EXPECT_EQ(pooled[i].target, bound[i].target);
    EXPECT_EQ(pooled[i].text, bound[i].text) << pooled[i].target;
  }
}

TEST(RootPlan, TmpIsAPrivateTmpfsOfTheFunctionsSize) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {}, 8 << 20}, merged_usr());
  const RootOp* tmp = find(plan, "tmp");
  ASSERT_NE(tmp, nullptr);
  EXPECT_EQ(tmp->kind, K::kTmpfs);
  EXPECT_EQ(tmp->size, 8u << 20);
  EXPECT_EQ(tmp->mode, 01777u);
}

TEST(RootPlan, DevHoldsOnlyHarmlessDevicesAndEndsReadOnly) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {}, 1 << 20}, merged_usr());
  std::vector<std::string> devices;
  for (const auto& op : plan) {
    if (op.kind == K::kBindHost && op.target.starts_with("dev/")) {
      devices.push_back(op.text);
      EXPECT_FALSE(op.read_only) << "writes to /dev/null must work";
    }
  }
  EXPECT_EQ(devices, (std::vector<std::string>{"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                               "/dev/urandom"}));
  EXPECT_LT(index_of(plan, "dev/urandom"), index_of(plan, "dev") + plan.size());
  // The read-only step comes after every device.
  size_t read_only = plan.size();
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].kind == K::kReadOnly && plan[i].target == "dev") read_only = i;
  }
  EXPECT_GT(read_only, index_of(plan, "dev/shm"));
}

TEST(RootPlan, ProcIsFreshWithHostWideFilesMasked) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {}, 1 << 20}, merged_usr());
  ASSERT_NE(find(plan, "proc"), nullptr);
  EXPECT_EQ(find(plan, "proc")->kind, K::kProc);
  for (const char* masked : {"proc/kcore", "proc/keys", "proc/sysrq-trigger", "proc/timer_list"}) {
    const RootOp* op = find(plan, masked);
    ASSERT_NE(op, nullptr) << masked;
    EXPECT_EQ(op->kind, K::kBindInside);
    EXPECT_EQ(op->text, "dev/null");
    EXPECT_TRUE(op->optional) << "kernels without the file must not fail";
    EXPECT_GT(index_of(plan, masked), index_of(plan, "proc"));
  }
  const RootOp* sys = find(plan, "proc/sys");
  ASSERT_NE(sys, nullptr);
  EXPECT_EQ(sys->kind, K::kReadOnly);
}

TEST(RootPlan, InterpretersOutsideUsrAreBoundAtTheirOwnPath) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {"/opt/node"}, 1 << 20}, merged_usr());
  EXPECT_EQ(find(plan, "opt")->kind, K::kDir);
  const RootOp* node = find(plan, "opt/node");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->kind, K::kBindHost);
  EXPECT_EQ(node->text, "/opt/node");
}

TEST(RootPlan, ADirectoryUnderTmpIsBoundAfterTmpIsMounted) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {"/tmp/node"}, 1 << 20}, merged_usr());
  EXPECT_LT(index_of(plan, "tmp"), index_of(plan, "tmp/node"));
  EXPECT_LT(index_of(plan, "tmp/node"), plan.size());
}

TEST(RootPlan, GeneratedEtcNamesTheWorkersUser) {
  auto plan = root_plan(WorkerRoot{"/b", "/r", {}, 1 << 20}, merged_usr());
  const RootOp* passwd = find(plan, "etc/passwd");
  ASSERT_NE(passwd, nullptr);
  EXPECT_NE(passwd->text.find("sbx_user:x:1000:1000:"), std::string::npos);
  EXPECT_EQ(find(plan, "etc/resolv.conf")->text, "") << "no network, no resolver";
}

TEST(HostLayout, ReadsSymlinksAndDirectoriesOfTheTopLevel) {
  ember::testing::TempDir root;
  std::filesystem::create_directories(root / "usr/bin");
  std::filesystem::create_directory_symlink("usr/bin", root / "bin");
  std::filesystem::create_directories(root / "lib64");
  std::filesystem::create_directories(root / "etc/ssl");
  auto h = HostLayout::read(root.path().string());
  EXPECT_EQ(h.symlinks, (std::vector<std::pair<std::string, std::string>>{{"bin", "usr/bin"}}));
  EXPECT_EQ(h.dirs, std::vector<std::string>{"lib64"});
  EXPECT_EQ(h.etc, std::vector<std::string>{"ssl"});
}

}  // namespace
}  // namespace ember::sandbox

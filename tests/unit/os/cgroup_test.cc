// cgroup trees against a plain directory laid out like cgroupfs: what is created, what is
// written, what is read back, and what a restart cleans up.
#include "ember/os/cgroup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "temp_dir.h"

namespace ember::os {
namespace {

namespace fs = std::filesystem;
using ember::testing::read_text;
using ember::testing::TempDir;
using ember::testing::write_text;

TEST(CgroupPath, ReadsV1ControllersAndTheV2Entry) {
  const char* text =
      "12:pids:/user.slice\n"
      "4:cpu,cpuacct:/system.slice/emberd.service\n"
      "3:memory:/process_api/abc\n"
      "0::/system.slice/emberd.service\n";
  EXPECT_EQ(cgroup_path_of(text, "pids"), "/user.slice");
  EXPECT_EQ(cgroup_path_of(text, "cpu"), "/system.slice/emberd.service");
  EXPECT_EQ(cgroup_path_of(text, "cpuacct"), "/system.slice/emberd.service");
  EXPECT_EQ(cgroup_path_of(text, "memory"), "/process_api/abc");
  EXPECT_EQ(cgroup_path_of(text, ""), "/system.slice/emberd.service");
  EXPECT_EQ(cgroup_path_of(text, "freezer"), std::nullopt);
}

class CgroupV2 : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_ / "emberd.service";
    fs::create_directories(dir_);
    write_text(dir_ / "cgroup.controllers", "cpuset cpu io memory pids\n");
  }
  TempDir tmp_;
  fs::path dir_;
};

TEST_F(CgroupV2, MovesTheDaemonIntoALeafAndEnablesControllers) {
  auto tree = CgroupTree::v2(dir_, {4242});
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ((*tree)->version(), CgroupTree::Version::kV2);
  // A plain file keeps only the last write; the kernel takes one pid per write.
  EXPECT_EQ(read_text(dir_ / "daemon/cgroup.procs"), "4242");
  EXPECT_EQ(read_text(dir_ / "cgroup.subtree_control"), "+memory +pids +cpu");
}

TEST_F(CgroupV2, WorkerCgroupsGetTheirLimitsAndAreRemoved) {
  auto tree = CgroupTree::v2(dir_);
  ASSERT_TRUE(tree.ok());
  CgroupLimits limits;
  limits.memory_bytes = 256ull << 20;
  limits.max_pids = 64;
  limits.cpu_weight = 25;
  limits.cpu_max_percent = 50;
  {
    auto cg = (*tree)->create("fn-1", limits);
    ASSERT_TRUE(cg.ok()) << cg.error().message;
    fs::path w = dir_ / "w-fn-1";
    EXPECT_EQ(read_text(w / "memory.max"), "268435456");
    EXPECT_EQ(read_text(w / "memory.swap.max"), "0");
    EXPECT_EQ(read_text(w / "memory.oom.group"), "1");
    EXPECT_EQ(read_text(w / "pids.max"), "64");
    EXPECT_EQ(read_text(w / "cpu.weight"), "25");
    EXPECT_EQ(read_text(w / "cpu.max"), "50000 100000");
    EXPECT_GE((*cg)->dir_fd(), 0) << "for CLONE_INTO_CGROUP";
    EXPECT_TRUE((*cg)->procs_fds().empty());
    write_text(w / "memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n");
    write_text(w / "pids.events", "max 3\n");
    write_text(w / "memory.peak", "1234567\n");
    write_text(w / "cgroup.procs", "4242\n4243\n");
    EXPECT_EQ((*cg)->pids(), (std::vector<pid_t>{4242, 4243}));
    auto e = (*cg)->events();
    EXPECT_EQ(e.oom_kills, 1u);
    EXPECT_EQ(e.pids_limited, 3u);
    EXPECT_EQ(e.memory_peak, 1234567u);
  }
  // Destroying the handle kills what is left (cgroup.kill) and removes the directory, which a
  // plain directory full of files refuses: the kill request is what can be seen here.
  EXPECT_EQ(read_text(dir_ / "w-fn-1/cgroup.kill"), "1");
}

TEST_F(CgroupV2, RefusesATreeWithoutTheMemoryController) {
  write_text(dir_ / "cgroup.controllers", "cpu pids\n");
  auto tree = CgroupTree::v2(dir_);
  ASSERT_FALSE(tree.ok());
  EXPECT_NE(tree.error().message.find("memory and pids"), std::string::npos);
}

TEST_F(CgroupV2, LeftoversOfAnEarlierRunAreKilledAndRemoved) {
  fs::create_directories(dir_ / "w-old-1");
  fs::create_directories(dir_ / "w-old-2");
  fs::create_directories(dir_ / "keep-me");
  auto tree = CgroupTree::v2(dir_);
  ASSERT_TRUE(tree.ok());
  (*tree)->remove_stale();
  EXPECT_EQ(read_text(dir_ / "w-old-1/cgroup.kill"), "1");
  EXPECT_EQ(read_text(dir_ / "w-old-2/cgroup.kill"), "1");
  EXPECT_FALSE(fs::exists(dir_ / "keep-me/cgroup.kill")) << "only worker cgroups are touched";
  EXPECT_FALSE(fs::exists(dir_ / "daemon/cgroup.kill"));
}

TEST(CgroupV1, OneDirectoryPerHierarchyWithV1Limits) {
  TempDir tmp;
  for (const char* h : {"memory", "pids", "cpu"}) fs::create_directories(tmp / h);
  auto tree = CgroupTree::v1(tmp / "memory", tmp / "pids", tmp / "cpu", "t1");
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ((*tree)->version(), CgroupTree::Version::kV1);
  // A kernel makes cgroup.procs with the directory; the stand-in needs it made first.
  for (const char* h : {"memory", "pids", "cpu"}) {
    write_text(tmp / h / "ember-t1/w-a/cgroup.procs", "");
  }
  CgroupLimits limits;
  limits.memory_bytes = 128ull << 20;
  limits.max_pids = 32;
  limits.cpu_weight = 200;
  limits.cpu_max_percent = 150;
  auto cg = (*tree)->create("a", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ(read_text(tmp / "memory/ember-t1/w-a/memory.limit_in_bytes"), "134217728");
  EXPECT_EQ(read_text(tmp / "memory/ember-t1/w-a/memory.swappiness"), "0");
  EXPECT_EQ(read_text(tmp / "pids/ember-t1/w-a/pids.max"), "32");
  EXPECT_EQ(read_text(tmp / "cpu/ember-t1/w-a/cpu.shares"), "2048");
  EXPECT_EQ(read_text(tmp / "cpu/ember-t1/w-a/cpu.cfs_quota_us"), "150000");
  EXPECT_EQ((*cg)->dir_fd(), -1);
  EXPECT_EQ((*cg)->procs_fds().size(), 3u) << "the spawner writes the pid into each";
  write_text(tmp / "memory/ember-t1/w-a/memory.oom_control",
             "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  write_text(tmp / "memory/ember-t1/w-a/memory.max_usage_in_bytes", "999\n");
  write_text(tmp / "pids/ember-t1/w-a/pids.events", "max 5\n");
  auto e = (*cg)->events();
  EXPECT_EQ(e.oom_kills, 2u);
  EXPECT_EQ(e.pids_limited, 5u);
  EXPECT_EQ(e.memory_peak, 999u);
}

TEST(CgroupV1, StartUpSweepsEmptyTreesOfKilledDaemons) {
  TempDir tmp;
  for (const char* h : {"memory", "pids"}) {
    fs::create_directories(tmp / h / "ember-dead");
    fs::create_directories(tmp / h / "ember-busy/w-x");
    fs::create_directories(tmp / h / "other");
  }
  auto tree = CgroupTree::v1(tmp / "memory", tmp / "pids", "", "mine");
  ASSERT_TRUE(tree.ok());
  (*tree)->remove_stale();
  EXPECT_FALSE(fs::exists(tmp / "memory/ember-dead"));
  EXPECT_TRUE(fs::exists(tmp / "memory/ember-busy/w-x")) << "a tree with workers is left alone";
  EXPECT_TRUE(fs::exists(tmp / "memory/other"));
  EXPECT_TRUE(fs::exists(tmp / "memory/ember-mine"));
  tree->reset();
  EXPECT_FALSE(fs::exists(tmp / "memory/ember-mine")) << "a stopped daemon leaves nothing";
}

}  // namespace
}  // namespace ember::os

#include "ember/os/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "temp_dir.h"

namespace ember::os {
namespace {

using testing::count_entries;
using testing::read_text;
using testing::TempDir;
using testing::write_text;

TEST(AtomicWrite, CreatesFileWithModeAndLeavesNoTemp) {
  TempDir t;
  ASSERT_TRUE(atomic_write_file(t / "a.json", "hello", 0600).ok());
  EXPECT_EQ(read_text(t / "a.json"), "hello");
  struct stat st {};
  ASSERT_EQ(::stat((t / "a.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(count_entries(t.path()), 1u);
}

TEST(AtomicWrite, ReplacesExistingContent) {
  TempDir t;
  write_text(t / "a", "old old old");
  ASSERT_TRUE(atomic_write_file(t / "a", "new", 0644).ok());
  EXPECT_EQ(read_text(t / "a"), "new");
  EXPECT_EQ(count_entries(t.path()), 1u);
}

TEST(AtomicWrite, FailsCleanlyWhenDirectoryIsMissing) {
  TempDir t;
  auto st = atomic_write_file(t / "missing" / "a", "x", 0600);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().sys_errno, ENOENT);
  EXPECT_NE(st.error().message.find("open"), std::string::npos);
}

TEST(AtomicWrite, TempNamesAreRecognized) {
  TempDir t;
  // A crash between write and rename leaves a temp file; start-up sweeps use this predicate.
  EXPECT_TRUE(is_temp_name(".tmp-a.json.0123456789ab"));
  EXPECT_FALSE(is_temp_name("a.json"));
}

TEST(ReadFile, RefusesSymlinksAndLargeFiles) {
  TempDir t;
  write_text(t / "f", "0123456789");
  fs::create_symlink(t / "f", t / "link");
  EXPECT_FALSE(read_file(t / "link", 100).ok());
  auto big = read_file(t / "f", 5);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::kTooLarge);
  auto ok = read_file(t / "f", 10);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "0123456789");
}

TEST(DurableOps, RenameAndRemove) {
  TempDir t;
  write_text(t / "a", "x");
  ASSERT_TRUE(durable_rename(t / "a", t / "b").ok());
  EXPECT_FALSE(fs::exists(t / "a"));
  EXPECT_EQ(read_text(t / "b"), "x");
  ASSERT_TRUE(durable_remove(t / "b").ok());
  EXPECT_FALSE(fs::exists(t / "b"));
  EXPECT_TRUE(durable_remove(t / "b").ok()) << "removing a missing file is not an error";
}

TEST(EnsureDir, CreatesParentsAndRejectsFiles) {
  TempDir t;
  ASSERT_TRUE(ensure_dir(t / "a" / "b" / "c", 0700).ok());
  EXPECT_TRUE(fs::is_directory(t / "a" / "b" / "c"));
  write_text(t / "file", "");
  EXPECT_FALSE(ensure_dir(t / "file", 0700).ok());
}

TEST(UniqueFd, ClosesOnDestructionAndMoves) {
  TempDir t;
  write_text(t / "f", "x");
  int raw = -1;
  {
    auto fd = open_file(t / "f", O_RDONLY);
    ASSERT_TRUE(fd.ok());
    UniqueFd moved = std::move(*fd);
    EXPECT_FALSE(fd->valid());
    raw = moved.get();
    EXPECT_GE(::fcntl(raw, F_GETFD), 0);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
}

}  // namespace
}  // namespace ember::os

#include "ember/registry/bundle.h"

#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include "archive_builder.h"
#include "ember/common/crypto.h"
#include "temp_dir.h"

namespace ember::registry {
namespace {

namespace fs = std::filesystem;
using testing::ArchiveBuilder;
using testing::ArchiveKind;
using testing::TempDir;

// Bytes that really reached the disk (allocated blocks, so holes do not count).
uint64_t bytes_on_disk(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

class BundleTest : public ::testing::TestWithParam<ArchiveKind> {
 protected:
  Result<ExtractStats> extract(const std::string& data, BundleLimits limits = {}) {
    auto format = detect_format(data, "");
    if (!format) return format.error();
    return extract_bundle(data, *format, dest(), limits);
  }
  fs::path dest() const { return fs::canonical(tmp_.path()) / "out"; }
  void SetUp() override { fs::create_directory(dest()); }
  // Everything extraction wrote is under dest(); nothing appeared beside it.
  void expect_nothing_outside() {
    for (const auto& e : fs::directory_iterator(tmp_.path())) {
      EXPECT_EQ(e.path().filename(), "out") << "unexpected " << e.path();
    }
  }
  void expect_rejected(const std::string& data, const std::string& entry_fragment) {
    auto r = extract(data);
    ASSERT_FALSE(r.ok()) << "accepted an archive with " << entry_fragment;
    EXPECT_EQ(r.error().code, Errc::kInvalid);
    EXPECT_NE(r.error().message.find(entry_fragment), std::string::npos) << r.error().message;
    expect_nothing_outside();
  }
  ArchiveBuilder builder() const { return ArchiveBuilder(GetParam()); }

  TempDir tmp_;
};

TEST_P(BundleTest, ExtractsFilesDirsAndNormalizesModes) {
  auto data = builder()
                  .dir("lib", 0700)
                  .file("lib/a.js", "A", 0600)
                  .file("bin/run", "#!/bin/sh\n", 04755)
                  .file("./index.js", "I")
                  .build();
  auto r = extract(data);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(testing::read_text(dest() / "lib/a.js"), "A");
  EXPECT_EQ(testing::read_text(dest() / "index.js"), "I");
  struct stat st {};
  ASSERT_EQ(::stat((dest() / "bin/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "setuid bit must be dropped";
  ASSERT_EQ(::stat((dest() / "lib/a.js").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_EQ(::stat((dest() / "lib").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

// Hard links and device entries exist only in tar archives.
class TarBundleTest : public BundleTest {};

TEST_P(BundleTest, RejectsAbsolutePaths) {
  expect_rejected(builder().file("/tmp/ember-evil", "x").build(), "/tmp/ember-evil");
  EXPECT_FALSE(fs::exists("/tmp/ember-evil"));
}

TEST_P(BundleTest, RejectsDotDot) {
  expect_rejected(builder().file("../evil", "x").build(), "../evil");
  expect_rejected(builder().file("a/../../evil", "x").build(), "a/../../evil");
}

TEST_P(BundleTest, RejectsSymlinksLeavingTheTree) {
  expect_rejected(builder().symlink("passwd", "/etc/passwd").build(), "passwd");
  expect_rejected(builder().symlink("up", "..").build(), "up");
  expect_rejected(builder().symlink("a/b/c", "../../../x").build(), "a/b/c");
}

TEST_P(BundleTest, AcceptsSymlinksInsideTheTree) {
  auto data = builder()
                  .file("lib/real.js", "R")
                  .symlink("lib/alias.js", "real.js")
                  .symlink("top", "lib/../lib/real.js")
                  .build();
  auto r = extract(data);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(testing::read_text(dest() / "lib/alias.js"), "R");
  EXPECT_EQ(testing::read_text(dest() / "top"), "R");
}

TEST_P(BundleTest, NeverWritesThroughASymlink) {
  // "d" points inside the tree, but a later entry writing through it is refused anyway.
  auto data = builder().dir("sub").symlink("d", "sub").file("d/evil", "x").build();
  auto r = extract(data);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(fs::exists(dest() / "sub" / "evil"));
  expect_nothing_outside();
}

TEST_P(TarBundleTest, RejectsHardlinksLeavingTheTree) {
  expect_rejected(builder().hardlink("h", "/etc/passwd").build(), "\"h\"");
  expect_rejected(builder().hardlink("h", "../outside").build(), "\"h\"");
  expect_rejected(builder().hardlink("h", "not-yet-there").build(), "\"h\"");
}

TEST_P(TarBundleTest, AcceptsHardlinksToEarlierFiles) {
  auto r = extract(builder().file("a", "same").hardlink("b", "a").build());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(testing::read_text(dest() / "b"), "same");
}

TEST_P(TarBundleTest, RejectsDevicesAndFifos) {
  expect_rejected(builder().special("dev/null", AE_IFCHR).build(), "dev/null");
  expect_rejected(builder().special("disk", AE_IFBLK).build(), "disk");
  expect_rejected(builder().special("pipe", AE_IFIFO).build(), "pipe");
}

std::string zip_with_type(const std::string& name, uint32_t type) {
  return testing::zip_with_unix_type(
      ArchiveBuilder(ArchiveKind::kZip).file("ok.txt", "x").file(name, "data").build(), name, type);
}

TEST(ZipBundle, RejectsDevicesFifosAndSocketsFromTheCentralDirectory) {
  for (uint32_t type : {S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK}) {
    TempDir tmp;
    auto r = extract_bundle(zip_with_type("special", type), BundleFormat::kZip, tmp.path(), {});
    ASSERT_FALSE(r.ok()) << std::oct << type;
    EXPECT_EQ(r.error().code, Errc::kInvalid);
    EXPECT_NE(r.error().message.find("\"special\""), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("FIFOs"), std::string::npos) << r.error().message;
    EXPECT_TRUE(fs::is_empty(tmp.path())) << "nothing is extracted";
  }
  TempDir tmp;
  auto regular =
      extract_bundle(zip_with_type("plain", S_IFREG), BundleFormat::kZip, tmp.path(), {});
  EXPECT_TRUE(regular.ok()) << regular.error().message;
}

TEST_P(BundleTest, RejectsDuplicateEntries) {
  auto r = extract(builder().file("a", "1").file("a", "2").build());
  EXPECT_FALSE(r.ok());
}

TEST_P(BundleTest, StopsAtTheEntryLimit) {
  ArchiveBuilder b = builder();
  for (int i = 0; i < 20; ++i) b.file("f" + std::to_string(i), "x");
  BundleLimits limits;
  limits.max_entries = 10;
  auto format = detect_format(b.build(), "");
  auto r = extract_bundle(b.build(), *format, dest(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("more than 10 entries"), std::string::npos);
}

TEST_P(BundleTest, StopsAtTheExtractedSizeLimitWithoutWritingPastIt) {
  BundleLimits limits;
  limits.max_extracted_bytes = 1 << 20;
  limits.max_ratio = 1'000'000;  // this case is about the total, not the ratio
  std::string random;
  for (int i = 0; i < (3 << 20) / 64; ++i) random += sha256_hex(std::to_string(i));
  auto data = builder().file("big", random).build();
  auto format = detect_format(data, "");
  auto r = extract_bundle(data, *format, dest(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("\"big\""), std::string::npos) << r.error().message;
  EXPECT_LE(bytes_on_disk(dest()), limits.max_extracted_bytes);
}

TEST_P(BundleTest, StopsADecompressionBomb) {
  // 64 MiB of zeros compresses to about 64 KiB: a ratio near 1000.
  auto data = builder().file("index.js", "x").zeros("bomb", 64u << 20).build();
  ASSERT_LT(data.size(), 1u << 20);
  BundleLimits limits;  // defaults: ratio 200, 250 MiB total
  auto format = detect_format(data, "");
  auto r = extract_bundle(data, *format, dest(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("expands more than 200 times"), std::string::npos)
      << r.error().message;
  EXPECT_LE(bytes_on_disk(dest()),
            std::max<uint64_t>(limits.ratio_floor_bytes, limits.max_ratio * data.size()));
}

TEST_P(BundleTest, RejectsAnArchiveOverTheCompressedLimit) {
  BundleLimits limits;
  limits.max_compressed_bytes = 1024;
  std::string random;
  for (int i = 0; i < 200; ++i) random += sha256_hex(std::to_string(i));
  auto data = builder().file("a", random).build();
  auto r = extract_bundle(data, *detect_format(data, ""), dest(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kTooLarge);
}

TEST_P(BundleTest, RejectsTruncatedArchives) {
  std::string random;
  for (int i = 0; i < 2000; ++i) random += sha256_hex(std::to_string(i));
  auto data = builder().file("a", random).build();
  auto r = extract(data.substr(0, data.size() / 2));
  EXPECT_FALSE(r.ok());
}

INSTANTIATE_TEST_SUITE_P(Formats, BundleTest,
                         ::testing::Values(ArchiveKind::kZip, ArchiveKind::kTarGz),
                         [](const auto& info) {
                           return info.param == ArchiveKind::kZip ? "zip" : "targz";
                         });

INSTANTIATE_TEST_SUITE_P(Formats, TarBundleTest, ::testing::Values(ArchiveKind::kTarGz),
                         [](const auto&) { return "targz"; });

TEST(DetectFormat, SniffsAndChecksContentType) {
  std::string zip = ArchiveBuilder(ArchiveKind::kZip).file("a", "b").build();
  std::string tgz = ArchiveBuilder(ArchiveKind::kTarGz).file("a", "b").build();
  EXPECT_EQ(*detect_format(zip, "application/zip"), BundleFormat::kZip);
  EXPECT_EQ(*detect_format(zip, "application/octet-stream"), BundleFormat::kZip);
  EXPECT_EQ(*detect_format(zip, ""), BundleFormat::kZip);
  EXPECT_EQ(*detect_format(tgz, "application/gzip"), BundleFormat::kTarGz);
  EXPECT_EQ(*detect_format(tgz, "application/x-www-form-urlencoded"), BundleFormat::kTarGz);
  EXPECT_FALSE(detect_format(tgz, "application/zip").ok());
  EXPECT_FALSE(detect_format(zip, "application/gzip; charset=binary").ok());
  auto junk = detect_format("hello world", "");
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.error().code, Errc::kUnsupported);
  EXPECT_EQ(detect_format("", "").error().code, Errc::kInvalid);
}

TEST(PackDirectory, IsDeterministicAndRoundTrips) {
  TempDir src, out;
  testing::write_text(src / "function.json", "{}");
  testing::write_text(src / "lib" / "a.js", "A");
  fs::create_symlink("lib/a.js", src / "link.js");
  auto first = pack_directory(src.path());
  ASSERT_TRUE(first.ok()) << first.error().message;
  // Times do not matter, content does.
  struct utimbuf times {
    1000, 1000
  };
  ::utime((src / "lib" / "a.js").c_str(), &times);
  auto second = pack_directory(src.path());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(sha256_hex(*first), sha256_hex(*second));
  testing::write_text(src / "lib" / "a.js", "B");
  auto third = pack_directory(src.path());
  EXPECT_NE(sha256_hex(*first), sha256_hex(*third));

  fs::path dest = fs::canonical(out.path());
  auto r = extract_bundle(*third, BundleFormat::kTarGz, dest, {});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(testing::read_text(dest / "link.js"), "B");
}

}  // namespace
}  // namespace ember::registry

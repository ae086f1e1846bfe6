// kill -9 at random moments during deploys: after every restart the registry shows the old or
// the new version, complete, and nothing temporary piles up.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "archive_builder.h"
#include "daemon.h"
#include "ember/common/crypto.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

namespace fs = std::filesystem;

struct Bundle {
  std::string bytes;
  std::string sha;
  std::map<std::string, std::string> files;
};

// Enough files that unpacking and syncing take a while, so kills land inside a deploy.
Bundle make_bundle(const std::string& tag) {
  Bundle b;
  b.files["function.json"] = R"({"runtime":"node","handler":"index.handler"})";
  b.files["index.js"] = "exports.handler = async () => '" + tag + "';\n";
  for (int i = 0; i < 300; ++i) {
    std::string content;
    for (int j = 0; j < 64; ++j) content += sha256_hex(tag + std::to_string(i * 64 + j));
    b.files["lib/m" + std::to_string(i) + ".js"] = content;
  }
  ArchiveBuilder builder(ArchiveKind::kTarGz);
  for (const auto& [path, content] : b.files) builder.file(path, content);
  b.bytes = builder.build();
  b.sha = sha256_hex(b.bytes);
  return b;
}

TEST(CrashE2E, KillNineDuringDeploysNeverLeavesABrokenFunction) {
  TempDir tmp;
  const Bundle bundles[2] = {make_bundle("A"), make_bundle("B")};
  Daemon daemon(tmp / "state");

  // How long one deploy takes here, so the kills spread over its whole duration.
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(daemon.admin("PUT", "/v1/functions/calibrate", bundles[0].bytes).status, 201);
  auto deploy_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  ASSERT_EQ(daemon.admin("DELETE", "/v1/functions/calibrate").status, 204);
  daemon.stop(SIGKILL);

  std::mt19937 rng(20261124);
  std::uniform_int_distribution<int64_t> delay_us(0, std::max<int64_t>(deploy_us * 3 / 2, 1000));
  bool existed = false;
  int completed = 0, interrupted = 0;
  constexpr int kRounds = 24;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_TRUE(daemon.start()) << "round " << round << ": " << daemon.log();
    const Bundle& next = bundles[round % 2];
    int status = 0;
    std::thread client([&] { status = daemon.admin("PUT", "/v1/functions/f", next.bytes).status; });
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    daemon.stop(SIGKILL);
    client.join();
    (status == 0 ? interrupted : completed)++;

    ASSERT_TRUE(daemon.start()) << "round " << round << ": " << daemon.log();
    auto got = daemon.admin("GET", "/v1/functions/f");
    if (got.status == 404) {
      EXPECT_FALSE(existed) << "round " << round << ": a deployed function disappeared";
      EXPECT_NE(status, 201) << "round " << round << ": acknowledged deploy was lost";
    } else {
      ASSERT_EQ(got.status, 200) << got.body;
      existed = true;
      const std::string sha = got.json()["bundle_sha256"];
      const Bundle* active = sha == bundles[0].sha   ? &bundles[0]
                             : sha == bundles[1].sha ? &bundles[1]
                                                     : nullptr;
      ASSERT_NE(active, nullptr) << "round " << round << ": unknown bundle " << sha;
      if (status == 200 || status == 201) {
        EXPECT_EQ(active, &next) << "round " << round << ": acknowledged deploy was lost";
      }
      // The active version's bundle is complete, byte for byte.
      fs::path dir = daemon.state_dir() / "bundles" / sha;
      size_t files = 0;
      for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        ++files;
        auto rel = e.path().lexically_relative(dir).string();
        ASSERT_TRUE(active->files.contains(rel)) << rel;
        ASSERT_EQ(read_text(e.path()), active->files.at(rel)) << "round " << round << ": " << rel;
      }
      EXPECT_EQ(files, active->files.size()) << "round " << round;
    }
    EXPECT_EQ(count_entries(daemon.state_dir() / "tmp"), 0u) << "round " << round;
    for (const auto& e : fs::directory_iterator(daemon.state_dir() / "functions")) {
      EXPECT_FALSE(e.path().filename().string().starts_with(".tmp-")) << e.path();
    }
    EXPECT_LE(count_entries(daemon.state_dir() / "bundles"), 2u) << "round " << round;
    daemon.stop(SIGKILL);
  }
  std::cout << "[ crash    ] " << kRounds << " rounds: " << interrupted
            << " deploys cut by kill -9, " << completed << " answered first; one deploy takes ~"
            << deploy_us / 1000 << " ms\n";
  EXPECT_GT(interrupted, 0) << "no kill landed inside a deploy";
}

}  // namespace
}  // namespace ember::testing

#include "ember/registry/registry.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "archive_builder.h"
#include "postgres_server.h"
#include "temp_dir.h"

namespace ember::registry {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ArchiveBuilder;
using testing::ArchiveKind;
using testing::count_entries;
using testing::hello_bundle;
using testing::TempDir;

std::string bundle_with(const std::string& body, ArchiveKind kind = ArchiveKind::kZip) {
  return ArchiveBuilder(kind)
      .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
      .file("index.js", body)
      .build();
}

class RegistryTest : public ::testing::Test {
 protected:
  std::unique_ptr<Registry> open() {
    RegistryOptions o;
    o.state_dir = tmp_ / "state";
    o.clock = &clock_;
    o.max_versions = max_versions_;
    auto r = Registry::open(o);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? std::move(*r) : nullptr;
  }
  Result<Change> deploy(Registry& r, const std::string& name, const std::string& bundle,
                        json overrides = json::object()) {
    return r.deploy(DeployRequest{name, bundle, "", std::move(overrides)});
  }

  TempDir tmp_;
  FakeClock clock_;
  int max_versions_ = 10;
};

TEST_F(RegistryTest, DeployCreatesVersionOne) {
  auto reg = open();
  auto c = deploy(*reg, "hello", bundle_with("exports.handler = () => 1;"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->created);
  EXPECT_TRUE(c->changed);
  EXPECT_EQ(c->record->active_version, 1);
  EXPECT_EQ(c->record->created_ms, clock_.wall_ms());
  auto dir = reg->bundle_dir(c->record->active());
  EXPECT_EQ(testing::read_text(dir / "index.js"), "exports.handler = () => 1;");
  EXPECT_EQ(reg->get("hello"), c->record);
}

TEST_F(RegistryTest, SameBundleAndConfigIsNotANewVersion) {
  auto reg = open();
  auto b = bundle_with("a");
  ASSERT_TRUE(deploy(*reg, "f", b).ok());
  auto again = deploy(*reg, "f", b);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->record->versions.size(), 1u);
  auto overridden = deploy(*reg, "f", b, json{{"memory_mb", 512}});
  ASSERT_TRUE(overridden.ok());
  EXPECT_TRUE(overridden->changed);
  EXPECT_EQ(overridden->record->active_version, 2);
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), 1u) << "both versions share one bundle";
}

TEST_F(RegistryTest, NewCodeIsNewVersionAndRollbackReturns) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  clock_.advance(std::chrono::seconds(1));
  auto v2 = deploy(*reg, "f", bundle_with("v2", ArchiveKind::kTarGz));
  ASSERT_TRUE(v2.ok()) << v2.error().message;
  EXPECT_EQ(v2->record->active_version, 2);
  EXPECT_FALSE(v2->created);
  auto back = reg->rollback("f", 1);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->record->active_version, 1);
  EXPECT_EQ(testing::read_text(reg->bundle_dir(back->record->active()) / "index.js"), "v1");
  EXPECT_EQ(reg->rollback("f", 7).error().code, Errc::kNotFound);
  EXPECT_EQ(reg->rollback("nope", 1).error().code, Errc::kNotFound);
  // The next deploy numbers after the highest version, not after the active one.
  auto v3 = deploy(*reg, "f", bundle_with("v3"));
  EXPECT_EQ(v3->record->active_version, 3);
}

TEST_F(RegistryTest, PatchMakesAVersionWithTheSameBundle) {
  auto reg = open();
  auto v1 = deploy(*reg, "f", bundle_with("x"));
  auto p = reg->patch("f", json{{"timeout_ms", 10000}, {"env", {{"A", "b"}}}});
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->record->active_version, 2);
  EXPECT_EQ(p->record->active().config.timeout_ms, 10000);
  EXPECT_EQ(p->record->active().bundle_sha256, v1->record->active().bundle_sha256);
  auto bad = reg->patch("f", json{{"handler", "missing.handler"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().field, "handler");
  EXPECT_EQ(reg->get("f")->active_version, 2);
  EXPECT_EQ(reg->patch("nope", json::object()).error().code, Errc::kNotFound);
}

TEST_F(RegistryTest, RejectedDeployKeepsPreviousVersionAndLeavesNothing) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("good")).ok());
  auto bundles_before = count_entries(tmp_ / "state" / "bundles");
  auto evil = ArchiveBuilder(ArchiveKind::kTarGz)
                  .file("function.json", R"({"runtime":"node","handler":"index.handler"})")
                  .file("index.js", "x")
                  .symlink("escape", "/etc")
                  .build();
  auto r = deploy(*reg, "f", evil);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("escape"), std::string::npos);
  auto bad_manifest = ArchiveBuilder(ArchiveKind::kZip)
                          .file("function.json", R"({"runtime":"node","handler":"index.handler",)")
                          .file("index.js", "x")
                          .build();
  auto m = deploy(*reg, "f", bad_manifest);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("function.json"), std::string::npos);
  EXPECT_EQ(reg->get("f")->active_version, 1);
  EXPECT_EQ(count_entries(tmp_ / "state" / "tmp"), 0u);
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), bundles_before);
}

TEST_F(RegistryTest, NamesAreCheckedBeforeAnythingElse) {
  auto reg = open();
  for (const char* bad : {"..", "../etc", "a/b", "UPPER", ""}) {
    auto r = deploy(*reg, bad, hello_bundle(ArchiveKind::kZip));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::kInvalid);
  }
  EXPECT_EQ(count_entries(tmp_ / "state" / "functions"), 0u);
}

TEST_F(RegistryTest, RemoveDeletesRecordAndUnusedBundles) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "a", bundle_with("shared")).ok());
  ASSERT_TRUE(deploy(*reg, "b", bundle_with("shared")).ok());
  ASSERT_TRUE(reg->remove("a").ok());
  EXPECT_EQ(reg->get("a"), nullptr);
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), 1u) << "b still uses the bundle";
  ASSERT_TRUE(reg->remove("b").ok());
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), 0u);
  EXPECT_EQ(reg->remove("b").error().code, Errc::kNotFound);
}

TEST_F(RegistryTest, ReopenRestoresEveryFunction) {
  {
    auto reg = open();
    ASSERT_TRUE(deploy(*reg, "a", bundle_with("1")).ok());
    ASSERT_TRUE(deploy(*reg, "a", bundle_with("2")).ok());
    ASSERT_TRUE(reg->rollback("a", 1).ok());
    ASSERT_TRUE(deploy(*reg, "b", bundle_with("3")).ok());
  }
  auto reg = open();
  ASSERT_EQ(reg->size(), 2u);
  auto a = reg->get("a");
  EXPECT_EQ(a->active_version, 1);
  EXPECT_EQ(a->versions.size(), 2u);
  EXPECT_EQ(testing::read_text(reg->bundle_dir(a->active()) / "index.js"), "1");
}

TEST_F(RegistryTest, RecoverySweepsLeftoversOfACrash) {
  {
    auto reg = open();
    ASSERT_TRUE(deploy(*reg, "a", bundle_with("1")).ok());
  }
  fs::path state = tmp_ / "state";
  // What a crash can leave: a staging tree, a temp record, a published but unreferenced bundle.
  testing::write_text(state / "tmp" / "stage-abc" / "index.js", "partial");
  testing::write_text(state / "functions" / ".tmp-a.json.123456", "{\"trunc");
  testing::write_text(state / "bundles" / std::string(64, 'f') / "index.js", "orphan");
  auto reg = open();
  EXPECT_EQ(count_entries(state / "tmp"), 0u);
  EXPECT_EQ(count_entries(state / "functions"), 1u);
  EXPECT_EQ(count_entries(state / "bundles"), 1u);
  EXPECT_EQ(reg->get("a")->active_version, 1);
}

TEST_F(RegistryTest, DamagedRecordIsSkippedNotGuessed) {
  {
    auto reg = open();
    ASSERT_TRUE(deploy(*reg, "a", bundle_with("1")).ok());
    ASSERT_TRUE(deploy(*reg, "b", bundle_with("2")).ok());
  }
  testing::write_text(tmp_ / "state" / "functions" / "b.json", "not json");
  auto reg = open();
  EXPECT_NE(reg->get("a"), nullptr);
  EXPECT_EQ(reg->get("b"), nullptr);
  EXPECT_TRUE(fs::exists(tmp_ / "state" / "functions" / "b.json")) << "kept for the operator";
  // Its bundle may be the only copy of its code: no collection deletes it while it is there.
  ASSERT_TRUE(deploy(*reg, "a", bundle_with("3")).ok());
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), 3u);
}

TEST_F(RegistryTest, AnAliasDescriptionIsBoundedWhereItIsSaved) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("1")).ok());
  Alias a{"live", 1};
  a.description = std::string(257, 'd');
  EXPECT_EQ(reg->put_alias("f", a).error().code, Errc::kInvalid);
  a.description.pop_back();
  ASSERT_TRUE(reg->put_alias("f", a).ok());
  EXPECT_EQ(reg->put_alias("f", a, /*create_only=*/true).error().code, Errc::kConflict);
  reg.reset();
  EXPECT_EQ(open()->get("f")->aliases.at("live").description.size(), 256u);
}

TEST_F(RegistryTest, OldVersionsArePrunedButTheActiveOneStays) {
  max_versions_ = 3;
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v2")).ok());
  ASSERT_TRUE(reg->rollback("f", 1).ok());
  for (int i = 3; i <= 6; ++i) {
    ASSERT_TRUE(deploy(*reg, "f", bundle_with("v" + std::to_string(i))).ok());
  }
  ASSERT_TRUE(reg->rollback("f", 6).ok());
  auto r = reg->get("f");
  ASSERT_EQ(r->versions.size(), 3u);
  EXPECT_EQ(r->versions.front().number, 4);
  EXPECT_EQ(r->versions.back().number, 6);
  EXPECT_EQ(count_entries(tmp_ / "state" / "bundles"), 3u);
}

TEST_F(RegistryTest, DeployDirectoryIsIdempotent) {
  TempDir src;
  testing::write_text(src / "function.json", R"({"runtime":"python","handler":"main.handler"})");
  testing::write_text(src / "main.py", "def handler(event, context):\n    return 1\n");
  auto reg = open();
  auto first = reg->deploy_directory("py", src.path());
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = reg->deploy_directory("py", src.path());
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->changed);
  testing::write_text(src / "main.py", "def handler(event, context):\n    return 2\n");
  auto third = reg->deploy_directory("py", src.path());
  EXPECT_TRUE(third->changed);
  EXPECT_EQ(third->record->active_version, 2);
}

TEST_F(RegistryTest, QualifiersResolveToVersionsAndAliases) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v2")).ok());
  auto live = reg->put_alias("f", Alias{"live", 1});
  ASSERT_TRUE(live.ok()) << live.error().message;
  EXPECT_TRUE(live->created);
  const auto& record = *live->record;
  EXPECT_EQ(record.resolve("", 0.5)->version, 2);
  EXPECT_EQ(record.resolve("", 0.5)->qualifier, "");
  EXPECT_EQ(record.resolve("$LATEST", 0.5)->version, 2);
  EXPECT_EQ(record.resolve("1", 0.5)->version, 1);
  EXPECT_EQ(record.resolve("1", 0.5)->qualifier, "1");
  EXPECT_EQ(record.resolve("live", 0.5)->version, 1);
  EXPECT_EQ(record.resolve("live", 0.5)->qualifier, "live");
  EXPECT_EQ(record.resolve("3", 0.5).error().code, Errc::kNotFound);
  EXPECT_EQ(record.resolve("99999999999999999999", 0.5).error().code, Errc::kNotFound);
  EXPECT_EQ(record.resolve("beta", 0.5).error().code, Errc::kNotFound);
}

TEST_F(RegistryTest, ACanaryTakesItsShareOfDraws) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v2")).ok());
  auto c = reg->put_alias("f", Alias{"live", 1, 2, 0.25});
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto& record = *c->record;
  EXPECT_EQ(record.resolve("live", 0.0)->version, 2);
  EXPECT_EQ(record.resolve("live", 0.2499)->version, 2);
  EXPECT_EQ(record.resolve("live", 0.25)->version, 1);
  EXPECT_EQ(record.resolve("live", 0.99)->version, 1);
  // Whichever version runs, the context is told the alias.
  EXPECT_EQ(record.resolve("live", 0.0)->qualifier, "live");
}

TEST_F(RegistryTest, AliasesAreCheckedSavedReplacedAndRemoved) {
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v2")).ok());
  EXPECT_EQ(reg->put_alias("f", Alias{"live", 3}).error().code, Errc::kNotFound);
  EXPECT_EQ(reg->put_alias("f", Alias{"live", 1, 3, 0.5}).error().code, Errc::kNotFound);
  EXPECT_EQ(reg->put_alias("f", Alias{"live", 1, 1, 0.5}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("f", Alias{"live", 1, 2, 1.0}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("f", Alias{"live", 1, 2, 0.0}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("f", Alias{"12", 1}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("f", Alias{"a.b", 1}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("f", Alias{std::string(129, 'a'), 1}).error().code, Errc::kInvalid);
  EXPECT_EQ(reg->put_alias("nope", Alias{"live", 1}).error().code, Errc::kNotFound);

  ASSERT_TRUE(reg->put_alias("f", Alias{"live", 1, 2, 0.1, "canary"}).ok());
  auto same = reg->put_alias("f", Alias{"live", 1, 2, 0.1, "canary"});
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same->changed);
  EXPECT_FALSE(same->created);
  auto moved = reg->put_alias("f", Alias{"live", 2});
  ASSERT_TRUE(moved.ok());
  EXPECT_TRUE(moved->changed);
  EXPECT_FALSE(moved->created);
  EXPECT_EQ(moved->record->aliases.at("live").canary_version, 0);
  ASSERT_TRUE(reg->put_alias("f", Alias{"beta", 1, 2, 0.5}).ok());

  // Saved with the record: a restarted daemon routes the same way.
  reg.reset();
  reg = open();
  auto record = reg->get("f");
  ASSERT_EQ(record->aliases.size(), 2u);
  EXPECT_EQ(record->aliases.at("live").version, 2);
  EXPECT_EQ(record->aliases.at("beta").canary_version, 2);
  EXPECT_DOUBLE_EQ(record->aliases.at("beta").canary_weight, 0.5);

  auto removed = reg->remove_alias("f", "beta");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->record->aliases.size(), 1u);
  EXPECT_EQ(reg->remove_alias("f", "beta").error().code, Errc::kNotFound);
}

TEST_F(RegistryTest, VersionsAnAliasNamesAreNeverPruned) {
  max_versions_ = 2;
  auto reg = open();
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v1")).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v2")).ok());
  ASSERT_TRUE(reg->put_alias("f", Alias{"stable", 1, 2, 0.5}).ok());
  ASSERT_TRUE(deploy(*reg, "f", bundle_with("v3")).ok());
  auto v4 = deploy(*reg, "f", bundle_with("v4"));
  ASSERT_TRUE(v4.ok());
  // 1 and 2 are the alias's, 4 is active; 3 went.
  std::vector<int> kept;
  for (const auto& v : v4->record->versions) kept.push_back(v.number);
  EXPECT_EQ(kept, (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(testing::read_text(reg->bundle_dir(*v4->record->find(1)) / "index.js"), "v1");
  // Once the alias lets go, the next change prunes them.
  ASSERT_TRUE(reg->remove_alias("f", "stable").ok());
  auto v5 = deploy(*reg, "f", bundle_with("v5"));
  kept.clear();
  for (const auto& v : v5->record->versions) kept.push_back(v.number);
  EXPECT_EQ(kept, (std::vector<int>{4, 5}));
}

// Several nodes on one PostgreSQL store, each with a state directory of its own.
class SharedRegistryTest : public RegistryTest {
 protected:
  void SetUp() override {
    std::string why;
    auto* server = testing::PostgresServer::shared(&why);
    if (!server) GTEST_SKIP() << why;
    conninfo_ = server->create_database();
  }
  std::unique_ptr<Registry> node(const std::string& name) {
    auto store = open_postgres_store(conninfo_);
    EXPECT_TRUE(store.ok()) << store.error().message;
    if (!store.ok()) return nullptr;
    RegistryOptions o;
    o.state_dir = tmp_ / name;
    o.clock = &clock_;
    o.shared = std::move(*store);
    auto r = Registry::open(o);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? std::move(*r) : nullptr;
  }
  // Follows `r`'s changes; each lands in `seen` (name, active version or 0 when removed).
  void follow(Registry& r) {
    ASSERT_TRUE(r.follow([this](const std::string& name, RecordPtr now) {
                   std::lock_guard lock(mu_);
                   seen_.emplace_back(name, now ? now->active_version : 0);
                   cv_.notify_all();
                 }).ok());
  }
  bool saw(const std::string& name, int version) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::find(seen_.begin(), seen_.end(), std::make_pair(name, version)) != seen_.end();
    });
  }

  std::string conninfo_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, int>> seen_;
};

TEST_F(SharedRegistryTest, ADeployOnOneNodeReachesTheOthersWithItsBundle) {
  auto a = node("a"), b = node("b");
  follow(*b);
  auto c = deploy(*a, "hello", bundle_with("exports.handler = () => 'from a';"));
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE(saw("hello", 1));
  auto record = b->get("hello");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->active().bundle_sha256, c->record->active().bundle_sha256);
  EXPECT_EQ(testing::read_text(b->bundle_dir(record->active()) / "index.js"),
            "exports.handler = () => 'from a';")
      << "node b unpacked the bundle it fetched by hash";
  // A node started later loads every function and its bundles.
  auto late = node("late");
  ASSERT_TRUE(late->get("hello"));
  EXPECT_TRUE(fs::exists(late->bundle_dir(late->get("hello")->active()) / "index.js"));
  // Removed on b: gone on a.
  follow(*a);
  ASSERT_TRUE(b->remove("hello").ok());
  ASSERT_TRUE(saw("hello", 0));
  EXPECT_FALSE(a->get("hello"));
}

TEST_F(SharedRegistryTest, AMissReadsTheNameAgainAtMostOncePerPeriodAndFiftyNamesASecond) {
  auto a = node("a"), b = node("b");  // b does not follow: it learns only by catch_up()
  EXPECT_EQ(b->catch_up("hello"), nullptr) << "made nowhere yet";
  ASSERT_TRUE(deploy(*a, "hello", bundle_with("exports.handler = () => 1;")).ok());
  EXPECT_EQ(b->get("hello"), nullptr);
  EXPECT_EQ(b->catch_up("hello"), nullptr) << "read a moment ago: not again within the period";
  clock_.advance(Registry::kCatchUpEvery);
  auto record = b->catch_up("hello");
  ASSERT_TRUE(record) << "a period later it is read, with its bundle";
  EXPECT_TRUE(fs::exists(b->bundle_dir(record->active()) / "index.js"));
  EXPECT_EQ(b->get("hello"), record);

  // Names nobody made: fifty reads a second in all, then the table answers alone.
  clock_.advance(std::chrono::seconds(1));
  for (int i = 0; i < Registry::kCatchUpsPerSecond; ++i) {
    EXPECT_EQ(b->catch_up("nobody-" + std::to_string(i)), nullptr);
  }
  ASSERT_TRUE(deploy(*a, "late", bundle_with("exports.handler = () => 2;")).ok());
  EXPECT_EQ(b->catch_up("late"), nullptr) << "over the limit: not read";
  clock_.advance(std::chrono::seconds(1));
  EXPECT_TRUE(b->catch_up("late")) << "the next second it is";
  // A node without a shared store reads nothing: its table is the whole truth.
  RegistryOptions o;
  o.state_dir = tmp_ / "alone";
  o.clock = &clock_;
  auto alone = Registry::open(o);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)->catch_up("hello"), nullptr);
  EXPECT_FALSE((*alone)->shared());
}

TEST_F(SharedRegistryTest, AFunctionDeletedAndMadeAgainElsewhereIsNotMistakenForTheOld) {
  auto a = node("a"), b = node("b");
  ASSERT_TRUE(deploy(*a, "f", bundle_with("exports.handler = () => 'old';")).ok());
  b->refresh("f");
  ASSERT_TRUE(b->remove("f").ok());
  auto again = deploy(*b, "f", bundle_with("exports.handler = () => 'new';"));
  ASSERT_TRUE(again.ok()) << again.error().message;
  // a missed both notifications: its next read finds a record it has never seen.
  a->refresh("f");
  ASSERT_TRUE(a->get("f"));
  EXPECT_EQ(a->get("f")->active().bundle_sha256, again->record->active().bundle_sha256);
  auto patched = a->patch("f", json{{"memory_mb", 256}});
  ASSERT_TRUE(patched.ok()) << patched.error().message;
  EXPECT_EQ(testing::read_text(a->bundle_dir(patched->record->active()) / "index.js"),
            "exports.handler = () => 'new';");
}

TEST_F(SharedRegistryTest, RacingChangesOnTwoNodesBothLand) {
  auto a = node("a"), b = node("b");
  ASSERT_TRUE(deploy(*a, "f", bundle_with("exports.handler = () => 1;")).ok());
  b->refresh("f");
  ASSERT_TRUE(b->get("f"));
  // a changes f; b, which has not heard of it yet, changes f too: b's change is applied on top
  // of a's instead of overwriting it.
  auto on_a = a->patch("f", json{{"memory_mb", 256}});
  ASSERT_TRUE(on_a.ok()) << on_a.error().message;
  auto on_b = b->patch("f", json{{"timeout_ms", 5000}});
  ASSERT_TRUE(on_b.ok()) << on_b.error().message;
  EXPECT_EQ(on_b->record->active_version, 3);
  EXPECT_EQ(on_b->record->active().config.memory_mb, 256) << "a's change is kept";
  EXPECT_EQ(on_b->record->active().config.timeout_ms, 5000);
  a->refresh("f");
  EXPECT_EQ(a->get("f")->active_version, 3);
}

}  // namespace
}  // namespace ember::registry

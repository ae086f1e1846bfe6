// The embedded KV store: versions and conditional writes, TTL on a fake clock, atomic counters
// under 50 threads with group commit, pages of a prefix, limits and quota, isolation between
// namespaces, and durability across a reopen.
#include "ember/kv/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "postgres_server.h"
#include "temp_dir.h"

namespace ember::kv {
namespace {

// Every test runs against both backends: the embedded store and the shared one on a
// throwaway PostgreSQL server (skipped where PostgreSQL is not installed).
class KvStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgres") {
      std::string why;
      auto* server = testing::PostgresServer::shared(&why);
      if (!server) GTEST_SKIP() << why;
      conninfo_ = server->create_database();
    }
  }

  std::unique_ptr<Store> open(Limits limits = {}) {
    Result<std::unique_ptr<Store>> store = Error::invalid("no backend");
    if (GetParam() == "postgres") {
      store = open_postgres(PostgresOptions{conninfo_, limits, &clock_});
    } else {
      SqliteOptions options;
      options.file = tmp_ / "kv.db";
      options.limits = limits;
      options.clock = &clock_;
      store = open_sqlite(options);
    }
    EXPECT_TRUE(store.ok()) << store.error().message;
    return store.ok() ? std::move(*store) : nullptr;
  }

  testing::TempDir tmp_;
  FakeClock clock_;
  std::string conninfo_;
};

INSTANTIATE_TEST_SUITE_P(Backends, KvStoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(KvStoreTest, PutGetVersionsAndMissingKeys) {
  auto kv = open();
  auto missing = kv->get("fn", "a");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  EXPECT_EQ(*kv->put("fn", "a", R"({"n":1})", {}), 1u);
  EXPECT_EQ(*kv->put("fn", "a", R"([1,2])", {}), 2u);
  auto got = kv->get("fn", "a");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->value, "[1,2]");
  EXPECT_EQ((*got)->version, 2u);
  EXPECT_FALSE((*got)->expires_ms);
  EXPECT_TRUE(*kv->remove("fn", "a"));
  EXPECT_FALSE(*kv->remove("fn", "a"));
  EXPECT_FALSE(kv->get("fn", "a")->has_value());
  EXPECT_EQ(*kv->used_bytes("fn"), 0u);
  // Versions come from the namespace and are never given twice: a key written again after a
  // delete gets a new one, so a stale if_version cannot match it (no ABA).
  EXPECT_EQ(*kv->put("fn", "a", "1", {}), 3u);
  EXPECT_EQ(*kv->put("fn", "b", "1", {}), 4u);
  ASSERT_TRUE(*kv->remove("fn", "a"));
  EXPECT_EQ(*kv->put("fn", "a", "2", {}), 5u);
  EXPECT_EQ(kv->put("fn", "a", "3", PutOptions{std::nullopt, 3}).error().code, Errc::kConflict);
  EXPECT_EQ(*kv->put("other", "a", "1", {}), 1u) << "each namespace counts its own";
}

TEST_P(KvStoreTest, IfVersionWritesOnlyOverTheVersionSeen) {
  auto kv = open();
  EXPECT_EQ(*kv->put("fn", "k", "1", PutOptions{std::nullopt, 0}), 1u) << "0: only if absent";
  auto again = kv->put("fn", "k", "2", PutOptions{std::nullopt, 0});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::kConflict);
  auto stale = kv->put("fn", "k", "2", PutOptions{std::nullopt, 7});
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, Errc::kConflict);
  EXPECT_EQ(*kv->put("fn", "k", "2", PutOptions{std::nullopt, 1}), 2u);
  EXPECT_EQ(kv->get("fn", "k")->value().value, "2");
}

TEST_P(KvStoreTest, ItemsExpireOnTheClock) {
  auto kv = open();
  ASSERT_TRUE(kv->put("fn", "session", R"("abc")", PutOptions{60, std::nullopt}).ok());
  clock_.advance(std::chrono::seconds(59));
  EXPECT_TRUE(kv->get("fn", "session")->has_value());
  EXPECT_EQ(kv->list("fn", "", 10, "")->items.size(), 1u);
  clock_.advance(std::chrono::seconds(2));
  EXPECT_FALSE(kv->get("fn", "session")->has_value());
  EXPECT_TRUE(kv->list("fn", "", 10, "")->items.empty());
  // An expired key counts as absent for if_version 0, and its version still grows.
  EXPECT_EQ(*kv->put("fn", "session", R"("new")", PutOptions{std::nullopt, 0}), 2u);
  // A later write sweeps what expired, and the quota forgets it.
  ASSERT_TRUE(kv->put("fn", "short", "1", PutOptions{1, std::nullopt}).ok());
  clock_.advance(std::chrono::seconds(5));
  ASSERT_TRUE(kv->put("fn", "other", "1", {}).ok());
  EXPECT_EQ(*kv->used_bytes("fn"), std::string("session\"new\"other1").size());
}

TEST_P(KvStoreTest, IncrIsAtomicAcrossThreadsAndCommitsInGroups) {
  auto kv = open();
  constexpr int kThreads = 50, kEach = 20;
  std::atomic<int> failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        if (!kv->incr("fn", "views", 1).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(kv->get("fn", "views")->value().value, std::to_string(kThreads * kEach));
  const Stats stats = kv->stats();
  EXPECT_EQ(stats.writes, uint64_t{kThreads * kEach});
  EXPECT_LT(stats.commits, stats.writes) << "concurrent writers shared commits";
  std::cout << "[ kv       ] " << stats.writes << " increments in " << stats.commits
            << " commits\n";
}

TEST_P(KvStoreTest, IncrStartsAtZeroAndRefusesNonIntegers) {
  auto kv = open();
  EXPECT_EQ(*kv->incr("fn", "n", 5), 5);
  EXPECT_EQ(*kv->incr("fn", "n", -7), -2);
  ASSERT_TRUE(kv->put("fn", "s", R"("text")", {}).ok());
  auto bad = kv->incr("fn", "s", 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::kInvalid);
  ASSERT_TRUE(kv->put("fn", "big", std::to_string(INT64_MAX), {}).ok());
  EXPECT_FALSE(kv->incr("fn", "big", 1).ok()) << "overflow";
  // An increment keeps the item's time to live.
  ASSERT_TRUE(kv->put("fn", "ttl", "1", PutOptions{10, std::nullopt}).ok());
  EXPECT_EQ(*kv->incr("fn", "ttl", 1), 2);
  clock_.advance(std::chrono::seconds(11));
  EXPECT_FALSE(kv->get("fn", "ttl")->has_value());
}

TEST_P(KvStoreTest, ListPagesThroughAPrefixInKeyOrder) {
  auto kv = open();
  for (const char* k : {"user:3", "user:1", "user:2", "usex", "a", "user:10"}) {
    ASSERT_TRUE(kv->put("fn", k, "true", {}).ok());
  }
  auto first = kv->list("fn", "user:", 2, "");
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->items.size(), 2u);
  EXPECT_EQ(first->items[0].key, "user:1");
  EXPECT_EQ(first->items[1].key, "user:10");
  EXPECT_EQ(first->cursor, "user:10");
  auto second = kv->list("fn", "user:", 2, first->cursor);
  ASSERT_EQ(second->items.size(), 2u);
  EXPECT_EQ(second->items[0].key, "user:2");
  EXPECT_EQ(second->items[1].key, "user:3");
  EXPECT_TRUE(second->cursor.empty()) << "no more pages";
  EXPECT_EQ(kv->list("fn", "", 100, "")->items.size(), 6u);
}

TEST_P(KvStoreTest, LimitsAndQuotaAreClearErrors) {
  Limits limits;
  limits.max_key_bytes = 8;
  limits.max_value_bytes = 32;
  limits.namespace_quota_bytes = 40;
  auto kv = open(limits);
  EXPECT_EQ(kv->put("fn", "123456789", "1", {}).error().code, Errc::kTooLarge);
  EXPECT_EQ(kv->put("fn", "", "1", {}).error().code, Errc::kInvalid);
  EXPECT_EQ(kv->put("fn", "a\nb", "1", {}).error().code, Errc::kInvalid);
  EXPECT_EQ(kv->put("fn", "k", "not json", {}).error().code, Errc::kInvalid);
  EXPECT_EQ(kv->put("fn", "k", std::string(40, '1'), {}).error().code, Errc::kTooLarge);
  EXPECT_EQ(kv->put("Bad_NS", "k", "1", {}).error().code, Errc::kInvalid);
  ASSERT_TRUE(kv->put("fn", "a", std::string(20, '1'), {}).ok());  // 21 bytes used
  auto over = kv->put("fn", "b", std::string(20, '2'), {});        // 42 > 40
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, Errc::kTooLarge);
  EXPECT_NE(over.error().message.find("quota"), std::string::npos) << over.error().message;
  EXPECT_FALSE(kv->get("fn", "b")->has_value()) << "a refused write leaves nothing";
  ASSERT_TRUE(kv->put("fn", "a", "1", {}).ok()) << "shrinking is always allowed";
  ASSERT_TRUE(kv->put("fn", "b", std::string(20, '2'), {}).ok());
}

TEST_P(KvStoreTest, NamespacesAreSeparate) {
  auto kv = open();
  ASSERT_TRUE(kv->put("alpha", "k", "1", {}).ok());
  ASSERT_TRUE(kv->put("beta", "k", "2", {}).ok());
  EXPECT_EQ(kv->get("alpha", "k")->value().value, "1");
  EXPECT_EQ(kv->get("beta", "k")->value().value, "2");
  EXPECT_TRUE(*kv->remove("alpha", "k"));
  EXPECT_EQ(kv->get("beta", "k")->value().value, "2");
  EXPECT_TRUE(kv->list("alpha", "", 10, "")->items.empty());
}

TEST_P(KvStoreTest, AcknowledgedWritesSurviveAReopen) {
  {
    auto kv = open();
    ASSERT_TRUE(kv->put("fn", "a", R"({"x":1})", {}).ok());
    ASSERT_EQ(*kv->incr("fn", "n", 41), 41);
  }
  auto kv = open();
  EXPECT_EQ(kv->get("fn", "a")->value().value, R"({"x":1})");
  EXPECT_EQ(*kv->incr("fn", "n", 1), 42);
}

// Several nodes on one PostgreSQL database: each opens its own store.
class KvSharedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    server_ = testing::PostgresServer::shared(&why);
    if (!server_) GTEST_SKIP() << why;
    conninfo_ = server_->create_database();
  }
  std::unique_ptr<Store> node(Limits limits = {}) {
    auto store = open_postgres(PostgresOptions{conninfo_, limits, &clock_});
    EXPECT_TRUE(store.ok()) << store.error().message;
    return store.ok() ? std::move(*store) : nullptr;
  }

  testing::PostgresServer* server_ = nullptr;
  std::string conninfo_;
  FakeClock clock_;
};

TEST_F(KvSharedTest, CountersVersionsAndQuotaStayExactAcrossNodes) {
  std::vector<std::unique_ptr<Store>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(node());
  constexpr int kThreadsPerNode = 8, kEach = 25;
  std::atomic<int> failures = 0;
  std::vector<std::thread> threads;
  for (auto& n : nodes) {
    for (int t = 0; t < kThreadsPerNode; ++t) {
      threads.emplace_back([&, store = n.get()] {
        for (int i = 0; i < kEach; ++i) {
          if (!store->incr("fn", "views", 1).ok()) ++failures;
        }
      });
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  const int total = 3 * kThreadsPerNode * kEach;
  for (auto& n : nodes) {
    auto got = n->get("fn", "views");
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ((*got)->value, std::to_string(total)) << "every node reads the same count";
    EXPECT_EQ((*got)->version, static_cast<uint64_t>(total)) << "one version per increment";
  }
  // A conditional write from one node fails once another has written since.
  const uint64_t seen = nodes[0]->get("fn", "views")->value().version;
  ASSERT_TRUE(nodes[1]->put("fn", "views", "0", PutOptions{std::nullopt, seen}).ok());
  EXPECT_EQ(nodes[2]->put("fn", "views", "1", PutOptions{std::nullopt, seen}).error().code,
            Errc::kConflict);
  // The quota counts what every node wrote.
  Limits small;
  small.namespace_quota_bytes = 100;
  auto a = node(small), b = node(small);
  ASSERT_TRUE(a->put("q", "a", std::string(60, '1'), {}).ok());
  auto over = b->put("q", "b", std::string(60, '2'), {});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, Errc::kTooLarge);
  EXPECT_EQ(*b->used_bytes("q"), 61u);
}

TEST_P(KvStoreTest, PrefixesAndCursorsAreTextOrRefused) {
  auto kv = open();
  ASSERT_TRUE(kv->put("fn", "k\xc3\xa9", "1", {}).ok());
  ASSERT_TRUE(kv->put("fn", "k\xc3\xbf", "1", {}).ok());
  ASSERT_TRUE(kv->put("fn", "k\xc4\x80", "1", {}).ok());
  auto page = kv->list("fn", "k\xc3", 10, "");
  EXPECT_EQ(page.error().code, Errc::kInvalid) << "a prefix cut inside a character";
  page = kv->list("fn", "k\xc3\xbf", 10, "");  // its last byte plus one is not UTF-8
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].key, "k\xc3\xbf");
  EXPECT_TRUE(kv->list("fn", std::string("k\0", 2), 10, "")->items.empty());
  EXPECT_EQ(kv->list("fn", "", 10, std::string("\xff")).error().code, Errc::kInvalid);
  EXPECT_EQ(kv->list("fn", "k", 10, "k\xc3\xa9")->items.size(), 2u) << "after the cursor";
}

TEST_F(KvSharedTest, ServerRestartIsUnavailableThenRecovers) {
  std::string why;
  auto own = testing::PostgresServer::start(&why);
  if (!own) GTEST_SKIP() << why;
  conninfo_ = own->create_database();
  auto kv = node();
  ASSERT_TRUE(kv->put("fn", "a", "1", {}).ok());
  own->kill();
  auto down = kv->put("fn", "a", "2", {});
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::kUnavailable) << down.error().message;
  EXPECT_EQ(error_type(down.error()), "KvUnavailable");
  EXPECT_EQ(kv->get("fn", "a").error().code, Errc::kUnavailable);
  ASSERT_TRUE(own->restart());
  EXPECT_EQ(*kv->put("fn", "a", "3", {}), 2u) << "reconnected by the next write";
  EXPECT_EQ(kv->get("fn", "a")->value().value, "3");
}

}  // namespace
}  // namespace ember::kv

// The key-value service as a worker reaches it: request parsing, the caller's namespace and its
// grants, the budget of operations per call, error types, and the reply's wire shape.
#include "ember/kv/service.h"

#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>

#include "temp_dir.h"

namespace ember::kv {
namespace {

using nlohmann::json;

struct Answer {
  Counted counted;
  json meta;
  std::string body;
};

class KvServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SqliteOptions options;
    options.file = tmp_.path() / "kv.db";
    options.limits.namespace_quota_bytes = 64;
    auto store = open_sqlite(options);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::move(*store);
    service_ = std::make_unique<Service>(*store_, ServiceOptions{3});
  }

  Answer ask(const Grants& grants, json meta, std::string body = {}, uint32_t ops = 0,
             bool in_call = true) {
    std::promise<std::pair<std::string, std::string>> replied;
    auto reply = replied.get_future();
    Counted c = service_->handle(grants, meta, std::move(body),
                                 in_call ? std::optional<uint32_t>(ops) : std::nullopt,
                                 [&](std::string m, std::string b) {
                                   replied.set_value({std::move(m), std::move(b)});
                                 });
    auto [m, b] = reply.get();
    return Answer{c, json::parse(m), std::move(b)};
  }

  testing::TempDir tmp_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Service> service_;
  Grants counter_{"counter", {{"shared", Access::kReadWrite}, {"config", Access::kRead}}};
};

TEST_F(KvServiceTest, OperationsAnswerInTheirWireShapes) {
  auto put = ask(counter_, {{"op", "put"}, {"key", "user/1"}, {"ttl_s", 60}}, R"({"n":"ann"})");
  EXPECT_EQ(put.counted, Counted::kWrite);
  EXPECT_EQ(put.meta, (json{{"ok", true}, {"version", 1}}));

  auto get = ask(counter_, {{"op", "get"}, {"key", "user/1"}});
  EXPECT_EQ(get.counted, Counted::kRead);
  EXPECT_EQ(get.meta, (json{{"ok", true}, {"found", true}, {"version", 1}}));
  EXPECT_EQ(json::parse(get.body), (json{{"n", "ann"}}));

  auto missing = ask(counter_, {{"op", "get"}, {"key", "user/2"}});
  EXPECT_EQ(missing.meta, (json{{"ok", true}, {"found", false}}));
  EXPECT_TRUE(missing.body.empty());

  auto incr = ask(counter_, {{"op", "incr"}, {"key", "hits"}, {"delta", 5}});
  EXPECT_EQ(incr.meta, (json{{"ok", true}, {"value", 5}, {"version", 2}}));
  EXPECT_EQ(ask(counter_, {{"op", "incr"}, {"key", "hits"}}).meta["value"], 6) << "delta 1";

  auto list = ask(counter_, {{"op", "list"}, {"prefix", "user/"}});
  EXPECT_EQ(list.meta, (json{{"ok", true}, {"cursor", ""}}));
  auto items = json::parse(list.body);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]["key"], "user/1");
  EXPECT_EQ(items[0]["value"], (json{{"n", "ann"}}));
  EXPECT_TRUE(items[0].contains("expiresMs"));

  auto del = ask(counter_, {{"op", "delete"}, {"key", "user/1"}});
  EXPECT_EQ(del.meta, (json{{"ok", true}, {"deleted", true}}));
  EXPECT_EQ(ask(counter_, {{"op", "delete"}, {"key", "user/1"}}).meta["deleted"], false);
}

TEST_F(KvServiceTest, NamespacesFollowTheGrants) {
  Grants other{"other", {}};
  ASSERT_EQ(ask(other, {{"op", "put"}, {"key", "secret"}}, "1").meta["ok"], true);
  // Another function's namespace is out of reach unless granted, for reads and writes alike.
  auto read = ask(counter_, {{"op", "get"}, {"ns", "other"}, {"key", "secret"}});
  EXPECT_EQ(read.counted, Counted::kNone);
  EXPECT_EQ(read.meta["errorType"], "KvAccessDenied");
  EXPECT_EQ(ask(counter_, {{"op", "list"}, {"ns", "other"}}).meta["errorType"], "KvAccessDenied");
  // Granted read-only: reads work, writes do not; read-write: both.
  Grants admin{"config", {}};
  ASSERT_EQ(ask(admin, {{"op", "put"}, {"key", "mode"}}, R"("fast")").meta["ok"], true);
  EXPECT_EQ(ask(counter_, {{"op", "get"}, {"ns", "config"}, {"key", "mode"}}).body, R"("fast")");
  EXPECT_EQ(
      ask(counter_, {{"op", "put"}, {"ns", "config"}, {"key", "mode"}}, "1").meta["errorType"],
      "KvAccessDenied");
  EXPECT_EQ(ask(counter_, {{"op", "incr"}, {"ns", "shared"}, {"key", "n"}}).meta["value"], 1);
  // The grant is per namespace: the shared one's items are not the caller's own.
  EXPECT_EQ(ask(counter_, {{"op", "get"}, {"key", "n"}}).meta["found"], false);
}

TEST_F(KvServiceTest, EachBadInputHasItsErrorType) {
  auto type = [&](json meta, std::string body = {}) {
    return ask(counter_, std::move(meta), std::move(body)).meta.value("errorType", "");
  };
  EXPECT_EQ(type({{"op", "get"}, {"key", ""}}), "KvInvalidKey");
  EXPECT_EQ(type({{"op", "get"}, {"key", std::string("a\x01")}}), "KvInvalidKey");
  EXPECT_EQ(type({{"op", "get"}, {"key", std::string(1025, 'k')}}), "KvKeyTooLarge");
  EXPECT_EQ(type({{"op", "put"}, {"key", "k"}}, "{not json"), "KvInvalidValue");
  EXPECT_EQ(type({{"op", "put"}, {"key", "k"}}, std::string(400 * 1024 + 1, '1')),
            "KvValueTooLarge");
  EXPECT_EQ(type({{"op", "put"}, {"key", "big"}}, '"' + std::string(70, 'x') + '"'),
            "KvQuotaExceeded");
  EXPECT_EQ(type({{"op", "put"}, {"key", "k"}, {"if_version", 4}}, "1"), "KvConditionFailed");
  ASSERT_EQ(type({{"op", "put"}, {"key", "word"}}, R"("hi")"), "");
  EXPECT_EQ(type({{"op", "incr"}, {"key", "word"}}), "KvNotAnInteger");
  EXPECT_EQ(type({{"op", "get"}, {"ns", "Bad_NS"}, {"key", "k"}}), "KvInvalidNamespace");
  EXPECT_EQ(type({{"op", "fly"}, {"key", "k"}}), "KvInvalidRequest");
  EXPECT_EQ(type({{"op", "get"}, {"key", 7}}), "KvInvalidRequest");
  EXPECT_EQ(type({{"op", "incr"}, {"key", "n"}, {"delta", uint64_t{1} << 63}}), "KvInvalidRequest")
      << "a delta beyond 64-bit signed is refused, not wrapped";
  ASSERT_EQ(type({{"op", "put"}, {"key", "huge"}}, "18446744073709551615"), "");
  EXPECT_EQ(type({{"op", "incr"}, {"key", "huge"}}), "KvNotAnInteger");
  EXPECT_EQ(type({{"op", "put"}, {"key", "k"}, {"ttl_s", 0}}, "1"), "KvInvalidRequest");
  EXPECT_EQ(type({{"op", "put"}, {"key", "k"}, {"ttl_s", "soon"}}, "1"), "KvInvalidRequest");
  EXPECT_EQ(type({{"op", "list"}, {"limit", 0}}), "KvInvalidRequest");
  EXPECT_EQ(type(json::array()), "KvInvalidRequest");
  // Every error reply says what went wrong in words too.
  auto bad = ask(counter_, {{"op", "get"}, {"key", std::string(1025, 'k')}});
  EXPECT_EQ(bad.meta["ok"], false);
  EXPECT_NE(bad.meta["errorMessage"].get<std::string>().find("1024"), std::string::npos);
}

TEST_F(KvServiceTest, ACallHasABudgetOfOperationsAndMustStillRun) {
  auto over = ask(counter_, {{"op", "get"}, {"key", "k"}}, {}, /*ops=*/3);
  EXPECT_EQ(over.counted, Counted::kNone);
  EXPECT_EQ(over.meta["errorType"], "KvTooManyOperations");
  EXPECT_EQ(ask(counter_, {{"op", "get"}, {"key", "k"}}, {}, 2).meta["ok"], true);
  auto ended = ask(counter_, {{"op", "put"}, {"key", "k"}}, "1", 0, /*in_call=*/false);
  EXPECT_EQ(ended.counted, Counted::kNone);
  EXPECT_EQ(ended.meta["errorType"], "KvInvalidRequest");
  EXPECT_FALSE(store_->get("counter", "k")->has_value()) << "a refused write wrote nothing";
}

TEST_F(KvServiceTest, EveryOperationThatReachedTheStoreIsObserved) {
  std::vector<std::pair<std::string, std::string>> seen;
  std::mutex mu;
  service_->on_op([&](const OpRecord& op) {
    std::lock_guard lock(mu);
    seen.emplace_back(std::string(op_name(op.op)), std::string(op.error_type));
    EXPECT_EQ(op.function, "counter");
  });
  ask(counter_, {{"op", "incr"}, {"key", "n"}});
  ask(counter_, {{"op", "put"}, {"key", "n"}, {"if_version", 9}}, "1");
  ask(counter_, {{"op", "get"}, {"ns", "elsewhere"}, {"key", "n"}});  // refused: not observed
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, std::string>>{{"incr", ""},
                                                                    {"put", "KvConditionFailed"}}));
}

}  // namespace
}  // namespace ember::kv

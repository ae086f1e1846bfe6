// context.kv as a user meets it, against the real emberd: 200 concurrent increments from 10
// instances end at exactly 200; the count survives a restart and a kill -9 of the daemon; items
// expire; a function cannot reach another's namespace unless granted; bad input raises the
// documented error in the function and the worker keeps serving; the admin API, usage and
// metrics see the operations.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <set>
#include <thread>

#include "daemon_test.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

// Runs `body` with `action` from the event and returns what it gives; `id` tells instances apart.
constexpr const char* kNodeKv = R"(
const id = Math.random().toString(36).slice(2);
exports.handler = async (event, context) => {
  const kv = event.ns ? context.kv.namespace(event.ns) : context.kv;
  try {
    let value;
    switch (event.action) {
      case 'incr': value = await kv.incr(event.key, event.delta); break;
      case 'put': value = await kv.put(event.key, event.value, event.options); break;
      case 'get': value = await kv.get(event.key); break;
      case 'getv': value = await kv.getWithVersion(event.key); break;
      case 'delete': value = await kv.delete(event.key); break;
      case 'list': value = await kv.list(event.prefix, event.options); break;
      case 'many': for (let i = 0; i < event.n; i++) value = await kv.incr(event.key); break;
      case 'forget': setTimeout(() => kv.put(event.key, 1).catch(() => {}), 20); return { id };
    }
    if (event.sleep_ms) await new Promise((r) => setTimeout(r, event.sleep_ms));
    return { id, value };
  } catch (err) {
    return { id, error: err.name, message: err.message };
  }
};
)";

constexpr const char* kPythonKv = R"(
import random
ID = random.random()

def handler(event, context):
    kv = context.kv.namespace(event["ns"]) if event.get("ns") else context.kv
    try:
        a = event["action"]
        if a == "incr":
            value = kv.incr(event["key"], event.get("delta", 1))
        elif a == "put":
            value = kv.put(event["key"], event["value"], **event.get("options", {}))
        elif a == "get":
            value = kv.get(event["key"])
        elif a == "getv":
            value = kv.get_with_version(event["key"])
        elif a == "delete":
            value = kv.delete(event["key"])
        elif a == "list":
            value = kv.list(event.get("prefix", ""), **event.get("options", {}))
        elif a == "many":
            for _ in range(event["n"]):
                value = kv.incr(event["key"])
        return {"id": ID, "value": value}
    except context.kv.KvError as e:
        return {"id": ID, "error": type(e).__name__, "message": str(e)}
)";

class KvE2E : public DaemonTest {
 protected:
  void deploy(const std::string& name, const std::string& runtime, json extra = json::object()) {
    auto r = daemon_.deploy_code(name, runtime, runtime == "node" ? kNodeKv : kPythonKv, extra);
    ASSERT_EQ(r.status, 201) << r.body;
  }
  json call(const std::string& name, const json& event) {
    auto r =
        http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", event.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() ? j : json::object();
  }
};

TEST_F(KvE2E, ConcurrentIncrementsFromTenInstancesAreExact) {
  deploy("counter", "node", {{"max_instances", 10}});
  std::vector<std::future<json>> calls;
  for (int i = 0; i < 200; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      return call("counter", {{"action", "incr"}, {"key", "hits"}, {"sleep_ms", 100}});
    }));
  }
  std::set<std::string> instances;
  std::set<int64_t> values;
  for (auto& c : calls) {
    json r = c.get();
    ASSERT_TRUE(r.contains("value")) << r.dump();
    instances.insert(r["id"].get<std::string>());
    values.insert(r["value"].get<int64_t>());
  }
  EXPECT_EQ(instances.size(), 10u) << "the calls were spread over every instance allowed";
  // Each increment saw a different count: 1..200, none lost, none repeated.
  EXPECT_EQ(values.size(), 200u);
  EXPECT_EQ(*values.begin(), 1);
  EXPECT_EQ(*values.rbegin(), 200);
  auto stored = daemon_.admin("GET", "/v1/kv/counter/hits");
  ASSERT_EQ(stored.status, 200) << stored.body;
  EXPECT_EQ(stored.json()["value"], 200);
}

TEST_F(KvE2E, TheCountSurvivesARestartAndAKillNine) {
  deploy("pv", "node");
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(call("pv", {{"action", "incr"}, {"key", "views"}})["value"], i);
  }
  ASSERT_EQ(daemon_.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_EQ(call("pv", {{"action", "incr"}, {"key", "views"}})["value"], 4);
  // kill -9 right after the answers: an acknowledged write is already on disk.
  for (int i = 5; i <= 20; ++i) {
    ASSERT_EQ(call("pv", {{"action", "incr"}, {"key", "views"}})["value"], i);
  }
  ASSERT_EQ(daemon_.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  EXPECT_EQ(call("pv", {{"action", "get"}, {"key", "views"}})["value"], 20);
  EXPECT_EQ(call("pv", {{"action", "incr"}, {"key", "views"}})["value"], 21);
}

TEST_F(KvE2E, NoAcknowledgedIncrementIsLostToAKillNineUnderLoad) {
  deploy("hits", "node", {{"max_instances", 4}});
  ASSERT_EQ(call("hits", {{"action", "incr"}, {"key", "n"}})["value"], 1);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> acked{1}, highest{1}, attempted{1};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      while (!stop) {
        ++attempted;
        auto r = http_request(daemon_.port(), "POST", "/v1/functions/hits/invoke",
                              R"({"action":"incr","key":"n"})");
        json j = json::parse(r.body, nullptr, false);
        if (r.status != 200 || !j.is_object() || !j.contains("value")) continue;  // cut off
        ++acked;
        int64_t v = j["value"].get<int64_t>(), seen = highest;
        while (v > seen && !highest.compare_exchange_weak(seen, v)) {
        }
      }
    });
  }
  // Kill the daemon in the middle of the stream of increments.
  ASSERT_TRUE(eventually([&] { return acked >= 200; }));
  ASSERT_EQ(daemon_.stop(SIGKILL), 128 + SIGKILL);
  stop = true;
  for (auto& c : clients) c.join();
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  auto stored = daemon_.admin("GET", "/v1/kv/hits/n");
  ASSERT_EQ(stored.status, 200) << stored.body;
  const int64_t count = stored.json()["value"].get<int64_t>();
  // Every increment a client saw acknowledged is in the count; none was applied twice.
  EXPECT_GE(count, acked.load());
  EXPECT_GE(count, highest.load());
  EXPECT_LE(count, attempted.load());
}

TEST_F(KvE2E, ItemsExpireAfterTheirTimeToLive) {
  deploy("session", "python");
  json put = call("session", {{"action", "put"},
                              {"key", "token"},
                              {"value", {{"user", "ann"}}},
                              {"options", {{"ttl_s", 1}}}});
  ASSERT_EQ(put["value"], 1) << put.dump();
  EXPECT_EQ(call("session", {{"action", "get"}, {"key", "token"}})["value"],
            (json{{"user", "ann"}}));
  EXPECT_TRUE(eventually(
      [&] {
        return call("session", {{"action", "get"}, {"key", "token"}})["value"].is_null();
      },
      std::chrono::milliseconds(5000)));
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/session/token").status, 404);
  EXPECT_TRUE(call("session", {{"action", "list"}})["value"]["items"].empty());
}

TEST_F(KvE2E, AFunctionReachesOnlyItsOwnAndGrantedNamespaces) {
  deploy("owner", "node");
  deploy("stranger", "python");
  deploy("reader", "node", {{"kv", {{"shared", {{"owner", "r"}}}}}});
  ASSERT_EQ(call("owner", {{"action", "put"}, {"key", "secret"}, {"value", "s3cr3t"}})["value"], 1);
  // Not granted: neither reads nor writes nor lists, and the same key name in its own
  // namespace is a different item.
  for (const char* action : {"get", "put", "list", "delete"}) {
    json r =
        call("stranger", {{"action", action}, {"ns", "owner"}, {"key", "secret"}, {"value", "x"}});
    EXPECT_EQ(r["error"], "KvAccessDenied") << action << ": " << r.dump();
  }
  EXPECT_TRUE(call("stranger", {{"action", "get"}, {"key", "secret"}})["value"].is_null());
  // Granted read-only.
  EXPECT_EQ(call("reader", {{"action", "get"}, {"ns", "owner"}, {"key", "secret"}})["value"],
            "s3cr3t");
  EXPECT_EQ(call("reader", {{"action", "incr"}, {"ns", "owner"}, {"key", "secret"}})["error"],
            "KvAccessDenied");
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/owner/secret").json()["value"], "s3cr3t");
}

TEST_F(KvE2E, BadInputRaisesTheDocumentedErrorAndTheWorkerKeepsServing) {
  for (const std::string runtime : {"node", "python"}) {
    SCOPED_TRACE(runtime);
    const std::string fn = "limits-" + runtime;
    deploy(fn, runtime);
    const json first = call(fn, {{"action", "incr"}, {"key", "ok"}});
    ASSERT_EQ(first["value"], 1) << first.dump();
    auto error = [&](const json& event) {
      json r = call(fn, event);
      EXPECT_EQ(r["id"], first["id"]) << "the same instance answered: " << r.dump();
      if (r.contains("error")) {
        EXPECT_TRUE(r["message"].is_string() && !r["message"].get<std::string>().empty());
      }
      return r.value("error", "");
    };
    EXPECT_EQ(error({{"action", "get"}, {"key", std::string(1025, 'k')}}), "KvKeyTooLarge");
    EXPECT_EQ(error({{"action", "get"}, {"key", ""}}), "KvInvalidKey");
    EXPECT_EQ(error({{"action", "put"}, {"key", "big"}, {"value", std::string(410 * 1024, 'v')}}),
              "KvValueTooLarge");
    EXPECT_EQ(
        error({{"action", "put"}, {"key", "ok"}, {"value", 1}, {"options", {{"if_version", 9}}}}),
        "KvConditionFailed");
    EXPECT_EQ(error({{"action", "put"}, {"key", "word"}, {"value", "hi"}}), "");
    EXPECT_EQ(error({{"action", "incr"}, {"key", "word"}}), "KvNotAnInteger");
    EXPECT_EQ(error({{"action", "many"}, {"key", "loop"}, {"n", 1001}}), "KvTooManyOperations");
    EXPECT_EQ(call(fn, {{"action", "get"}, {"key", "loop"}})["value"], 1000)
        << "a call may make 1000 operations";
  }
  // A write made after the handler answered belongs to no call: it is refused, not billed to
  // nobody. (One issued before the answer, even if not awaited, arrives first and is served.)
  deploy("forgetful", "node");
  call("forgetful", {{"action", "forget"}, {"key", "late"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // well past the 20 ms timer
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/forgetful/late").status, 404);
}

TEST_F(KvE2E, AdminApiUsageAndMetricsSeeTheOperations) {
  deploy("meter", "node");
  call("meter", {{"action", "incr"}, {"key", "a/b"}});
  call("meter", {{"action", "get"}, {"key", "a/b"}});
  auto put = daemon_.admin("PUT", "/v1/kv/meter/a/c?ttl_s=3600", R"({"x":[1,2]})");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.json()["version"], 2) << "the namespace's second write";
  auto conflict = daemon_.admin("PUT", "/v1/kv/meter/a/c?if_version=0", "2");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(conflict.json()["error"]["code"], "KvConditionFailed");
  EXPECT_EQ(daemon_.admin("PUT", "/v1/kv/meter/bad", "{nope").json()["error"]["code"],
            "KvInvalidValue");
  EXPECT_EQ(daemon_.admin("PUT", "/v1/kv/meter/huge", std::string(401 * 1024, '1')).status, 413);
  EXPECT_EQ(daemon_.admin("GET", "/v1/kv/Bad_Ns/k").status, 400);
  auto page = daemon_.admin("GET", "/v1/kv/meter?prefix=a/&limit=1");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.json()["items"].size(), 1u);
  EXPECT_EQ(page.json()["items"][0]["key"], "a/b");
  auto next = daemon_.admin(
      "GET", "/v1/kv/meter?prefix=a/&limit=1&cursor=" + page.json()["cursor"].get<std::string>());
  EXPECT_EQ(next.json()["items"][0]["value"], (json{{"x", {1, 2}}}));
  EXPECT_TRUE(next.json()["cursor"].is_null());
  EXPECT_EQ(daemon_.admin("DELETE", "/v1/kv/meter/a/c").json()["deleted"], true);
  // Without the admin token the store is closed.
  EXPECT_EQ(http_request(daemon_.port(), "GET", "/v1/kv/meter/a/b").status, 401);

  auto usage = daemon_.admin("GET", "/v1/functions/meter/usage");
  ASSERT_EQ(usage.status, 200) << usage.body;
  EXPECT_EQ(usage.json()["usage"]["kv_reads"], 1) << usage.body;
  EXPECT_EQ(usage.json()["usage"]["kv_writes"], 1) << usage.body;
  auto metrics = http_request(daemon_.port(), "GET", "/metrics");
  EXPECT_NE(
      metrics.body.find(R"(ember_kv_operations_total{function="meter",op="incr",result="ok"} 1)"),
      std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find(
                R"(ember_kv_operations_total{function="",op="put",result="KvConditionFailed"} 1)"),
            std::string::npos);
}

}  // namespace
}  // namespace ember::testing

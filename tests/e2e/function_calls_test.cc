// Function-to-function calls as a function author meets them: context.invoke from Node and
// Python, answered with the other function's value, its error, or the id of a queued event; the
// "calls" grant; and loops stopped at the call-depth limit, synchronous and asynchronous.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include "daemon.h"
#include "eventually.h"
#include "temp_dir.h"

namespace ember::testing {
namespace {

using nlohmann::json;

// Answers with twice its n, or fails when asked to.
constexpr const char* kDouble = R"(def handler(event, context):
    if event.get("fail"):
        raise ValueError("cannot double " + str(event["fail"]))
    return {"n": event["n"] * 2, "by": context.function_name}
)";

// Counts the events it gets, in the key-value store.
constexpr const char* kSink = R"(exports.handler = async (event, context) => {
  await context.kv.incr('received');
  return { sunk: event };
};
)";

class FunctionCallsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(config_) << R"({"events": {"retry_base_ms": 100, "max_call_depth": 4}})";
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
  }
  void TearDown() override {
    if (daemon_.running()) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << daemon_.log();
    }
  }
  void deploy(const std::string& name, const std::string& runtime, const std::string& code,
              const json& extra = json::object()) {
    auto r = daemon_.deploy_code(name, runtime, code, extra);
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;
  }
  HttpResponse invoke(const std::string& name, const json& event) {
    return http_request(daemon_.port(), "POST", "/v1/functions/" + name + "/invoke", event.dump());
  }
  json kv_get(const std::string& ns, const std::string& key) {
    auto r = daemon_.admin("GET", "/v1/kv/" + ns + "/" + key);
    return r.status == 200 ? r.json() : json();
  }

  TempDir tmp_;
  std::filesystem::path config_ = tmp_.path() / "ember.json";
  Daemon daemon_{tmp_.path() / "state", {"--config", config_.string()}};
};

TEST_F(FunctionCallsE2E, NodeCallsAFunctionAndGetsItsValueOrItsError) {
  deploy("double", "python", kDouble);
  deploy("caller", "node", R"(exports.handler = async (event, context) => {
  try {
    return { value: await context.invoke('double', { n: event.n, fail: event.fail }) };
  } catch (err) {
    return { name: err.name, message: err.message, functionError: err.functionError,
             error: err.error, isError: err instanceof Error };
  }
};
)",
         {{"calls", {"double"}}});
  auto r = invoke("caller", {{"n", 21}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["value"], (json{{"n", 42}, {"by", "double"}})) << r.body;

  // The call was the callee's own: metered, and in its log with who made it.
  auto usage = daemon_.admin("GET", "/v1/usage?function=double").json();
  EXPECT_EQ(usage["functions"][0]["invocations"], 1) << usage.dump();
  auto logs = daemon_.admin("GET", "/v1/functions/double/logs?since=0").body;
  EXPECT_NE(logs.find("INVOKE from caller"), std::string::npos) << logs;

  // The callee's error comes back as Lambda's Invoke returns it: FunctionError "Unhandled"
  // with the error object.
  auto failed = invoke("caller", {{"n", 1}, {"fail", "this"}});
  ASSERT_EQ(failed.status, 200) << failed.body;
  json e = failed.json();
  EXPECT_EQ(e["name"], "ValueError") << e.dump();
  EXPECT_EQ(e["message"], "cannot double this");
  EXPECT_EQ(e["functionError"], "Unhandled");
  EXPECT_EQ(e["error"]["errorType"], "ValueError");
  EXPECT_TRUE(e["error"]["stackTrace"].is_array()) << e.dump();
  EXPECT_EQ(e["isError"], true);
}

TEST_F(FunctionCallsE2E, PythonCallsAFunctionAndGetsItsValueOrItsError) {
  deploy("greet", "node", R"(exports.handler = async (event) => {
  if (event.fail) throw new TypeError('no name');
  return 'hello ' + event.name;
};
)");
  deploy("caller", "python", R"(def handler(event, context):
    try:
        return {"value": context.invoke("greet", event)}
    except context.InvokeError as err:
        return {"class": type(err).__name__, "message": str(err),
                "function_error": err.function_error, "error": err.error,
                "request_id": err.request_id}
)",
         {{"calls", {"greet"}}});
  auto r = invoke("caller", {{"name", "ada"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["value"], "hello ada") << r.body;

  auto failed = invoke("caller", {{"fail", true}});
  ASSERT_EQ(failed.status, 200) << failed.body;
  json e = failed.json();
  EXPECT_EQ(e["class"], "TypeError") << e.dump();
  EXPECT_EQ(e["message"], "no name");
  EXPECT_EQ(e["function_error"], "Unhandled");
  EXPECT_EQ(e["error"]["errorType"], "TypeError");
  EXPECT_EQ(e["request_id"].get<std::string>().size(), 36u) << e.dump();
}

TEST_F(FunctionCallsE2E, PythonHandlerThreadsShareTheChannel) {
  // Threads of one call wait at once for calls and key-value replies, answered in any order.
  deploy("twice", "node", "exports.handler = async (e) => ({ n: e.n * 2 });\n",
         {{"concurrency", 8}});
  deploy("fan-out", "python", R"(from concurrent.futures import ThreadPoolExecutor


def handler(event, context):
    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(context.invoke, "twice", {"n": i}) for i in range(8)]
        counts = [pool.submit(context.kv.incr, "hits") for _ in range(32)]
        return {"doubled": [c.result()["n"] for c in calls],
                "counts": sorted(c.result() for c in counts)}
)",
         {{"calls", {"twice"}}});
  auto r = invoke("fan-out", json::object());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["doubled"], (json{0, 2, 4, 6, 8, 10, 12, 14})) << r.body;
  json counts = json::array();
  for (int i = 1; i <= 32; ++i) counts.push_back(i);
  EXPECT_EQ(r.json()["counts"], counts) << r.body;
}

TEST_F(FunctionCallsE2E, AnAsyncCallQueuesAnEventFromEitherRuntime) {
  deploy("sink", "node", kSink);
  deploy("from-node", "node", R"(exports.handler = async (event, context) =>
  context.invoke('sink', { from: 'node' }, { async: true });
)",
         {{"calls", {"sink"}}});
  deploy("from-python", "python", R"(def handler(event, context):
    return context.invoke("sink", {"from": "python"}, async_=True)
)",
         {{"calls", {"*"}}});
  for (const std::string caller : {"from-node", "from-python"}) {
    auto r = invoke(caller, json::object());
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string id = r.json().value("id", "");
    ASSERT_EQ(id.size(), 36u) << r.body;
    json done = daemon_.wait_for_invocation(id, "succeeded");
    EXPECT_EQ(done["status"], "succeeded") << done.dump();
    EXPECT_EQ(done["source"], "function:" + caller);
    EXPECT_EQ(done["result"]["sunk"]["from"], caller.substr(5)) << done.dump();
  }
  EXPECT_EQ(kv_get("sink", "received")["value"], 2);
}

TEST_F(FunctionCallsE2E, ACallNeedsTheCallersGrantAndAFunctionThatExists) {
  deploy("sink", "node", kSink);
  const char* code = R"(exports.handler = async (event, context) => {
  try {
    return await context.invoke(event.target, {}, { async: event.async });
  } catch (err) {
    return { refused: err.name, message: err.message };
  }
};
)";
  deploy("stranger", "node", code);
  deploy("friend", "node", code, {{"calls", {"*"}}});

  auto denied = invoke("stranger", {{"target", "sink"}}).json();
  EXPECT_EQ(denied["refused"], "AccessDeniedException") << denied.dump();
  EXPECT_NE(denied["message"].get<std::string>().find("\"calls\""), std::string::npos);
  auto denied_async = invoke("stranger", {{"target", "sink"}, {"async", true}}).json();
  EXPECT_EQ(denied_async["refused"], "AccessDeniedException") << denied_async.dump();

  EXPECT_EQ(invoke("friend", {{"target", "nope"}}).json()["refused"], "ResourceNotFoundException");
  EXPECT_EQ(invoke("friend", {{"target", "nope"}, {"async", true}}).json()["refused"],
            "ResourceNotFoundException");
  EXPECT_EQ(invoke("friend", {{"target", "sink:7"}}).json()["refused"],
            "ResourceNotFoundException");
  EXPECT_EQ(invoke("friend", {{"target", "Bad Name"}}).json()["refused"],
            "InvalidParameterValueException");
  EXPECT_TRUE(kv_get("sink", "received").is_null()) << "no refused call ran";

  // The grant is checked against the function.json field at deploy time too.
  auto bad = daemon_.deploy_code("bad", "node", code, {{"calls", {"Not A Name"}}});
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("calls"), std::string::npos) << bad.body;
}

TEST_F(FunctionCallsE2E, ASynchronousLoopStopsAtTheDepthLimit) {
  // Each call calls the function again, one deeper; the daemon was given max_call_depth 4.
  deploy("loop", "node", R"(exports.handler = async (event, context) => {
  await context.kv.incr('calls');
  try {
    return await context.invoke('loop', { n: event.n + 1 });
  } catch (err) {
    return { stoppedAt: event.n, error: err.name, message: err.message };
  }
};
)",
         {{"calls", {"loop"}}, {"concurrency", 8}});
  auto r = invoke("loop", {{"n", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["stoppedAt"], 4) << r.body;
  EXPECT_EQ(r.json()["error"], "RecursiveInvocationException") << r.body;
  EXPECT_EQ(kv_get("loop", "calls")["value"], 5) << "depths 0 to 4 ran, the fifth call was refused";
}

TEST_F(FunctionCallsE2E, AnAsynchronousLoopStopsAtTheDepthLimit) {
  deploy("loop", "python", R"(def handler(event, context):
    context.kv.incr("runs")
    try:
        context.invoke("loop", {"n": event["n"] + 1}, async_=True)
    except Exception as err:
        context.kv.put("stopped", {"at": event["n"], "error": type(err).__name__})
)",
         {{"calls", {"loop"}}});
  auto first =
      http_request(daemon_.port(), "POST", "/v1/functions/loop/invoke?mode=async", R"({"n": 0})");
  ASSERT_EQ(first.status, 202) << first.body;
  json stopped;
  eventually([&] { return !(stopped = kv_get("loop", "stopped")).is_null(); },
             std::chrono::milliseconds(20'000));
  ASSERT_FALSE(stopped.is_null()) << daemon_.log();
  EXPECT_EQ(stopped["value"]["at"], 4) << stopped.dump();
  EXPECT_EQ(stopped["value"]["error"], "RecursiveInvocationException");
  EXPECT_EQ(kv_get("loop", "runs")["value"], 5);
}

}  // namespace
}  // namespace ember::testing
